"""compare stage: the machine's coding against human coders.

Units are the coded utterances of the interviews at least one human coded. A coder
"covers" an interview when they coded anything in it; in a covered interview an
utterance they left uncoded counts as the label "none" ([compare] uncoded), outside it
as missing. The machine's label is its most probable second-order concept (and that
concept's dimension) when the utterance is mapped, else "none".

Kappa and alpha need one label per rater and unit: where a coder gave several, the
label covering most of the utterance's characters is used (ties: alphabetical).
Precision / recall / F1 use every label a coder gave (multi-label).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.agreement import (
    CONSENSUS,
    MISSING,
    Bootstrap,
    Ratings,
    compare_clusters,
    compare_ratings,
)
from pipeline.errors import InputError
from pipeline.io.human_codes import HumanCodes, align, resolve_codes
from pipeline.schema import AGREEMENT, CONFUSION, DISAGREEMENTS
from pipeline.settings import CompareSettings

NONE = "none"
LEVELS = ("dimension", "second-order")


@dataclass
class Comparison:
    agreement: pa.Table
    confusion: pa.Table
    disagreements: pa.Table
    human_codes: pa.Table
    counts: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def machine_labels(utterance_dimensions: pa.Table, framework) -> pd.DataFrame:
    """utterance_id -> dimension, second_order (concept id) and probability of the argmax row;
    'none' on both levels when the utterance is unmapped."""
    ud = utterance_dimensions.to_pandas()
    top = ud[ud["is_argmax"]].drop_duplicates("utterance_id").set_index("utterance_id")
    concept_ids = {}
    for name in top["second_order"].dropna().unique():
        c = framework.concept(name)
        concept_ids[name] = c.id if c else name
    mapped = top["mapped"].to_numpy(bool)
    return pd.DataFrame(
        {
            "dimension": np.where(mapped, top["dimension"], NONE),
            "second-order": np.where(mapped, top["second_order"].map(concept_ids).fillna(NONE), NONE),
            "probability": top["probability"].to_numpy(float),
        },
        index=top.index,
    )


def human_ratings(
    aligned: pd.DataFrame,
    units: pd.DataFrame,
    coders: list[str],
    column: str,
    categories: list[str],
    uncoded_is_none: bool,
):
    """Per coder: primary label index (units,) and presence matrix (units, k) at one level."""
    pos = {u: i for i, u in enumerate(units["utterance_id"])}
    cat = {c: i for i, c in enumerate(categories)}
    primary, present = {}, {}
    for coder in coders:
        rows = aligned[aligned["coder"] == coder]
        covered = units["interview_id"].isin(set(rows["interview_id"])).to_numpy()
        p = np.full(len(units), (cat[NONE] if uncoded_is_none else MISSING), dtype=np.int64)
        p[~covered] = MISSING
        pres = np.zeros((len(units), len(categories)), dtype=bool)
        pres[:, cat[NONE]] = p == cat[NONE]
        framed = rows[rows["dimension"].notna() & rows["utterance_id"].isin(pos)]
        idx = framed["utterance_id"].map(pos).to_numpy(np.int64)
        p[idx] = MISSING  # framework-coded: "none" no longer applies; a dimension-only code stays missing here
        pres[idx] = False
        labelled = framed[framed[column].notna()]
        share = labelled.groupby(["utterance_id", column], as_index=False)["overlap"].sum()
        share["i"] = share["utterance_id"].map(pos)
        share["k"] = share[column].map(cat)
        # int64 even when empty: codes naming only dimensions leave the second-order level with no labels
        pres[share["i"].to_numpy(np.int64), share["k"].to_numpy(np.int64)] = True
        best = share.sort_values(["i", "overlap", column], ascending=[True, False, True]).drop_duplicates("i")
        p[best["i"].to_numpy(np.int64)] = best["k"].to_numpy(np.int64)
        primary[coder], present[coder] = p, pres
    return primary, present


def machine_ratings(
    units: pd.DataFrame, machine: pd.DataFrame, level: str, categories: list[str], sets: pd.Series | None = None
):
    """The machine's label (index) and its set of labels per unit at one level: its one label, plus
    the codes of its set where a multi-code learned model gave one (sets: utterance_id -> labels)."""
    cat = {c: i for i, c in enumerate(categories)}
    labels = units["utterance_id"].map(machine[level]) if len(machine) else pd.Series([None] * len(units))
    p = np.array([cat.get(x, MISSING) if isinstance(x, str) else MISSING for x in labels], dtype=np.int64)
    pres = np.zeros((len(units), len(categories)), dtype=bool)
    ok = p != MISSING
    pres[np.nonzero(ok)[0], p[ok]] = True
    if sets is not None:
        for i, labels_of in enumerate(units["utterance_id"].map(sets)):
            if ok[i] and isinstance(labels_of, (set, frozenset)):
                pres[i, [cat[x] for x in labels_of if x in cat]] = True
    return p, pres


def compare(
    utterances: pa.Table,
    sources: pa.Table,
    human: HumanCodes,
    framework,
    mapping,
    utterance_dimensions: pa.Table,
    assignments: pa.Table | None,
    s: CompareSettings,
    machine_sets: dict[str, pd.Series] | None = None,
) -> Comparison:
    """machine_sets: level -> (utterance_id -> set of labels) of a multi-code learned model
    (pipeline.learn.learned_sets), so set measures see every code the machine gave."""
    machine = s.machine_name
    resolved, warnings = resolve_codes(human, framework, mapping, s.unknown_codes)
    aligned_table = align(human, resolved, utterances, sources, s.min_overlap)
    aligned = aligned_table.to_pandas()
    if aligned.empty:
        raise InputError(
            "no human code falls on an utterance of this run; is it the run the codes were made on?", human.path
        )
    coders = sorted(aligned["coder"].unique())
    if machine in coders:
        raise InputError(
            f"a human coder is called {machine!r}, the machine's name; rename the coder or set compare.machine_name",
            human.path,
        )
    utt = utterances.select(
        ["utterance_id", "interview_id", "speaker_id", "wave", "start_char", "end_char", "text", "coded"]
    ).to_pandas()
    units = utt[utt["coded"] & utt["interview_id"].isin(set(aligned["interview_id"]))].reset_index(drop=True)
    if units.empty:
        raise InputError("the human-coded interviews hold no coded utterance", human.path)

    if s.bootstrap_unit == "interview":
        group_names = sorted(units["interview_id"].unique())
        groups = units["interview_id"].map({g: i for i, g in enumerate(group_names)}).to_numpy(np.int64)
    else:
        groups = np.arange(len(units), dtype=np.int64)
    n_groups = int(groups.max()) + 1
    boot = Bootstrap.draw(n_groups, s.bootstrap, s.seed, s.ci_level)

    m_labels = machine_labels(utterance_dimensions, framework)
    categories = {"dimension": [*framework.dimension_ids, NONE], "second-order": [*framework.concept_ids, NONE]}
    column = {"dimension": "dimension", "second-order": "second_order"}
    uncoded_is_none = s.uncoded == "none"
    agreement_rows, confusion_rows, ratings = [], [], {}
    for level in LEVELS:
        primary, present = human_ratings(aligned, units, coders, column[level], categories[level], uncoded_is_none)
        primary[machine], present[machine] = machine_ratings(
            units, m_labels, level, categories[level], (machine_sets or {}).get(level)
        )
        ratings[level] = r = Ratings(level, categories[level], primary, present)
        rows, conf, warn = compare_ratings(r, coders, machine, groups, n_groups, boot)
        agreement_rows += rows
        confusion_rows += conf
        warnings += [w for w in warn if w not in warnings]

    if assignments is not None:
        agreement_rows += _cluster_rows(
            aligned, units, coders, assignments, machine, groups, n_groups, boot, uncoded_is_none
        )
    else:
        warnings.append("no assignments.parquet: cluster-vs-human-code alignment skipped (run `themeshift codes`)")

    disagreements = _disagreements(units, ratings, coders, machine, m_labels)
    counts = {
        "units": len(units),
        "interviews": int(units["interview_id"].nunique()),
        "coders": coders,
        "codings_read": len(human.frame),
        "human_codes_aligned": len(aligned),
        "human_codes_on_uncoded_utterances": int((~aligned["coded"]).sum()),
        "multi_label_utterances": {
            coder: int(
                (
                    aligned[(aligned["coder"] == coder) & aligned["coded"] & aligned["dimension"].notna()]
                    .groupby("utterance_id")["second_order"]
                    .nunique()
                    > 1
                ).sum()
            )
            for coder in coders
        },
        "machine_unlabelled_units": int((ratings["dimension"].primary[machine] == MISSING).sum()),
        "disagreements": len(disagreements),  # rows: one per utterance x level x coder
        "disagreeing_utterances_by_level": {  # utterances where the machine differs from at least one coder
            level: int(n) for level, n in disagreements.to_pandas().groupby("level")["utterance_id"].nunique().items()
        },
    }
    return Comparison(
        agreement=pa.Table.from_pylist(agreement_rows, schema=AGREEMENT),
        confusion=pa.Table.from_pylist(confusion_rows, schema=CONFUSION),
        disagreements=disagreements,
        human_codes=aligned_table,
        counts=counts,
        warnings=warnings,
    )


def _cluster_rows(aligned, units, coders, assignments, machine, groups, n_groups, boot, uncoded_is_none):
    """Machine first-order codes (clusters) against each coder's own code names, and the consensus."""
    codes = sorted(aligned["code"].unique())
    categories = [*codes, NONE]
    framed = aligned.assign(dimension=aligned["dimension"].fillna("outside"))  # every human code counts here
    primary, present = human_ratings(framed, units, coders, "code", categories, uncoded_is_none)
    refs = dict(primary)
    if len(coders) >= 2:
        refs[CONSENSUS] = Ratings("code", categories, primary, present).consensus(coders)[0]
    a = assignments.to_pandas().set_index("utterance_id")["code_id"]
    clusters = units["utterance_id"].map(a).fillna(-1).to_numpy(np.int64)
    clusters[clusters < 0] = MISSING  # unassigned utterances (outliers) are left out
    n_clusters = int(clusters.max()) + 1 if (clusters >= 0).any() else 0
    return compare_clusters(clusters, n_clusters, refs, len(categories), machine, groups, n_groups, boot)


def _disagreements(units, ratings, coders, machine, m_labels) -> pa.Table:
    rows = []
    prob = units["utterance_id"].map(m_labels["probability"]).to_numpy(float) if len(m_labels) else None
    for level in LEVELS:
        r = ratings[level]
        m = r.primary[machine]
        human = np.stack([r.primary[h] for h in coders], axis=1)
        coded = human != MISSING
        first = np.where(coded, human, np.iinfo(np.int64).max).min(axis=1)
        agree = np.all(~coded | (human == first[:, None]), axis=1)
        for j, coder in enumerate(coders):
            h = human[:, j]
            for i in np.nonzero((m != MISSING) & (h != MISSING) & (m != h))[0]:
                u = units.iloc[i]
                rows.append(
                    {
                        "utterance_id": u["utterance_id"],
                        "interview_id": u["interview_id"],
                        "speaker_id": u["speaker_id"],
                        "wave": None if pd.isna(u["wave"]) else int(u["wave"]),
                        "start_char": int(u["start_char"]),
                        "end_char": int(u["end_char"]),
                        "level": level,
                        "machine_label": r.categories[m[i]],
                        "machine_probability": None if prob is None or np.isnan(prob[i]) else float(prob[i]),
                        "coder": coder,
                        "human_label": r.categories[h[i]],
                        "human_labels": [r.categories[k] for k in np.nonzero(r.present[coder][i])[0]],
                        "humans_agree": bool(agree[i]) if coded[i].sum() >= 2 else None,
                        "text": u["text"],
                    }
                )
    rows.sort(key=lambda x: (x["interview_id"], x["start_char"], x["level"], x["coder"]))
    return pa.Table.from_pylist(rows, schema=DISAGREEMENTS)
