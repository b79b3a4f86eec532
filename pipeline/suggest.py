"""suggest: which utterances (or whole interviews) to hand-code next (active learning).

Uncertainty sampling with a diversity term. An utterance's uncertainty is one minus the lead
of its most probable label over the second (margin sampling): the learned model's
probabilities (learned_codes.parquet) after `themeshift learn`, else the framework-similarity
mapping's dimension probabilities, so suggestions also work before anything is coded. The
margin, not the entropy of all labels: entropy favours units spread thin over many unlikely
labels, and on TalkMoves choosing by it did worse than choosing at random, where the margin
does better (bench/active_learning.py). The choice is greedy: each step takes the candidate with
the best

    (1 - suggest_diversity) * uncertainty + suggest_diversity * novelty,

novelty = 1 - cosine similarity to the nearest hand-coded or already chosen example (a guard
against batches of near-duplicates; off by default, as on TalkMoves and games_as_art the most
uncertain alone did better). Under a role-aware framework learn fits one model per speaker role,
and the utterances are shared evenly between those models (the weaker one would otherwise take
most of every batch). The
interviews a coder already coded are left out. With unit "interview", interviews are
scored by their utterances' mean uncertainty and their mean embedding.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.embed import vectors
from pipeline.errors import ConfigError, InputError
from pipeline.io.qdpx import ExportCode, ExportSource, machine_project, write_qdpx
from pipeline.io.rundir import atomic_write
from pipeline.io.spreadsheet import safe_frame
from pipeline.learn import role_groups
from pipeline.map import best_two, speaker_roles
from pipeline.schema import SUGGESTIONS, UTTERANCE_DIMENSIONS

MARKER = "Suggested for hand-coding"


def _probabilities(learned_codes: pa.Table | None, dims: pa.Table | None) -> tuple[pd.DataFrame, str]:
    """utterance_id x label probability matrix and where it comes from."""
    if learned_codes is not None:
        df = learned_codes.select(["utterance_id", "label", "probability"]).to_pandas()
        return df.pivot(index="utterance_id", columns="label", values="probability"), "learned"
    if dims is None:
        raise InputError("no probabilities to rank by: run `themeshift map` (or `themeshift learn`) first")
    df = dims.select(["utterance_id", "dimension", "probability", "source"]).to_pandas()
    source = "framework-similarity" if (df["source"] == "framework-similarity").any() else str(df["source"].iat[0])
    return df.pivot(index="utterance_id", columns="dimension", values="probability"), source


def uncertainty(p: np.ndarray) -> np.ndarray:
    """1 - (most probable - second most probable label's probability) per row: 0 = one label
    certain, 1 = the two best tied."""
    if p.shape[1] < 2:
        return np.zeros(len(p))
    _, _, lead = best_two(p)
    return np.clip(1.0 - lead, 0.0, 1.0)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def greedy_pick(u: np.ndarray, vecs: np.ndarray, known: np.ndarray, n: int, diversity: float):
    """Indices picked in order, with each pick's novelty and score at the time it was chosen."""
    novelty = np.ones(len(u))
    if len(known):
        for start in range(0, len(known), 4096):  # chunks keep memory flat on large coded sets
            novelty = np.minimum(novelty, (1.0 - vecs @ known[start : start + 4096].T).min(axis=1))
    novelty = np.clip(novelty, 0.0, 1.0)
    taken = np.zeros(len(u), dtype=bool)
    picks, nov, score = [], [], []
    for _ in range(min(n, len(u))):
        s = np.where(taken, -np.inf, (1 - diversity) * u + diversity * novelty)
        i = int(np.argmax(s))
        picks.append(i)
        nov.append(float(novelty[i]))
        score.append(float(s[i]))
        taken[i] = True
        novelty = np.minimum(novelty, np.clip(1.0 - vecs @ vecs[i], 0.0, 1.0))
    return np.asarray(picks, dtype=np.int64), np.asarray(nov), np.asarray(score)


def split_evenly(n: int, sizes: list[int]) -> list[int]:
    """n picks shared as evenly as the strata's sizes allow: a small stratum's unused share goes to
    the others."""
    take = [0] * len(sizes)
    left, open_ = n, [i for i, size in enumerate(sizes) if size > 0]
    while left > 0 and open_:
        share, extra = divmod(left, len(open_))
        for rank, i in enumerate(open_):
            give = min(sizes[i] - take[i], share + (rank < extra))
            take[i] += give
            left -= give
        open_ = [i for i in open_ if take[i] < sizes[i]]
    return take


def stratified_pick(u: np.ndarray, vecs: np.ndarray, known: np.ndarray, n: int, diversity: float, strata=None):
    """greedy_pick within each stratum, n shared evenly between the strata, merged by score.

    Strata are learn's role models (one per set of codes a speaker role may get): ranked together, the
    weaker model's role takes most of a batch (TalkMoves, margin only: 68% student sentences) and the
    other model learns little; an equal share per model reaches random choice's 20%-coded agreement
    with fewer units (bench/active_learning.py)."""
    keys: np.ndarray = np.unique(strata) if strata is not None else np.zeros(0)
    if len(keys) < 2:
        return greedy_pick(u, vecs, known, n, diversity)
    members = [np.flatnonzero(strata == k) for k in keys]
    parts = [
        (m[p], nov, score)
        for m, k in zip(members, split_evenly(n, [len(m) for m in members]))
        if k
        for p, nov, score in [greedy_pick(u[m], vecs[m], known, k, diversity)]
    ]
    picks, nov, score = (np.concatenate(x) for x in zip(*parts))
    order = np.argsort(-score, kind="stable")
    return picks[order], nov[order], score[order]


def role_strata(framework, roles) -> np.ndarray | None:
    """(n,) stratum of each utterance for stratified_pick: one per set of concepts its speaker role may
    get under a role-aware framework, -1 where it may get none (nothing to learn from coding it);
    None for a framework without roles."""
    if framework is None or not framework.has_roles:
        return None
    stratum, patterns = role_groups(framework.allowed_concepts(roles), len(roles))
    assert patterns is not None  # a role-aware framework gives every unit a concept mask
    some = np.asarray(patterns.any(axis=1), dtype=bool)  # the pattern lets its units get some concept
    return np.where(some[stratum], stratum, -1)


def open_units(hand: np.ndarray, strata: np.ndarray | None) -> np.ndarray:
    """Indices of the utterances suggest may propose: not hand-coded and, under a role-aware framework
    (strata from role_strata), spoken by a role that may get some concept: coding the rest teaches no model."""
    free = ~np.asarray(hand, dtype=bool)
    if not free.any():
        raise InputError("every interview of the run is hand-coded already; nothing left to suggest")
    if strata is not None:
        free &= strata >= 0
        if not free.any():
            raise InputError(
                "every utterance not hand-coded is by a speaker role the framework gives no concept; "
                "nothing left to suggest"
            )
    return np.flatnonzero(free)


def suggest(
    utterances: pa.Table,
    embeddings: pa.Table,
    learned_codes: pa.Table | None,
    dims: pa.Table | None,
    n: int,
    unit: str,
    diversity: float,
    framework=None,
) -> tuple[pa.Table, str, list[str]]:
    """diversity is learn.suggest_diversity. Under a role-aware framework, utterances are shared
    evenly between learn's role models (stratified_pick). Hand-coded interviews are the ones `learn` trained on
    (learned_codes.cross_validated); the human_codes table an earlier `compare` left is an evaluation,
    not what the model knows."""

    if unit not in ("utterance", "interview"):
        raise ConfigError(f"--unit must be utterance or interview, got {unit!r}")
    if n < 1:
        raise ConfigError(f"--n must be at least 1, got {n}")
    probs, source = _probabilities(learned_codes, dims)
    ids = embeddings.column("utterance_id").to_pylist()
    vecs = _unit_rows(vectors(embeddings).astype(np.float64))
    meta = (
        utterances.select(["utterance_id", "interview_id", "speaker_id", "start_char", "end_char", "text"])
        .to_pandas()
        .set_index("utterance_id")
        .loc[ids]
    )
    coded_interviews: set[str] = set()
    if learned_codes is not None:
        lc = learned_codes.select(["utterance_id", "cross_validated"]).to_pandas()
        coded_interviews |= set(
            meta.loc[meta.index.isin(set(lc.loc[lc["cross_validated"], "utterance_id"])), "interview_id"]
        )
    p = probs.reindex(ids).fillna(0.0)
    u = uncertainty(p.to_numpy(float))
    label = p.columns.to_numpy()[p.to_numpy(float).argmax(axis=1)] if p.shape[1] else np.full(len(ids), None)
    top = p.to_numpy(float).max(axis=1) if p.shape[1] else np.zeros(len(ids))
    hand = meta["interview_id"].isin(coded_interviews).to_numpy()
    strata = role_strata(framework, speaker_roles(utterances, ids)) if unit == "utterance" else None
    cand = open_units(hand, strata)
    if unit == "utterance":
        pick, nov, score = stratified_pick(
            u[cand], vecs[cand], vecs[hand], n, diversity, None if strata is None else strata[cand]
        )
        rows = cand[pick]
        table = pd.DataFrame(
            {
                "rank": np.arange(1, len(rows) + 1),
                "unit": "utterance",
                "utterance_id": [ids[i] for i in rows],
                "interview_id": meta["interview_id"].to_numpy()[rows],
                "speaker_id": meta["speaker_id"].to_numpy()[rows],
                "start_char": meta["start_char"].to_numpy()[rows],
                "end_char": meta["end_char"].to_numpy()[rows],
                "uncertainty": u[rows],
                "novelty": nov,
                "score": score,
                "predicted": label[rows],
                "probability": top[rows],
                "source": source,
                "text": meta["text"].to_numpy()[rows],
            }
        )
    else:
        iid = meta["interview_id"].to_numpy()
        names = sorted(set(iid))
        g = pd.Series(iid).map({x: i for i, x in enumerate(names)}).to_numpy()
        mean_vec = np.zeros((len(names), vecs.shape[1]))
        np.add.at(mean_vec, g, vecs)
        mean_vec = _unit_rows(mean_vec)
        mean_u = np.bincount(g, weights=u, minlength=len(names)) / np.bincount(g, minlength=len(names))
        is_hand = np.array([x in coded_interviews for x in names])
        free = np.flatnonzero(~is_hand)
        pick, nov, score = greedy_pick(mean_u[free], mean_vec[free], mean_vec[is_hand], n, diversity)
        chosen = free[pick]
        most: dict[int, int] = {}  # interview index -> utterance index
        for i in np.argsort(-u, kind="stable"):  # each interview's most uncertain utterance
            most.setdefault(g[i], i)
        ex = np.array([most[c] for c in chosen], dtype=np.int64)
        table = pd.DataFrame(
            {
                "rank": np.arange(1, len(chosen) + 1),
                "unit": "interview",
                "utterance_id": None,
                "interview_id": [names[c] for c in chosen],
                "speaker_id": None,
                "start_char": None,
                "end_char": None,
                "uncertainty": mean_u[chosen],
                "novelty": nov,
                "score": score,
                "predicted": label[ex],
                "probability": top[ex],
                "source": source,
                "text": meta["text"].to_numpy()[ex],
            }
        )
    return pa.Table.from_pandas(table, schema=SUGGESTIONS, preserve_index=False), source, sorted(coded_interviews)


def write_suggestions(
    table: pa.Table, csv_path, sources: pa.Table, utterances: pa.Table, framework, suggest_user: str
) -> list:
    """The suggestions as CSV and as a .qdpx of the suggested interviews: the framework's codebook
    plus, for utterances, a marker code on each suggested passage (credited to learn.suggest_user,
    whose codings learn and compare ignore when the coded project comes back)."""
    from pathlib import Path

    csv_path = Path(csv_path)
    df = table.to_pandas()
    atomic_write(csv_path, lambda tmp: safe_frame(df).to_csv(tmp, index=False))
    book, _, _ = machine_project(sources, utterances, framework, UTTERANCE_DIMENSIONS.empty_table())
    marker = ExportCode(
        MARKER,
        "passages whose hand-coding would help the learned model most (themeshift suggest); "
        "code them with the codebook, the marker itself can be deleted",
        True,
        [],
        ("suggest",),
    )
    wanted = list(dict.fromkeys(df["interview_id"]))
    text = dict(zip(sources.column("interview_id").to_pylist(), sources.column("source_text").to_pylist()))
    rel = dict(zip(sources.column("interview_id").to_pylist(), sources.column("source_file").to_pylist()))
    out = []
    for iid in wanted:
        rows = df[(df["interview_id"] == iid) & df["utterance_id"].notna()].sort_values("start_char")
        selections = [(int(s), int(e), [marker]) for s, e in zip(rows["start_char"], rows["end_char"])]
        out.append(ExportSource(iid, rel[iid], text[iid], selections))
    qdpx_path = csv_path.with_suffix(".qdpx")
    write_qdpx(
        qdpx_path,
        "themeshift suggestions",
        suggest_user,
        [*book, marker] if df["utterance_id"].notna().any() else book,
        out,
    )
    return [csv_path, qdpx_path]
