"""Stage runners: read what a stage needs from the run directory, call the stage's
plain function, write its tables and its manifest record. The CLI is a thin layer
over these."""
from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Callable

import pyarrow.compute as pc

from pipeline.io.rundir import update_manifest, write_table

Progress = Callable[[str, int, int], None]  # (what, done, total)


def run_segment(input_dir: Path, run_dir: Path, cfg: dict, progress: Progress | None = None) -> dict:
    from pipeline.ingest import discover, segment_corpus

    started = time.perf_counter()
    total = len(discover(Path(input_dir), cfg))
    done = 0

    def on_file(rel: str) -> None:
        nonlocal done
        done += 1
        if progress:
            progress(f"segment {rel}", done, max(total, done))

    corpus = segment_corpus(input_dir, cfg, on_file)
    run_dir = Path(run_dir)
    for name in ("utterances", "sources", "interviews", "rejected"):
        write_table(run_dir, name, getattr(corpus, name))
    utt = corpus.utterances
    reasons = Counter(r for r in utt.column("exclusion_reason").to_pylist() if r is not None)
    counts = {
        "files_read": corpus.sources.num_rows,
        "files_rejected": corpus.rejected.num_rows,
        "turns": int(pc.sum(corpus.interviews.column("n_turns")).as_py()),
        "utterances": utt.num_rows,
        "coded": int(pc.sum(utt.column("coded")).as_py()),
        "excluded": dict(sorted(reasons.items())),
        "speakers": len(set(utt.column("speaker_id").to_pylist())),
    }
    assert counts["coded"] + sum(reasons.values()) == counts["utterances"]
    record = {
        "input_dir": str(Path(input_dir).resolve()),
        "inputs": corpus.inputs,
        "rejected": corpus.rejected.to_pylist(),
        "counts": counts,
        "warnings": corpus.warnings,
        "seconds": round(time.perf_counter() - started, 3),
    }
    update_manifest(run_dir, "segment", record, cfg)
    return record


def run_embed(run_dir: Path, cfg: dict, progress: Progress | None = None) -> dict:
    from pipeline.embed import embed_utterances, load_encoder
    from pipeline.io.rundir import read_table

    started = time.perf_counter()
    utterances = read_table(run_dir, "utterances", "themeshift segment")
    encoder = load_encoder(cfg["embed"]["model"], cfg["embed"]["device"])
    table, stats = embed_utterances(utterances, encoder, cfg, progress)
    write_table(run_dir, "embeddings", table)
    record = {"model": cfg["embed"]["model"], "model_id": encoder.model_id, "model_path": str(encoder.spec.path),
              "dim": encoder.dim, "counts": {"embeddings": table.num_rows}, **stats.__dict__,
              "seconds": round(time.perf_counter() - started, 3)}
    update_manifest(run_dir, "embed", record, cfg)
    return record
