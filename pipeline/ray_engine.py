"""The Ray engine: segment and embed past one machine (pip install 'themeshift[scale]').

segment: one Ray task per input file, each calling ingest.segment_file, then ingest.assemble in the
driver, so both engines share every rule. embed: a Ray Data job over the part files of utterances/,
mapped by an actor pool that holds one encoder per worker (a GPU each when the cluster has GPUs).
The persistent text cache of the local engine is not used: resuming is by whole parts.

Every embeddings part is written atomically under a name fixed by its index and records a digest of
the texts and model it was made from: a killed run resumes by skipping the parts whose digest still
matches, and a part redone after a worker died replaces itself instead of being duplicated.
"""

from __future__ import annotations

import hashlib
import logging
import os
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import schema
from pipeline.codes_scale import assign_batch, centroid_matrix
from pipeline.embed import load_encoder
from pipeline.errors import EnvironmentFault, InputError
from pipeline.ingest import assemble, open_study, segment_file
from pipeline.io.rundir import (
    finish_folder_table,
    part_files,
    part_metadata,
    table_files,
    table_num_rows,
    write_part,
)
from pipeline.segment import load_sentence_splitter
from pipeline.settings import EmbedSettings, ScaleSettings, SegmentSettings

RAY_MISSING = "--engine ray needs Ray: pip install 'themeshift[scale]'"
INPUT_KEY = "themeshift.input_digest"  # embeddings part metadata: digest of what the part was made from
# Workers must stay offline too; on a cluster they do not inherit the driver's environment.
_WORKER_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "RAY_USAGE_STATS_ENABLED": "0",
}


def require_ray():
    try:
        import ray
        import ray.data  # noqa: F401 - the [data] extra, not only Ray core
    except ImportError:
        raise InputError(RAY_MISSING) from None
    return ray


def reachable(address: str, timeout: float) -> None:
    """Fail within `timeout` seconds, naming the address, when nothing listens there: Ray itself
    would wait for the cluster forever. 'auto' (the cluster `ray start` made here) is Ray's to find."""
    import socket

    if address == "auto" or address.startswith(("ray://", "anyscale://")):
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"--address {address!r}: give HOST:PORT of the cluster's head (e.g. 10.0.0.5:6379) or auto")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return
    except socket.gaierror:
        reason = "unknown host"
    except TimeoutError:
        reason = f"no answer within {timeout:g} s"
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
    raise EnvironmentFault(
        f"cannot reach the Ray cluster at {address} ({reason}); start it with `ray start --head` "
        "there, or check --address / [scale] address"
    )


def configured_session(scale: ScaleSettings):
    """The Ray session [scale] describes: its address, within its connect_timeout."""
    return ray_session(scale.address, connect_timeout=scale.connect_timeout)


@contextmanager
def ray_session(address: str = "", num_cpus: int | None = None, connect_timeout: float = 30.0):
    """Join the cluster at `address`, or start Ray on this machine for the run (stopped afterwards).
    Never reaches the network: no dashboard, no usage statistics."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray = require_ray()
    if ray.is_initialized():
        yield ray
        return
    env = {
        "env_vars": {
            **_WORKER_ENV,
            **({"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else {}),
        }
    }
    kwargs = dict(include_dashboard=False, log_to_driver=False, runtime_env=env, logging_level=logging.WARNING)
    if address:
        reachable(address, connect_timeout)
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=num_cpus, **kwargs)
    ray.data.DataContext.get_current().enable_progress_bars = False  # themeshift shows its own progress
    for name in ("ray.data", "ray.data._internal.progress"):  # the latter would say the bars are off
        logging.getLogger(name).setLevel(logging.ERROR if name.endswith("progress") else logging.WARNING)
    try:
        yield ray
    finally:
        ray.shutdown()


# ------------------------------------------------------------------ segment


@lru_cache(maxsize=2)
def _splitter(name: str):
    """One sentence splitter per worker process, reused by every file it segments."""

    return load_sentence_splitter(name)


def _segment_one(study, rel: str, s: SegmentSettings):

    return segment_file(study, rel, _splitter(s.sentence_splitter), s)


def segment_corpus(
    folder: Path, s: SegmentSettings, on_file: Callable[[str], None] | None = None, exclude: tuple[Path, ...] = ()
):
    """ingest.segment_corpus with the files segmented in parallel as Ray tasks."""

    ray = require_ray()
    study = open_study(folder, s, exclude)
    task = ray.remote(num_cpus=1)(_segment_one)
    study_ref, settings_ref = ray.put(study), ray.put(s)
    refs = [task.remote(study_ref, rel, settings_ref) for rel in study.files]
    rel_of = dict(zip(refs, study.files))
    pending = list(refs)
    while pending:  # progress as files finish, in whatever order they do
        done, pending = ray.wait(pending, num_returns=1)
        if on_file:
            on_file(rel_of[done[0]])
    return assemble(study, ray.get(refs), s.skip_bad)


def write_sharded(run_dir: Path, name: str, table: pa.Table, shard_rows: int) -> Path:
    """`table` as NAME/part-00000.parquet ... of shard_rows rows each, in row order."""
    folder = Path(run_dir) / name
    n_parts = max(1, -(-table.num_rows // shard_rows))
    for i in range(n_parts):
        write_part(folder, i, table.slice(i * shard_rows, shard_rows))
    return finish_folder_table(run_dir, name, n_parts)


# ------------------------------------------------------------------ embed


def input_digest(utterance_ids: list[str], texts: list[str], model_id: str) -> str:
    h = hashlib.sha256(model_id.encode())
    for uid, text in zip(utterance_ids, texts):
        h.update(f"\x00{uid}\x01{text}".encode())
    return h.hexdigest()


def _coded(path: Path) -> pa.Table:
    table = pq.read_table(path, columns=["utterance_id", "text", "coded"])
    return table.filter(pc.field("coded")).select(["utterance_id", "text"])


class EmbedWorker:
    """A Ray Data actor: one encoder, loaded once; each call embeds whole utterance parts and writes
    the matching embeddings parts itself (so rows never travel back through the driver)."""

    def __init__(self, embed: EmbedSettings, threads: int):

        self.embed = embed
        # No persistent text cache here: a worker would rescan the whole cache for every part it embeds.
        # A rerun skips whole parts instead (see embed_parts); texts repeated within a part are embedded once.
        self.encoder = load_encoder(embed.model, embed.device)
        _ = self.encoder.model  # load now: a worker pays for its model once, before its first part
        import torch

        torch.set_num_threads(threads)  # the model loader takes every core; this worker has `threads`

    def __call__(self, batch: dict) -> dict:
        import resource

        out: dict[str, list] = {"index": [], "rows": [], "embedded": [], "cache_hits": [], "pid": [], "peak_rss_mb": []}
        e = self.embed
        for index, source, target, digest in zip(batch["index"], batch["source"], batch["target"], batch["digest"]):
            coded = _coded(Path(source))
            matrix, stats = self.encoder.encode_cached(
                coded.column("text").to_pylist(), e.batch_size, None, e.batch_tokens
            )
            table = pa.table(
                {
                    "utterance_id": coded.column("utterance_id"),
                    "vector": pa.FixedSizeListArray.from_arrays(
                        pa.array(matrix.reshape(-1), pa.float32()), self.encoder.dim
                    ),
                },
                schema=schema.embeddings_schema(self.encoder.dim),
            )
            write_part(Path(target), int(index), table, {INPUT_KEY: str(digest)})
            out["index"].append(int(index))
            out["rows"].append(table.num_rows)
            out["embedded"].append(stats.embedded)
            out["cache_hits"].append(stats.cache_hits)
            out["pid"].append(os.getpid())
            out["peak_rss_mb"].append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        return out


def plan_workers(res: dict, workers: int) -> tuple[int, int, int]:
    """(workers, CPUs per worker, GPUs per worker) on a cluster with resources `res` (ray.cluster_resources())."""
    gpus, cpus = int(res.get("GPU", 0)), max(1, int(res.get("CPU", 1)))
    # Never more workers than the cluster can place: the actor pool would wait for them forever.
    if gpus:
        n = min(workers or gpus, gpus)
        return n, max(1, cpus // n), 1
    n = min(workers or cpus, cpus)
    return n, max(1, cpus // n), 0


def embed_parts(
    run_dir: Path,
    embed: EmbedSettings,
    model_id: str,
    dim: int,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict:
    """Embed the coded utterances of every part of utterances/ into embeddings/, skipping parts
    already embedded from the same texts with the same model (a resumed run)."""
    ray = require_ray()
    run_dir = Path(run_dir)
    sources = part_files(run_dir / "utterances")
    target = run_dir / "embeddings"
    todo, reused = [], 0
    for i, src in enumerate(sources):
        coded = _coded(src)
        digest = input_digest(coded.column("utterance_id").to_pylist(), coded.column("text").to_pylist(), model_id)
        part = target / f"part-{i:05d}.parquet"
        meta = part_metadata(part) if part.is_file() else {}
        if meta.get(INPUT_KEY) == digest and pq.read_schema(part).equals(schema.embeddings_schema(dim)):
            reused += 1
            continue
        todo.append({"index": i, "source": str(src), "target": str(target), "digest": digest})
    workers, threads, gpus = plan_workers(ray.cluster_resources(), embed.scale.workers)
    results: list[dict] = []
    if todo:
        workers = min(workers, len(todo))
        ds = ray.data.from_items(todo, override_num_blocks=len(todo)).map_batches(
            EmbedWorker,
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=workers),
            fn_constructor_kwargs={"embed": embed, "threads": threads},
            num_cpus=threads,
            num_gpus=gpus,
        )
        for row in ds.iter_rows():
            results.append(row)
            if progress:
                progress("embed (parts)", len(results) + reused, len(sources))
    finish_folder_table(run_dir, "embeddings", len(sources))
    rss: dict[int, float] = {}
    for r in results:
        rss[int(r["pid"])] = max(rss.get(int(r["pid"]), 0.0), float(r["peak_rss_mb"]))
    return {
        "engine": "ray",
        "parts": len(sources),
        "parts_reused": reused,
        "parts_embedded": len(results),
        "workers": workers,
        "threads_per_worker": threads,
        "gpus_per_worker": gpus,
        "embedded": sum(int(r["embedded"]) for r in results),
        "cache_hits": sum(int(r["cache_hits"]) for r in results),
        "peak_rss_mb_per_worker": sorted(round(v, 1) for v in rss.values()),
    }


# ------------------------------------------------------------------ codes


def _assign_part(path: str, centroids, code_ids, threshold: float) -> pa.Table:
    return assign_batch(pq.read_table(path), centroids, code_ids, threshold)


def assign_parts(
    parts: list[Path], centroids, code_ids, threshold: float, on_rows: Callable[[int], None] | None = None
) -> list[pa.Table]:
    """codes_scale.assign_batch on every embeddings part, one Ray task each; results in part order.
    on_rows(n): called with the rows assigned so far as parts finish."""
    ray = require_ray()
    task = ray.remote(num_cpus=1)(_assign_part)
    cents, ids = ray.put(centroids), ray.put(code_ids)
    refs = [task.remote(str(p), cents, ids, threshold) for p in parts]
    pending, done = list(refs), 0
    while pending:  # progress as parts finish, in whatever order they do
        finished, pending = ray.wait(pending, num_returns=1)
        done += ray.get(finished[0]).num_rows
        if on_rows:
            on_rows(done)
    return ray.get(refs)


def assign_all_parts(
    run_dir: Path, codes: pa.Table, threshold: float, progress: Callable[[str, int, int], None] | None = None
) -> pa.Table:
    """Every embedded utterance's nearest code, one Ray task per part file of embeddings/ (the local
    engine: codes_scale.assign_all)."""
    centroids, code_ids = centroid_matrix(codes)
    total = table_num_rows(run_dir, "embeddings")
    pieces = assign_parts(
        table_files(run_dir, "embeddings"),
        centroids,
        code_ids,
        threshold,
        progress and (lambda done: progress("codes (assigning)", done, total)),
    )
    return pa.concat_tables(pieces) if pieces else pa.Table.from_pylist([], schema=schema.ASSIGNMENTS)
