"""Pseudonymise a study folder: every source, manifest.csv and speakers.csv, in their own formats.

Three passes over the folder, so the result does not depend on the order names are met in:
1. detect personal data in every text (pipeline.pii, Presidio on the project's spaCy model), the
   study's listed names (speakers.csv names and aliases, the names file) always included;
2. give each entity one pseudonym for the whole study (pipeline.pseudonym_key): full names first,
   then single names, linked to the one full name they are part of;
3. replace every occurrence of every known name, also where the detector missed it in a sentence,
   and write the files. The key and the review table (they hold the originals) go elsewhere.
"""

from __future__ import annotations

import csv
import io
import re
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa

from pipeline import schema
from pipeline.errors import InputError, environment_fault
from pipeline.ingest import discover
from pipeline.io.metadata import read_csv_rows, read_manifest, read_speakers
from pipeline.io.pseudonymise_formats import (
    SourceFile,
    read_for_pseudonymising,
    replace_spans,
)
from pipeline.io.readers import label_key
from pipeline.io.rundir import atomic_write
from pipeline.pii import (
    KINDS,
    NAME_KINDS,
    Detector,
    Finding,
    listed_pattern,
    resolve_overlaps,
)
from pipeline.pseudonym_key import PseudonymKey, load_key, normalise
from pipeline.settings import AnonymiseSettings, InputSettings, SpeakersSettings, section_values

MARKER = ".themeshift-pseudonymised"  # marks a folder this module wrote (and may overwrite)
_NAME_LIKE = re.compile(r"[A-Z][a-z\u00C0-\u024F'\u2019\-]+(?: [A-Z][a-z\u00C0-\u024F'\u2019\-]+)*")
_KIND_NAMES = {
    "person": "person",
    "people": "person",
    "name": "person",
    "place": "place",
    "location": "place",
    "site": "place",
    "org": "org",
    "organisation": "org",
    "organization": "org",
}


@dataclass
class Replacement:
    file: int
    piece: int
    finding: Finding
    original: str
    pseudonym: str


def study_name(src: Path, study: str) -> str:
    return study or Path(src).resolve().name


def default_key_path(out: Path) -> Path:
    """Beside the output folder, never inside it: the folder is what gets shared."""
    out = Path(out)
    return out.parent / f"{out.name}.pseudonym-key.json"


def read_names_file(path: Path) -> dict[str, list[str]]:
    """A list of names to replace: one per line, or CSV with columns name[,kind] (kind: person, place, org)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("names file not found", path)
    out: dict[str, list[str]] = {k: [] for k in NAME_KINDS}
    fields, rows = read_csv_rows(path)
    if "name" in fields:
        for line, row in rows:
            kind = _KIND_NAMES.get((row.get("kind") or row.get("type") or "person").lower())
            if kind is None:
                raise InputError(
                    f"kind must be person, place or org, got {row.get('kind') or row.get('type')!r}", path, line
                )
            if row["name"]:
                out[kind].append(row["name"])
    else:  # a plain list: every non-empty line a person's name
        text = path.read_text(encoding="utf-8-sig")
        out["person"] = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    return out


def speaker_names(speakers_path: Path, speakers: SpeakersSettings) -> list[str]:
    """Names in speakers.csv: its name column, and the ids and aliases that are written like names
    (not generic labels such as Interviewer, nor codes such as P-05)."""
    if not speakers_path.is_file():
        return []
    _, rows = read_csv_rows(speakers_path)
    generic = {x.casefold() for x in speakers.interviewer_labels + speakers.participant_labels}
    names = []
    for _, row in rows:
        candidates = [row.get("name", "")] + [row.get("speaker_id", "")] + row.get("aliases", "").split(";")
        for c in (c.strip() for c in candidates):
            if c and _NAME_LIKE.fullmatch(c) and len(c) > 2 and c.casefold() not in generic:
                names.append(c)
    return list(dict.fromkeys(names))


def protected_labels(src: Path, s: AnonymiseSettings, manifest: dict) -> set[str]:
    """Speaker ids, aliases and generic labels that are codes, not names (INT, P01, P-05, Interviewer):
    never replaced, so labels and ids still resolve. Keys as readers.label_key makes them."""

    out = {label_key(x) for x in s.speakers.interviewer_labels + s.speakers.participant_labels + s.keep_labels}
    path = src / s.input.speakers_file
    if path.is_file():
        for _, row in read_csv_rows(path)[1]:
            for c in [row.get("speaker_id", "")] + row.get("aliases", "").split(";"):
                if c.strip() and not _NAME_LIKE.fullmatch(c.strip()):
                    out.add(label_key(c))
    for meta, _ in manifest.values():
        for c in (meta.participant_id, meta.interview_id):
            if c and not _NAME_LIKE.fullmatch(c):
                out.add(label_key(c))
    return out - {""}


_LOWER_WORD = re.compile(r"(?<![\w-])[a-z][a-z'-]*")
_ADDRESS = re.compile(r"\S+@\S+|(?:https?://|www\.)\S+")


def name_parts(people: list[str], lower: set[str]) -> list[str]:
    """First names and surnames of listed people, alone ("Bernadette", "Kelly"), unless the study also
    uses them as plain words ("Will", "Rose") or they are initials."""
    parts = []
    for name in people:
        words = name.split()
        if len(words) > 1:
            parts += [w for w in words if len(w) > 2 and w.casefold() not in lower and w[0].isupper()]
    return [p for p in dict.fromkeys(parts) if p not in people]


def _discover(src: Path, inp: InputSettings) -> tuple[list[str], dict]:

    manifest_path = src / inp.manifest_file
    manifest = read_manifest(manifest_path, src) if manifest_path.is_file() else None
    if (src / inp.speakers_file).is_file():
        read_speakers(src / inp.speakers_file)  # a damaged speakers file fails before any work
    files = discover(src, inp)
    if manifest is not None:
        files = sorted(set(files) | set(manifest))
    if not files:
        raise InputError("no transcript, field note or document files found", src)
    return files, manifest or {}


def _prepare_out(src: Path, dst: Path, key_path: Path, review_path: Path | None) -> None:
    src, dst = src.resolve(), dst.resolve()
    if dst == src or dst.is_relative_to(src) or src.is_relative_to(dst):
        raise InputError("the output folder must lie outside the input folder (and not hold it)", dst)
    for what, p in (("key file", key_path), ("review table", review_path)):
        if p is not None and (Path(p).resolve().is_relative_to(dst) or Path(p).resolve().is_relative_to(src)):
            raise InputError(f"the {what} holds the original names: keep it outside the output and input folders", p)
    if dst.exists():
        if not dst.is_dir():
            raise InputError("output exists and is not a folder", dst)
        if any(dst.iterdir()):
            if not (dst / MARKER).is_file():
                raise InputError(
                    "output folder is not empty (and was not written by themeshift anonymise); give a new folder", dst
                )
            shutil.rmtree(dst)  # an earlier pseudonymised copy: files it held may be gone from the input
    dst.mkdir(parents=True, exist_ok=True)
    (dst / MARKER).write_text(
        "written by themeshift anonymise; its files are replaced on the next run\n", encoding="utf-8"
    )


def anonymise_folder(
    src: Path,
    dst: Path,
    s: AnonymiseSettings,
    key_path: Path | None = None,
    names_path: Path | None = None,
    review_path: Path | None = None,
    decisions_path: Path | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    detector: Detector | None = None,
) -> dict:
    """Write the pseudonymised copy of `src` to `dst`; returns the record (counts, no names)."""
    started = time.perf_counter()
    src, dst = Path(src), Path(dst)
    if src.is_file():
        raise InputError("is a file; give the folder that holds the transcripts", src)
    if not src.is_dir():
        raise InputError("input folder not found", src)
    key_path = Path(key_path) if key_path else default_key_path(dst)
    _prepare_out(src, dst, key_path, review_path)
    key = load_key(key_path, study_name(src, s.study))
    if decisions_path is not None:
        _apply_decisions(key, Path(decisions_path))
    files, manifest = _discover(src, s.input)

    listed: dict[str, list[str]] = {k: [] for k in NAME_KINDS}
    listed["person"] += speaker_names(src / s.input.speakers_file, s.speakers)
    for path in [names_path] if names_path else ([Path(s.names_file)] if s.names_file else []):
        for kind, names in read_names_file(path).items():
            listed[kind] += names
    listed = {k: [n for n in dict.fromkeys(v) if not key.is_kept(k, n)] for k, v in listed.items()}

    sources, rejected = [], []
    for i, rel in enumerate(files):
        if progress:
            progress(f"anonymise read {rel}", i + 1, len(files))
        try:
            if not (src / rel).resolve().is_relative_to(src.resolve()):
                raise InputError("symbolic link to a file outside the input folder; refused", rel)
            sources.append(read_for_pseudonymising(src / rel, rel, list(s.input.fallback_encodings)))
        except (InputError, OSError) as exc:
            if not s.skip_bad:
                if isinstance(exc, OSError):
                    raise environment_fault(exc) from None
                raise
            rejected.append(
                {
                    "source_file": rel,
                    "line": getattr(exc, "line", None),
                    "reason": exc.message if isinstance(exc, InputError) else f"cannot read: {exc.strerror}",
                }
            )
    if not sources:
        raise InputError("no file could be read (see the rejected files)", src)
    _check_renames(sources)

    protected = protected_labels(src, s, manifest)
    # words the study writes in lower case (e-mail addresses and links left out: "lucy.fairbairn@..." is no
    # sign that Lucy is a plain word)
    lower = {w for source in sources for p in source.pieces for w in _LOWER_WORD.findall(_ADDRESS.sub(" ", p.text))}
    listed["person"] += name_parts(listed["person"], lower)
    detector = detector or Detector(s, listed)
    pieces = [p for source in sources for p in source.pieces]
    texts = [p.text for p in pieces]
    t0 = time.perf_counter()
    found: list[list[Finding]] = []
    step = max(1, s.batch_size * 8)
    for a in range(0, len(pieces), step):
        batch = pieces[a : a + step]
        results = detector.detect([p.before + p.for_detection + p.after for p in batch])
        found += [_own(p, r) for p, r in zip(batch, results)]
        if progress:
            progress("anonymise detect", min(a + step, len(texts)), len(texts))
    detect_seconds = time.perf_counter() - t0

    listed_norm = {normalise(n) for names in listed.values() for n in names}
    nouns = detector.common_nouns  # "the Collaboration", "the Trust": a common noun used as a title
    titled = {m.group(1).casefold() for t in texts for m in _THE_TITLE.finditer(t) if m.group(1).casefold() in nouns}
    found = [_plausible(p, _unprotected(p, f, protected), lower, listed_norm, titled) for p, f in zip(pieces, found)]
    replacements = _assign(sources, found, key, listed, s.propagate, lower)
    written = _write(sources, replacements, dst)
    _write_metadata(src, dst, s.input, key, sources)
    key.save(key_path)
    key_path.chmod(0o600)  # the originals: readable by the researcher only
    if review_path is not None:
        _write_review(Path(review_path), sources, replacements, s.context_chars)

    by_kind = Counter(r.finding.kind for r in replacements)
    by_recognizer = Counter(r.finding.recognizer for r in replacements)
    n_chars = sum(len(t) for t in texts)
    own = section_values(s)  # as the configuration has them (lists), for the manifest
    return {
        "study": key.study,
        "files": len(sources),
        "written": written,
        "rejected": rejected,
        "counts": {
            "texts": len(texts),
            "characters": n_chars,
            "replacements": len(replacements),
            "by_kind": {k: by_kind.get(k, 0) for k in KINDS if by_kind.get(k)},
            "by_recognizer": dict(sorted(by_recognizer.items())),
            "entities": Counter(e.kind for e in key.entries),
            "kept_by_decision": len(key.kept),
        },
        "units_per_second": round(len(texts) / detect_seconds, 1) if detect_seconds else None,
        "characters_per_second": round(n_chars / detect_seconds) if detect_seconds else None,
        "detect_seconds": round(detect_seconds, 3),
        "seconds": round(time.perf_counter() - started, 3),
        "parameters": {k: own[k] for k in ("entities", "spacy_model", "score_threshold", "propagate")},
    }


def _own(piece, findings: list[Finding]) -> list[Finding]:
    """Findings read with the neighbouring text, clipped to the piece itself and shifted to its offsets."""
    a, b = len(piece.before), len(piece.before) + len(piece.text)
    seen = piece.for_detection  # blanked markup and spaCy's whitespace tokens are no part of a name
    out = []
    for f in findings:
        start, end = max(f.start, a) - a, min(f.end, b) - a
        while start < end and seen[start].isspace():
            start += 1
        while end > start and seen[end - 1].isspace():
            end -= 1
        if end > start:
            out.append(Finding(start, end, f.kind, f.score, f.recognizer))
    return out


def _unprotected(piece, findings: list[Finding], protected: set[str]) -> list[Finding]:
    """Findings that are not a speaker code, nor inside a label that is one ("[00:09] C01:", "<v P08>")."""

    coded = [(a, b) for a, b in piece.labels if label_key(piece.text[a:b]) in protected]

    def is_code(span: str) -> bool:
        return label_key(span) in protected or any(label_key(w) in protected for w in span.split())

    return [
        f
        for f in findings
        if not is_code(piece.text[f.start : f.end]) and not any(a < f.end and f.start < b for a, b in coded)
    ]


_THE_TITLE = re.compile(r"\b[Tt]he\s+([A-Z][a-z]+)\b(?!['\u2019]?\s*[A-Z])")  # not "the Bradford Royal ..."


def _plausible(
    piece, findings: list[Finding], lower: set[str], listed: set[str], titled: set[str] | frozenset[str] = frozenset()
) -> list[Finding]:
    """Drop what the named-entity model reads as a name but the study shows is not one: a single word the
    study also writes in lower case (an answer starting "Attendance has tripled"), a common noun the study
    uses as a title after 'the', whatever it is taken for (the programme's own "the
    Collaboration", wherever it stands), and anything holding a digit (A4, FEV1). The study's own list
    always counts."""
    out = []
    for f in findings:
        if f.recognizer != "SpacyRecognizer" or f.kind not in NAME_KINDS:
            out.append(f)
            continue
        span = piece.text[f.start : f.end]
        word = normalise(span)
        if word in listed:
            out.append(f)
        elif " " not in span.strip() and any(ch.isdigit() for ch in span) and any(ch.isalpha() for ch in span):
            continue  # A4, FEV1; "Ward 23" is a place
        elif " " not in word and (word in lower or word.rstrip("s") in lower):
            continue
        elif " " not in word and word in titled:
            continue
        else:
            out.append(f)
    return out


def _check_renames(sources: list[SourceFile]) -> None:
    seen = {s.rel for s in sources}
    for s in sources:
        if s.out_rel != s.rel and s.out_rel in seen:
            raise InputError(f"its text would be written as {s.out_rel}, which is another source; rename one", s.rel)


def _assign(
    sources: list[SourceFile],
    found: list[list[Finding]],
    key: PseudonymKey,
    listed: dict[str, list[str]],
    propagate: bool,
    lower: set[str],
) -> list[Replacement]:
    """Pseudonyms for every finding, and the known names found again wherever they occur."""
    flat = [(fi, pi, p) for fi, s in enumerate(sources) for pi, p in enumerate(s.pieces)]
    found_at = {(fi, pi): f for (fi, pi, _), f in zip(flat, found)}
    # full names before single names so "Sarah" can join "Sarah Jones" whatever came first
    for kind, names in listed.items():
        for name in sorted(names, key=lambda n: " " not in n.strip()):
            key.assign(kind, name)
    occurrences = [
        (f.kind, p.text[f.start : f.end])
        for (fi, pi, p) in flat
        for f in found_at[(fi, pi)]
        if not key.is_kept(f.kind, p.text[f.start : f.end])
    ]
    # what found each name where it was found: a repeat carries that recogniser's doubt, not certainty
    origin: dict[str, tuple[float, set[str]]] = {}
    for fi, pi, p in flat:
        for f in found_at[(fi, pi)]:
            name = normalise(p.text[f.start : f.end])
            score, recognizers = origin.get(name, (1.0, set()))
            origin[name] = (min(score, f.score), recognizers | {f.recognizer})
    for kind, names in listed.items():
        for name in names:
            origin.setdefault(normalise(name), (1.0, {f"listed-{kind}"}))
    for kind, text in sorted(occurrences, key=lambda o: o[0] != "person" or " " not in o[1].strip()):
        key.assign(kind, text)
    if propagate:
        # a one-word name also used as a plain word ("Nobody", "Collaboration") is a guess that would
        # spread through every file: it stays where it was found, unless the study listed it
        listed_norm = {n.casefold() for names in listed.values() for n in names}
        pattern = listed_pattern(
            n
            for names in key.names().values()
            for n in names
            if " " in n.strip() or n.casefold() not in lower or n.casefold() in listed_norm
        )
        if pattern:
            rx = re.compile(pattern)
            for fi, pi, p in flat:
                own = {(f.start, f.end) for f in found_at[(fi, pi)]}  # where a recogniser found it, it says so
                extra = [
                    _repeat(m.group(), m.start(), m.end(), key, origin)
                    for m in rx.finditer(p.text)
                    if key.lookup(m.group()) is not None and (m.start(), m.end()) not in own
                ]
                if extra:
                    found_at[(fi, pi)] = resolve_overlaps(found_at[(fi, pi)] + extra)
    out = []
    for fi, pi, p in flat:
        for f in found_at[(fi, pi)]:
            text = p.text[f.start : f.end]
            if key.is_kept(f.kind, text):
                continue
            entry = key.lookup(text) or key.assign(f.kind, text)
            bare = any(a < f.end and f.start < b for a, b in p.labels) or p.text.strip() == text
            out.append(Replacement(fi, pi, f, text, entry.pseudonym if bare else f"[{entry.pseudonym}]"))
    return out


def _repeat(text: str, start: int, end: int, key: PseudonymKey, origin: dict) -> Finding:
    """A name found again by the study key, with the score and recognisers that first found it."""
    score, recognizers = origin.get(normalise(text), (1.0, set()))
    entry = key.lookup(text)
    assert entry is not None  # the caller found text in the key
    return Finding(start, end, entry.kind, score, "study-key (" + ", ".join(sorted(recognizers)) + ")")


def _write(sources: list[SourceFile], replacements: list[Replacement], dst: Path) -> list[str]:
    by_piece: dict[tuple[int, int], list[tuple[int, int, str]]] = {}
    for r in replacements:
        by_piece.setdefault((r.file, r.piece), []).append((r.finding.start, r.finding.end, r.pseudonym))
    written = []
    for fi, s in enumerate(sources):
        new = [replace_spans(p.text, by_piece.get((fi, pi), [])) for pi, p in enumerate(s.pieces)]
        s.write(new, dst)
        written.append(s.out_rel)
    return written


def _write_metadata(src: Path, dst: Path, inp: InputSettings, key: PseudonymKey, sources: list[SourceFile]) -> None:
    """manifest.csv and speakers.csv with every known name replaced (bare, so ids and labels still
    match the pseudonymised transcripts) and renamed sources (PDF -> .txt) updated."""
    pattern = listed_pattern(n for names in key.names().values() for n in names)
    rx = re.compile(pattern) if pattern else None
    renamed = {s.rel: s.out_rel for s in sources}
    for name in (inp.manifest_file, inp.speakers_file):
        path = src / name
        if not path.is_file():
            continue
        rows = list(csv.reader(path.read_text(encoding="utf-8-sig").splitlines()))
        header = [h.strip().lower() for h in rows[0]] if rows else []
        for row in rows[1:]:
            for j, cell in enumerate(row):
                column = header[j] if j < len(header) else ""
                if column == "file":
                    row[j] = renamed.get(cell.replace("\\", "/"), cell)
                elif column not in ("wave", "date", "is_interviewer", "role", "source_type") and rx is not None:
                    row[j] = rx.sub(lambda m: e.pseudonym if (e := key.lookup(m.group())) else m.group(), cell)
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(rows)
        (dst / name).write_text(buf.getvalue(), encoding="utf-8")


def _context(text: str, start: int, end: int, width: int) -> str:
    a, b = max(0, start - width), min(len(text), end + width)
    out = (
        ("..." if a else "")
        + text[a:start]
        + "<<"
        + text[start:end]
        + ">>"
        + text[end:b]
        + ("..." if b < len(text) else "")
    )
    return re.sub(r"[\x00-\x1f]", " ", out)  # one spreadsheet row: page breaks and tabs as spaces


def review_table(sources: list[SourceFile], replacements: list[Replacement], width: int) -> pa.Table:
    """One row per replacement, the doubtful first: lowest score, then fewest recognisers agreeing."""
    agree: dict[str, set[str]] = {}
    for r in replacements:
        names = r.finding.recognizer.removeprefix("study-key (").rstrip(")").split(", ")
        agree.setdefault(normalise(r.original), set()).update(n for n in names if n)
    rows: list[dict[str, Any]]
    rows = [
        {
            "source_file": sources[r.file].rel,
            "line": sources[r.file].pieces[r.piece].line,
            "start_char": r.finding.start,
            "end_char": r.finding.end,
            "entity": r.finding.kind,
            "original": r.original,
            "pseudonym": r.pseudonym.strip("[]"),
            "context": _context(sources[r.file].pieces[r.piece].text, r.finding.start, r.finding.end, width),
            "recognizer": r.finding.recognizer,
            "score": round(r.finding.score, 3),
            "agreeing": len(agree[normalise(r.original)]),
            "decision": "accept",
        }
        for r in replacements
    ]
    rows.sort(
        key=lambda x: (
            x["score"],
            x["agreeing"],
            normalise(x["original"]),
            x["source_file"],
            x["line"],
            x["start_char"],
        )
    )
    return pa.Table.from_pylist(rows, schema=schema.PSEUDONYM_REVIEW)


def _write_review(path: Path, sources, replacements, width: int) -> None:
    """The review table as CSV (opened in a spreadsheet; set decision to reject and pass it back with
    --decisions) and, beside it, as Parquet."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    table = review_table(sources, replacements, width)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: pacsv.write_csv(table, tmp))
    atomic_write(path.with_suffix(".parquet"), lambda tmp: pq.write_table(table, tmp))
    for p in (path, path.with_suffix(".parquet")):
        p.chmod(0o600)


def _apply_decisions(key: PseudonymKey, path: Path) -> None:
    """An edited review table: every row whose decision is 'reject' keeps that text in every file (the
    decision is stored in the key, so later batches keep it too)."""
    if not path.is_file():
        raise InputError("decisions file not found", path)
    try:  # the csv module itself, so quoted contexts holding line breaks stay one row
        with open(path, encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh)
            fields = [f.strip().lower() for f in reader.fieldnames or []]
            rows = [
                (reader.line_num, {k.strip().lower(): (v or "").strip() for k, v in r.items() if k}) for r in reader
            ]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"not a readable CSV review table ({exc})", path) from None
    missing = {"entity", "original", "decision"} - set(fields)
    if missing:
        raise InputError(
            f"decisions file needs the review table's columns ({', '.join(sorted(missing))} missing)", path, 1
        )
    for line, row in rows:
        decision = row["decision"].lower()
        if decision not in ("accept", "reject", ""):
            raise InputError(f"decision must be accept or reject, got {row['decision']!r}", path, line)
        if row["entity"] not in KINDS:
            raise InputError(f"unknown entity {row['entity']!r} (known: {', '.join(KINDS)})", path, line)
        if decision == "reject":
            key.keep(row["entity"], row["original"])
