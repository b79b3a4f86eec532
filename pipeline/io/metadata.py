"""Corpus metadata: manifest.csv (one row per transcript), speakers.csv (one row per
speaker) and the filename template used when a file has no manifest row."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import InputError
from pipeline.io.readers import label_key

_TRUE = {"true", "yes", "y", "1", "t"}
_FALSE = {"false", "no", "n", "0", "f", ""}


@dataclass
class FileMeta:
    interview_id: str
    wave: int | None = None
    date: str | None = None
    participant_id: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
    source_type: str | None = None  # from the manifest's source_type column; None: folder convention decides


@dataclass
class Speaker:
    speaker_id: str
    role: str | None
    is_interviewer: bool
    extra: dict[str, str] = field(default_factory=dict)  # other speakers.csv columns (site, profession, ...)


# speakers.csv columns that never reach a table: 'name' holds the real name pseudonymisation replaces
SPEAKER_COLUMNS = {"speaker_id", "role", "is_interviewer", "aliases", "name"}


MAX_WAVE = 2**31 - 1  # waves are int32 in every table


def read_csv_rows(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InputError("not UTF-8 text", path) from None
    if "\x00" in text:
        raise InputError("binary file, not a CSV table", path)
    reader = csv.DictReader(text.splitlines())
    fields = [f.strip().lower() for f in (reader.fieldnames or [])]
    rows = []
    last = reader.line_num
    for row in reader:
        first, last = last + 1, reader.line_num
        cut_short = any(v is None for k, v in row.items() if k is not None)
        if last > first or (cut_short and any("," in (v or "") for v in row.values() if isinstance(v, str))):
            raise InputError("a quoted field opened here is never closed (an unbalanced '\"')", path, first)
        clean = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k is not None}
        if any(clean.values()):
            rows.append((reader.line_num, clean))
    return fields, rows


def parse_wave(value: str, path: Path | str, line: int | None) -> int | None:
    value = value.strip()
    if not value:
        return None
    m = re.fullmatch(r"(?:w|wave)?\s*(\d+)", value, re.I)
    if not m or int(m.group(1)) > MAX_WAVE:
        raise InputError(f"wave must be a whole number from 0 to {MAX_WAVE}, got {value!r}", path, line)
    return int(m.group(1))


_SOURCE_TYPE_NAMES = {
    "interview": "interview",
    "transcript": "interview",
    "fieldnote": "fieldnote",
    "field note": "fieldnote",
    "field notes": "fieldnote",
    "fieldnotes": "fieldnote",
    "observation": "fieldnote",
    "document": "document",
    "doc": "document",
}


def parse_source_type(value: str, path: Path | str, line: int | None) -> str | None:
    value = value.strip().lower().replace("_", " ").replace("-", " ")
    if not value:
        return None
    if value not in _SOURCE_TYPE_NAMES:
        raise InputError(f"source_type must be interview, fieldnote or document, got {value!r}", path, line)
    return _SOURCE_TYPE_NAMES[value]


def read_manifest(path: Path, folder: Path) -> dict[str, tuple[FileMeta, int]]:
    """Manifest rows keyed by the file's path relative to `folder`, with their line numbers."""
    fields, rows = read_csv_rows(path)
    if "file" not in fields:
        hint = ""
        if fields and any(sep in fields[0] for sep in (";", "\t")):
            hint = " (its columns are separated by ';' or tabs: save it as comma-separated CSV)"
        raise InputError(f"manifest needs a 'file' column{hint}", path, 1)
    known = {"file", "interview_id", "wave", "date", "speaker_id", "source_type"}
    out: dict[str, tuple[FileMeta, int]] = {}
    seen_ids: dict[str, int] = {}
    root = folder.resolve()
    for line, row in rows:
        rel = row["file"].replace("\\", "/")
        if not rel:
            raise InputError("empty 'file' value", path, line)
        if Path(rel).is_absolute() or not (folder / rel).resolve().is_relative_to(root):
            raise InputError(
                f"file {rel!r} lies outside the input folder; refused (give paths inside {folder})", path, line
            )
        if not (folder / rel).is_file():
            raise InputError(f"manifest names a missing file {rel!r}", path, line)
        key = str(Path(rel).as_posix())
        if key in out:
            raise InputError(f"file {rel!r} is listed twice (also on line {out[key][1]})", path, line)
        interview_id = row.get("interview_id") or Path(rel).stem
        if interview_id in seen_ids:
            raise InputError(
                f"duplicate interview_id {interview_id!r} (also on line {seen_ids[interview_id]})", path, line
            )
        seen_ids[interview_id] = line
        meta = FileMeta(
            interview_id=interview_id,
            wave=parse_wave(row.get("wave", ""), path, line),
            date=row.get("date") or None,
            participant_id=row.get("speaker_id") or None,
            extra={k: v for k, v in row.items() if k not in known},
            source_type=parse_source_type(row.get("source_type", ""), path, line),
        )
        out[key] = (meta, line)
    return out


def read_speakers(path: Path) -> dict[str, Speaker]:
    """Speakers keyed by every normalised label that names them (id and aliases)."""
    fields, rows = read_csv_rows(path)
    if "speaker_id" not in fields:
        raise InputError("speakers file needs a 'speaker_id' column", path, 1)
    out: dict[str, Speaker] = {}
    first_line: dict[str, int] = {}
    for line, row in rows:
        flag = row.get("is_interviewer", "").lower()
        if flag not in _TRUE | _FALSE:
            raise InputError(f"is_interviewer must be true or false, got {flag!r}", path, line)
        if row["speaker_id"] in first_line:
            raise InputError(
                f"speaker {row['speaker_id']!r} is listed twice (also on line "
                f"{first_line[row['speaker_id']]}); give one row per speaker",
                path,
                line,
            )
        first_line[row["speaker_id"]] = line
        speaker = Speaker(
            row["speaker_id"],
            row.get("role") or None,
            flag in _TRUE,
            {k: v for k, v in row.items() if k not in SPEAKER_COLUMNS},
        )
        names = [row["speaker_id"]] + [a for a in row.get("aliases", "").split(";") if a.strip()]
        for name in names:
            key = label_key(name)
            if key in out and out[key].speaker_id != speaker.speaker_id:
                raise InputError(
                    f"label {name!r} names both {out[key].speaker_id!r} and {speaker.speaker_id!r}", path, line
                )
            out[key] = speaker
    return out


def template_regex(template: str) -> re.Pattern:
    """'{speaker}_wave{wave}' -> a regex with named groups matched against the file stem."""
    pattern, pos = "", 0
    for m in re.finditer(r"\{(\w+)\}", template):
        pattern += re.escape(template[pos : m.start()])
        name = m.group(1)
        if name not in ("interview_id", "speaker", "wave", "any"):
            raise InputError(f"unknown field {{{name}}} in filename_template {template!r}")
        group = r"\d+" if name == "wave" else r".+?"
        pattern += f"(?P<{name}>{group})" if name != "any" else ".*?"
        pos = m.end()
    return re.compile(pattern + re.escape(template[pos:]) + "$")


def meta_from_filename(rel: str, template: re.Pattern) -> FileMeta:
    stem = Path(rel).stem
    m = template.match(stem)
    if not m:
        raise InputError(f"file name does not match filename_template ({template.pattern})", rel)
    groups = m.groupdict()
    return FileMeta(
        interview_id=groups.get("interview_id") or stem,
        wave=int(groups["wave"]) if groups.get("wave") else None,
        participant_id=groups.get("speaker"),
    )
