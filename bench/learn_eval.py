"""Learning from the example study's human codes: grouped cross-validated machine-human
agreement against the coders' own agreement, the learning curve, the gain over the
framework-similarity mapping, and the feature sets compared.

Works on a copy of a mapped run directory (default runs/demo, made by
`themeshift run examples/kt_study --out runs/demo`), so the run itself is left untouched.
Prints the figures and writes bench/results/learn_eval.json.

    .venv/bin/python bench/learn_eval.py [RUN_DIR] [--nested]

--nested also reruns the whole of learn with each coded interview held out (about 10
minutes), so the kept feature set is chosen without seeing the interview it is scored on.
"""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import pandas as pd  # noqa: E402

from pipeline.config import load_config  # noqa: E402
from pipeline.runner import run_learn  # noqa: E402

HUMAN = REPO / "examples" / "answer_key" / "human_codes.csv"
TABLES = ("utterances", "sources", "interviews", "embeddings", "codes", "assignments", "utterance_dimensions")


def _copy(run_dir: Path, into: Path) -> Path:
    for name in TABLES:
        shutil.copy(run_dir / f"{name}.parquet", into)
    framework = run_dir / "utterance_dimensions_framework.parquet"
    if framework.is_file():  # the run has been through learn: start from the map stage's table
        shutil.copy(framework, into / "utterance_dimensions.parquet")
    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    manifest["stages"].pop("learn", None)
    (into / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return into


def _fig(e: pd.DataFrame, evaluation: str, level: str, metric: str, a: str, b: str | None) -> dict:
    rows = e[(e["evaluation"] == evaluation) & (e["level"] == level) & (e["metric"] == metric)
             & (e["coder_a"] == a)]
    rows = rows[rows["coder_b"].isna()] if b is None else rows[rows["coder_b"] == b]
    r = rows.iloc[0]
    ci = None if pd.isna(r["ci_low"]) else [round(r["ci_low"], 4), round(r["ci_high"], 4)]
    return {"value": round(float(r["value"]), 4), "ci": ci, "n": int(r["n"])}


def _level(e: pd.DataFrame, evaluation: str, level: str) -> dict:
    out = {"human_human_kappa": _fig(e, evaluation, level, "cohen_kappa", "coder_a", "coder_b"),
           "human_human_alpha": _fig(e, evaluation, level, "krippendorff_alpha", "coder_a+coder_b", None),
           "machine_coder_a_kappa": _fig(e, evaluation, level, "cohen_kappa", "coder_a", "machine"),
           "machine_coder_b_kappa": _fig(e, evaluation, level, "cohen_kappa", "coder_b", "machine"),
           "machine_consensus_kappa": _fig(e, evaluation, level, "cohen_kappa", "machine", "consensus"),
           "alpha_with_machine": _fig(e, evaluation, level, "krippendorff_alpha", "coder_a+coder_b+machine", None)}
    mean = (out["machine_coder_a_kappa"]["value"] + out["machine_coder_b_kappa"]["value"]) / 2
    out["mean_machine_coder_kappa"] = round(mean, 4)
    out["gap_to_human_human"] = round(out["human_human_kappa"]["value"] - mean, 4)
    return out


def _curve(e: pd.DataFrame) -> list[dict]:
    k = e[(e["evaluation"] == "learning-curve") & (e["level"] == "dimension") & (e["metric"] == "cohen_kappa")]
    k = k.assign(pair=k["coder_a"] + " vs " + k["coder_b"])
    out = []
    for n, g in k.groupby("train_interviews"):
        by = g.groupby("pair")["value"]
        machine = g[g["pair"].isin(["coder_a vs machine", "coder_b vs machine"])]["value"]
        out.append({"train_interviews": int(n), "draws": int(g["draw"].nunique()),
                    "machine_coder_kappa_mean": round(float(machine.mean()), 4),
                    "machine_coder_kappa_range": [round(float(machine.min()), 4), round(float(machine.max()), 4)],
                    "machine_consensus_kappa_mean": round(float(by.mean()["machine vs consensus"]), 4),
                    "human_human_kappa_same_utterances": round(float(by.mean()["coder_a vs coder_b"]), 4)})
    return out


def _ablation(run_dir: Path, learn: dict) -> dict:
    cfg = load_config(None, {"learn": {**learn, "learning_curve_draws": 0}})
    rec = run_learn(run_dir, HUMAN, cfg)
    e = pd.read_parquet(run_dir / "learn_eval.parquet")
    return {"settings": learn, "mean_machine_coder_kappa": _level(e, "cross-validation", "dimension")
            ["mean_machine_coder_kappa"], "seconds": rec["seconds"]}


def _level_kappas(e: pd.DataFrame, feature_set: str) -> dict:
    """Cross-validated mean machine-coder kappa at the dimension and second-order levels."""
    return {lv: _level(e, "cross-validation", lv)["mean_machine_coder_kappa"]
            for lv in ("dimension", "second-order")} | {"feature_set": feature_set}


def _levels(run_dir: Path, default_level: str, default: dict) -> dict:
    """What the model learns, side by side: a dimension model and a second-order one (the default's
    figures come from the main run)."""
    out = {default_level: default}
    for level in ("dimension", "second_order"):
        if level not in out:
            rec = run_learn(run_dir, HUMAN, load_config(None, {"learn": {"learning_curve_draws": 0}}), level=level)
            out[level] = _level_kappas(pd.read_parquet(run_dir / "learn_eval.parquet"), rec["feature_set"])
    return out


def _dimension_labels(ud: pd.DataFrame) -> dict[str, str]:
    top = ud[ud["is_argmax"]].drop_duplicates("utterance_id")
    return dict(zip(top["utterance_id"], top["dimension"].where(top["mapped"], "none")))


def _kappas(t, labels: dict[str, str]) -> dict[str, float]:
    from sklearn.metrics import cohen_kappa_score

    from pipeline.agreement import MISSING

    cats, primary, _ = t.eval_levels["dimension"]
    ids = t.units["utterance_id"].tolist()
    machine = [labels[u] for u in ids]
    out = {}
    for coder in t.coders:
        keep = [i for i, k in enumerate(primary[coder]) if k != MISSING]
        out[coder] = round(float(cohen_kappa_score([cats[primary[coder][i]] for i in keep],
                                                   [machine[i] for i in keep])), 4)
    out["mean"] = round(sum(out[c] for c in t.coders) / len(t.coders), 4)
    return out


def _nested(work: Path, cfg: dict) -> dict:
    """The whole of learn (feature-set choice included) rerun with each coded interview held out,
    scored on that interview only: an estimate the choice of feature set has not seen."""
    from pipeline.io.human_codes import read_human_codes
    from pipeline.io.rundir import read_table
    from pipeline.learn import human_targets
    from pipeline.runner import framework_for
    from pipeline.settings import CompareSettings, settings_for

    c = settings_for(CompareSettings, cfg)
    t = human_targets(read_table(work, "utterances"), read_table(work, "sources"),
                      read_human_codes(HUMAN, c.qdpx_max_members, c.qdpx_max_bytes),
                      framework_for(work, cfg["map"]["framework"], None), None, "dimension", c)
    same_folds = _kappas(t, _dimension_labels(pd.read_parquet(work / "utterance_dimensions_cv.parquet")))
    codes = pd.read_csv(HUMAN)
    held_out: dict[str, str] = {}
    quiet = load_config(None, {"learn": {"learning_curve_draws": 0}})
    chosen = []
    for interview in sorted(codes["interview_id"].unique()):
        with tempfile.TemporaryDirectory() as tmp:
            fold = _copy(work, Path(tmp))
            codes[codes["interview_id"] != interview].to_csv(fold / "train_codes.csv", index=False)
            chosen.append(run_learn(fold, fold / "train_codes.csv", quiet)["feature_set"])
            labels = _dimension_labels(pd.read_parquet(fold / "utterance_dimensions.parquet"))
            units = t.units.loc[t.units["interview_id"] == interview, "utterance_id"]
            held_out.update({u: labels[u] for u in units})
    return {"same_folds_selection": same_folds, "nested": _kappas(t, held_out),
            "feature_sets_chosen": {fs: chosen.count(fs) for fs in sorted(set(chosen))}}


def main(run_dir: Path, nested: bool = False) -> dict:
    started = time.perf_counter()
    cfg = load_config()
    with tempfile.TemporaryDirectory() as tmp:
        work = _copy(run_dir, Path(tmp))
        rec = run_learn(work, HUMAN, cfg)
        e = pd.read_parquet(work / "learn_eval.parquet")
        best = rec["feature_set"]
        ablations = {
            "no_weak_examples": _ablation(work, {"feature_sets": [best], "framework_weight": 0.0}),
            "no_turn_pooling": _ablation(work, {"feature_sets": [best], "turn_pooling": False}),
            "no_class_balance": _ablation(work, {"feature_sets": [best], "balance_classes": False}),
        }
        levels = _levels(work, rec["level"], _level_kappas(e, best))
        if nested:
            run_learn(work, HUMAN, cfg)  # the ablations replaced the kept model's tables
            nested_cv = _nested(work, cfg)
    learned = {lv: _level(e, "cross-validation", lv) for lv in ("dimension", "second-order")}
    framework = {lv: _level(e, "framework-similarity", lv) for lv in ("dimension", "second-order")}
    sets = (e[(e["evaluation"] == "feature-set") & (e["level"] == "dimension") & (e["metric"] == "cohen_kappa")
              & (e["coder_b"] != "consensus") & ((e["coder_a"] == "machine") | (e["coder_b"] == "machine"))]
            .groupby("feature_set")["value"].mean().round(4).to_dict())
    out = {
        "run_dir": str(run_dir), "human_codes": str(HUMAN.relative_to(REPO)),
        "units": rec["counts"]["units"], "interviews": rec["counts"]["interviews"], "coders": rec["counts"]["coders"],
        "level": rec["level"], "feature_set": best, "parameters": rec["parameters"],
        "cross_validation": f"GroupKFold by interview, {min(cfg['learn']['cv_folds'], rec['counts']['interviews'])} folds",
        "bootstrap": {"resamples": cfg["compare"]["bootstrap"], "unit": cfg["compare"]["bootstrap_unit"],
                      "ci_level": cfg["compare"]["ci_level"], "seed": cfg["run"]["seed"]},
        "learned": learned, "framework_similarity": framework,
        "gain_over_framework_similarity": {
            lv: round(learned[lv]["mean_machine_coder_kappa"] - framework[lv]["mean_machine_coder_kappa"], 4)
            for lv in learned},
        "target_within_0_05_of_human_human": learned["dimension"]["gap_to_human_human"] <= 0.05,
        "feature_sets_mean_machine_coder_kappa": sets,
        "ablations": ablations,
        "levels_mean_machine_coder_kappa": levels,
        "learning_curve": _curve(e),
        "nested_cross_validation": nested_cv if nested else None,
        "seconds_learn": rec["seconds"], "seconds": round(time.perf_counter() - started, 2),
    }
    results = REPO / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "learn_eval.json").write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return out


def _print(out: dict) -> None:
    print(f"{out['units']} coded utterances in {out['interviews']} double-coded interviews; "
          f"{out['cross_validation']}; kept feature set {out['feature_set']}")
    for lv in out["learned"]:
        print(f"\n[{lv}]                          learned (cross-validated)   framework similarity")
        for name in ("human_human_kappa", "machine_coder_a_kappa", "machine_coder_b_kappa",
                     "machine_consensus_kappa", "human_human_alpha", "alpha_with_machine"):
            a, b = out["learned"][lv][name], out["framework_similarity"][lv][name]
            print(f"  {name:26} {a['value']:.3f} [{a['ci'][0]:.3f}, {a['ci'][1]:.3f}]    "
                  f"{b['value']:.3f} [{b['ci'][0]:.3f}, {b['ci'][1]:.3f}]   n={a['n']}")
        print(f"  mean machine-coder kappa {out['learned'][lv]['mean_machine_coder_kappa']:.3f}, "
              f"gap to human-human {out['learned'][lv]['gap_to_human_human']:.3f}, "
              f"gain over framework similarity {out['gain_over_framework_similarity'][lv]:+.3f}")
    print(f"\ntarget (within 0.05 kappa of human-human): {'met' if out['target_within_0_05_of_human_human'] else 'not met'}")
    print("\nfeature sets (mean machine-coder kappa, dimension):",
          ", ".join(f"{k} {v:.3f}" for k, v in out["feature_sets_mean_machine_coder_kappa"].items()))
    for name, a in out["ablations"].items():
        print(f"ablation {name}: {a['mean_machine_coder_kappa']:.3f}")
    for level, k in out["levels_mean_machine_coder_kappa"].items():
        print(f"model learns {level:13}: mean machine-coder kappa dimension {k['dimension']:.3f}, "
              f"second-order {k['second-order']:.3f} (feature set {k['feature_set']})")
    print("\nlearning curve (dimension; held-out interviews; mean over draws):")
    print("  interviews  machine-coder kappa (range)    machine-consensus  human-human (same utterances)")
    for p in out["learning_curve"]:
        print(f"  {p['train_interviews']:10d}  {p['machine_coder_kappa_mean']:.3f} "
              f"[{p['machine_coder_kappa_range'][0]:.3f}, {p['machine_coder_kappa_range'][1]:.3f}]"
              f"          {p['machine_consensus_kappa_mean']:.3f}              {p['human_human_kappa_same_utterances']:.3f}")


    if out["nested_cross_validation"]:
        n = out["nested_cross_validation"]
        print("\nnested (learn rerun with each coded interview held out; sklearn kappa, dimension):")
        print(f"  feature set chosen on the same folds: {n['same_folds_selection']}")
        print(f"  nested:                               {n['nested']}  chosen {n['feature_sets_chosen']}")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--nested"]
    _print(main(Path(args[0]) if args else REPO / "runs" / "demo", nested="--nested" in sys.argv))
