"""The run directory: one Parquet file per table plus manifest.json, all written atomically.

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


# table -> the command that writes it
COMMANDS = {
    "utterances": "themeshift segment TRANSCRIPTS --out RUN", "interviews": "themeshift segment TRANSCRIPTS --out RUN",
    "rejected": "themeshift segment TRANSCRIPTS --out RUN", "sources": "themeshift segment TRANSCRIPTS --out RUN",
    "embeddings": "themeshift embed RUN", "codes": "themeshift codes RUN", "assignments": "themeshift codes RUN",
    "code_dimensions": "themeshift map RUN", "data_structure": "themeshift map RUN",
    "utterance_dimensions": "themeshift map RUN", "shifts": "themeshift shift RUN",
    "speaker_waves": "themeshift shift RUN", "speaker_codes": "themeshift shift RUN",
    "shift_dimensions": "themeshift shift RUN", "group_shifts": "themeshift shift RUN",
    "group_trajectory": "themeshift shift RUN", "source_themes": "themeshift shift RUN", "agreement": "themeshift compare RUN --human CODES",
    "confusion": "themeshift compare RUN --human CODES", "disagreements": "themeshift compare RUN --human CODES",
    "human_codes": "themeshift compare RUN --human CODES", "learn_eval": "themeshift learn RUN --human CODES",
    "learned_codes": "themeshift learn RUN --human CODES", "utterance_map": "themeshift report RUN",
}
LINEAGE = "lineage.json"
_reads: dict[str, dict[str, str]] = {}      # run folder -> tables read by the running stage -> sha256
_written: dict[str, set[str]] = {}          # run folder -> tables the running stage has written
_digests: dict[tuple, str] = {}             # (path, size, mtime) -> sha256


def table_sha256(path: Path) -> str:
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
        path = run_dir / f"{source}.parquet"
        if not path.is_file():
            return f"it was made from {source}.parquet, which is gone"
        if table_sha256(path) != sha:
            return f"it was made from an earlier {source}.parquet"
    return None


def end_stage(run_dir: Path) -> None:
    """Forget what the finished stage read: the next stage's tables record only their own inputs."""
    _reads.pop(str(Path(run_dir).resolve()), None)
    _written.pop(str(Path(run_dir).resolve()), None)


def write_table(run_dir: Path, name: str, table: pa.Table) -> Path:
    path = Path(run_dir) / f"{name}.parquet"
    atomic_write(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"))
    key = str(Path(run_dir).resolve())
    reads, written = _reads.get(key, {}), _written.setdefault(key, set())
    written.add(name)
    lineage = _lineage(run_dir)
    # A table the stage rewrites (learn replaces utterance_dimensions) is its output, not an input of
    # the tables it writes beside it.
    lineage[name] = {"sha256": table_sha256(path),
                     "made_from": {k: v for k, v in sorted(reads.items()) if k not in written}}
    for sibling in written - {name}:
        lineage.get(sibling, {}).get("made_from", {}).pop(name, None)
    write_json(Path(run_dir) / LINEAGE, lineage)
    return path


def read_table(run_dir: Path, name: str, command: str | None = None, check: bool = True) -> pa.Table:
    """A run table; refused when it is stale (see the module docstring). check=False: read without
    the check (the report lists stale tables instead of using them)."""
    path = Path(run_dir) / f"{name}.parquet"
    if not path.is_file():
        hint = f"; run `{command}` first" if command else ""
        raise InputError(f"missing {name}.parquet{hint}", run_dir)
    if check and (why := stale_reason(run_dir, name)):
        raise InputError(f"stale table: {why}; re-run `{COMMANDS.get(name, command or 'its stage')}`", path)
    _reads.setdefault(str(Path(run_dir).resolve()), {})[name] = table_sha256(path)
    try:
        return pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"unreadable Parquet file ({exc}); re-run `{COMMANDS.get(name, 'its stage')}`", path) \
            from None


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
    end_stage(run_dir)
