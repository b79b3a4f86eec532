"""Power of the shift test on synthetic speakers made of real human-coded speech (TalkMoves).

Each synthetic teacher has two waves, each one interview of about N coded sentences put together
from stretches of real lessons drawn from random lessons, so lessons and topics vary freely
within and between waves. Two designs: stretches of about 10 sentences (whole turns; the talk
around a task hangs together, as in a real interview) and single answers (one turn each: the
sentences of an answer still belong together, the answers do not). Wave 1 draws stretches at random; wave 2
draws them tilted towards stretches rich in one dimension (community or content, alternately)
so that its expected share rises by `delta`. Null speakers (delta 0) have the same expected mix
in both waves. The true change of each speaker is known from the human codes.

Profiles the test sees:
- human:     the human codes themselves (the codebook's four groups; the test alone is judged);
- zero_shot: the map stage's similarity scorer with configs/frameworks/talkmoves.yaml (teacher moves)
             on MiniLM embeddings (no code blending);
- learned:   a logistic regression on the MiniLM embeddings trained on 20% of the lessons (grouped,
             class-balanced), applied to the other 80%, from which the speakers are then built.

For each: the false-positive rate at delta 0 (target <= 0.07), power against delta (target >= 0.8
at 0.15 with 100 sentences per wave), and the Spearman between the test's magnitude (jsd) and the
true change (jsd of the human-coded profiles), under the clustered scheme (auto: contiguous
blocks of answers) and the old one (every answer independent), in one run.

Usage: python bench/shift_power.py [--speakers 200] [--profiles human,zero_shot,learned]
writes bench/results/shift_power.json
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from shift_corpora import GROUPS, REPO, encode, one_hot, shift_tables, talkmoves_teacher_sentences

from _results import save  # noqa: E402

from pipeline.config import load_config
from pipeline.settings import ShiftSettings, settings_for
from pipeline.shift import compute_shifts
from pipeline.shift_stats import js_distance

DELTAS = [0.0, 0.05, 0.10, 0.15, 0.20, 0.30]
SIZES = [100, 200]
TARGETS = ["community", "content"]
STRETCHES = {"stretches_of_10": 10, "single_answers": 1}  # sentences per drawn stretch (whole turns)


def stretches(df: pd.DataFrame, size: int, unit: str = "interview_id") -> list[np.ndarray]:
    """Row indices of contiguous whole-turn stretches of at least `size` sentences within each lesson
    (or each group of `unit`)."""
    out = []
    for _, g in df.groupby(unit, sort=True):
        current: list[int] = []
        for _, turn in g.groupby("turn", sort=True):
            current.extend(turn.index)
            if len(current) >= size:
                out.append(np.asarray(current))
                current = []
    return out


def tilt(shares: np.ndarray, target: float) -> np.ndarray:
    """Weights w ∝ exp(theta * share) over stretches whose weighted mean share is `target`."""
    lo, hi = -200.0, 200.0
    for _ in range(80):
        theta = (lo + hi) / 2
        w = np.exp(theta * (shares - shares.max()))
        lo, hi = (theta, hi) if (w * shares).sum() / w.sum() < target else (lo, theta)
    return w / w.sum()


def build_speakers(df: pd.DataFrame, pool: list[np.ndarray], n_speakers: int, rng) -> pd.DataFrame:
    truth = one_hot(df["group"], GROUPS)
    turn_of = df["turn"].to_numpy()
    shares = {t: np.array([truth[s, GROUPS.index(t)].mean() for s in pool]) for t in TARGETS}
    sizes = np.array([len(s) for s in pool])
    uniform = np.full(len(pool), 1 / len(pool))
    cols: dict[str, list] = {k: [] for k in ("row", "speaker_id", "wave", "turn", "n", "delta", "target")}
    for n in SIZES:
        for delta in DELTAS:
            tilted = {t: tilt(shares[t], float((uniform * shares[t]).sum()) + delta) for t in TARGETS} if delta \
                else {t: uniform for t in TARGETS}
            for i in range(n_speakers):
                target = TARGETS[i % len(TARGETS)]
                sid = f"n{n}-d{delta:.2f}-{target}-{i:03d}"
                for wave, weights in ((1, uniform), (2, tilted[target])):
                    # draw stretches until the wave holds n sentences
                    picks = rng.choice(len(pool), size=n, p=weights)
                    picks = picks[: int(np.searchsorted(np.cumsum(sizes[picks]), n)) + 1]
                    rows = np.concatenate([pool[k] for k in picks])
                    seq = np.repeat(np.arange(len(picks)), sizes[picks])
                    m = len(rows)
                    cols["row"].append(rows)
                    cols["turn"].append(seq * 10_000 + turn_of[rows])
                    for key, value in (("speaker_id", sid), ("wave", wave), ("n", n), ("delta", delta),
                                       ("target", target)):
                        cols[key].append(np.full(m, value, dtype=object if isinstance(value, str) else None))
    out = pd.DataFrame({k: np.concatenate(v) for k, v in cols.items()})
    out["interview_id"] = out["speaker_id"] + "-w" + out["wave"].astype(str)
    return out


def evaluate(speakers: pd.DataFrame, P: np.ndarray, dims: list[str], truth: np.ndarray, scheme: str) -> dict:
    utterances, dimensions = shift_tables(speakers, P[speakers["row"].to_numpy()], dims)
    cfg = load_config(overrides={"shift": {"resample_unit": scheme, "bootstrap": 0, "permutations": 1000,
                                           "min_utterances_per_wave": 20, "min_evidence": 0.0,
                                           "max_unmapped_share": 1.0}})
    s = compute_shifts(utterances, dimensions, settings_for(ShiftSettings, cfg)).shifts.to_pandas()
    s = s.set_index("speaker_id")
    meta = speakers.groupby("speaker_id")[["n", "delta", "target"]].first()
    t = pd.DataFrame(truth[speakers["row"].to_numpy()], columns=GROUPS)
    t[["speaker_id", "wave"]] = speakers[["speaker_id", "wave"]].to_numpy()
    prof = t.groupby(["speaker_id", "wave"])[GROUPS].mean()
    true_jsd = pd.Series(js_distance(prof.xs(1, level="wave").to_numpy(), prof.xs(2, level="wave").to_numpy()),
                         index=prof.xs(1, level="wave").index)
    s = s.join(meta).assign(true_jsd=true_jsd)
    out = {"scheme": scheme, "rejection": {}, "spearman": {}}
    for n, g in s.groupby("n"):
        out["rejection"][int(n)] = {f"{d:.2f}": round(float((gd["p_value"] < 0.05).mean()), 3)
                                    for d, gd in g.groupby("delta")}
        out["spearman"][int(n)] = round(float(spearmanr(g["jsd"], g["true_jsd"]).statistic), 3)
    return out


def learned_probabilities(df: pd.DataFrame, X: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class-balanced logistic regression on 20% of the lessons; returns probabilities for every
    sentence and the mask of held-out (not coded) lessons' sentences."""
    from sklearn.linear_model import LogisticRegression

    lessons = np.array(sorted(df["interview_id"].unique()))
    rng = np.random.default_rng(seed)
    coded = set(rng.choice(lessons, size=round(0.2 * len(lessons)), replace=False))
    train = df["interview_id"].isin(coded).to_numpy()
    model = LogisticRegression(max_iter=2000, class_weight="balanced", C=1.0)
    model.fit(X[train], df["group"].to_numpy()[train])
    proba = model.predict_proba(X)
    order = [list(model.classes_).index(g) for g in GROUPS]
    return proba[:, order], ~train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--speakers", type=int, default=200, help="synthetic speakers per size and effect")
    ap.add_argument("--profiles", default="human,zero_shot,learned")
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    kinds = args.profiles.split(",")
    df = talkmoves_teacher_sentences()
    truth = one_hot(df["group"], GROUPS)
    results: dict = {"deltas": DELTAS, "sizes": SIZES, "speakers_per_cell": args.speakers, "profiles": {}}
    X = None
    if {"zero_shot", "learned"} & set(kinds):
        t0 = time.perf_counter()
        X = encode(df["text"].tolist())
        results["embed_seconds"] = round(time.perf_counter() - t0, 1)
    for kind in kinds:
        started = time.perf_counter()
        rows = np.arange(len(df))
        if kind == "human":
            P, dims = truth, GROUPS
        elif kind == "zero_shot":
            from pipeline.embed import load_encoder
            from pipeline.framework import load_framework
            from pipeline.map import SimilarityMapper, dimension_matrix, embed_framework, restrict_to_roles

            framework = load_framework(REPO / "configs" / "frameworks" / "talkmoves.yaml")
            mapper = SimilarityMapper().fit(embed_framework(framework, load_encoder("minilm")))
            concept_p, _ = restrict_to_roles(mapper.predict_proba(X), framework, ["TEACHER"] * len(X))
            P, dims = concept_p @ dimension_matrix(framework), framework.dimension_ids
        else:
            P, held_out = learned_probabilities(df, X, args.seed)
            dims, rows = GROUPS, np.flatnonzero(held_out)
        results["profiles"][kind] = {"dimensions": dims}
        for design, size in STRETCHES.items():
            pool = stretches(df.iloc[rows], size)
            speakers = build_speakers(df, pool, args.speakers, np.random.default_rng(args.seed))
            results["profiles"][kind][design] = {
                "stretches": len(pool), "schemes": [evaluate(speakers, P, dims, truth, s) for s in ("auto", "turn")]}
        results["profiles"][kind]["seconds"] = round(time.perf_counter() - started, 1)
    for kind, r in results["profiles"].items():
        for design in STRETCHES:
            for sc in r[design]["schemes"]:
                for n in SIZES:
                    rej = sc["rejection"][n]
                    print(f"{kind:9s} {design:16s} {sc['scheme']:5s} n={n:3d}  "
                          + "  ".join(f"d{d}:{v:.3f}" for d, v in rej.items()) + f"  spearman {sc['spearman'][n]:.3f}")
    save("shift_power", results)


if __name__ == "__main__":
    main()
