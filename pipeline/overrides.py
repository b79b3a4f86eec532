"""Researcher overrides: code fingerprint -> second-order concept (or "unmapped").

A CSV with columns fingerprint, concept (optional: label, note), or a YAML list of
mappings with the same keys. Fingerprints identify a code by its membership, so an
override keeps applying when the same corpus is re-run; one whose code no longer
exists is reported as obsolete, never silently dropped.
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import InputError
from pipeline.framework import Framework

UNMAPPED = "unmapped"
DEFAULT_NAMES = ("overrides.csv", "overrides.yaml", "overrides.yml")


@dataclass(frozen=True)
class Override:
    fingerprint: str
    concept_id: str | None  # None = the researcher marks the code unmapped
    line: int
    label: str = ""
    note: str = ""


@dataclass
class OverrideFile:
    path: str
    sha256: str
    overrides: list[Override]


def find_overrides(run_dir: Path, explicit: str | Path | None, configured: str) -> Path | None:
    """--overrides FILE, else map.overrides, else overrides.csv/.yaml in the run directory."""
    if explicit:
        return Path(explicit)
    if configured:
        return Path(configured)
    for name in DEFAULT_NAMES:
        if (Path(run_dir) / name).is_file():
            return Path(run_dir) / name
    return None


def _rows_csv(text: str, path: Path) -> list[tuple[int, dict]]:
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    missing = [c for c in ("fingerprint", "concept") if c not in header]
    if missing:
        raise InputError(f"overrides file needs columns fingerprint and concept; missing {', '.join(missing)}", path, 1)
    reader.fieldnames = header
    return [(reader.line_num, {k: (v or "").strip() for k, v in row.items() if k}) for row in reader]


def _rows_yaml(text: str, path: Path) -> list[tuple[int, dict]]:
    import yaml

    try:
        data = yaml.safe_load(text)
        nodes = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise InputError(
            f"not valid YAML: {getattr(exc, 'problem', exc)}", path, mark.line + 1 if mark else None
        ) from None
    if data is None:
        return []
    if not isinstance(data, list):
        raise InputError(
            "overrides YAML must be a list of {fingerprint, concept} entries", path, nodes.start_mark.line + 1
        )
    rows = []
    for value, node in zip(data, nodes.value):
        line = node.start_mark.line + 1
        if not isinstance(value, dict):
            raise InputError("each override must be a mapping with fingerprint and concept", path, line)
        rows.append((line, {str(k).lower(): "" if v is None else str(v).strip() for k, v in value.items()}))
    return rows


def load_overrides(path: str | Path, framework: Framework) -> OverrideFile:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError("overrides file not found", path) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError("overrides file is not UTF-8 text", path) from None
    rows = _rows_yaml(text, path) if path.suffix.lower() in (".yaml", ".yml") else _rows_csv(text, path)
    out: list[Override] = []
    seen: dict[str, int] = {}
    for line, row in rows:
        fp, target = row.get("fingerprint", ""), row.get("concept", "")
        if not fp and not target:
            continue
        if not fp:
            raise InputError("override has no fingerprint (copy it from code_dimensions.parquet)", path, line)
        if not target:
            raise InputError(
                f"override for code {fp} has no concept (a concept id or name, or '{UNMAPPED}')", path, line
            )
        if fp in seen:
            raise InputError(f"code {fp} is overridden twice (first on line {seen[fp]})", path, line)
        seen[fp] = line
        if target.lower() == UNMAPPED:
            concept_id = None
        else:
            concept = framework.concept(target)
            if concept is None:
                known = ", ".join(c.id for c in framework.concepts)
                raise InputError(f"unknown concept {target!r} (known: {known}, or '{UNMAPPED}')", path, line)
            concept_id = concept.id
        out.append(Override(fp, concept_id, line, row.get("label", ""), row.get("note", "")))
    return OverrideFile(str(path), hashlib.sha256(raw).hexdigest(), out)


def split_obsolete(file: OverrideFile, fingerprints: set[str]) -> tuple[list[Override], list[Override]]:
    """(overrides whose code exists, overrides naming a code that no longer exists)."""
    live = [o for o in file.overrides if o.fingerprint in fingerprints]
    return live, [o for o in file.overrides if o.fingerprint not in fingerprints]
