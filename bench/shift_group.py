"""Group-level and per-speaker shift inference on real speech: false-positive rates and power,
side by side with the previous scheme and a naive t-test, in one run.

Synthetic studies are made of real talk. An "interview" is a contiguous stretch of whole turns
from one real lesson (TalkMoves, teacher talk) or one real meeting (AMI, one participant's
talk), so everything that differs between two lessons or meetings (topic, task, phase) is
noise here, as it is between two interviews of a person. A speaker has m interviews per wave
(m = 1, 2, 3; about 100 sentences per wave in all), drawn at random from the pool; in wave 2 of
a speaker with a planted change the draw is tilted towards interviews rich in one dimension so
that its expected share rises by delta (the change is known). Studies have groups of 5, 10 and
20 speakers; one group per study.

Profiles: TalkMoves' human codes (the codebook's four groups: the tests alone are judged);
AMI's zero-shot profiles from the default KT framework (MiniLM embeddings).

Group tests of 'the group's mean share of the target dimension did not change':
- new:        group_changes (random effects over speakers, HKSJ interval and t test)
- old:        group_shifts' bootstrap interval of the mean change over speakers excludes 0
- naive_t:    one-sample t-test on the speakers' raw changes
- sign_flip:  speakers' changes keep or flip their sign (exact when 2^G <= 4096)
Contrasts (two groups of 10, one interview per wave): new (group_contrasts) and a naive Welch t.
Per speaker (profile change): new (moderated t, between-interview variance borrowed), new_blocks_only
(moderated t trusting blocks of one interview) and old (permutation of whole units).
The KT study's own design (../shared/kt-framework.md): 36 project leaders at project start and
end, a quarter seen only once, and 10 core members yearly over five years with missed years:
the false-positive rate of every group_changes and group_contrasts row under no change.

Learned codes (TalkMoves): Spearman between each speaker's reported change in a dimension (raw
and shrunken) and the human-coded change, with codes from a classifier trained on 20% of lessons.

Usage: python bench/shift_group.py [--studies 100] [--corpora talkmoves,ami] [--ami-series 12]
writes bench/results/shift_group.json
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from scipy import stats

from shift_corpora import GROUPS, one_hot, shift_tables, talkmoves_teacher_sentences
from shift_power import stretches, tilt

from _results import save  # noqa: E402

from pipeline.config import load_config
from pipeline.settings import ShiftSettings, settings_for
from pipeline.shift import compute_shifts

ALPHA = 0.05
SENTENCES_PER_WAVE = 100
GROUP_SIZES = [5, 10, 20]
INTERVIEWS = [1, 2, 3]


class Studies:
    """Draws synthetic speakers from a pool of real talk, with a planted change.

    design "answers": an interview is a sequence of answers, each a stretch of about 10 sentences
    of whole turns from a random lesson or meeting (an interview's answers cover several topics);
    design "single": an interview is one contiguous stretch of a single lesson or meeting (everything
    in it shares one topic and task: the harshest noise between two interviews)."""

    def __init__(self, P: np.ndarray, turn: np.ndarray, target: int, frame: pd.DataFrame, unit: str, design: str):
        self.P, self.turn, self.target, self.design = P, turn, target, design
        size = {m: 10 if design == "answers" else SENTENCES_PER_WAVE // m for m in INTERVIEWS}
        self.per_interview = {m: max(1, SENTENCES_PER_WAVE // m // 10) if design == "answers" else 1
                              for m in INTERVIEWS}
        self.pools = {m: stretches(frame, size[m], unit) for m in INTERVIEWS}
        self.shares = {m: np.array([P[s, target].mean() for s in pool]) for m, pool in self.pools.items()}
        self._tilts: dict = {}

    def weights(self, m: int, delta: float) -> np.ndarray:
        uniform = np.full(len(self.pools[m]), 1 / len(self.pools[m]))
        if delta == 0:
            return uniform
        if (m, delta) not in self._tilts:
            self._tilts[(m, delta)] = tilt(self.shares[m], float(uniform @ self.shares[m]) + delta)
        return self._tilts[(m, delta)]

    def speaker(self, sid: str, role: str, m: int, waves: list[int], delta: float, rng) -> list[pd.DataFrame]:
        parts = []
        for wave in waves:
            w = self.weights(m, delta if wave != waves[0] else 0.0)
            for j in range(m):
                picks = rng.choice(len(self.pools[m]), size=self.per_interview[m], p=w)
                rows = np.concatenate([self.pools[m][k] for k in picks])
                seq = np.repeat(np.arange(len(picks)), [len(self.pools[m][k]) for k in picks])
                parts.append(pd.DataFrame({"row": rows, "turn": seq * 100_000 + self.turn[rows], "speaker_id": sid,
                                           "speaker_role": role, "wave": wave,
                                           "interview_id": f"{sid}-w{wave}-i{j}"}))
        return parts


def run(frame: pd.DataFrame, P: np.ndarray, dims: list[str], speaker_test: str, interview_variance: str = "borrow"):
    utterances, dimensions = shift_tables(frame, P[frame["row"].to_numpy()], dims)
    cfg = load_config(overrides={"shift": {"bootstrap": 500, "permutations": 500, "min_utterances_per_wave": 10,
                                           "min_evidence": 0.0, "max_unmapped_share": 1.0,
                                           "speaker_test": speaker_test,
                                           "interview_variance": interview_variance}})
    return compute_shifts(utterances, dimensions, settings_for(ShiftSettings, cfg))


def sign_flip(y: np.ndarray, rng) -> float:
    k = len(y)
    signs = (1.0 - 2.0 * ((np.arange(2 ** k)[:, None] >> np.arange(k)[None, :]) & 1) if 2 ** k <= 4096
             else np.vstack([np.ones(k), rng.choice([-1.0, 1.0], size=(4095, k))]))
    null = np.abs(signs @ y)
    return float(np.mean(null >= abs(y.sum()) - 1e-12))


def group_tests(r, target: str, rng) -> dict:
    """The four group tests on the target dimension of a one-group study (wave 1 -> 2)."""
    g = r.group_changes.to_pandas()
    new = g[(g["group"] == "all") & (g["level"] == "dimension") & (g["theme"] == target)].iloc[0]
    old = r.group_shifts.to_pandas()
    old = old[(old["group"] == "all") & (old["measure"] == "change") & (old["dimension"] == target)].iloc[0]
    d = r.shift_dimensions.to_pandas()
    y = d.loc[d["dimension"] == target, "change"].to_numpy()
    return {"new": new["p_value"] < ALPHA, "old": not (old["ci_low"] <= 0 <= old["ci_high"]),
            "naive_t": stats.ttest_1samp(y, 0).pvalue < ALPHA, "sign_flip": sign_flip(y, rng) < ALPHA,
            "covered": new["ci_low"] <= 0 <= new["ci_high"], "estimate": new["change"]}


def designs(studies: Studies, dims: list[str], P: np.ndarray, n_studies: int, seed: int) -> dict:
    target = dims[studies.target]
    out: dict = {"group": {}, "speaker": {}, "contrast": {}, "kt_design": {}}
    rng = np.random.default_rng(seed)
    for m in INTERVIEWS:
        for G in GROUP_SIZES:
            for delta in (0.0, 0.10):
                hits: dict[str, list] = {}
                t0 = time.perf_counter()
                for s in range(n_studies if delta == 0 or G == 10 else 0):
                    parts = sum((studies.speaker(f"s{i}", "G", m, [1, 2], delta, rng) for i in range(G)), [])
                    r = run(pd.concat(parts, ignore_index=True), P, dims, "auto")
                    for k, v in group_tests(r, target, rng).items():
                        hits.setdefault(k, []).append(v)
                if hits:
                    key = f"m{m}_G{G}_delta{delta:.2f}"
                    out["group"][key] = {k: round(float(np.mean(v)), 3) for k, v in hits.items()}
                    out["group"][key]["seconds_per_study"] = round((time.perf_counter() - t0) / n_studies, 3)
                    print(f"group    {key:22s} " + "  ".join(f"{k} {v:.3f}" for k, v in out["group"][key].items()))
        # per speaker: 20 speakers a study, null and +15 points, new (moderated) vs old (permutation)
        for delta in (0.0, 0.15):
            rates: dict[str, list] = {"new": [], "new_blocks_only": [], "old": []}
            for s in range(max(n_studies // 4, 10)):
                frame = pd.concat(sum((studies.speaker(f"s{i}", "G", m, [1, 2], delta, rng) for i in range(20)), []),
                                  ignore_index=True)
                for name, test, iv in (("new", "moderated_t", "borrow"), ("new_blocks_only", "moderated_t", "blocks"),
                                       ("old", "permutation", "borrow")):
                    p = run(frame, P, dims, test, iv).shifts.to_pandas()["p_value"].to_numpy(dtype=float)
                    rates[name].extend(np.nan_to_num(p, nan=1.0) < ALPHA)
            key = f"m{m}_delta{delta:.2f}"
            out["speaker"][key] = {k: round(float(np.mean(v)), 3) for k, v in rates.items()}
            print(f"speaker  {key:22s} " + "  ".join(f"{k} {v:.3f}" for k, v in out["speaker"][key].items()))
    # contrasts: two groups of 10, one interview per wave
    for delta_a in (0.0, 0.15):
        hits = {"new": [], "naive_welch": []}
        for s in range(n_studies):
            parts = [p for i in range(10) for p in studies.speaker(f"a{i}", "A", 1, [1, 2], delta_a, rng)]
            parts += [p for i in range(10) for p in studies.speaker(f"b{i}", "B", 1, [1, 2], 0.0, rng)]
            r = run(pd.concat(parts, ignore_index=True), P, dims, "auto")
            c = r.group_contrasts.to_pandas()
            c = c[(c["level"] == "dimension") & (c["theme"] == target)].iloc[0]
            d = r.shift_dimensions.to_pandas()
            d = d[d["dimension"] == target]
            ya, yb = d.loc[d["speaker_role"] == "A", "change"], d.loc[d["speaker_role"] == "B", "change"]
            hits["new"].append(c["p_value"] < ALPHA)
            hits["naive_welch"].append(stats.ttest_ind(ya, yb, equal_var=False).pvalue < ALPHA)
        key = f"G10+10_delta{delta_a:.2f}"
        out["contrast"][key] = {k: round(float(np.mean(v)), 3) for k, v in hits.items()}
        print(f"contrast {key:22s} " + "  ".join(f"{k} {v:.3f}" for k, v in out["contrast"][key].items()))
    # the KT study's design, no change anywhere: every group row and contrast row
    rows_g, rows_c = [], []
    for s in range(max(n_studies // 4, 10)):
        parts = []
        for i in range(36):
            parts += studies.speaker(f"P{i}", "PROJECT", 1, [1] if rng.random() < 0.25 else [1, 2], 0.0, rng)
        for i in range(10):
            years = [y for y in range(1, 6) if rng.random() >= 0.25] or [1]
            parts += studies.speaker(f"C{i}", "CORE", 1, years, 0.0, rng)
        r = run(pd.concat(parts, ignore_index=True), P, dims, "auto")
        g = r.group_changes.to_pandas()
        g = g[(g["level"] == "dimension") & g["p_value"].notna()]
        rows_g.extend(g["p_value"] < ALPHA)
        c = r.group_contrasts.to_pandas()
        c = c[(c["level"] == "dimension") & c["p_value"].notna()]
        rows_c.extend(c["p_value"] < ALPHA)
    out["kt_design"] = {"group_rows": len(rows_g), "group_fpr": round(float(np.mean(rows_g)), 3),
                        "contrast_rows": len(rows_c), "contrast_fpr": round(float(np.mean(rows_c)), 3) if rows_c else None}
    print(f"kt design: {out['kt_design']}")
    return out


def learned_agreement(df: pd.DataFrame, truth: np.ndarray, dims: list[str], design: str, n: int, seed: int) -> dict:
    """Spearman between the per-speaker change the tool reports from learned codes (a classifier
    trained on 20% of the lessons, as in bench/shift_power.py) and the human-coded change, over
    speakers drawn from the other 80% with planted changes from 0 to 30 points."""
    from scipy.stats import spearmanr

    from shift_corpora import encode
    from shift_power import learned_probabilities

    P, held_out = learned_probabilities(df, encode(df["text"].tolist()), seed)
    rows = np.flatnonzero(held_out)
    studies = Studies(truth, df["turn"].to_numpy(), GROUPS.index("community"), df.iloc[rows], "interview_id", design)
    rng = np.random.default_rng(seed)
    deltas = rng.choice([0.0, 0.05, 0.10, 0.15, 0.20, 0.30], size=n)
    frame = pd.concat([p for i, d in enumerate(deltas) for p in studies.speaker(f"s{i:03d}", "G", 1, [1, 2], d, rng)],
                      ignore_index=True)
    r = run(frame, P, dims, "auto").shift_dimensions.to_pandas()
    r = r[r["dimension"] == "community"].set_index("speaker_id")
    t = frame.assign(share=truth[frame["row"].to_numpy(), GROUPS.index("community")])
    true = t.groupby(["speaker_id", "wave"])["share"].mean().unstack()
    true_change = (true[2] - true[1]).reindex(r.index)
    out = {"speakers": int(len(r)),
           "spearman_change": round(float(spearmanr(r["change"], true_change).statistic), 3),
           "spearman_change_shrunk": round(float(spearmanr(r["change_shrunk"], true_change).statistic), 3)}
    print(f"learned  {design:8s} {out}")
    return out


def talkmoves(design: str) -> tuple[Studies, np.ndarray, list[str]]:
    df = talkmoves_teacher_sentences()
    P = one_hot(df["group"], GROUPS)
    return Studies(P, df["turn"].to_numpy(), GROUPS.index("community"), df, "interview_id", design), P, GROUPS


def ami(n_series: int, design: str) -> tuple[Studies, np.ndarray, list[str]]:
    from shift_corpora import ami_sentences

    from pipeline.embed import load_encoder
    from pipeline.framework import load_framework
    from pipeline.map import SimilarityMapper, dimension_matrix, embed_framework

    utt, X = ami_sentences(n_series)
    framework = load_framework(None)
    P = SimilarityMapper().fit(embed_framework(framework, load_encoder("minilm"))).predict_proba(X) \
        @ dimension_matrix(framework)
    utt["person_meeting"] = utt["speaker_id"] + "@" + utt["interview_id"]
    dims = framework.dimension_ids
    return Studies(P, utt["turn"].to_numpy(), dims.index("exchange"), utt, "person_meeting", design), P, dims


def timings(run_dir: str = "runs/demo") -> dict:
    """Seconds compute_shifts takes on the example study (the answer key's dimensions, its codes
    and embeddings) and on TalkMoves as a longitudinal study: each teacher series a speaker,
    its lessons in order the waves (human codes; every series with two or more lessons)."""
    import pyarrow.parquet as pq

    from pathlib import Path

    from shift_corpora import REPO
    import sys
    sys.path.insert(0, str(REPO / "tests"))
    from test_shift import answer_key_assignments, answer_key_dimensions

    out = {}
    run = Path(REPO / run_dir)
    if (run / "utterances.parquet").exists():
        utt = pq.read_table(run / "utterances.parquet")
        args = (utt, answer_key_dimensions(utt), settings_for(ShiftSettings, load_config()),
                pq.read_table(run / "embeddings.parquet"),
                answer_key_assignments(utt))
        t0 = time.perf_counter()
        r = compute_shifts(*args)
        out["example_study"] = {"seconds": round(time.perf_counter() - t0, 2), "pairs": r.shifts.num_rows,
                                "group_rows": r.group_changes.num_rows}
    df = talkmoves_teacher_sentences()
    df = df[df.groupby("series")["interview_id"].transform("nunique") >= 2].reset_index(drop=True)
    order = df.drop_duplicates("interview_id").sort_values(["series", "lesson_number", "interview_id"])
    order["wave"] = order.groupby("series").cumcount() + 1
    frame = df.assign(speaker_id=df["series"], wave=df["interview_id"].map(order.set_index("interview_id")["wave"]),
                      speaker_role="TEACHER")
    utterances, dimensions = shift_tables(frame, one_hot(frame["group"], GROUPS), GROUPS)
    t0 = time.perf_counter()
    r = compute_shifts(utterances, dimensions, settings_for(ShiftSettings, load_config()))
    out["talkmoves_series"] = {"seconds": round(time.perf_counter() - t0, 2), "sentences": len(frame),
                               "speakers": int(frame["speaker_id"].nunique()), "pairs": r.shifts.num_rows,
                               "group_rows": r.group_changes.num_rows}
    print(f"timings: {out}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=100, help="synthetic studies per design and effect")
    ap.add_argument("--corpora", default="talkmoves,ami")
    ap.add_argument("--ami-series", type=int, default=12, help="complete AMI series to draw meetings from")
    ap.add_argument("--designs", default="answers,single", help="what an interview is made of (see above)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--timing-only", action="store_true", help="only time shift on the example study and TalkMoves")
    ap.add_argument("--no-learned", dest="learned", action="store_false",
                    help="skip the learned-codes agreement (it embeds TalkMoves' teacher sentences once)")
    args = ap.parse_args()
    if args.timing_only:
        save("shift_group_timing", timings())
        return
    results: dict = {"alpha": ALPHA, "studies": args.studies, "corpora": {}, "timing": timings()}
    for corpus in args.corpora.split(","):
        for design in args.designs.split(","):
            t0 = time.perf_counter()
            studies, P, dims = talkmoves(design) if corpus == "talkmoves" else ami(args.ami_series, design)
            print(f"== {corpus}, interviews of {design}: target {dims[studies.target]}, pools "
                  + ", ".join(f"m={m}: {len(p)} stretches" for m, p in studies.pools.items()))
            out = designs(studies, dims, P, args.studies, args.seed)
            out["pool_sizes"] = {m: len(p) for m, p in studies.pools.items()}
            out["seconds"] = round(time.perf_counter() - t0, 1)
            if corpus == "talkmoves" and args.learned:
                df = talkmoves_teacher_sentences()
                out["learned"] = learned_agreement(df, one_hot(df["group"], GROUPS), GROUPS, design, 200, args.seed)
            results["corpora"][f"{corpus}/{design}"] = out
            save("shift_group", results)


if __name__ == "__main__":
    main()
