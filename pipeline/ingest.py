"""Read a folder of transcripts with its metadata and segment every file.

The one entry point is `segment_corpus`; it returns Arrow tables and never writes.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import pyarrow as pa

from pipeline import schema
from pipeline.errors import InputError, environment_fault
from pipeline.io.documents import read_unlabelled
from pipeline.io.formats import EXTENSIONS
from pipeline.io.metadata import (
    FileMeta,
    meta_from_filename,
    read_manifest,
    read_speakers,
    template_regex,
)
from pipeline.io.readers import label_key, read_document
from pipeline.io.turns import NO_LABELS
from pipeline.segment import (
    SpeakerResolver,
    columns_to_table,
    load_sentence_splitter,
    one_label_many_people,
    segment_document,
)
from pipeline.settings import InputSettings, SegmentSettings


@dataclass
class Corpus:
    utterances: pa.Table
    sources: pa.Table
    interviews: pa.Table
    rejected: pa.Table
    speakers: pa.Table | None = None  # speakers.csv, one row per speaker (schema.SPEAKERS + its own columns)
    inputs: list[dict] = field(default_factory=list)  # every file read: path, sha256, bytes
    warnings: list[str] = field(default_factory=list)


def is_run_folder(folder: Path) -> bool:
    """A themeshift run directory (its manifest.json and lineage.json): output, never input."""
    return (folder / "manifest.json").is_file() and (folder / "lineage.json").is_file()


def discover(
    folder: Path, inp: InputSettings, warnings: list[str] | None = None, exclude: tuple[Path, ...] = ()
) -> list[str]:
    """Transcript candidates, relative POSIX paths, sorted; metadata and ignored files left out, and so are
    the folders in `exclude` (the run being written) and earlier run directories inside the input folder.
    Folders that cannot be listed are reported in `warnings`, not dropped silently."""
    skip = {inp.manifest_file.lower(), inp.speakers_file.lower()}
    found = []

    def unreadable(exc: OSError) -> None:
        if warnings is not None:
            warnings.append(f"{exc.filename}: folder cannot be read ({exc.strerror}); its files are left out")

    paths = []
    excluded = {Path(p).resolve() for p in exclude}
    for root, dirs, names in os.walk(folder, onerror=unreadable):  # does not follow symlinked folders
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        runs = [d for d in dirs if (Path(root) / d).resolve() in excluded or is_run_folder(Path(root) / d)]
        if runs and warnings is not None:
            warnings.extend(
                f"{Path(root, d)}: a themeshift run folder, not read as input"
                for d in runs
                if (Path(root) / d).resolve() not in excluded
            )
        dirs[:] = [d for d in dirs if d not in runs]
        skipped = [d for d in dirs if (Path(root) / d).is_symlink()]
        if skipped and warnings is not None:
            warnings.extend(f"{Path(root, d)}: symlinked folder left out" for d in skipped)
        paths += [Path(root) / n for n in names]
    for path in sorted(paths):
        rel = path.relative_to(folder)
        if not (path.is_file() or path.is_symlink()) or any(part.startswith(".") for part in rel.parts):
            continue
        if rel.name.lower() in skip or any(fnmatch.fnmatch(rel.name, g) for g in inp.ignore):
            continue
        found.append(rel.as_posix())
    return found


def source_type_of(rel: str, meta: FileMeta, inp: InputSettings) -> str:
    """The manifest's source_type, else the folder convention (input.fieldnote_folders,
    input.document_folders), else interview."""
    if meta.source_type:
        return meta.source_type
    folders = {p.casefold() for p in Path(rel).parts[:-1]}
    if folders & {f.casefold() for f in inp.fieldnote_folders}:
        return "fieldnote"
    if folders & {f.casefold() for f in inp.document_folders}:
        return "document"
    return "interview"


def attribution(meta: FileMeta, resolver: SpeakerResolver, case_column: str) -> tuple[str, str | None]:
    """(speaker_id, role) a field note or document is attributed to: the manifest's speaker when it names
    one, else its case (site, team), else the source itself."""
    if meta.participant_id:
        s = resolver.speakers.get(label_key(meta.participant_id))
        return (s.speaker_id, s.role) if s else (meta.participant_id, None)
    case = meta.extra.get(case_column.lower()) if case_column else None
    if case:
        s = resolver.speakers.get(label_key(case))
        return (s.speaker_id, s.role) if s else (case, None)
    return meta.interview_id, None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Study:
    """What every file's segmentation needs: the folder's metadata, read once (and sent to workers)."""

    folder: Path
    files: list[str]
    manifest: dict | None
    resolver: SpeakerResolver
    template: re.Pattern
    inputs: list[dict]  # the metadata files read
    warnings: list[str]


@dataclass
class FileResult:
    """One file segmented (cols, rows for sources and interviews) or refused (error)."""

    rel: str
    meta: FileMeta | None = None
    error: InputError | OSError | None = None
    cols: dict | None = None
    source: dict | None = None
    interview: dict | None = None
    input: dict | None = None
    warnings: list[str] = field(default_factory=list)
    label_only: dict = field(default_factory=dict)  # the resolver's bare labels this file used
    skipped: bool = False  # not a transcript (a paper among the interviews): left out with a note, not an error


def read_extensions(inp: InputSettings) -> tuple[str, ...]:
    """The extensions read: input.extensions, or every format themeshift reads when that list is empty."""
    return tuple(inp.extensions or EXTENSIONS)


def is_read(rel: str, extensions: tuple[str, ...]) -> bool:
    return Path(rel).suffix.lower() in {e.lower() for e in extensions}


def _listing(names: list[str], most: int = 10) -> str:
    """The first `most` names, and how many more: a warning stays one readable line."""
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def open_study(folder: str | Path, s: SegmentSettings, exclude: tuple[Path, ...] = ()) -> Study:
    folder = Path(folder)
    if folder.is_file():
        raise InputError("is a file; give the folder that holds the transcripts", folder)
    if not folder.is_dir():
        raise InputError("input folder not found", folder)
    inp = s.input
    inputs: list[dict] = []
    manifest_path, speakers_path = folder / inp.manifest_file, folder / inp.speakers_file
    manifest = read_manifest(manifest_path, folder) if manifest_path.is_file() else None
    speakers = read_speakers(speakers_path) if speakers_path.is_file() else {}
    for meta_path in (manifest_path, speakers_path):
        if meta_path.is_file():
            data = meta_path.read_bytes()
            inputs.append({"path": meta_path.name, "sha256": _sha256(data), "bytes": len(data)})
    resolver = SpeakerResolver(
        speakers,
        {label_key(x) for x in s.speakers.interviewer_labels},
        {label_key(x) for x in s.speakers.participant_labels},
        inp.speaker_scope_column.lower(),
    )
    warn: list[str] = []
    files = discover(folder, inp, warn, exclude)
    if manifest is not None:  # the manifest says what the study is: other files are listed once, not read
        not_listed = sorted(set(files) - set(manifest))
        if not_listed:
            warn.append(f"{len(not_listed)} file(s) not in {inp.manifest_file}, not read: {_listing(not_listed)}")
        files = sorted(manifest)
    else:  # without one, files of formats themeshift does not read (code, spreadsheets) are named, not fatal
        readable = read_extensions(inp)
        other = [f for f in files if not is_read(f, readable)]
        if other:
            warn.append(
                f"{len(other)} file(s) not of a format themeshift reads ({', '.join(sorted(readable))}), "
                f"not read: {_listing(other)}"
            )
            files = [f for f in files if is_read(f, readable)]
    if not files:
        raise InputError("no transcript, field note or document files found", folder)
    return Study(folder, files, manifest, resolver, template_regex(inp.filename_template), inputs, warn)


def segment_file(study: Study, rel: str, nlp, s: SegmentSettings) -> FileResult:
    """Segment one file; a bad file comes back as its error (the caller decides: raise or reject).
    Independent of every other file, so files can be segmented in any order or on any machine."""
    inp, folder = s.input, study.folder
    resolver = replace(study.resolver, label_only={})
    out = FileResult(rel)
    try:
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in rel):
            raise InputError("the file name holds a line break or another control character; rename the file", rel)
        if storable_name(rel) != rel:
            raise InputError("the file name is not UTF-8 text; rename the file (tables keep file names as UTF-8)", rel)
        extensions = read_extensions(inp)
        if not is_read(rel, extensions):
            raise InputError(
                f"unknown transcript format {Path(rel).suffix or '(none)'!r} "
                f"(known: {', '.join(extensions)}; or add it to input.ignore)",
                rel,
            )
        if study.manifest is not None:  # with a manifest, its files are the only ones read
            meta: FileMeta = study.manifest[rel][0]
        else:
            meta = meta_from_filename(rel, study.template)
        out.meta = meta
        if (folder / rel).is_symlink():
            _check_link(folder / rel, rel)
        if not (folder / rel).resolve().is_relative_to(folder.resolve()):
            raise InputError("symbolic link to a file outside the input folder; refused", rel)
        data = (folder / rel).read_bytes()
        source_type = source_type_of(rel, meta, inp)
        fallbacks = list(inp.fallback_encodings)
        if source_type == "interview":
            try:
                doc = read_document(folder / rel, rel, resolver.known_label_keys(), fallbacks)
            except InputError as exc:
                # without a manifest, a PDF with no speaker labels among the transcripts is a paper or a
                # report, not a broken interview: named once and left out (a documents/ folder reads it)
                if study.manifest is None and rel.lower().endswith(".pdf") and NO_LABELS in exc.message:
                    out.skipped = True
                    return out
                raise
            cols = segment_document(doc, meta, rel, resolver, nlp, s)
        else:
            doc = read_unlabelled(folder / rel, rel, source_type, fallbacks)
            cols = segment_document(doc, meta, rel, resolver, nlp, s, attribution(meta, resolver, inp.case_column))
    except (InputError, OSError) as exc:
        out.error = exc
        return out
    out.cols, out.warnings, out.label_only = cols, doc.warnings, resolver.label_only
    out.input = {"path": rel, "sha256": _sha256(data), "bytes": len(data)}
    out.source = {
        "interview_id": meta.interview_id,
        "source_file": rel,
        "format": doc.format,
        "encoding": doc.encoding,
        "sha256": out.input["sha256"],
        "source_text": doc.source_text,
        "source_type": doc.source_type,
        "page_starts": doc.page_starts,
    }
    out.interview = {
        "interview_id": meta.interview_id,
        "source_file": rel,
        "wave": meta.wave,
        "date": meta.date,
        "participant_id": meta.participant_id,
        "n_turns": len(doc.turns),
        "n_utterances": len(cols["utterance_id"]),
        "n_skipped_lines": doc.n_skipped_lines,
        "source_type": doc.source_type,
        **meta.extra,
    }
    return out


def storable_name(rel: str) -> str:
    """The file name as printable UTF-8 text: bytes that are not UTF-8 (kept by the OS as surrogates) are
    written as \\xNN and control characters as \\n, \\t, ..., as error lines print them, so a table can
    still say which file it was."""
    text = rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(ch if 32 <= ord(ch) != 127 else ch.encode("unicode_escape").decode("ascii") for ch in text)


def _check_link(path: Path, rel: str) -> None:
    """A symbolic link that leads nowhere, or back to itself, is a bad file, not a crash."""
    try:
        path.resolve(strict=True)
    except FileNotFoundError:
        raise InputError(f"broken symbolic link: its target {os.readlink(path)!r} does not exist", rel) from None
    except (RuntimeError, OSError):  # Python 3.11 raises RuntimeError for a loop, later versions OSError
        raise InputError("symbolic link loop: the link leads back to itself", rel) from None


def assemble(study: Study, results: list[FileResult], skip_bad: bool) -> Corpus:
    """The corpus from every file's result, taken in file order: the first bad file raises (or, with
    run.skip_bad, is rejected); a second file with an interview_id already taken is a duplicate."""
    inputs, warn = list(study.inputs), list(study.warnings)
    parts, sources, interviews, rejected = [], [], [], []
    ids_seen: dict[str, str] = {}
    skipped = [r.rel for r in results if r.skipped]
    skip_note = (
        f"{len(skipped)} PDF file(s) without speaker labels, not read as transcripts (put papers and reports "
        f"in a documents/ folder to read them as documents): {_listing(skipped)}"
    )
    if skipped:
        warn.append(skip_note)
    for r in results:
        if r.skipped:
            continue
        exc = r.error
        if r.meta is not None and r.meta.interview_id in ids_seen:
            exc = InputError(
                f"duplicate interview_id {r.meta.interview_id!r} (also {ids_seen[r.meta.interview_id]})", r.rel
            )
        if exc is not None:
            if not skip_bad:
                if isinstance(exc, OSError):
                    raise environment_fault(exc) from None
                raise exc
            reason = exc.message if isinstance(exc, InputError) else f"cannot read: {exc.strerror}"
            rejected.append({"source_file": storable_name(r.rel), "line": getattr(exc, "line", None), "reason": reason})
            continue
        # without an error segment_file set them all
        assert r.meta is not None and r.input is not None and r.cols is not None
        assert r.source is not None and r.interview is not None
        ids_seen[r.meta.interview_id] = r.rel
        for speaker_id, used in r.label_only.items():
            study.resolver.label_only.setdefault(speaker_id, {}).update(used)
        warn.extend(r.warnings)
        inputs.append(r.input)
        parts.append(r.cols)
        sources.append(r.source)
        interviews.append(r.interview)
    if not parts:
        why = skip_note if skipped and not rejected else "see rejected files"
        raise InputError(f"no transcript could be read ({why})", study.folder)
    warn.extend(one_label_many_people(study.resolver))
    extra_cols = sorted({k for row in interviews for k in row} - set(schema.INTERVIEWS.names))
    interviews_schema = schema.INTERVIEWS
    for name in extra_cols:
        interviews_schema = interviews_schema.append(
            pa.field(name, pa.string(), nullable=True, metadata={"doc": "extra manifest column"})
        )
    return Corpus(
        utterances=columns_to_table(parts, schema.UTTERANCES),
        sources=pa.Table.from_pylist(sources, schema=schema.SOURCES),
        interviews=pa.Table.from_pylist(interviews, schema=interviews_schema),
        rejected=pa.Table.from_pylist(rejected, schema=schema.REJECTED),
        speakers=speakers_table(study.resolver.speakers),
        inputs=inputs,
        warnings=warn,
    )


def speakers_table(speakers: dict) -> pa.Table:
    """speakers.csv as a table, one row per speaker (aliases and names left out), its own columns
    (site, profession, ...) appended as text: what shift.group_by may name."""
    people = sorted({s.speaker_id: s for s in speakers.values()}.values(), key=lambda s: s.speaker_id)
    extra = sorted({k for s in people for k in s.extra} - set(schema.SPEAKERS.names))
    sch = schema.SPEAKERS
    for name in extra:
        sch = sch.append(pa.field(name, pa.string(), nullable=True, metadata={"doc": "extra speakers.csv column"}))
    rows = [
        {
            "speaker_id": s.speaker_id,
            "speaker_role": s.role,
            "is_interviewer": s.is_interviewer,
            **{k: s.extra.get(k) or None for k in extra},
        }
        for s in people
    ]
    return pa.Table.from_pylist(rows, schema=sch)


def segment_corpus(
    folder: str | Path, s: SegmentSettings, on_file: Callable[[str], None] | None = None, exclude: tuple[Path, ...] = ()
) -> Corpus:
    """Segment every file here, one after another (pipeline.ray_engine does the same on a Ray cluster)."""
    study = open_study(folder, s, exclude)
    nlp = load_sentence_splitter(s.sentence_splitter)
    results = []
    for rel in study.files:
        if on_file:
            on_file(rel)
        results.append(segment_file(study, rel, nlp, s))
    return assemble(study, results, s.skip_bad)
