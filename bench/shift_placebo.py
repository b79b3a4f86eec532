"""Placebo calibration of the shift test on real speech: how often does `shift` call an unchanged
speaker a shifter?

A speaker's talk within one wave is split into two pseudo-waves; nothing changed between them, so
at alpha 0.05 a calibrated test flags about 5%. Splits:

- TalkMoves lesson halves: each lesson's teacher talk, first half of the turns vs second half
  (one interview per pseudo-wave);
- TalkMoves series: the lessons of one teacher's series, earlier lessons vs later ones (whole
  interviews when a pseudo-wave has two or more);
- TalkMoves lesson pairs (stricter than the placebo asks): two consecutive lessons of a series,
  one per pseudo-wave, so everything that differs between two lessons (topic, task, phase)
  counts as noise here;
- AMI meeting halves: each participant's talk in one meeting, first half vs second half
  (profiles from the default framework's zero-shot scorer; semantic drift from MiniLM).

Profiles on TalkMoves are the human codes (the codebook's four groups), so the test alone is
judged. Each split runs under the old schemes (every sentence or every answer independent) and
the clustered one (resample_unit = auto), in one run.

"testable" rates count only the speakers whose units allow p < 0.05 at all (p_min < 0.05): a wave
of under about 60 units in one interview cannot be flagged, which keeps the plain rate low for free.

Usage: python bench/shift_placebo.py [--ami-series N]   writes bench/results/shift_placebo.json
(AMI: the first N of the 32 complete series, segmented and embedded by themeshift; cached after the first run)
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from shift_corpora import GROUPS, ami_sentences, embedding_table, one_hot, shift_tables, \
    talkmoves_teacher_sentences

from _results import save  # noqa: E402

from pipeline.config import load_config
from pipeline.settings import ShiftSettings, settings_for
from pipeline.shift import compute_shifts

SCHEMES = ["utterance", "turn", "auto"]
MIN_PER_WAVE = 20


def halves(df: pd.DataFrame, key: str, prefix: str) -> pd.DataFrame:
    """Each group's rows split at the turn where half its sentences are reached: waves 1 and 2."""
    out = []
    for name, g in df.groupby(key, sort=True):
        middle = g["turn"].iloc[len(g) // 2]
        g = g.assign(speaker_id=f"{prefix}{name}", wave=np.where(g["turn"] >= middle, 2, 1))
        if min((g["wave"] == 1).sum(), (g["wave"] == 2).sum()) >= MIN_PER_WAVE:
            out.append(g)
    return pd.concat(out)  # the frame's index is kept: rows of its probability and embedding matrices


def series_splits(df: pd.DataFrame) -> pd.DataFrame:
    out = []
    for series, g in df.groupby("series", sort=True):
        lessons = g.sort_values(["lesson_number", "interview_id"])["interview_id"].unique()
        if len(lessons) < 2:
            continue
        later = set(lessons[len(lessons) // 2:])
        out.append(g.assign(speaker_id=f"series:{series}", wave=np.where(g["interview_id"].isin(later), 2, 1)))
    return pd.concat(out, ignore_index=True)


def lesson_pairs(df: pd.DataFrame) -> pd.DataFrame:
    out = []
    for series, g in df.groupby("series", sort=True):
        lessons = list(g.sort_values(["lesson_number", "interview_id"])["interview_id"].unique())
        for a, b in zip(lessons, lessons[1:]):
            pair = g[g["interview_id"].isin([a, b])]
            pair = pair.assign(speaker_id=f"pair:{a}|{b}", wave=np.where(pair["interview_id"] == b, 2, 1))
            if min((pair["wave"] == 1).sum(), (pair["wave"] == 2).sum()) >= MIN_PER_WAVE:
                out.append(pair)
    return pd.concat(out, ignore_index=True)


def rates(frame: pd.DataFrame, P: np.ndarray, dims: list[str], X: np.ndarray | None, scheme: str) -> dict:
    utterances, dimensions = shift_tables(frame, P, dims)
    cfg = load_config(overrides={"shift": {"resample_unit": scheme, "bootstrap": 0, "permutations": 1000,
                                           "min_utterances_per_wave": MIN_PER_WAVE}})
    started = time.perf_counter()
    emb = embedding_table(X) if X is not None else None
    s = compute_shifts(utterances, dimensions, settings_for(ShiftSettings, cfg), emb).shifts.to_pandas()
    s = s[s["p_value"].notna()]
    testable = s[s["p_min"] < 0.05]  # units enough for p to reach alpha at all
    out = {"speakers": len(s), "fpr": round(float((s["p_value"] < 0.05).mean()), 4),
           "testable": len(testable), "fpr_testable": round(float((testable["p_value"] < 0.05).mean()), 4),
           "flagged_significant": round(float(s["significant"].astype(bool).mean()), 4),
           "units": s["resample_unit"].value_counts().to_dict(),
           "too_few_units": int((s["status"] == "too_few_units").sum()),
           "seconds": round(time.perf_counter() - started, 2)}
    if X is not None:  # semantic p-values exist only where whole interviews are the unit
        sem, sem_t = s["p_semantic"].dropna(), testable["p_semantic"].dropna()
        out["semantic_tested"] = len(sem)
        out["fpr_semantic"] = round(float((sem < 0.05).mean()), 4) if len(sem) else None
        out["fpr_semantic_testable"] = round(float((sem_t < 0.05).mean()), 4) if len(sem_t) else None
        out["semantic_ratio_median"] = round(float(s["semantic_ratio"].median()), 3)
    return out


def _num(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ami-series", type=int, default=32, help="complete AMI series to use (0: skip AMI)")
    args = ap.parse_args()
    results: dict = {"alpha": 0.05, "target_fpr": 0.07, "splits": {}}
    tm = talkmoves_teacher_sentences()
    splits = {"talkmoves_lesson_halves": halves(tm, "interview_id", "lesson:"),
              "talkmoves_series": series_splits(tm), "talkmoves_lesson_pairs": lesson_pairs(tm)}
    for name, frame in splits.items():
        P = one_hot(frame["group"], GROUPS)
        results["splits"][name] = {scheme: rates(frame, P, GROUPS, None, scheme) for scheme in SCHEMES}
    if args.ami_series:
        from pipeline.embed import load_encoder
        from pipeline.framework import load_framework
        from pipeline.map import SimilarityMapper, dimension_matrix, embed_framework

        utt, X = ami_sentences(args.ami_series)
        framework = load_framework(None)
        fv = embed_framework(framework, load_encoder("minilm"))
        concept_p = SimilarityMapper().fit(fv).predict_proba(X)
        dims = framework.dimension_ids
        P = concept_p @ dimension_matrix(framework)
        split = halves(utt.assign(person_meeting=utt["speaker_id"] + "@" + utt["interview_id"]), "person_meeting", "")
        rows = split.index.to_numpy()
        results["splits"]["ami_meeting_halves"] = {scheme: rates(split, P[rows], dims, X[rows], scheme)
                                                   for scheme in SCHEMES}
        results["ami"] = {"series": args.ami_series, "sentences": int(len(utt)), "people_meetings": int(
            split["speaker_id"].nunique())}
    print(f"{'split':26s} {'scheme':9s} {'speakers':>8s} {'FPR':>6s} {'testable':>8s} {'FPR':>6s} "
          f"{'FPR sem':>8s} {'testable':>8s}  units")
    for name, by_scheme in results["splits"].items():
        for scheme, r in by_scheme.items():
            print(f"{name:26s} {scheme:9s} {r['speakers']:8d} {r['fpr']:6.3f} {r['testable']:8d} "
                  f"{r['fpr_testable']:6.3f} {_num(r.get('fpr_semantic')):>8s} "
                  f"{_num(r.get('fpr_semantic_testable')):>8s}  {r['units']}")
    save("shift_placebo", results)


if __name__ == "__main__":
    main()
