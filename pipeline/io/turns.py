"""What every source format reads into: a ``Document`` whose turns (speaker turns, or a field note's
paragraphs) are character spans of its ``source_text``; and the parsing the formats share, speaker
labels (`Speaker: text` lines) and subtitle cues.

The format modules (pipeline.io.formats) import this; it imports no format, so there is no cycle.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from pipeline.errors import InputError
from pipeline.io.decode import decode_text
from pipeline.io.pdf import PAGE_BREAK, page_starts

TIMESTAMP = r"\d{1,2}:\d{2}(?::\d{2})?(?:[.,]\d{1,3})?"
# [ts] Label [ts]: [ts] text   -- with optional Markdown bullets/bold around the label; a form feed
# (a PDF's page break) before the label is whitespace: a page may start with a new speaker.
_TURN_LINE = re.compile(
    rf"""^[ \t\f]*(?:[-*>][ \t]+)?(?:\[?(?P<ts1>{TIMESTAMP})\]?[ \t]*)?(?:\*\*|__)?
    (?P<label>[^\W\d_][\w.'\u2019()\- ]{{0,38}}?)
    [ \t]*(?:[\[(]?(?P<ts2>{TIMESTAMP})[\])]?)?[ \t]*(?:\*\*|__)?[ \t]*:[ \t]*(?:\*\*|__)?[ \t]*
    (?:\[?(?P<ts3>{TIMESTAMP})\]?[ \t]*)?(?P<text>.*)$""",
    re.X,
)
_LOOSE_TIMING = re.compile(r"-+>|^\s*\d{1,2}:\d{2}[:.,]\d")  # what a damaged timing line still looks like
CUE_TIMING = re.compile(rf"^\s*(?P<start>{TIMESTAMP})\s*-->\s*{TIMESTAMP}")
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


NO_LABELS = "no speaker labels found"  # ingest tells a paper among the transcripts by it


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


_NOT_NAMES = {
    "so",
    "well",
    "and",
    "but",
    "note",
    "yes",
    "no",
    "okay",
    "ok",
    "also",
    "then",
    "now",
    "because",
    "anyway",
    "basically",
    "example",
    "for example",
    "question",
    "answer",
    "update",
}


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
    for i, (line, m) in enumerate(zip(lines, matches, strict=True)):
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
        raise InputError(
            f"{NO_LABELS} (expected lines such as 'Interviewer: ...'; a field note or "
            "document needs source_type in the manifest or a fieldnotes/ or documents/ folder)",
            path,
            1,
        )
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


def render_turns(items: list[tuple[str, str, float | None, int]], fmt: str, encoding: str, path: str) -> Document:
    """Build `Label: text` lines and turn spans from already separated (label, text, start, line) turns."""
    parts: list[str] = []
    turns: list[Turn] = []
    pos = 0
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


def read_cues(text: str, path: str, fmt: str, encoding: str, known: set[str]) -> Document:
    """Turns of a subtitle file (VTT, SRT): the speaker from a <v Name> voice tag or a `Name:` prefix, held
    until the next one; a cue whose timing line is damaged keeps its words, without a time."""
    blocks: list[tuple[int, list[str]]] = []
    block: list[str] = []
    block_line = 0
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
    cues: list[tuple[int, float | None, str]] = []  # (line, start seconds, raw payload)
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
            cues.append((line_no + timing_at + 1, None, " ".join(lines[timing_at + 1 :])))
            continue
        timing = CUE_TIMING.match(lines[timing_at])
        ts = parse_timestamp(timing.group("start")) if timing else None
        if ts is None:  # a timing line in the right shape with an impossible time
            bad_timing.append(line_no + timing_at)
        cues.append((line_no + timing_at + 1, ts, " ".join(lines[timing_at + 1 :])))
    if not cues:
        raise InputError(f"no {fmt.upper()} cues found (expected 'hh:mm:ss --> hh:mm:ss' lines)", path, 1)
    parsed: list[tuple[int, float | None, str | None, str, bool]] = []
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
        parsed.append((line_no, ts, label, body, voice is not None))
    speakers = _accepted_labels(counts, known)
    items: list[tuple[str, str, float | None, int]] = []
    current = None
    for line_no, ts, label, body, from_voice in parsed:
        if label is not None and not from_voice and label_key(label) not in speakers:
            body, label = f"{label}: {body}", None
        current = label or current
        if current is None:
            if body.strip():
                raise InputError("cue has no speaker (expected <v Name> or 'Name:')", path, line_no)
            continue
        items.append((current, body, ts, line_no))
    doc = render_turns(items, fmt, encoding, path)
    if bad_timing:
        doc.warnings.append(
            f"{path}:{bad_timing[0]}: {len(bad_timing)} cue(s) with a malformed or impossible "
            f"timing line (lines {', '.join(map(str, bad_timing[:10]))}); their text is kept, "
            "without a time"
        )
    return doc


def paragraphs(text: str) -> list[Turn]:
    """Blocks of non-blank lines, never across a page break; spans trimmed of surrounding space."""
    turns, line, counted = [], 1, 0
    for m in re.finditer(r"[^\n\f]*\S[^\f]*?(?=\n[ \t]*\n|\f|\Z)", text):
        start, end = m.start(), m.end()
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        if end > start:
            line += text.count("\n", counted, start)
            counted = start
            turns.append(Turn("", start, end, line))
    return turns


def paragraph_document(
    text: str, display: str, fmt: str, encoding: str, source_type: str, warnings: list[str], paged: bool = False
) -> Document:
    """A field note or document: its paragraphs as turns; pages where the format has them (`paged`) or the
    text keeps form feeds (a pseudonymised PDF, a text export that kept its page breaks)."""
    turns = paragraphs(text)
    if not turns:
        raise InputError("empty file (no text in the document)", display)
    paged = paged or PAGE_BREAK in text
    return Document(text, turns, fmt, encoding, 0, warnings, source_type, page_starts(text) if paged else None)


# The formats whose read_paragraphs reads a field note or document, in the order messages name them; the others
# (speech only: subtitles, JSON turns) refuse. tests/test_formats.py checks this against the registry.
PARAGRAPH_FORMATS = (".pdf", ".docx", ".txt", ".md")


def refuse_paragraphs(path: Path, display: str, source_type: str, fallbacks: list[str]) -> NoReturn:
    """read_paragraphs of a format that holds speech only, and what an unknown suffix gets."""
    suffix = path.suffix.lower()
    named = ", ".join(PARAGRAPH_FORMATS[:-1]) + " or " + PARAGRAPH_FORMATS[-1]
    raise InputError(f"a {source_type} must be {named}, not {suffix or '(none)'!r}", display)


def decoded_turns(path: Path, display: str, fallbacks: list[str], parse: Callable[[str, str], Document]) -> Document:
    """A text transcript decoded (UTF-8, else the fallbacks) and parsed by parse(text, encoding); a decoding
    warning joins the document's."""
    text, encoding, warning = decode_text(path.read_bytes(), display, fallbacks)
    doc = parse(text, encoding)
    if warning:
        doc.warnings.append(warning)
    return doc


def decoded_paragraphs(path: Path, display: str, source_type: str, fallbacks: list[str], fmt: str) -> Document:
    """A text field note or document decoded, its paragraphs as turns."""
    text, encoding, warning = decode_text(path.read_bytes(), display, fallbacks)
    return paragraph_document(text, display, fmt, encoding, source_type, [warning] if warning else [])
