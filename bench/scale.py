"""The Ray engine on a local Ray cluster: AMI meetings replicated to N utterances, 1 and 2 workers.

    .venv/bin/python bench/scale.py --utterances 20000 [--workers 1,2] [--model minilm]

Needs the [scale] extra. For each worker count, a fresh local Ray with that many CPUs segments
(one task per file) and embeds (one model per worker) into a fresh run directory. Prints and writes
bench/results/scale.json: utterances/s for segment and embed (wall time of the stage, Ray already
started; embed includes loading the model in every worker), peak RSS per embedding worker, and the
speed-up over one worker. With --end-to-end, codes, map, shift and report then run on the last
run directory as `themeshift` commands (the Ray engine: codes fitted on a sample above
codes.fit_sample, embeddings read a chunk at a time): seconds and peak memory of each.
Reads ../shared/corpora/ami, or $THEMESHIFT_SHARED/corpora/ami.

    .venv/bin/python bench/scale.py --utterances 750000 --model fast --end-to-end --name scale_1m
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pipeline  # noqa: F401  (offline environment)
from _results import save
from pipeline.config import load_config

REPO = Path(__file__).resolve().parent.parent
AMI = Path(os.environ.get("THEMESHIFT_SHARED", REPO.parent / "shared")) / "corpora" / "ami"


def replicated_ami(n_turns: int, dest: Path) -> Path:
    """AMI meetings, copied round after round (each copy its own meetings and series) until the
    corpus holds at least n_turns speaker turns (each turn gives one or more utterances)."""
    rows = list(csv.DictReader(open(AMI / "manifest.csv", encoding="utf-8")))
    out, total, k = [], 0, 0
    while total < n_turns:
        for row in rows:
            src = Path(row["file"])  # the file name is the interview id: each copy needs its own
            rel = Path(f"copy{k:03d}") / f"{src.stem}-{k:03d}{src.suffix}"
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(AMI / row["file"], dest / rel)
            out.append({**row, "file": rel.as_posix(), "meeting": f"{row['meeting']}-{k:03d}",
                        "series": f"{row['series']}-{k:03d}"})
            total += int(row["turns"])
            if total >= n_turns:
                break
        k += 1
    with open(dest / "manifest.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(out[0]))
        writer.writeheader()
        writer.writerows(out)
    return dest


def one_setting(corpus: Path, run_dir: Path, workers: int, cpus: int, shard_rows: int, model: str,
                config: Path | None) -> dict:
    from pipeline.ray_engine import ray_session
    from pipeline.runner import run_embed, run_segment

    cfg = load_config(config, overrides={"input": {"speaker_scope_column": "series"}, "embed": {"model": model},
                                 "scale": {"engine": "ray", "workers": workers, "shard_rows": shard_rows}})
    with ray_session(num_cpus=cpus or workers):
        t0 = time.perf_counter()
        seg = run_segment(corpus, run_dir, cfg)
        t1 = time.perf_counter()
        emb = run_embed(run_dir, cfg)
        t2 = time.perf_counter()
    n, coded = seg["counts"]["utterances"], seg["counts"]["coded"]
    return {"workers": workers, "gpus_per_worker": emb["gpus_per_worker"], "files": seg["counts"]["files_read"], "utterances": n, "coded": coded,
            "parts": emb["parts"], "segment_seconds": round(t1 - t0, 2), "embed_seconds": round(t2 - t1, 2),
            "segment_utterances_per_s": round(n / (t1 - t0), 1), "embed_utterances_per_s": round(coded / (t2 - t1), 1),
            "peak_rss_mb_per_embed_worker": emb["peak_rss_mb_per_worker"]}


def end_to_end(run_dir: Path, args, workers: int, shard_rows: int) -> list[dict]:
    """codes, map, shift and report on a segmented and embedded run, one `themeshift` process each."""
    import tomllib

    settings = tomllib.loads(args.config.read_text(encoding="utf-8")) if args.config else {}
    settings.setdefault("input", {})["speaker_scope_column"] = "series"
    settings.setdefault("embed", {})["model"] = args.model
    settings.setdefault("scale", {}).update(engine="ray", workers=workers, shard_rows=shard_rows)
    config = run_dir.parent / "end-to-end.toml"  # flat sections: JSON scalars and lists are TOML too
    config.write_text("".join(f"[{section}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())
                              for section, values in settings.items()), encoding="utf-8")
    exe = Path(sys.executable).parent / "themeshift"
    out = []
    for stage in ("codes", "map", "shift", "report"):
        started = time.perf_counter()
        proc = subprocess.Popen([str(exe), stage, str(run_dir), "--config", str(config), "--quiet"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        err = proc.stderr.read()
        _, status, usage = os.wait4(proc.pid, 0)
        if status:
            raise SystemExit(f"{stage} failed:\n{err[-2000:]}")
        row = {"stage": stage, "seconds": round(time.perf_counter() - started, 1),
               "peak_mib": round(usage.ru_maxrss / 1024)}
        if stage == "codes":
            manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))["stages"]["codes"]
            row.update(fitted_on=manifest["fitted_on"], codes=manifest["counts"]["codes"],
                       outlier_share=manifest["outlier_share"])
        out.append(row)
        print(json.dumps(row), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--utterances", type=int, default=20000,
                    help="corpus size: meetings are added until they hold this many speaker turns, so at least "
                         "this many utterances (a turn gives one or more)")
    ap.add_argument("--workers", default="1,2", help="worker counts to compare, comma-separated")
    ap.add_argument("--model", default="minilm", help="embedding model (minilm, fast or a folder)")
    ap.add_argument("--cpus", type=int, default=0, help="CPUs of the local Ray (0: as many as workers)")
    ap.add_argument("--config", type=Path, help="TOML overriding the defaults (e.g. GPU batch sizes)")
    ap.add_argument("--name", help="results file bench/results/NAME.json (default scale, or scale_gpu on a GPU)")
    ap.add_argument("--end-to-end", action="store_true",
                    help="then run codes, map, shift and report on the last run directory, each as its own "
                         "`themeshift` command: seconds and peak memory per stage")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    counts = [int(w) for w in args.workers.split(",")]
    shard_rows = max(100, args.utterances // (4 * max(counts)))  # enough parts to keep every worker busy
    rows = []
    with tempfile.TemporaryDirectory(prefix="themeshift-scale-") as tmp:
        corpus = replicated_ami(args.utterances, Path(tmp) / "corpus")
        for w in counts:
            row = one_setting(corpus, Path(tmp) / f"run-{w}", w, args.cpus, shard_rows, args.model, args.config)
            rows.append(row)
            print(f"{w} worker(s): {row['utterances']} utterances in {row['parts']} parts; segment "
                  f"{row['segment_utterances_per_s']}/s, embed {row['embed_utterances_per_s']}/s "
                  f"({row['coded']} coded); peak RSS per embed worker {row['peak_rss_mb_per_embed_worker']} MB")
        stages = end_to_end(Path(tmp) / f"run-{counts[-1]}", args, counts[-1], shard_rows) if args.end_to_end else []
    base = rows[0]
    for row in rows[1:]:
        row["segment_speedup"] = round(base["segment_seconds"] / row["segment_seconds"], 2)
        row["embed_speedup"] = round(base["embed_seconds"] / row["embed_seconds"], 2)
        print(f"{base['workers']} -> {row['workers']} workers: segment x{row['segment_speedup']}, "
              f"embed x{row['embed_speedup']}")
    import torch

    save(args.name or ("scale" if not torch.cuda.is_available() else "scale_gpu"), {"gpu": torch.cuda.is_available() and
                                                                     torch.cuda.get_device_name(0),"corpus": "AMI replicated", "model": args.model, "cpus": os.cpu_count(),
                   "shard_rows": shard_rows, "runs": rows, "end_to_end": stages})


if __name__ == "__main__":
    main()
