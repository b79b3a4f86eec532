"""Transcript readers: each format becomes a plain ``source_text`` and speaker turns
whose character spans point into it.

Plain text and Markdown keep the file's own text (offsets match what a QDA tool
shows). Word files become their paragraphs joined by newlines. Subtitle (VTT, SRT)
and JSON transcripts are rendered as ``Speaker: text`` lines, one per turn, because
their raw files interleave timing lines with speech.
"""
from __future__ import annotations

import html
import json
import math
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import InputError
from pipeline.io.decode import decode_text
from pipeline.io.pdf import page_starts, pdf_text
from pipeline.io.safezip import SafeZip

FORMATS = {".txt": "txt", ".md": "md", ".docx": "docx", ".vtt": "vtt", ".srt": "srt", ".json": "json", ".pdf": "pdf"}

_TS = r"\d{1,2}:\d{2}(?::\d{2})?(?:[.,]\d{1,3})?"
# [ts] Label [ts]: [ts] text   -- with optional Markdown bullets/bold around the label; a form feed
# (a PDF's page break) before the label is whitespace: a page may start with a new speaker.
_TURN_LINE = re.compile(
    rf"""^[ \t\f]*(?:[-*>][ \t]+)?(?:\[?(?P<ts1>{_TS})\]?[ \t]*)?(?:\*\*|__)?
    (?P<label>[^\W\d_][\w.'\u2019()\- ]{{0,38}}?)
    [ \t]*(?:[\[(]?(?P<ts2>{_TS})[\])]?)?[ \t]*(?:\*\*|__)?[ \t]*:[ \t]*(?:\*\*|__)?[ \t]*
    (?:\[?(?P<ts3>{_TS})\]?[ \t]*)?(?P<text>.*)$""",
    re.X,
)
_LOOSE_TIMING = re.compile(r"-+>|^\s*\d{1,2}:\d{2}[:.,]\d")  # what a damaged timing line still looks like
CUE_TIMING = re.compile(rf"^\s*(?P<start>{_TS})\s*-->\s*{_TS}")
VOICE = re.compile(r"<v(?:\.[\w.]+)?\s+(?P<name>[^>]+)>")
_TAG = re.compile(r"</?(?:[A-Za-z]|\d+:)[^>]*>")  # <i>, </v>, <c.red>, <00:01.500>; a bare "<" is text


@dataclass
class Turn:
    label: str
    start: int  # offsets into Document.source_text, text = source_text[start:end]
    end: int
    line: int  # 1-based line in the original file (turn index for JSON)
    timestamp: float | None = None


@dataclass
class Document:
    source_text: str
    turns: list[Turn]
    format: str
    encoding: str
    n_skipped_lines: int = 0
    warnings: list[str] = field(default_factory=list)
    source_type: str = "interview"  # interview, fieldnote or document (pipeline.io.documents)
    page_starts: list[int] | None = None  # offset where each page begins (PDFs and paged text); None: no pages


def label_key(label: str) -> str:
    """Normalised speaker label: case, spaces and punctuation ignored ("PL-03" == "pl03")."""
    return re.sub(r"[\W_]+", "", label.casefold())


def parse_timestamp(value: str | None) -> float | None:
    """Seconds of [hh:]mm:ss[.ttt]; None when absent or impossible (minutes or seconds of 60 or more
    after the first field: '99:99:99.999' is no time, not 100 hours)."""
    if not value:
        return None
    parts = value.replace(",", ".").split(":")
    if any(float(part) >= 60 for part in parts[1:]):
        return None
    seconds = 0.0
    for part in parts:
        seconds = seconds * 60 + float(part)
    return seconds


_NOT_NAMES = {"so", "well", "and", "but", "note", "yes", "no", "okay", "ok", "also", "then", "now",
              "because", "anyway", "basically", "example", "for example", "question", "answer", "update"}


def _accepted_labels(candidates: dict[str, tuple[int, str]], known: set[str]) -> set[str]:
    """Which `Label:` prefixes are speakers, so that "The thing is: ..." inside an answer
    stays speech: known labels, labels used at least twice, and name-like labels
    (every word capitalised, or an id with a digit) that are not common words."""
    accepted = set()
    for key, (count, label) in candidates.items():
        words = label.split()
        name_like = all(w[0].isupper() or w[0].isdigit() for w in words) or any(c.isdigit() for c in label)
        if key in known or count >= 2 or (name_like and label.casefold() not in _NOT_NAMES):
            accepted.add(key)
    return accepted


def match_label(line: str) -> re.Match | None:
    m = _TURN_LINE.match(line)
    if m and len(m.group("label").split()) <= 4:
        return m
    return None


def parse_labelled_text(text: str, path: str, known: set[str], fmt: str, encoding: str) -> Document:
    """Turns from `Speaker: text` lines; lines without a label continue the previous turn."""
    lines = text.split("\n")
    offsets, pos = [], 0
    for line in lines:
        offsets.append(pos)
        pos += len(line) + 1
    matches = [match_label(line) for line in lines]
    counts: dict[str, tuple[int, str]] = {}
    for m in matches:
        if m:
            label = m.group("label").strip()
            key = label_key(label)
            counts[key] = (counts.get(key, (0, label))[0] + 1, label)
    speakers = _accepted_labels(counts, known)
    turns: list[Turn] = []
    skipped = 0
    for i, (line, m) in enumerate(zip(lines, matches)):
        if m and label_key(m.group("label")) in speakers:
            start = offsets[i] + m.start("text")
            ts = parse_timestamp(m.group("ts1") or m.group("ts2") or m.group("ts3"))
            turns.append(Turn(m.group("label").strip(), start, start, i + 1, ts))
            _extend(turns[-1], line, offsets[i], m.start("text"))
        elif not line.strip():
            continue
        elif fmt == "md" and line.lstrip().startswith("#"):
            skipped += 1
        elif turns:
            _extend(turns[-1], line, offsets[i], 0)
        else:
            skipped += 1
    if not turns:
        raise InputError("no speaker labels found (expected lines such as 'Interviewer: ...'; a field note or "
                         "document needs source_type in the manifest or a fieldnotes/ or documents/ folder)", path, 1)
    for turn in turns:  # a label line with its text on the next line starts at that text
        while turn.start < turn.end and text[turn.start].isspace():
            turn.start += 1
    return Document(text, turns, fmt, encoding, skipped)


def _extend(turn: Turn, line: str, line_start: int, text_col: int) -> None:
    stripped = line.rstrip()
    if len(stripped) > text_col:
        if turn.end == turn.start:
            lead = len(line[text_col:]) - len(line[text_col:].lstrip())
            turn.start = line_start + text_col + lead
        turn.end = line_start + len(stripped)


def _render(items: list[tuple[str, str, float | None, int]], fmt: str, encoding: str, path: str) -> Document:
    """Build `Label: text` lines and turn spans from already separated turns."""
    parts, turns, pos = [], [], 0
    for label, text, ts, line in items:
        text = " ".join(text.split())
        if not text:
            continue
        if turns and turns[-1].label == label and fmt in ("vtt", "srt"):
            # consecutive cues of one speaker form one turn
            parts[-1] = parts[-1][:-1] + " " + text + "\n"
            turns[-1].end += 1 + len(text)
            pos += 1 + len(text)
            continue
        prefix = f"{label}: "
        turns.append(Turn(label, pos + len(prefix), pos + len(prefix) + len(text), line, ts))
        parts.append(prefix + text + "\n")
        pos += len(prefix) + len(text) + 1
    if not turns:
        raise InputError("no speech found in the file", path)
    return Document("".join(parts), turns, fmt, encoding)


def _read_cues(text: str, path: str, fmt: str, encoding: str, known: set[str]) -> Document:
    blocks, block, block_line = [], [], 0
    for i, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            if not block:
                block_line = i
            block.append(line)
        elif block:
            blocks.append((block_line, block))
            block = []
    if block:
        blocks.append((block_line, block))
    cues = []  # (line, start seconds, raw payload)
    bad_timing = []
    for line_no, lines in blocks:
        timing_at = next((j for j, ln in enumerate(lines) if CUE_TIMING.match(ln)), None)
        if timing_at is None:
            if lines[0].lstrip().startswith(("WEBVTT", "NOTE", "STYLE", "REGION")):
                continue  # header and metadata blocks
            timing_at = next((j for j, ln in enumerate(lines[:2]) if _LOOSE_TIMING.search(ln)), None)
            if timing_at is None or timing_at + 1 >= len(lines):
                continue
            bad_timing.append(line_no + timing_at)  # a cue whose timing line is damaged: keep its words
            cues.append((line_no + timing_at + 1, None, " ".join(lines[timing_at + 1:])))
            continue
        ts = parse_timestamp(CUE_TIMING.match(lines[timing_at]).group("start"))
        if ts is None:  # a timing line in the right shape with an impossible time
            bad_timing.append(line_no + timing_at)
        cues.append((line_no + timing_at + 1, ts, " ".join(lines[timing_at + 1:])))
    if not cues:
        raise InputError(f"no {fmt.upper()} cues found (expected 'hh:mm:ss --> hh:mm:ss' lines)", path, 1)
    parsed = []
    counts: dict[str, tuple[int, str]] = {}
    for line_no, ts, payload in cues:
        voice = VOICE.search(payload)
        label, body = (voice.group("name").strip(), payload) if voice else (None, payload)
        body = _TAG.sub("", body).strip()
        if fmt == "vtt":
            body = html.unescape(body)  # WebVTT writes &lt; &gt; &amp; for < > & in cue text
        if label is None:
            m = match_label(body)
            if m:
                label, body = m.group("label").strip(), m.group("text")
                counts[label_key(label)] = (counts.get(label_key(label), (0, label))[0] + 1, label)
        parsed.append([line_no, ts, label, body, voice is not None])
    speakers = _accepted_labels(counts, known)
    items, current = [], None
    for line_no, ts, label, body, from_voice in parsed:
        if label is not None and not from_voice and label_key(label) not in speakers:
            body, label = f"{label}: {body}", None
        current = label or current
        if current is None:
            if body.strip():
                raise InputError("cue has no speaker (expected <v Name> or 'Name:')", path, line_no)
            continue
        items.append((current, body, ts, line_no))
    doc = _render(items, fmt, encoding, path)
    if bad_timing:
        doc.warnings.append(f"{path}:{bad_timing[0]}: {len(bad_timing)} cue(s) with a malformed or impossible timing line "
                            f"(lines {', '.join(map(str, bad_timing[:10]))}); their text is kept, without a time")
    return doc


def load_json(text: str, path: str):
    """A JSON transcript's data; bad or too deeply nested JSON is one bad-input line naming the file."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON: {exc.msg}", path, exc.lineno) from None
    except RecursionError:
        raise InputError("JSON nested too deeply to be a transcript", path) from None


def _read_json(text: str, path: str, encoding: str) -> Document:
    data = load_json(text, path)
    if isinstance(data, dict):
        data = data.get("turns", data.get("utterances"))
    if not isinstance(data, list):
        raise InputError("JSON transcript must be a list of turns or an object with a 'turns' list", path)
    items = []
    for i, turn in enumerate(data):
        if not isinstance(turn, dict):
            raise InputError(f"turn {i} is not an object", path)
        label = next((turn[k] for k in ("speaker", "name", "speaker_id") if turn.get(k)), None)
        body = next((turn[k] for k in ("text", "utterance", "content") if k in turn), None)
        if not isinstance(label, str) or not isinstance(body, str):
            raise InputError(f"turn {i} needs string 'speaker' and 'text' fields", path)
        ts = _json_time(next((turn[k] for k in ("start", "timestamp", "time") if turn.get(k) is not None), None),
                        i, path)
        items.append((label.strip(), body, ts, i + 1))
    return _render(items, "json", encoding, path)


def _json_time(value, turn: int, path: Path) -> float | None:
    """A turn's start: seconds or 'hh:mm:ss'; anything else is one clear error."""
    if value is None or isinstance(value, str) and not value.strip():
        return None
    try:
        if isinstance(value, str):
            seconds = parse_timestamp(value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            seconds = float(value)
        else:
            raise TypeError
    except (TypeError, ValueError, OverflowError):
        seconds = None
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        raise InputError(f"turn {turn}: start {value!r} is not a time (seconds, or hh:mm:ss)", path)
    return seconds


# A Word transcript of a few hours is a few MB of XML: these caps refuse bombs, not real documents.
DOCX_MAX_MEMBERS, DOCX_MAX_BYTES = 5_000, 200_000_000


DOCX_PARAGRAPHS_NOTICE = 50_000  # an interview of several hours has a few thousand


def docx_text(path: Path) -> str:
    import docx  # python-docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph
    from lxml import etree


    archive = SafeZip(path, DOCX_MAX_MEMBERS, DOCX_MAX_BYTES, "a Word .docx file (not a zip archive)")
    missing = [part for part in ("[Content_Types].xml", "word/document.xml") if part not in archive.names]
    paragraphs = 0
    for name in archive.names:  # each member read once: what is read counts towards the unpacked-size cap
        if name.endswith((".xml", ".rels")):
            data = archive.read(name)
            if re.search(rb"<!(DOCTYPE|ENTITY)", data):
                raise InputError(f"{name} declares a DTD or entities, which Word never writes; refused", path)
            if name == "word/document.xml":
                paragraphs = data.count(b"<w:p>") + data.count(b"<w:p ")
    if missing:
        raise InputError(f"not a complete Word document: the archive has no {missing[0]} (re-save it from Word)", path)
    if paragraphs > DOCX_PARAGRAPHS_NOTICE:  # said before the work, which is minutes and gigabytes
        import warnings

        warnings.warn(f"{path.name}: {paragraphs:,} paragraphs, far more than an interview holds (a merged or "
                      "generated file?); reading it takes minutes and much memory", stacklevel=2)
    try:
        document = docx.Document(str(path))
    except KeyError as exc:  # a part another part points to is missing
        raise InputError(f"not a complete Word document: {str(exc).strip(chr(34) + chr(39))}", path) from None
    except etree.XMLSyntaxError as exc:
        raise InputError(f"damaged Word XML: {exc}", path) from None
    except Exception as exc:  # noqa: BLE001 - python-docx raises many kinds on a damaged package
        raise InputError(f"not a readable Word .docx file ({exc.__class__.__name__})", path) from None
    lines = []
    for child in document.element.body.iterchildren():
        tag = child.tag.rsplit("}", 1)[-1]
        if tag == "p":
            lines.append(Paragraph(child, document).text)
        elif tag == "tbl":  # transcripts laid out as [time,] speaker, text rows
            for row in Table(child, document).rows:
                cells = [c.text.strip() for c in row.cells]
                if len(cells) >= 3 and re.fullmatch(_TS, cells[0]):
                    lines.append(f"[{cells[0]}] {cells[1]}: {' '.join(cells[2:])}")
                elif len(cells) >= 2:
                    lines.append(f"{cells[0]}: {' '.join(cells[1:])}")
    return "\n".join(lines)


def read_document(path: Path, display: str, known: set[str], fallbacks: list[str]) -> Document:
    """Read one transcript. `display` names it in messages; `known` holds label keys."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InputError(f"unknown transcript format {path.suffix!r} (known: {', '.join(FORMATS)})", display)
    if fmt == "pdf":  # a transcript kept as PDF: its text layer, read like plain text

        text, warnings = pdf_text(path, display)
        doc = parse_labelled_text(text, display, known, "pdf", "pdf")
        doc.warnings += warnings
        doc.page_starts = page_starts(text)
        return doc
    data = path.read_bytes()
    if fmt == "docx":
        if not data:
            raise InputError("empty file", display)
        if not zipfile.is_zipfile(path):
            raise InputError("not a Word .docx file (not a zip archive)", display)
        try:
            text = docx_text(path).replace("\r\n", "\n")
        except InputError as exc:  # name the file as the user gave it
            raise InputError(exc.message, display, exc.line) from None
        if not text.strip():
            raise InputError("empty file (no text in the document)", display)
        return parse_labelled_text(text, display, known, "docx", "docx")
    text, encoding, warning = decode_text(data, display, fallbacks)
    if fmt in ("txt", "md"):
        doc = parse_labelled_text(text, display, known, fmt, encoding)
    elif fmt in ("vtt", "srt"):
        doc = _read_cues(text, display, fmt, encoding, known)
    else:
        doc = _read_json(text, display, encoding)
    if warning:
        doc.warnings.append(warning)
    return doc
