"""Machine vs human coding on the example study's double-coded subset.

Uses the machine's coding in a run directory (default runs/demo, made by
`themeshift run examples/kt_study --out runs/demo`) and the two coders' spans in
examples/answer_key/human_codes.csv. Prints the figures and writes
bench/results/compare_eval.json; the run directory is left untouched.

    .venv/bin/python bench/compare_eval.py [RUN_DIR]
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline.compare import compare  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.io.human_codes import read_human_codes  # noqa: E402
from pipeline.io.rundir import read_table  # noqa: E402
from pipeline.runner import framework_for  # noqa: E402
from pipeline.settings import CompareSettings, settings_for  # noqa: E402


def main(run_dir: Path) -> dict:
    s = settings_for(CompareSettings, load_config())
    started = time.perf_counter()
    human = read_human_codes(REPO / "examples" / "answer_key" / "human_codes.csv")
    framework = framework_for(run_dir, s.framework, None)
    result = compare(read_table(run_dir, "utterances"), read_table(run_dir, "sources"), human, framework, None,
                     read_table(run_dir, "utterance_dimensions"),
                     read_table(run_dir, "assignments") if (run_dir / "assignments.parquet").is_file() else None, s)
    a = result.agreement.to_pandas()
    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    m = s.machine_name

    def fig(level, metric, coder_a, coder_b=None, dimension=None):
        rows = a[(a["level"] == level) & (a["metric"] == metric) & (a["coder_a"] == coder_a)]
        rows = rows[rows["coder_b"].isna()] if coder_b is None else rows[rows["coder_b"] == coder_b]
        rows = rows[rows["dimension"].isna()] if dimension is None else rows[rows["dimension"] == dimension]
        r = rows.iloc[0]
        return {"value": round(r["value"], 4), "ci": [round(r["ci_low"], 4), round(r["ci_high"], 4)], "n": int(r["n"])}

    figures = {}
    for level in ("dimension", "second-order"):
        figures[level] = {
            "human_human_kappa": fig(level, "cohen_kappa", "coder_a", "coder_b"),
            "human_human_alpha": fig(level, "krippendorff_alpha", "coder_a+coder_b"),
            "machine_coder_a_kappa": fig(level, "cohen_kappa", "coder_a", m),
            "machine_coder_b_kappa": fig(level, "cohen_kappa", "coder_b", m),
            "machine_consensus_kappa": fig(level, "cohen_kappa", m, "consensus"),
            "alpha_with_machine": fig(level, "krippendorff_alpha", f"coder_a+coder_b+{m}"),
            "machine_consensus_macro_f1": fig(level, "f1", m, "consensus", "macro"),
        }
    if "code" in set(a["level"]):
        figures["code"] = {metric: fig("code", metric, m, "consensus")
                           for metric in ("ari", "nmi", "homogeneity", "completeness", "purity", "matched_kappa")}
    out = {
        "run_dir": str(run_dir),
        "map": {k: manifest.get("stages", {}).get("map", {}).get(k) for k in ("method", "source", "model")},
        "units": result.counts["units"], "interviews": result.counts["interviews"],
        "bootstrap": {"resamples": s.bootstrap, "unit": s.bootstrap_unit, "ci_level": s.ci_level, "seed": s.seed},
        "min_overlap": s.min_overlap,
        "figures": figures, "warnings": result.warnings,
        "seconds": round(time.perf_counter() - started, 2),
    }
    results = REPO / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "compare_eval.json").write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return out


def _print(out: dict) -> None:
    print(f"run {out['run_dir']} (map: {out['map']['method']}, {out['map']['source']}); "
          f"{out['units']} coded utterances in {out['interviews']} double-coded interviews")
    print(f"intervals: {out['bootstrap']['ci_level']:.0%} percentile bootstrap, "
          f"{out['bootstrap']['resamples']} resamples of {out['bootstrap']['unit']}s")
    for level, figs in out["figures"].items():
        print(f"\n[{level}]")
        for name, f in figs.items():
            print(f"  {name:28} {f['value']:7.3f}  [{f['ci'][0]:.3f}, {f['ci'][1]:.3f}]  n={f['n']}")
    for w in out["warnings"]:
        print(f"warning: {w}")


if __name__ == "__main__":
    _print(main(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "runs" / "demo"))
