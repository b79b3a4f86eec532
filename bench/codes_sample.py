"""Codes fitted on a sample against codes fitted on everything (AMI): agreement, time, memory.

    .venv/bin/python bench/codes_sample.py [RUN] [--samples 8000,16000,32000]

RUN is a run directory with utterances and embeddings (default runs/ami: the AMI meetings, made by
`themeshift run ../shared/corpora/ami --out runs/ami`). Each setting runs `run_codes` in its own
process on a copy of those two tables: the full fit (seed 42), a second full fit with seed 43 (the
baseline: how far two full fits agree with each other), fits on stratified samples of the given
sizes (seed 42) with every other utterance assigned to its nearest code, and, for the two smallest
samples, the same with cluster sizes taken from the sample's own size (the rule rejected). For each: codes, outlier
share, wall time, the process's peak memory, and the adjusted Rand index against the seed-42 full fit
over every utterance (unassigned counted as one more label) and over the utterances both assign.
Prints and writes bench/results/codes_sample.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def one(run_dir: Path, sample: int, seed: int, sizes: str) -> None:
    """Child process: fit the codes in run_dir and print the stage's record. sizes "sample": cluster
    sizes from the sample's own size instead of the corpus's scaled by the sample's share."""
    import pipeline  # noqa: F401  (offline environment)
    import pipeline.codes as codes
    from pipeline.config import load_config
    from pipeline.runner import run_codes

    if sizes == "sample":
        codes.sample_cluster_sizes = lambda n, population, s: codes.cluster_sizes(n, s)

    cfg = load_config(None, overrides={"codes": {"fit_sample": sample}, "run": {"seed": seed}})
    record = run_codes(run_dir, cfg)
    print(json.dumps({k: v for k, v in record.items() if k != "key"}))


def measure(source: Path, work: Path, name: str, sample: int, seed: int, sizes: str) -> dict:
    run_dir = work / name
    run_dir.mkdir()
    for table in ("utterances", "embeddings"):
        shutil.copyfile(source / f"{table}.parquet", run_dir / f"{table}.parquet")
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--child", str(run_dir), str(sample), str(seed), sizes],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status:
        raise SystemExit(f"{name} failed (status {status})")
    record = json.loads(out.strip().splitlines()[-1])
    return {"setting": name, "fit_sample": sample, "seed": seed, "fitted_on": record["fitted_on"],
            "codes": record["counts"]["codes"], "outlier_share": record["outlier_share"],
            "seconds": round(time.perf_counter() - started, 1), "peak_mib": round(usage.ru_maxrss / 1024),
            "run_dir": str(run_dir)}


def agreement(reference: Path, other: Path) -> dict:
    import numpy as np
    import pyarrow.parquet as pq
    from sklearn.metrics import adjusted_rand_score

    a = pq.read_table(reference / "assignments.parquet").to_pandas().set_index("utterance_id")["code_id"]
    b = pq.read_table(other / "assignments.parquet").to_pandas().set_index("utterance_id")["code_id"]
    b = b.loc[a.index]
    both = (a.to_numpy() >= 0) & (b.to_numpy() >= 0)
    return {"ari_all": round(adjusted_rand_score(a, b), 4),
            "ari_assigned_in_both": round(adjusted_rand_score(a[both], b[both]), 4),
            "assigned_in_both": round(float(np.mean(both)), 4)}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        one(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", nargs="?", type=Path, default=REPO / "runs" / "ami")
    ap.add_argument("--samples", default="8000,16000,32000", help="sample sizes, comma-separated")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO / "bench"))
    from _results import save

    settings = [("full, seed 42", 0, 42, "share"), ("full, seed 43 (baseline)", 0, 43, "share")]
    settings += [(f"sample {int(s):,}", int(s), 42, "share") for s in args.samples.split(",")]
    settings += [(f"sample {int(s):,}, sizes from the sample's n", int(s), 42, "sample")
                 for s in args.samples.split(",")[:2]]
    rows = []
    with tempfile.TemporaryDirectory(prefix="themeshift-codes-sample-") as tmp:
        for i, (name, sample, seed, sizes) in enumerate(settings):
            row = measure(args.run, Path(tmp), f"s{i}", sample, seed, sizes)
            row["setting"] = name
            if rows:
                row.update(agreement(Path(rows[0]["run_dir"]), Path(row["run_dir"])))
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "run_dir"}), flush=True)
    for row in rows:
        row.pop("run_dir")
    print("\n| setting | fitted on | codes | outliers | seconds | peak MiB | ARI vs full (all) | ARI (assigned in both) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['setting']} | {r['fitted_on']:,} | {r['codes']} | {r['outlier_share']:.1%} | {r['seconds']} | "
              f"{r['peak_mib']} | {r.get('ari_all', '-')} | {r.get('ari_assigned_in_both', '-')} |")
    save("codes_sample", {"run": str(args.run), "settings": rows})


if __name__ == "__main__":
    main()
