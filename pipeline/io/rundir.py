"""The run directory: one Parquet file per table plus manifest.json, all written atomically."""
from __future__ import annotations

import json
import os
import platform
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import InputError

_PACKAGES = ["themeshift", "pyarrow", "spacy", "sentence-transformers", "torch", "bertopic",
             "umap-learn", "hdbscan", "scikit-learn", "numpy", "model2vec"]


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


def write_table(run_dir: Path, name: str, table: pa.Table) -> Path:
    path = Path(run_dir) / f"{name}.parquet"
    atomic_write(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"))
    return path


def read_table(run_dir: Path, name: str, command: str | None = None) -> pa.Table:
    path = Path(run_dir) / f"{name}.parquet"
    if not path.is_file():
        hint = f"; run `{command}` first" if command else ""
        raise InputError(f"missing {name}.parquet{hint}", run_dir)
    return pq.read_table(path)


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
    manifest = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    manifest.setdefault("stages", {})[stage] = record
    if config is not None:
        manifest["config"] = config
        manifest["seed"] = config["run"]["seed"]
    manifest["versions"] = versions()
    write_json(path, manifest)
