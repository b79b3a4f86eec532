"""Persistent embedding cache: Parquet shards of (text_hash, vector) per model id.

Each run that embeds something adds one shard, written to a temporary name and
renamed, so a crash never leaves half a shard and two runs at once never write the
same file. Each shard carries a checksum of its (text hash, vector) pairs. A shard that
cannot be read, holds bad vectors or no longer matches its checksum is reported, deleted
and rebuilt from the model. Many small shards are merged under a lock.
"""

from __future__ import annotations

import fcntl
import os
import uuid
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.io.rundir import atomic_write

MAX_SHARDS = 16


class EmbeddingCache:
    def __init__(self, root: Path, model_id: str, dim: int):
        self.dir = Path(root) / model_id
        self.dim = dim
        self.schema = pa.schema([("text_hash", pa.string()), ("vector", pa.list_(pa.float32(), dim))])

    def _shards(self) -> list[Path]:
        return sorted(self.dir.glob("shard-*.parquet")) if self.dir.is_dir() else []

    def _read(self, shard: Path) -> pa.Table | None:
        if shard.is_dir():  # not ours to remove
            warnings.warn(
                f"embedding cache: {shard} is a folder, not a cache shard; left alone and not read", stacklevel=2
            )
            return None
        try:
            table = pq.read_table(shard)
            stored = (table.schema.metadata or {}).get(CHECKSUM_KEY, b"").decode("ascii", "replace")
            table = table.replace_schema_metadata(None)
            if not table.schema.equals(self.schema):
                raise ValueError("unexpected columns")
            if stored != checksum(table):  # rows whose vectors were moved to other texts, or any other edit
                raise ValueError("its rows do not match its checksum")
            mat = table.column("vector").combine_chunks().values.to_numpy(zero_copy_only=False)
            norms = np.linalg.norm(mat.reshape(-1, self.dim), axis=1) if len(mat) else np.ones(0)
            if not np.all(np.isfinite(norms)) or np.any(np.abs(norms - 1) > 1e-3):
                raise ValueError("vectors are not unit length")
            return table
        except FileNotFoundError:  # merged away by another run meanwhile
            return None
        except (OSError, ValueError, pa.ArrowException) as exc:
            warnings.warn(
                f"embedding cache shard {shard} is corrupted ({exc}); removing it, texts will be re-embedded",
                stacklevel=2,
            )
            shard.unlink(missing_ok=True)
            return None

    def get(self, hashes: list[str]) -> dict[str, np.ndarray]:
        wanted = pa.array(hashes, pa.string())
        found: dict[str, np.ndarray] = {}
        for shard in self._shards():
            table = self._read(shard)
            if table is None:
                continue
            hit = table.filter(pc.is_in(table.column("text_hash"), value_set=wanted))
            if hit.num_rows:
                mat = hit.column("vector").combine_chunks().values.to_numpy(zero_copy_only=False)
                found.update(zip(hit.column("text_hash").to_pylist(), mat.reshape(-1, self.dim)))
        return found

    def put(self, hashes: list[str], vectors: np.ndarray) -> None:
        """Add a shard. The cache only saves time: when it cannot be written (a full or read-only disk,
        no permission) the run goes on without it, saying so once."""
        try:
            self._put(hashes, vectors)
        except OSError as exc:
            warnings.warn(
                f"embedding cache {self.dir} cannot be written ({exc.strerror or exc}); going on "
                "without caching these vectors (embed.cache_dir or embed.use_cache = false)",
                stacklevel=2,
            )

    def _put(self, hashes: list[str], vectors: np.ndarray) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        table = pa.table(
            {
                "text_hash": pa.array(hashes, pa.string()),
                "vector": pa.FixedSizeListArray.from_arrays(
                    pa.array(np.asarray(vectors, np.float32).reshape(-1)), self.dim
                ),
            },
            schema=self.schema,
        )
        name = f"shard-{os.getpid()}-{uuid.uuid4().hex}.parquet"
        atomic_write(self.dir / name, lambda tmp: pq.write_table(_with_checksum(table), tmp))
        if len(self._shards()) > MAX_SHARDS:
            self.compact()

    def compact(self) -> None:
        """Merge all shards into one; skipped when another run is already merging."""
        with open(self.dir / ".lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return
            shards = self._shards()
            tables = [t for t in (self._read(s) for s in shards) if t is not None]
            if not tables:
                return
            merged = pa.concat_tables(tables)
            keep = _first_occurrences(merged.column("text_hash").to_pylist())
            merged = merged.take(pa.array(keep))
            name = f"shard-{os.getpid()}-{uuid.uuid4().hex}.parquet"
            atomic_write(self.dir / name, lambda tmp: pq.write_table(_with_checksum(merged), tmp))
            for shard in shards:
                shard.unlink(missing_ok=True)


CHECKSUM_KEY = b"themeshift.checksum"


def checksum(table: pa.Table) -> str:
    """SHA-256 over every (text hash, vector) pair, taken in text-hash order: whole rows may be
    reordered, but a vector moved to another text (or changed) is caught."""
    import hashlib

    if table.num_rows == 0:
        return hashlib.sha256(b"").hexdigest()
    table = table.sort_by("text_hash")
    digest = hashlib.sha256()
    digest.update("\x1f".join(table.column("text_hash").to_pylist()).encode("ascii"))
    digest.update(
        np.ascontiguousarray(
            table.column("vector").combine_chunks().values.to_numpy(zero_copy_only=False), dtype=np.float32
        ).tobytes()
    )
    return digest.hexdigest()


def _with_checksum(table: pa.Table) -> pa.Table:
    return table.replace_schema_metadata({CHECKSUM_KEY: checksum(table).encode("ascii")})


def _first_occurrences(values: list[str]) -> list[int]:
    seen: set[str] = set()
    keep = []
    for i, v in enumerate(values):
        if v not in seen:
            seen.add(v)
            keep.append(i)
    return keep
