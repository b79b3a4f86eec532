"""The run directory: one Parquet file per table plus manifest.json, all written atomically.

A table is one Parquet file (NAME.parquet) or, when the Ray engine wrote it, a folder of part files
(NAME/part-00000.parquet, ...) that pyarrow, polars, DuckDB and R arrow read as one table; readers take
either, and a run holds only one of the two for a table.

Lineage: every table written records, in lineage.json, the SHA-256 of the tables its stage read.
Reading a table checks that those still match: a table made from an earlier utterances.parquet
(a corpus re-segmented into the same folder, a stage killed half-way through a run) is refused,
naming the stale table and the command that remakes it, instead of mixing old and new tables.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import InputError
from pipeline.stages import remake_command

_PACKAGES = [
    "themeshift",
    "pyarrow",
    "spacy",
    "sentence-transformers",
    "torch",
    "bertopic",
    "umap-learn",
    "hdbscan",
    "scikit-learn",
    "numpy",
    "model2vec",
]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write) -> None:
    """Call write(tmp_path) on a temporary file beside path, then rename it over path. The file gets
    the user's umask (mkstemp makes 0600: a colleague or an R session under another account could
    not read a shared run folder); a failure (disk full, kill) leaves the old file or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


LINEAGE = "lineage.json"
# Rows per Parquet row group: a reader decodes a whole group at once, so this bounds the memory of
# stages that stream a table (io.vectors), which pyarrow's default of about a million rows does not.
ROW_GROUP_ROWS = 65_536
_digests: dict[tuple, str] = {}  # (path, size, mtime) -> sha256


def table_path(run_dir: Path, name: str) -> Path:
    """NAME/ when the table is a folder of part files, else NAME.parquet (which may not exist)."""
    folder = Path(run_dir) / name
    return folder if folder.is_dir() else Path(run_dir) / f"{name}.parquet"


def part_files(folder: Path) -> list[Path]:
    """A folder table's parts in order; temporary files (dot names) are not parts."""
    return sorted(folder.glob("part-*.parquet"))


def table_files(run_dir: Path, name: str) -> list[Path]:
    """The Parquet files that hold a table, in row order: its parts, or its one file."""
    path = table_path(run_dir, name)
    return part_files(path) if path.is_dir() else [path]


def table_num_rows(run_dir: Path, name: str) -> int:
    """A table's row count, from the files' footers (no rows read)."""
    return sum(pq.ParquetFile(f).metadata.num_rows for f in table_files(run_dir, name))


def table_sha256(path: Path) -> str:
    """SHA-256 of a table file; of a folder table, over its parts' names and digests."""
    if path.is_dir():
        lines = "".join(f"{p.name}:{table_sha256(p)}\n" for p in part_files(path))
        return hashlib.sha256(lines.encode()).hexdigest()
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _digests:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 22):
                h.update(chunk)
        _digests[key] = h.hexdigest()
    return _digests[key]


def _lineage(run_dir: Path) -> dict:
    path = Path(run_dir) / LINEAGE
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (ValueError, UnicodeDecodeError):
        raise InputError("not valid JSON; delete it to start the run's lineage afresh", path) from None


def stale_reason(run_dir: Path, name: str) -> str | None:
    """Why `name` no longer matches the tables it was made from (None: it does, or it has no record)."""
    run_dir = Path(run_dir)
    entry = _lineage(run_dir).get(name)
    if not entry:
        return None
    for source, sha in sorted(entry.get("made_from", {}).items()):
        path = table_path(run_dir, source)
        if not path.exists():
            return f"it was made from {path.name}, which is gone"
        if table_sha256(path) != sha:
            return f"it was made from an earlier {path.name}"
    return None


def input_digests(run_dir: Path, names) -> dict[str, str]:
    """SHA-256 of each named table the run directory holds: what a stage's outputs are made from."""
    return {n: table_sha256(table_path(run_dir, n)) for n in names if table_path(run_dir, n).exists()}


def write_table(run_dir: Path, name: str, table: pa.Table) -> Path:
    path = Path(run_dir) / f"{name}.parquet"
    atomic_write(path, lambda tmp: pq.write_table(table, tmp, compression="zstd", row_group_size=ROW_GROUP_ROWS))
    if (Path(run_dir) / name).is_dir():  # a folder table from an earlier run with the Ray engine
        shutil.rmtree(Path(run_dir) / name)
    return path


def write_part(folder: Path, index: int, table: pa.Table, metadata: dict[str, str] | None = None) -> Path:
    """Part `index` of a folder table, written atomically under a name fixed by the index, so a
    part redone (a resumed run, a retried worker) replaces itself and is never duplicated.
    metadata: key-value pairs kept in the file's schema (e.g. the digest of the input it was made from)."""
    path = Path(folder) / f"part-{index:05d}.parquet"
    if metadata:
        table = table.replace_schema_metadata(
            {**(table.schema.metadata or {}), **{k.encode(): v.encode() for k, v in metadata.items()}}
        )
    atomic_write(path, lambda tmp: pq.write_table(table, tmp, compression="zstd", row_group_size=ROW_GROUP_ROWS))
    return path


def part_metadata(path: Path) -> dict[str, str]:
    """The key-value metadata write_part stored; {} when the part is missing or unreadable."""
    try:
        meta = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowException):
        return {}
    return {k.decode(): v.decode() for k, v in meta.items() if not k.startswith(b"ARROW")}


def finish_folder_table(run_dir: Path, name: str, n_parts: int) -> Path:
    """Close a folder table whose parts 0..n_parts-1 are written: drop parts left from a larger earlier
    run and the single-file form of the table, then record its lineage."""
    folder = Path(run_dir) / name
    for part in part_files(folder):
        if int(part.stem.split("-")[1]) >= n_parts:
            part.unlink()
    (Path(run_dir) / f"{name}.parquet").unlink(missing_ok=True)
    return folder


def record_lineage(run_dir: Path, written: list[str], made_from: dict[str, str]) -> None:
    """Record that the tables `written` were made from the tables (name -> sha256) `made_from`. A table
    the stage rewrites (learn replaces utterance_dimensions) is its output, not an input of the tables
    it writes beside it."""
    lineage = _lineage(run_dir)
    for name in written:
        lineage[name] = {
            "sha256": table_sha256(table_path(run_dir, name)),
            "made_from": {k: v for k, v in sorted(made_from.items()) if k not in written},
        }
    write_json(Path(run_dir) / LINEAGE, lineage)


def read_table(run_dir: Path, name: str, check: bool = True, columns: list[str] | None = None) -> pa.Table:
    """A run table, file or folder; refused when it is stale (see the module docstring). check=False:
    read without the check (the report lists stale tables instead of using them). A missing table names
    the command that makes it, as the runner's input check does."""
    path = table_path(run_dir, name)
    if not path.exists():
        raise InputError(f"missing {name}.parquet; run `{remake_command(name)}` first", run_dir)
    if check and (why := stale_reason(run_dir, name)):
        raise InputError(f"stale table: {why}; re-run `{remake_command(name)}`", path)
    try:
        if path.is_dir():  # parts in name order, so the rows keep the order they were written in
            return (
                pa.concat_tables([pq.read_table(p, columns=columns) for p in part_files(path)])
                if part_files(path)
                else pq.read_table(path, columns=columns)
            )
        return pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"unreadable Parquet file ({exc}); re-run `{remake_command(name)}`", path) from None


def iter_table(run_dir: Path, name: str, columns: list[str] | None = None, batch_rows: int = 100_000):
    """A run table (file or folder) as a stream of tables of at most about batch_rows rows, in row
    order, so a stage can pass over tables larger than memory. Reads without the stale check:
    call read_table(..., columns=[a small column]) first, which checks and records the read."""
    try:
        for f in table_files(run_dir, name):
            parquet = pq.ParquetFile(f)
            # A row group at a time: iter_batches held the whole file in memory (measured: 720 MB for a
            # 200 MB embeddings file, against 390 MB this way).
            for group in range(parquet.num_row_groups):
                table = parquet.read_row_group(group, columns=columns)
                for start in range(0, table.num_rows, batch_rows):
                    yield table.slice(start, batch_rows)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(
            f"unreadable Parquet file ({exc}); re-run `{remake_command(name)}`", table_path(run_dir, name)
        ) from None


def take_sorted(batches, positions):
    """(lo, hi, rows): for each batch of a stream holding some of the sorted row `positions`, the
    slice [lo, hi) of positions it holds and those rows. One pass, whatever the batches' sizes."""
    import numpy as np

    offset = 0
    for batch in batches:
        lo, hi = np.searchsorted(positions, [offset, offset + batch.num_rows])
        if hi > lo:
            yield int(lo), int(hi), batch.take(pa.array(positions[lo:hi] - offset))
        offset += batch.num_rows


def read_rows(
    run_dir: Path, name: str, positions, columns: list[str] | None = None, batch_rows: int = 100_000
) -> pa.Table:
    """The rows at sorted `positions` of a run table, read a batch at a time (never the whole table)."""
    import numpy as np

    positions = np.asarray(positions, dtype=np.int64)
    pieces = [rows for _, _, rows in take_sorted(iter_table(run_dir, name, columns, batch_rows), positions)]
    if pieces:
        return pa.concat_tables(pieces)
    files = table_files(run_dir, name)  # no row asked for: an empty table of the same columns
    if not files:  # a folder without parts
        return read_table(run_dir, name, check=False, columns=columns)
    schema = pq.read_schema(files[0])
    return schema.empty_table().select(columns or schema.names)


def write_json(path: Path, data: Any) -> None:
    text = json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"
    atomic_write(Path(path), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def update_manifest(run_dir: Path, stage: str, record: dict[str, Any], config: dict | None = None) -> None:
    """Merge one stage's record into manifest.json (inputs, counts, timings, parameters)."""
    path = Path(run_dir) / "manifest.json"
    manifest = read_run_manifest(run_dir)
    manifest.setdefault("stages", {})[stage] = record
    if config is not None:
        manifest["config"] = config
        manifest["seed"] = config["run"]["seed"]
    manifest["versions"] = versions()
    write_json(path, manifest)


def read_run_manifest(run_dir: Path) -> dict[str, Any]:
    """manifest.json ({} when the run has none yet)."""
    path = Path(run_dir) / "manifest.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"manifest is not valid JSON ({exc})", path) from None


def stage_record(run_dir: Path, stage: str) -> dict[str, Any]:
    """One stage's manifest record ({} when it has not run)."""
    return read_run_manifest(run_dir).get("stages", {}).get(stage, {})
