"""Every coded unit counts: a simulated researcher codes a corpus batch by batch, choosing what to code
next with `themeshift suggest`, at random, or a whole interview at a time, and learn's model (frozen
features, the default feature set of the corpus) is scored after every batch on interviews nobody
may pick (held out once, seeded).

Corpora (both need a run up to map; the bench makes them when missing):
- TalkMoves (dialogue moves, one code per sentence; ../shared/corpora/talkmoves): the run of
  bench/validity.py, runs/talkmoves. Seed: the units of 2 lessons. Score: machine-coder kappa, mean
  of teachers and students.
- games_as_art (thematic codes, several per passage; ../shared/corpora/games_as_art), runs/games_as_art.
  Seed: the units of 10 answers (fewer leave most codes without an example). Score: kappa of the
  most probable code and micro-F1 of the code sets (one-vs-rest models, each code's threshold
  fitted on the coded units by grouped cross-validation).

Strategies, each from the same seed up to 20% of the corpus's units in equal batches (24 by
default: on TalkMoves about 400 units, a few `suggest` calls' worth at its default of 50):
- suggest at diversity 0 (the default) and 0.5 (the margin uncertainty of learn's probabilities
  plus novelty against what is coded, each batch shared evenly between learn's role models on
  TalkMoves: pipeline.suggest.stratified_pick; ranked by the model of the last point's coded units);
- random units (three seeds, averaged);
- whole interviews, in random order (what a researcher does without suggest).
The target: suggest reaches random choice's agreement at 20% with at most half the coded units.

Usage: python bench/active_learning.py [--corpus talkmoves,games_as_art] [--batches 24]
writes bench/results/active_learning.json and bench/results/active_learning.svg
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import cohen_kappa_score

from shift_corpora import REPO, SHARED

from _results import RESULTS, save  # noqa: E402

from pipeline.agreement import MISSING
from pipeline.config import load_config
from pipeline.embed import load_encoder, vectors
from pipeline.framework import load_framework
from pipeline.io.human_codes import read_human_codes
from pipeline.io.rundir import read_table
from pipeline.learn import (check_enough, fit_model, fit_thresholds, human_targets, interview_codes, label_sets,
                            prepare)
from pipeline.settings import LearnSettings, settings_for
from pipeline.suggest import open_units, role_strata, stratified_pick, uncertainty

CORPORA = {
    "talkmoves": {"dir": SHARED / "corpora" / "talkmoves", "run": REPO / "runs" / "talkmoves",
                  "framework": REPO / "configs" / "frameworks" / "talkmoves.yaml", "seed_interviews": 2,
                  "feature_set": "dialogue"},
    "games_as_art": {"dir": SHARED / "corpora" / "games_as_art", "run": REPO / "runs" / "games_as_art",
                     "framework": REPO / "configs" / "frameworks" / "games_as_art.yaml", "seed_interviews": 10,
                     "feature_set": "dialogue"},
}
DIVERSITIES = (0.0, 0.5)
RANDOM_SEEDS = (0, 1, 2)


def ensure_run(spec: dict) -> None:
    if (spec["run"] / "utterance_dimensions.parquet").is_file():
        return
    subprocess.run([str(REPO / ".venv" / "bin" / "themeshift"), "run", str(spec["dir"]), "--out", str(spec["run"]),
                    "--config", str(spec["dir"] / "themeshift.toml"), "--framework", str(spec["framework"]),
                    "--until", "map", "--quiet"], check=True)


class Simulation:
    """learn's targets and features for one corpus, and the scoring on the held-out interviews."""

    def __init__(self, name: str, spec: dict, seed: int, encoder):
        self.name, self.spec = name, spec
        cfg = load_config(spec["dir"] / "themeshift.toml",
                          {"learn": {"encoder": "frozen"}, "compare": {"unknown_codes": "ignore"}})
        self.s = s = settings_for(LearnSettings, cfg)
        run = spec["run"]
        framework = load_framework(spec["framework"])
        utterances, sources = read_table(run, "utterances"), read_table(run, "sources")
        human = read_human_codes(spec["dir"] / "human_codes.csv")
        self.t = t = human_targets(utterances, sources, human, framework, None, "second_order", s.compare)
        check_enough(t, s, human.path)
        embeddings = read_table(run, "embeddings")
        fs = spec["feature_set"]
        self.fs = fs
        self.prep = prepare(utterances, embeddings, t, framework, encoder, s, [fs], human.path)
        self.prep.d.turn_pooling = False  # units are chosen one by one: a turn is never coded as a whole
        names, self.groups = interview_codes(t)
        rng = np.random.default_rng(seed)
        held = rng.choice(len(names), size=int(round(0.3 * len(names))), replace=False)
        self.test = np.flatnonzero(np.isin(self.groups, held))
        self.pool = np.flatnonzero(~np.isin(self.groups, held))
        self.pool_interviews = np.array(sorted(set(self.groups[self.pool].tolist())))
        self.vecs = vectors(embeddings)[self.prep.ui].astype(np.float64)
        labels = np.stack([t.primary[c] for c in t.coders], axis=1)
        self.truth = np.where((labels != MISSING).any(axis=1), labels.max(axis=1), MISSING)
        self.sets, _ = t.truth_sets()
        self.budget = int(round(0.2 * len(t.units)))
        roles = utterances.select(["utterance_id", "speaker_role"]).to_pandas().set_index("utterance_id")
        self.role = t.units["utterance_id"].map(roles["speaker_role"]).fillna("").to_numpy()
        self.strata = role_strata(framework, self.role)  # learn's role models, as `suggest` shares them

    def seed_units(self, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        first = rng.choice(self.pool_interviews, size=self.spec["seed_interviews"], replace=False)
        return np.flatnonzero(np.isin(self.groups, first))

    def fit(self, coded: np.ndarray):
        return fit_model(self.prep.d, self.fs, coded, self.s)

    def probabilities(self, model, rows: np.ndarray) -> np.ndarray:
        d = self.prep.d
        g = None if d.groups is None else d.groups[rows]
        return d.restrict(model.predict_proba(d.x_units[self.fs][rows], None, g), rows)

    def score(self, model, coded: np.ndarray) -> dict:
        p = self.probabilities(model, self.test)
        pred, truth = p.argmax(axis=1), self.truth[self.test]
        ok = truth != MISSING
        out = {}
        roles = sorted(set(self.role[self.test][ok]) - {""})
        kappas = []
        for r in roles or [None]:
            m = ok & ((self.role[self.test] == r) if r is not None else True)
            kappas.append(cohen_kappa_score(truth[m], pred[m]))
        out["kappa"] = round(float(np.mean(kappas)), 4)
        if self.t.multi_code:
            thresholds = self.thresholds(coded)
            s = label_sets(p, thresholds)[:, :-1]
            y = self.sets[self.test][:, :-1]
            tp, fp, fn = (s & y).sum(), (s & ~y).sum(), (~s & y).sum()
            out["micro_f1"] = round(float(2 * tp / (2 * tp + fp + fn)), 4)
        return out

    def thresholds(self, coded: np.ndarray) -> np.ndarray:
        """Per-code thresholds from grouped out-of-fold probabilities of the coded units."""
        from sklearn.model_selection import GroupKFold

        g = self.groups[coded]
        k = min(5, len(np.unique(g)))
        p = np.zeros((len(self.t.units), len(self.t.classes)))
        for a, b in GroupKFold(n_splits=k).split(coded, groups=g):
            p[coded[b]] = self.probabilities(self.fit(coded[a]), coded[b])
        return fit_thresholds(p, self.sets, coded)


def run_strategy(sim: Simulation, strategy: str, sizes: list[int], seed: int, diversity: float = 0.5) -> list[dict]:
    rng = np.random.default_rng(seed)
    coded = sim.seed_units(0)
    curve = []
    order = rng.permutation(np.setdiff1d(sim.pool_interviews, np.unique(sim.groups[coded])))
    next_interview = 0
    model = None  # the model of the last point's coded units: what suggest ranks by
    for size in sizes:
        need = size - len(coded)
        if need > 0:
            free = np.setdiff1d(sim.pool, coded)
            if strategy == "suggest":  # only what `suggest` proposes: units no role model codes are left out
                taken = np.ones(len(sim.groups), dtype=bool)  # coded, or held out for scoring
                taken[free] = False
                free = open_units(taken, sim.strata)
            if strategy == "random":
                coded = np.union1d(coded, rng.choice(free, size=min(need, len(free)), replace=False))
            elif strategy == "interviews":
                while len(coded) < size and next_interview < len(order):
                    coded = np.union1d(coded, np.flatnonzero(sim.groups == order[next_interview]))
                    next_interview += 1
            else:
                u = uncertainty(sim.probabilities(model, free))
                strata = None if sim.strata is None else sim.strata[free]
                pick, _, _ = stratified_pick(u, sim.vecs[free], sim.vecs[coded], need, diversity, strata)
                coded = np.union1d(coded, free[pick])
        started = time.perf_counter()
        model = sim.fit(coded)
        point = {"coded_units": int(len(coded)), **sim.score(model, coded),
                 "fit_seconds": round(time.perf_counter() - started, 2)}
        curve.append(point)
        print(sim.name, strategy, diversity if strategy == "suggest" else "", point, flush=True)
    return curve


def units_to_reach(curve: list[dict], target: float, metric: str) -> int | None:
    for p in curve:
        if p[metric] >= target:
            return p["coded_units"]
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default="talkmoves,games_as_art")
    ap.add_argument("--batches", type=int, default=24)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--diversities", default=",".join(map(str, DIVERSITIES)), help="suggest_diversity values to try")
    args = ap.parse_args()
    encoder = load_encoder("minilm", "cpu")
    results = {}
    for name in args.corpus.split(","):
        spec = CORPORA[name]
        ensure_run(spec)
        sim = Simulation(name, spec, args.seed, encoder)
        start = len(sim.seed_units(0))
        sizes = np.unique(np.linspace(start, sim.budget, args.batches + 1).round().astype(int)).tolist()
        metric = "micro_f1" if sim.t.multi_code else "kappa"
        r = {"units": len(sim.t.units), "held_out_units": int(len(sim.test)), "budget_units": sim.budget,
             "metric": metric, "curves": {}}
        for lam in (float(x) for x in args.diversities.split(",")):
            r["curves"][f"suggest_{lam}"] = run_strategy(sim, "suggest", sizes, args.seed, lam)
        runs = [run_strategy(sim, "random", sizes, s) for s in RANDOM_SEEDS]
        r["curves"]["random"] = [{"coded_units": pts[0]["coded_units"],
                                  **{k: round(float(np.mean([p[k] for p in pts])), 4)
                                     for k in pts[0] if k != "coded_units"}} for pts in zip(*runs)]
        r["curves"]["interviews"] = run_strategy(sim, "interviews", sizes, args.seed)
        target = r["curves"]["random"][-1][metric]
        r["random_at_budget"] = target
        r["units_to_reach_random_at_budget"] = {k: units_to_reach(c, target, metric) for k, c in r["curves"].items()}
        results[name] = r
        print(name, "units to reach random's", metric, target, "at", sim.budget, ":",
              r["units_to_reach_random_at_budget"], flush=True)
    save("active_learning", results)
    plot(results, RESULTS / "active_learning.svg")


def plot(results: dict, path: Path) -> None:
    """One SVG line chart per corpus: held-out agreement against coded units, one line per strategy."""
    from pipeline.report_figures import svg_document

    colours = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666"]
    width, height, pad = 460, 300, 50
    panels = []
    for n, (name, r) in enumerate(results.items()):
        m = r["metric"]
        pts = [(p["coded_units"], p[m]) for c in r["curves"].values() for p in c]
        x0, x1 = 0, max(x for x, _ in pts)
        y0, y1 = min(y for _, y in pts), max(y for _, y in pts)

        def xy(x, y, n=n):
            return (n * width + pad + (x - x0) / (x1 - x0) * (width - 2 * pad),
                    height - pad - (y - y0) / max(y1 - y0, 1e-9) * (height - 2 * pad))

        body = [f'<text x="{n * width + pad}" y="20" font-size="13">{name}: held-out {m} by coded units</text>',
                f'<text x="{n * width + pad}" y="{height - 15}" font-size="11">coded units 0 - {x1}; {m} '
                f'{y0:.3f} - {y1:.3f}</text>']
        for k, (label, curve) in enumerate(r["curves"].items()):
            line = " ".join("{:.1f},{:.1f}".format(*xy(p["coded_units"], p[m])) for p in curve)
            body.append(f'<polyline fill="none" stroke="{colours[k % len(colours)]}" stroke-width="2" points="{line}"/>')
            body.append(f'<text x="{n * width + width - 130}" y="{40 + 14 * k}" font-size="11" '
                        f'fill="{colours[k % len(colours)]}">{label}</text>')
        panels.append("".join(body))
    path.with_suffix(".svg").write_text(svg_document(width * len(results), height, "".join(panels),
                                                     "active learning curves"), encoding="utf-8")
    print(f"written {path.with_suffix('.svg')}")


if __name__ == "__main__":
    sys.exit(main())
