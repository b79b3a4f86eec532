"""shift: how each speaker's talk moved between interview waves, with uncertainty.

Inputs are tables of the run directory: utterances, utterance_dimensions (tidy
probabilities per utterance and dimension), and when present embeddings (semantic
drift) and assignments (first-order code profiles; code -1 is left out).

A speaker's profile in a wave is the mean dimension probability over the wave's
coded utterances. For each pair of the speaker's adjacent observed waves, and for
first -> last, the stage reports the Jensen-Shannon distance between profiles, a
bootstrap interval and a permutation p-value, the signed change per dimension, the
same distance over code profiles, the cosine drift of mean embeddings over the drift
the same permutations give, and the distance over answers to questions asked in both
waves. Intervals and p-values resample and shuffle whole units, never sentences:
interviews when a wave has two or more of the speaker's, else blocks of whole answers
(shift.resample_unit); Benjamini-Hochberg q-values go beside the p-values.

Documented behaviour for awkward input:
- Waves with gaps (1 and 3): pairs are the speaker's adjacent *observed* waves, so
  1 -> 3 is a consecutive pair with wave_gap 2; nothing is interpolated.
- Speaker ids that differ only in case or punctuation ("PL-03", "pl03") are one
  speaker, under the most frequent spelling, with a warning. The segment stage
  already maps aliases from speakers.csv; two such spellings cannot name different
  people there (speakers.csv rejects labels that normalise the same).
- A wave whose units are all uncoded (or lack probabilities) is still listed:
  n_utterances 0, null shares, and its pairs have status too_few_utterances.
- Utterances without a wave are left out, with a warning; a speaker with no known
  wave is listed with status no_wave, a speaker with one wave with single_wave.
- Interviewer units are never profiled.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Callable, cast

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline import schema
from pipeline.embed import vectors
from pipeline.errors import ConfigError, InputError
from pipeline.io.readers import label_key
from pipeline.io.vectors import StoredEmbeddings
from pipeline.settings import ShiftSettings
from pipeline.shift_groups import (
    PairEstimate,
    group_tables,
    moderate_all,
    speaker_tests,
)
from pipeline.shift_inference import pair_moments
from pipeline.shift_stats import (
    all_label_masks,
    benjamini_hochberg,
    bootstrap_counts,
    cosine_distance,
    distance_interval,
    exact_p,
    js_distance,
    label_masks,
    labelling_count,
    percentile_interval,
    permutation_p,
    resampled_means,
    rng_for,
    split_means,
)

Progress = Callable[[str, int, int], None]
DIMENSIONS_FILE = "utterance_dimensions.parquet"


@dataclass
class ShiftResult:
    speaker_waves: pa.Table
    speaker_codes: pa.Table
    shifts: pa.Table
    shift_dimensions: pa.Table
    group_shifts: pa.Table
    group_trajectory: pa.Table
    group_changes: pa.Table
    group_contrasts: pa.Table
    shift_codes_change: pa.Table
    warnings: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------- inputs


def canonical_speaker_ids(ids: pd.Series) -> tuple[pd.Series, list[str]]:
    """Merge ids that normalise the same (case, spaces, punctuation ignored) under the
    most frequent spelling (ties: the alphabetically first)."""
    counts = ids.value_counts()
    keys = {s: label_key(s) for s in counts.index}
    by_key: dict[str, list[str]] = {}
    for spelling in sorted(counts.index, key=lambda s: (-counts[s], s)):
        by_key.setdefault(keys[spelling], []).append(spelling)
    mapping, warnings = {}, []
    for spellings in by_key.values():
        for s in spellings:
            mapping[s] = spellings[0]
        if len(spellings) > 1:
            warnings.append(
                f"speaker ids {', '.join(repr(s) for s in sorted(spellings))} differ only in case or "
                f"punctuation; treated as one speaker {spellings[0]!r} (list them as aliases in "
                "speakers.csv to make this explicit)"
            )
    return ids.map(mapping), warnings


def _dimension_matrix(dims: pa.Table, known_ids: set[str]) -> tuple[pd.DataFrame, list[str]]:
    """Tidy utterance_dimensions -> wide (utterance x dimension) probabilities, validated."""
    need = {"utterance_id", "dimension", "probability"}
    missing = need - set(dims.column_names)
    if missing:
        raise InputError(f"missing column(s) {', '.join(sorted(missing))}", DIMENSIONS_FILE)
    cols = ["utterance_id", "dimension", "probability"] + [
        c for c in ("mapped", "second_order") if c in dims.column_names
    ]
    df = dims.select(cols).to_pandas()
    if df["utterance_id"].isna().any() or df["dimension"].isna().any():
        raise InputError("utterance_id and dimension must not be empty", DIMENSIONS_FILE)
    dimensions = list(pd.unique(df["dimension"]))  # the map stage writes them in framework order
    prob = df["probability"].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(prob) | (prob < -1e-9) | (prob > 1 + 1e-9)
    if bad.any():
        row = df[bad].iloc[0]
        raise InputError(
            f"probability {row['probability']!r} of utterance {row['utterance_id']!r} is not in [0, 1]", DIMENSIONS_FILE
        )
    if df.duplicated(["utterance_id", "dimension"]).any():
        row = df[df.duplicated(["utterance_id", "dimension"])].iloc[0]
        raise InputError(
            f"utterance {row['utterance_id']!r} has two rows for dimension {row['dimension']!r}", DIMENSIONS_FILE
        )
    unknown = set(df["utterance_id"]) - known_ids
    if unknown:
        raise InputError(
            f"{len(unknown)} utterance id(s) not in utterances.parquet, e.g. {sorted(unknown)[0]!r}: "
            "the table comes from another run",
            DIMENSIONS_FILE,
        )
    wide = df.pivot(index="utterance_id", columns="dimension", values="probability").reindex(columns=dimensions)
    wide = wide.fillna(0.0)
    sums = wide.sum(axis=1)
    off = (sums - 1.0).abs() > 1e-3
    if off.any():
        uid = off[off].index[0]
        raise InputError(f"probabilities of utterance {uid!r} sum to {sums[uid]:.4f}, not 1", DIMENSIONS_FILE)
    if "mapped" in df:
        wide["_mapped"] = df.groupby("utterance_id")["mapped"].any().reindex(wide.index).fillna(True)
    else:
        wide["_mapped"] = True
    if "second_order" in df:  # the utterance's most probable concept, repeated on each dimension row
        wide["_concept"] = df.groupby("utterance_id")["second_order"].first().reindex(wide.index)
    return wide, dimensions


@dataclass
class _Prepared:
    speakers: pd.DataFrame  # speaker_id, speaker_role, sorted
    spoken: pd.DataFrame  # (speaker_id, wave) -> n_spoken
    rows: pd.DataFrame  # analysed utterances, sorted by speaker, wave: speaker_id, wave, utterance_id
    P: np.ndarray  # (n, K) dimension probabilities
    code: np.ndarray | None  # (n,) each row's column in code_ids, -1 = unassigned (one_hot() expands it)
    code_ids: list[int]
    concept: np.ndarray | None  # (n,) index into concept_names of each row's most probable concept, -1 = none
    concept_names: list[str]
    X: np.ndarray | None  # (n, d) float32 embeddings
    interview: np.ndarray  # (n,) interview index; rows of one interview are contiguous
    turn: np.ndarray  # (n,) answer (turn) index; rows of one answer are contiguous
    question: np.ndarray  # (n,) index into Q of the question the answer follows, -1 = none
    Q: np.ndarray | None  # (n_questions, d) unit-length question embeddings
    dimensions: list[str]
    blocks: dict[tuple[str, int], tuple[int, int]]  # (speaker, wave) -> [start, stop) into rows
    unmapped: dict[tuple[str, int], float]  # (speaker, wave) -> share of coded units the map left unmapped
    warnings: list[str]

    def one_hot(self, idx: np.ndarray) -> np.ndarray:
        """(len(idx), M) one-hot codes of rows idx (unassigned: a zero row). Built per speaker and
        wave: the whole matrix would be utterances x codes (2.4 GB at 656,733 x 457)."""
        assert self.code is not None  # callers check prep.code first
        return _one_hot(self.code[idx], len(self.code_ids))

    def concept_one_hot(self, idx: np.ndarray) -> np.ndarray:
        """The same for the rows' most probable concepts."""
        assert self.concept is not None  # set whenever concept_names is, which callers check
        return _one_hot(self.concept[idx], len(self.concept_names))


def _one_hot(column: np.ndarray, width: int) -> np.ndarray:
    """(len(column), width) rows with a 1 in each entry's column; -1 (none) gives a zero row."""
    out = np.zeros((len(column), width))
    out[np.flatnonzero(column >= 0), column[column >= 0]] = 1.0
    return out


def _most_frequent(values: pd.Series, what: str) -> tuple[pd.Series, list[str]]:
    """Per speaker (the series' index) the value they have most often (ties: alphabetically first), and
    a warning for each speaker with several."""
    ranked = values.groupby(level=0).agg(lambda r: sorted(Counter(map(str, r)).items(), key=lambda kv: (-kv[1], kv[0])))
    warnings = [
        f"speaker {sid!r} has several {what} ({', '.join(v for v, _ in r)}); using {r[0][0]!r}"
        for sid, r in ranked.items()
        if len(r) > 1
    ]
    return ranked.map(lambda r: r[0][0]), warnings


def speaker_groups(
    spk: pd.DataFrame,
    speakers: pd.DataFrame,
    group_by: str,
    interviews: pa.Table | None,
    speaker_table: pa.Table | None = None,
) -> tuple[pd.Series, list[str]]:
    """Each speaker's group for group_changes and group_contrasts: their role, a speakers.csv column,
    or the value of a manifest column (interviews table) over their interviews (the most frequent one)."""
    if group_by == "speaker_role":
        return speakers["speaker_role"], []
    if speaker_table is not None and group_by in speaker_table.column_names:
        value = speaker_table.select(["speaker_id", group_by]).to_pandas().set_index("speaker_id")[group_by]
        return speakers["speaker_id"].map(value.where(value.astype(str).str.strip() != "")), []
    if interviews is None or group_by not in interviews.column_names:
        known = ["speaker_role"] + [
            c
            for t in (speaker_table, interviews)
            if t is not None
            for c in t.column_names
            if c
            not in (
                "speaker_id",
                "speaker_role",
                "is_interviewer",
                "interview_id",
                "source_file",
                "n_turns",
                "n_utterances",
                "n_skipped_lines",
            )
        ]
        raise ConfigError(
            f"shift.group_by: no column {group_by!r} in speakers.csv, the manifest or utterances "
            f"(known: {', '.join(dict.fromkeys(known))})"
        )
    value = interviews.select(["interview_id", group_by]).to_pandas().set_index("interview_id")[group_by]
    per = spk.set_index("speaker_id")["interview_id"].map(value).dropna()
    winner, warnings = _most_frequent(per[per.astype(str).str.strip() != ""], f"values of {group_by}")
    return speakers["speaker_id"].map(winner), warnings


def _prepare(
    utterances: pa.Table,
    utterance_dimensions: pa.Table,
    s: ShiftSettings,
    embeddings,
    assignments: pa.Table | None,
    questions: pa.Table | None = None,
    interviews: pa.Table | None = None,
    speaker_table: pa.Table | None = None,
) -> _Prepared:
    cols = [
        "utterance_id",
        "interview_id",
        "turn_index",
        "speaker_id",
        "speaker_role",
        "wave",
        "is_interviewer",
        "coded",
    ]
    utt = utterances.select(cols).to_pandas()
    utt["order"] = np.arange(len(utt))
    wide, dimensions = _dimension_matrix(utterance_dimensions, set(utt["utterance_id"]))
    spk = utt[~utt["is_interviewer"].astype(bool)].copy()
    spk["speaker_id"], warnings = canonical_speaker_ids(spk["speaker_id"])

    role, role_warnings = _most_frequent(spk.set_index("speaker_id")["speaker_role"].dropna(), "roles")
    warnings += role_warnings
    speakers = pd.DataFrame({"speaker_id": sorted(spk["speaker_id"].unique())})
    speakers["speaker_role"] = speakers["speaker_id"].map(role)
    speakers["group"], group_warnings = speaker_groups(spk, speakers, s.group_by, interviews, speaker_table)
    warnings += group_warnings

    no_wave = spk["wave"].isna()
    if no_wave.any():
        ids = sorted(spk.loc[no_wave, "speaker_id"].unique())
        warnings.append(
            f"{int(no_wave.sum())} units of speaker(s) {', '.join(ids[:5])}"
            f"{' ...' if len(ids) > 5 else ''} have no wave and are left out of the shift profiles"
        )
    spk = spk[~no_wave].copy()
    spk["wave"] = spk["wave"].astype(np.int64)
    spoken = spk.groupby(["speaker_id", "wave"]).size().rename("n_spoken").reset_index()

    coded = spk[spk["coded"].astype(bool)]
    has_dims = coded["utterance_id"].isin(wide.index)
    if (~has_dims).any():
        warnings.append(
            f"{int((~has_dims).sum())} coded utterances have no dimension probabilities "
            f"in {DIMENSIONS_FILE} and are left out"
        )
    rows = coded[has_dims]
    mapped = wide.loc[rows["utterance_id"], "_mapped"].to_numpy(dtype=bool)
    unmapped = (~pd.Series(mapped, index=rows.index)).groupby([rows["speaker_id"], rows["wave"]]).mean().to_dict()
    if not s.include_unmapped:
        rows = rows[mapped]
    # Interviews, and answers within them, stay contiguous: the resampling units are runs of rows.
    rows = rows.sort_values(["speaker_id", "wave", "interview_id", "order"], kind="stable").reset_index(drop=True)
    P = wide.loc[rows["utterance_id"], dimensions].to_numpy(dtype=np.float64)
    concept, concept_names = None, []
    if "_concept" in wide:
        labels = wide.loc[rows["utterance_id"], "_concept"]
        concept_names = sorted(str(c) for c in labels.dropna().unique())
        concept = labels.map({c: i for i, c in enumerate(concept_names)}).fillna(-1).to_numpy(dtype=np.int64)

    column, code_ids = None, []
    if assignments is not None:
        asg = assignments.select(["utterance_id", "code_id"]).to_pandas().drop_duplicates("utterance_id")
        code = rows["utterance_id"].map(asg.set_index("utterance_id")["code_id"]).fillna(-1).astype(np.int64)
        code_ids = sorted(int(c) for c in code.unique() if c >= 0)
        code = code.to_numpy()
        column = np.where(code >= 0, np.searchsorted(code_ids, code), -1)

    X = None
    if embeddings is not None:
        X, found = StoredEmbeddings.of(embeddings).gather(rows["utterance_id"].tolist())
        if not found.all():
            warnings.append(
                f"{int((~found).sum())} analysed utterances have no embedding; "
                "semantic drift is not computed (re-run `themeshift embed`)"
            )
            X = None

    interview = pd.factorize(rows["interview_id"])[0]
    turn = pd.factorize(rows["interview_id"].astype(str) + "\x1f" + rows["turn_index"].astype(str))[0]
    question, Q = _question_index(rows, questions)
    keys = list(zip(rows["speaker_id"], rows["wave"]))
    blocks: dict[tuple[str, int], tuple[int, int]] = {}
    for i, key in enumerate(keys):  # rows are sorted, so each (speaker, wave) is one contiguous block
        start, _ = blocks.get(key, (i, i))
        blocks[key] = (start, i + 1)
    return _Prepared(
        speakers,
        spoken,
        rows,
        P,
        column,
        code_ids,
        concept,
        concept_names,
        X,
        interview,
        turn,
        question,
        Q,
        dimensions,
        blocks,
        unmapped,
        warnings,
    )


def _question_index(rows: pd.DataFrame, questions: pa.Table | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Each analysed row's question (the interviewer turn its answer follows) as an index into Q."""
    if questions is None or questions.num_rows == 0:
        return np.full(len(rows), -1, dtype=np.int64), None

    q = questions.select(["interview_id", "turn_index", "question_turn"]).to_pandas()
    key = rows["interview_id"].astype(str) + "\x1f" + rows["turn_index"].astype(str)
    q_key = q["interview_id"].astype(str) + "\x1f" + q["turn_index"].astype(str)
    pos = key.map(pd.Series(np.arange(len(q)), index=q_key)).fillna(-1).astype(np.int64).to_numpy()
    Q = vectors(questions).astype(np.float64)
    Q /= np.maximum(np.linalg.norm(Q, axis=1, keepdims=True), 1e-12)
    return pos, Q


# ---------------------------------------------------------------- per speaker


def _pairs(waves: list[int]) -> list[tuple[int, int, bool, bool]]:
    """(wave_from, wave_to, is_consecutive, is_first_last) for sorted observed waves."""
    out = [(a, b, True, len(waves) == 2) for a, b in zip(waves, waves[1:])]
    if len(waves) > 2:
        out.append((waves[0], waves[-1], False, True))
    return out


def _unit_keys(prep: _Prepared, rows: np.ndarray, unit: str, k: int) -> np.ndarray:
    """A key per row (rows in sorted order) that changes exactly where a new resampling unit starts.

    block: each interview's answers cut into k contiguous runs of about equal size (whole answers;
    an answer belongs to the block where it starts), so talk that drifts within an interview (a
    question's topic, a lesson's phase) moves as a whole, not sentence by sentence. A fixed count,
    not a fixed size: how far talk hangs together grows with the interview."""
    if unit == "utterance":
        return np.arange(len(rows))
    if unit == "turn":
        return prep.turn[rows]
    interview = prep.interview[rows]
    if unit == "interview":
        return interview
    starts = np.flatnonzero(np.r_[True, interview[1:] != interview[:-1]])
    size = np.diff(np.r_[starts, len(rows)])
    offset = np.arange(len(rows)) - np.repeat(starts, size)  # position within the interview
    turn = prep.turn[rows]
    turn_start = np.r_[True, turn[1:] != turn[:-1]]
    first = np.maximum.accumulate(np.where(turn_start, np.arange(len(rows)), 0))  # the answer's first row
    return interview * (k + 1) + (offset[first] * k) // np.repeat(size, size)


def _units(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start rows and sizes of the runs of equal keys."""
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if len(keys) else np.zeros(0, dtype=np.int64)
    return starts, np.diff(np.r_[starts, len(keys)]).astype(np.float64)


def _sums(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    return np.add.reduceat(values, starts, axis=0)


def resample_unit_for(n_interviews_from: int, n_interviews_to: int, configured: str) -> str:
    """auto: whole interviews when either wave has two or more of the speaker's interviews (the
    interview is then the unit that varies), else contiguous blocks of answers within the interview."""
    if configured != "auto":
        return configured
    return "interview" if max(n_interviews_from, n_interviews_to) >= 2 else "block"


@dataclass
class _Units:
    """One wave pair's resampling units: feature sums per unit, utterances per unit, and the
    permutations (every labelling when there are few, else a seeded random sample)."""

    n_from: np.ndarray
    n_to: np.ndarray
    masks: np.ndarray
    exact: bool

    @property
    def sizes(self) -> np.ndarray:
        return np.concatenate([self.n_from, self.n_to])

    @property
    def p_min(self) -> float:
        return 1.0 / len(self.masks) if self.exact else 1.0 / (len(self.masks) + 1)

    def p(self, observed: float, null: np.ndarray) -> float:
        return exact_p(observed, null) if self.exact else permutation_p(observed, null)


def _pair_units(
    prep: _Prepared, ia: np.ndarray, ib: np.ndarray, unit: str, s: ShiftSettings, rng
) -> tuple[_Units, tuple]:
    k = s.blocks_per_interview
    (st_a, n_a), (st_b, n_b) = _units(_unit_keys(prep, ia, unit, k)), _units(_unit_keys(prep, ib, unit, k))
    ma, m = len(n_a), len(n_a) + len(n_b)
    R = s.permutations
    exact = labelling_count(ma, m) <= R
    masks = all_label_masks(ma, m) if exact else label_masks(rng, ma, m, R)
    return _Units(n_a, n_b, masks, exact), (st_a, st_b)


def _permutation(units: _Units, SA: np.ndarray, SB: np.ndarray, distance) -> tuple[float, np.ndarray]:
    """Observed distance of the per-utterance means and its permutation null over whole units."""
    observed = float(distance(SA.sum(axis=0) / units.n_from.sum(), SB.sum(axis=0) / units.n_to.sum()))
    null = distance(*split_means(units.masks, np.concatenate([SA, SB]), units.sizes))
    return observed, null


def _pair_stats(
    prep: _Prepared, sa: slice, sb: slice, seed: int, key: tuple, s: ShiftSettings, timing: dict[str, float]
) -> dict:
    B, level = s.bootstrap, s.ci_level
    ia, ib = np.arange(sa.start, sa.stop), np.arange(sb.start, sb.stop)
    Pa, Pb = prep.P[ia], prep.P[ib]
    share_a, share_b = Pa.mean(axis=0), Pb.mean(axis=0)
    unit = resample_unit_for(len(np.unique(prep.interview[ia])), len(np.unique(prep.interview[ib])), s.resample_unit)
    units, (st_a, st_b) = _pair_units(prep, ia, ib, unit, s, rng_for(seed, "permutation", *key))
    n_a, n_b = units.n_from, units.n_to
    out = {
        "share_from": share_a,
        "share_to": share_b,
        "change": share_b - share_a,
        "resample_unit": unit,
        "n_units_from": len(n_a),
        "n_units_to": len(n_b),
        "p_min": units.p_min,
        "labellings": labelling_count(len(n_a), len(n_a) + len(n_b)),
    }
    SPa, SPb = _sums(Pa, st_a), _sums(Pb, st_b)
    # The change per theme at each level with its between-unit variance, for the moderated and group tests.
    out["moments"] = {"dimension": pair_moments(SPa, n_a, SPb, n_b)}
    if prep.concept_names:
        out["moments"]["concept"] = pair_moments(
            _sums(prep.concept_one_hot(ia), st_a), n_a, _sums(prep.concept_one_hot(ib), st_b), n_b
        )
    if prep.code is not None:
        SCa, SCb = _sums(prep.one_hot(ia), st_a), _sums(prep.one_hot(ib), st_b)
        if prep.code_ids:
            out["moments"]["code"] = pair_moments(SCa, n_a, SCb, n_b)
    if prep.X is not None:
        SXa, SXb = _sums(prep.X[ia], st_a), _sums(prep.X[ib], st_b)

    # Permutation: the same units change wave as wholes, keeping each wave's unit count.
    t0 = time.perf_counter()
    out["jsd"], null = _permutation(units, SPa, SPb, js_distance)
    out["p_value"], out["jsd_noise"] = units.p(out["jsd"], null), float(np.mean(null))
    if prep.code is not None:  # code profiles are shares of assigned utterances: js_distance normalises
        out["jsd_codes"] = float(js_distance(SCa.sum(axis=0), SCb.sum(axis=0)))
        out["p_codes"] = units.p(
            out["jsd_codes"], js_distance(*split_means(units.masks, np.concatenate([SCa, SCb]), units.sizes))
        )
    if prep.X is not None:
        out["semantic_drift"], null_x = _permutation(units, SXa, SXb, cosine_distance)
        # Topic drifts within an interview, and blocks of one interview cannot stand for another
        # interview: a p-value for semantic drift needs whole interviews (bench/shift_placebo.py).
        out["p_semantic"] = units.p(out["semantic_drift"], null_x) if unit != "block" else None
        # The drift that exchangeable units give, from the same permutations: about 1 without change.
        out["semantic_noise"] = float(np.mean(null_x))
        out["semantic_ratio"] = out["semantic_drift"] / out["semantic_noise"] if out["semantic_noise"] > 0 else np.nan
    timing["permutation"] += time.perf_counter() - t0

    # Bootstrap: resample the same units within each wave with replacement.
    t0 = time.perf_counter()
    rng = rng_for(seed, "bootstrap", *key)
    ka, kb = bootstrap_counts(rng, len(n_a), B), bootstrap_counts(rng, len(n_b), B)
    boot_a, boot_b = resampled_means(ka, SPa, n_a), resampled_means(kb, SPb, n_b)
    out["jsd_ci"] = distance_interval(js_distance(boot_a, boot_b), out["jsd"], level)
    out["change_ci"] = percentile_interval((boot_b - boot_a).T, level)
    if prep.code is not None:
        out["jsd_codes_ci"] = distance_interval(js_distance(ka @ SCa, kb @ SCb), out["jsd_codes"], level)
    if prep.X is not None:
        out["semantic_drift_ci"] = distance_interval(
            cosine_distance(resampled_means(ka, SXa, n_a), resampled_means(kb, SXb, n_b)), out["semantic_drift"], level
        )
    timing["bootstrap"] += time.perf_counter() - t0

    if prep.Q is not None:
        t0 = time.perf_counter()
        out.update(_question_matched(prep, ia, ib, unit, s, rng_for(seed, "matched", *key)))
        timing["question_matched"] += time.perf_counter() - t0
    return out


def _question_matched(prep: _Prepared, ia: np.ndarray, ib: np.ndarray, unit: str, s: ShiftSettings, rng) -> dict:
    """The shift over answers to questions asked in both waves: an answer counts when its question
    has a counterpart in the other wave at cosine similarity >= question_match_similarity. What is
    left of the raw shift here is not explained by the interview guide having changed."""
    qa, qb = prep.question[ia], prep.question[ib]
    out: dict[str, float] = {"n_matched_from": 0, "n_matched_to": 0}
    if not (qa >= 0).any() or not (qb >= 0).any():
        return out
    ua, ub = np.unique(qa[qa >= 0]), np.unique(qb[qb >= 0])
    assert prep.Q is not None  # _pair_stats calls this only with question vectors
    sim = prep.Q[ua] @ prep.Q[ub].T
    thr = s.question_match_similarity
    keep_a, keep_b = ia[np.isin(qa, ua[sim.max(axis=1) >= thr])], ib[np.isin(qb, ub[sim.max(axis=0) >= thr])]
    out.update(n_matched_from=len(keep_a), n_matched_to=len(keep_b))
    if len(keep_a) < s.min_utterances_per_wave or len(keep_b) < s.min_utterances_per_wave:
        return out
    units, (st_a, st_b) = _pair_units(prep, keep_a, keep_b, unit, s, rng)
    jsd, null = _permutation(units, _sums(prep.P[keep_a], st_a), _sums(prep.P[keep_b], st_b), js_distance)
    out.update(jsd_matched=jsd, p_matched=units.p(jsd, null))
    return out


def evidence(P: np.ndarray) -> float:
    """How far the units' probabilities are from uniform, 0 (every unit uniform) to 1 (every unit
    certain): the mean of (max probability - 1/K) / (1 - 1/K)."""
    K = P.shape[1]
    if len(P) == 0 or K < 2:
        return float("nan")
    return float(np.mean((P.max(axis=1) - 1.0 / K) / (1.0 - 1.0 / K)))


# ---------------------------------------------------------------- tables


def _col(values, type_: pa.DataType) -> pa.Array:
    """NaN and None become null, so R and pandas see missing values, not NaN."""
    if pa.types.is_floating(type_):
        return pa.array(
            np.asarray([np.nan if v is None else v for v in values], dtype=np.float64), type=type_, from_pandas=True
        )
    # pandas turns missing strings (e.g. a role no speakers.csv gave) into NaN
    return pa.array([None if isinstance(v, float) and np.isnan(v) else v for v in values], type=type_)


def _table(columns: dict[str, list], sch: pa.Schema) -> pa.Table:
    return pa.Table.from_arrays([_col(columns[f.name], f.type) for f in sch], schema=sch)


def _speaker_waves(prep: _Prepared, min_n: int) -> pa.Table:
    role = dict(zip(prep.speakers["speaker_id"], prep.speakers["speaker_role"]))
    cols: dict[str, list] = {f.name: [] for f in schema.SPEAKER_WAVES}
    K = len(prep.dimensions)
    for sid, wave, n_spoken in prep.spoken.sort_values(["speaker_id", "wave"]).itertuples(index=False):
        start, stop = prep.blocks.get((sid, wave), (0, 0))
        P = prep.P[start:stop]
        n = len(P)
        share = P.mean(axis=0) if n else np.full(K, np.nan)
        argmax = np.bincount(P.argmax(axis=1), minlength=K) / n if n else np.full(K, np.nan)
        for k, dim in enumerate(prep.dimensions):
            for name, value in (
                ("speaker_id", sid),
                ("speaker_role", role.get(sid)),
                ("wave", wave),
                ("dimension", dim),
                ("n_spoken", n_spoken),
                ("n_utterances", n),
                ("share", share[k]),
                ("argmax_share", argmax[k]),
                ("too_few", n < min_n),
            ):
                cols[name].append(value)
    return _table(cols, schema.SPEAKER_WAVES)


def _speaker_codes(prep: _Prepared) -> pa.Table:
    if prep.code is None:
        return schema.SPEAKER_CODES.empty_table()
    role = dict(zip(prep.speakers["speaker_id"], prep.speakers["speaker_role"]))
    cols: dict[str, list] = {f.name: [] for f in schema.SPEAKER_CODES}
    for (sid, wave), (start, stop) in sorted(prep.blocks.items()):
        counts = prep.one_hot(np.arange(start, stop)).sum(axis=0)
        n_assigned = int(counts.sum())
        for j in np.flatnonzero(counts):
            for name, value in (
                ("speaker_id", sid),
                ("speaker_role", role.get(sid)),
                ("wave", wave),
                ("code_id", prep.code_ids[j]),
                ("n_utterances", int(counts[j])),
                ("share", counts[j] / n_assigned),
                ("n_assigned", n_assigned),
                ("n_unassigned", stop - start - n_assigned),
            ):
                cols[name].append(value)
    return _table(cols, schema.SPEAKER_CODES)


def _bootstrap_mean(values: np.ndarray, rng: np.random.Generator, reps: int, level: float):
    """Mean over speakers with a percentile interval from resampling speakers (vectorised)."""
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return 0, None, None, None
    if len(values) < 2 or reps < 1:
        return len(values), float(values.mean()), None, None
    means = values[rng.integers(0, len(values), size=(reps, len(values)))].mean(axis=1)
    lo, hi = percentile_interval(means, level)
    return len(values), float(values.mean()), float(lo), float(hi)


def _groups(frame: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    out = [("all", frame)]
    for role in sorted(frame["speaker_role"].dropna().unique()):
        out.append((role, frame[frame["speaker_role"] == role]))
    return out


def _group_shifts(shifts: pd.DataFrame, dims: pd.DataFrame, s: ShiftSettings) -> pa.Table:
    seed = s.seed
    cols: dict[str, list] = {f.name: [] for f in schema.GROUP_SHIFTS}
    ok = shifts[shifts["status"] == "ok"]
    ok_dims = dims.merge(ok[["speaker_id", "wave_from", "wave_to"]], on=["speaker_id", "wave_from", "wave_to"])
    p_of = {"jsd": "p_value", "jsd_codes": "p_codes", "semantic_drift": "p_semantic"}
    for group, frame in _groups(ok):
        for (wf, wt), pair in frame.groupby(["wave_from", "wave_to"], sort=True):
            series = [
                (m, None, pair[m].to_numpy(dtype=np.float64), pair.get(p_of.get(m)))
                for m in ("jsd", "jsd_codes", "semantic_drift", "semantic_ratio")
            ]
            pd_ = ok_dims[
                (ok_dims["wave_from"] == wf)
                & (ok_dims["wave_to"] == wt)
                & ok_dims["speaker_id"].isin(pair["speaker_id"])
            ]
            for dim, d in pd_.groupby("dimension", sort=False):
                series.append(("change", dim, d["change"].to_numpy(dtype=np.float64), None))
            for measure, dim, values, pvals in series:
                rng = rng_for(seed, "group", group, wf, wt, measure, dim)
                n, mean, lo, hi = _bootstrap_mean(values, rng, s.bootstrap, s.ci_level)
                n_sig = int((pvals.to_numpy(dtype=np.float64) < s.alpha).sum()) if pvals is not None else None
                for name, value in (
                    ("group", group),
                    ("wave_from", wf),
                    ("wave_to", wt),
                    ("measure", measure),
                    ("dimension", dim),
                    ("n_speakers", n),
                    ("mean", mean),
                    ("ci_low", lo),
                    ("ci_high", hi),
                    ("n_significant", n_sig if n else None),
                ):
                    cols[name].append(value)
    return _table(cols, schema.GROUP_SHIFTS)


def _group_trajectory(waves: pd.DataFrame, s: ShiftSettings) -> pa.Table:
    seed = s.seed
    cols: dict[str, list] = {f.name: [] for f in schema.GROUP_TRAJECTORY}
    enough = waves[~waves["too_few"]]
    for group, frame in _groups(enough):
        for (wave, dim), d in frame.groupby(["wave", "dimension"], sort=False):
            rng = rng_for(seed, "trajectory", group, wave, dim)
            n, mean, lo, hi = _bootstrap_mean(d["share"].to_numpy(dtype=np.float64), rng, s.bootstrap, s.ci_level)
            n_utt = int(d["n_utterances"].sum())
            pooled = float((d["share"] * d["n_utterances"]).sum() / n_utt) if n_utt else None
            for name, value in (
                ("group", group),
                ("wave", wave),
                ("dimension", dim),
                ("n_speakers", n),
                ("n_utterances", n_utt),
                ("mean_share", mean),
                ("ci_low", lo),
                ("ci_high", hi),
                ("pooled_share", pooled),
            ):
                cols[name].append(value)
    table = _table(cols, schema.GROUP_TRAJECTORY)
    return table.sort_by([("group", "ascending"), ("wave", "ascending")]) if table.num_rows else table


def _verdict(row: dict, st: dict, unmapped: float, ev: float, s: ShiftSettings) -> None:
    """No verdict without evidence: profiles the map could not fill, or near-uniform ones, get a
    status instead of a p-value; a permutation test whose units can never reach alpha gets a status too."""
    row.update(unmapped_share=unmapped, evidence=ev)
    if row["status"] != "ok":
        return
    if unmapped > s.max_unmapped_share:
        row.update(
            status="no_evidence",
            reason=f"{unmapped:.0%} of the units are unmapped (more than "
            f"max_unmapped_share {s.max_unmapped_share:.0%}): the profiles say nothing about this speaker",
        )
    elif ev < s.min_evidence:
        row.update(
            status="no_evidence",
            reason=f"the units' probabilities are near uniform (evidence {ev:.2f} < min_evidence {s.min_evidence})",
        )
    elif row["p_method"] == "permutation" and st["p_min"] > s.alpha:
        row.update(
            status="too_few_units",
            reason=f"{st['n_units_from']} + {st['n_units_to']} {st['resample_unit']} "
            f"units: p cannot fall below {st['p_min']:.3f}",
        )
    if row["status"] == "no_evidence":
        for key in ("p_value", "p_codes", "p_semantic", "p_matched"):
            row[key] = None


def _add_q_values(rows: list[dict]) -> None:
    """Benjamini-Hochberg q-values over the speakers' pairs with status ok, one family per p column."""
    ok = [r for r in rows if r["status"] == "ok"]
    for p_col, q_col in (("p_value", "q_value"), ("p_codes", "q_codes"), ("p_semantic", "q_semantic")):
        q = benjamini_hochberg(np.array([np.nan if r.get(p_col) is None else r[p_col] for r in ok], dtype=float))
        for r, v in zip(ok, q):
            r[q_col] = None if np.isnan(v) else float(v)


def speaker_test_for(labellings: int, s: ShiftSettings) -> str:
    """The test of a speaker's profile change: the exact or sampled permutation test where whole
    units allow at least shift.min_labellings labellings (its p-values can then be small enough for
    q-values), else the moderated t, whose variance borrows strength from the other speakers."""
    if s.speaker_test != "auto":
        return s.speaker_test
    return "permutation" if labellings >= s.min_labellings else "moderated_t"


def _apply_moderated(
    rows: list[dict], dim_rows: list[dict], estimates: dict, prep: _Prepared, fits_by: dict, s: ShiftSettings
) -> None:
    """Moderated p-values and intervals per dimension, shrunken changes, and the profile p of the
    pairs whose test is the moderated t."""
    by_key = {(r["speaker_id"], r.get("wave_from"), r.get("wave_to")): r for r in rows}
    dims_by_key: dict[tuple, list[dict]] = {}
    for d in dim_rows:
        dims_by_key.setdefault((d["speaker_id"], d["wave_from"], d["wave_to"]), []).append(d)
    for key, ds in dims_by_key.items():
        if key not in estimates:  # too few utterances or no evidence: no interval either
            for d in ds:
                d.update(change_ci_low=None, change_ci_high=None)
    for key, (test, shrunk) in speaker_tests(list(estimates.values()), "dimension", fits_by, s).items():
        for k, d in enumerate(dims_by_key.get(key, [])):
            d.update(
                change_se=float(test["se"][k]),
                change_ci_low=float(test["ci_low"][k]),
                change_ci_high=float(test["ci_high"][k]),
                df=float(test["df"][k]),
                p_value=float(test["p"][k]),
                change_shrunk=float(shrunk[k]),
            )
        row = by_key[key]
        if row["p_method"] == "moderated_t" and row["status"] == "ok":
            row["p_value"] = test["p_profile"]
    ok = [d for d in dim_rows if d.get("p_value") is not None and np.isfinite(d["p_value"])]
    for d, q in zip(ok, benjamini_hochberg(np.array([d["p_value"] for d in ok], dtype=float))):
        d["q_value"] = float(q)


COMPARED = ("ok", "no_evidence", "too_few_units")  # statuses of wave pairs that were compared


def missing_shift_reason(statuses: Iterable[str]) -> str | None:
    """Why a run has no shift to report, and how to give it one; None when some speaker's waves were compared."""
    counts = Counter(statuses)
    if any(counts.get(s) for s in COMPARED if s != "no_evidence"):
        return None
    if counts.get("no_evidence"):  # compared, but the coding says nothing about anyone's talk
        return (
            f"every speaker's waves were compared, but the coding gives no evidence for any of them "
            f"({counts['no_evidence']} wave pair(s) no_evidence: too much talk the map left unmapped, or "
            "probabilities near uniform): code a few interviews by hand and run `themeshift learn RUN --human "
            "CODES`, or use a framework closer to what people talk about; shifts.parquet's reason column says more"
        )
    if set(counts) <= {"no_wave"}:
        return (
            "no interview has a wave, so nobody's talk can be compared across waves: give each interview its wave "
            "in manifest.csv (`themeshift init TRANSCRIPTS` drafts one from folder and file names, e.g. "
            "--waves '{speaker}_time{wave}' for sarah_time1.txt) or through input.filename_template"
        )
    found = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    return (
        f"no speaker has two waves with enough coded utterances to compare ({found}): there is no shift to report; "
        "shifts.parquet's reason column says what each speaker lacks"
    )


def compute_shifts(
    utterances: pa.Table,
    utterance_dimensions: pa.Table,
    s: ShiftSettings,
    embeddings=None,
    assignments: pa.Table | None = None,
    progress: Progress | None = None,
    questions: pa.Table | None = None,
    interviews: pa.Table | None = None,
    speakers: pa.Table | None = None,
) -> ShiftResult:
    """All shift tables from the run's tables (a pure function of its inputs, config and seed).

    embeddings (optional): a table, or io.vectors.StoredEmbeddings to read only the analysed rows.

    questions (optional, schema.QUESTIONS): the embedded interviewer question each answer follows,
    for the question-matched shift.

    interviews, speakers (optional): the segment stage's tables, whose manifest and speakers.csv columns
    shift.group_by may name."""
    seed = s.seed
    min_n = s.min_utterances_per_wave
    prep = _prepare(utterances, utterance_dimensions, s, embeddings, assignments, questions, interviews, speakers)
    group_of = dict(zip(prep.speakers["speaker_id"], prep.speakers["group"]))
    estimates: dict[tuple, PairEstimate] = {}
    waves_of = prep.spoken.groupby("speaker_id")["wave"].apply(lambda w: sorted(int(x) for x in w)).to_dict()
    size = {k: stop - start for k, (start, stop) in prep.blocks.items()}
    timing = cast(dict[str, float], Counter())  # seconds per step (typeshed's Counter counts ints only)
    rows: list[dict] = []
    dim_rows: list[dict] = []
    todo = [
        (sid, role, p)
        for sid, role, _ in prep.speakers.itertuples(index=False)
        for p in (_pairs(waves_of.get(sid, [])) or (None,))
    ]
    for done, (sid, role, pair) in enumerate(todo, 1):
        row = {"speaker_id": sid, "speaker_role": role, "is_consecutive": False, "is_first_last": False}
        waves = waves_of.get(sid, [])
        if pair is None:
            row.update(
                wave_from=waves[0] if waves else None,
                n_from=size.get((sid, waves[0]), 0) if waves else None,
                status="single_wave" if waves else "no_wave",
                reason=f"only wave {waves[0]} recorded" if waves else "no unit of this speaker has a wave",
            )
            rows.append(row)
            continue
        wf, wt, row["is_consecutive"], row["is_first_last"] = pair
        na, nb = size.get((sid, wf), 0), size.get((sid, wt), 0)
        row.update(wave_from=wf, wave_to=wt, wave_gap=wt - wf, n_from=na, n_to=nb, status="ok")
        short = [
            f"wave {w} has {n} coded utterance{'s' if n != 1 else ''}" for w, n in ((wf, na), (wt, nb)) if n < min_n
        ]
        if short:
            row.update(status="too_few_utterances", reason="; ".join(short) + f" (minimum {min_n})")
        if na and nb:
            sa, sb = slice(*prep.blocks[(sid, wf)]), slice(*prep.blocks[(sid, wt)])
            st = _pair_stats(prep, sa, sb, seed, (sid, wf, wt), s, timing)
            up, down = int(np.argmax(st["change"])), int(np.argmin(st["change"]))
            row.update(
                jsd=st["jsd"],
                jsd_ci_low=st["jsd_ci"][0],
                jsd_ci_high=st["jsd_ci"][1],
                jsd_noise=st["jsd_noise"],
                p_value=st["p_value"],
                resample_unit=st["resample_unit"],
                n_units_from=st["n_units_from"],
                n_units_to=st["n_units_to"],
                p_min=st["p_min"],
                from_dimension=prep.dimensions[down],
                to_dimension=prep.dimensions[up],
                direction=f"{prep.dimensions[down]} -> {prep.dimensions[up]}",
                max_change=float(st["change"][up]),
            )
            if "jsd_codes" in st:
                row.update(
                    jsd_codes=st["jsd_codes"],
                    jsd_codes_ci_low=st["jsd_codes_ci"][0],
                    jsd_codes_ci_high=st["jsd_codes_ci"][1],
                    p_codes=st["p_codes"],
                )
            if "semantic_drift" in st:
                row.update(
                    semantic_drift=st["semantic_drift"],
                    semantic_drift_ci_low=st["semantic_drift_ci"][0],
                    semantic_drift_ci_high=st["semantic_drift_ci"][1],
                    semantic_noise=st["semantic_noise"],
                    semantic_ratio=st["semantic_ratio"],
                    p_semantic=st["p_semantic"],
                )
            row.update({k: st.get(k) for k in ("jsd_matched", "p_matched", "n_matched_from", "n_matched_to")})
            row["p_method"] = speaker_test_for(st["labellings"], s)
            if row["p_method"] == "moderated_t":
                row["p_value"] = None  # filled once every speaker's variance is known
            unmapped = max(prep.unmapped.get((sid, wf), 0.0), prep.unmapped.get((sid, wt), 0.0))
            _verdict(row, st, unmapped, min(evidence(prep.P[sa]), evidence(prep.P[sb])), s)
            if row["status"] in ("ok", "too_few_units"):
                group = group_of.get(sid)
                estimates[(sid, wf, wt)] = PairEstimate(
                    sid,
                    None if isinstance(group, float) else group,
                    wf,
                    wt,
                    row["is_first_last"],
                    st["resample_unit"],
                    st["moments"],
                )
            for k, dim in enumerate(prep.dimensions):
                dim_rows.append(
                    {
                        "speaker_id": sid,
                        "speaker_role": role,
                        "wave_from": wf,
                        "wave_to": wt,
                        "dimension": dim,
                        "share_from": st["share_from"][k],
                        "share_to": st["share_to"][k],
                        "change": st["change"][k],
                        "change_ci_low": st["change_ci"][0][k],
                        "change_ci_high": st["change_ci"][1][k],
                    }
                )
        rows.append(row)
        if progress:
            progress("shift speakers", done, len(todo))

    t0 = time.perf_counter()
    moderate_all(list(estimates.values()))
    themes = {"dimension": prep.dimensions, "concept": prep.concept_names, "code": [str(c) for c in prep.code_ids]}
    changes, contrasts, fits_by = group_tables(list(estimates.values()), themes, s, prep.warnings)
    _apply_moderated(rows, dim_rows, estimates, prep, fits_by, s)
    for row in rows:
        if "p_method" in row:
            row["significant"] = (
                None if row.get("p_value") is None else bool(row["p_value"] < s.alpha and row["status"] == "ok")
            )
    codes_change = speaker_theme_changes(estimates, fits_by, prep, s)
    timing["moderated_and_groups"] += time.perf_counter() - t0
    _add_q_values(rows)
    shifts = _table({f.name: [r.get(f.name) for r in rows] for f in schema.SHIFTS}, schema.SHIFTS)
    shift_dims = _table(
        {f.name: [r.get(f.name) for r in dim_rows] for f in schema.SHIFT_DIMENSIONS}, schema.SHIFT_DIMENSIONS
    )
    t0 = time.perf_counter()
    speaker_waves = _speaker_waves(prep, min_n)
    group_shifts = _group_shifts(shifts.to_pandas(), shift_dims.to_pandas(), s)
    group_trajectory = _group_trajectory(speaker_waves.to_pandas(), s)
    timing["groups"] += time.perf_counter() - t0
    return ShiftResult(
        speaker_waves,
        _speaker_codes(prep),
        shifts,
        shift_dims,
        group_shifts,
        group_trajectory,
        _frame_table(changes, schema.GROUP_CHANGES),
        _frame_table(contrasts, schema.GROUP_CONTRASTS),
        codes_change,
        prep.warnings,
        {k: round(v, 3) for k, v in timing.items()},
    )


def _frame_table(frame: pd.DataFrame, sch: pa.Schema) -> pa.Table:
    if frame.empty:
        return sch.empty_table()
    return _table({f.name: frame[f.name].tolist() if f.name in frame else [None] * len(frame) for f in sch}, sch)


def speaker_theme_changes(estimates: dict, fits_by: dict, prep: _Prepared, s: ShiftSettings) -> pa.Table:
    """shift_codes_change: per speaker and wave pair, every concept and code the speaker used in
    either wave, with its moderated interval and its change shrunk towards the group's."""
    role = dict(zip(prep.speakers["speaker_id"], prep.speakers["speaker_role"]))
    cols: dict[str, list] = {f.name: [] for f in schema.SHIFT_CODES_CHANGE}
    names = {"concept": prep.concept_names, "code": [str(c) for c in prep.code_ids]}
    tests = {level: speaker_tests(list(estimates.values()), level, fits_by, s) for level in ("concept", "code")}
    for (sid, wf, wt), est in sorted(estimates.items()):
        for level in ("concept", "code"):
            if level not in est.moments:
                continue
            m = est.moments[level]
            test, shrunk = tests[level][(sid, wf, wt)]
            for j in np.flatnonzero((m.share_from > 0) | (m.share_to > 0)):
                for name, value in (
                    ("speaker_id", sid),
                    ("speaker_role", role.get(sid)),
                    ("group", est.group),
                    ("wave_from", wf),
                    ("wave_to", wt),
                    ("level", level),
                    ("theme", names[level][j]),
                    ("code_id", prep.code_ids[j] if level == "code" else None),
                    ("share_from", m.share_from[j]),
                    ("share_to", m.share_to[j]),
                    ("change", m.change[j]),
                    ("ci_low", test["ci_low"][j]),
                    ("ci_high", test["ci_high"][j]),
                    ("change_shrunk", shrunk[j]),
                ):
                    cols[name].append(value)
    return _table(cols, schema.SHIFT_CODES_CHANGE)
