"""A source file as the texts to pseudonymise (pieces) and the way to write it back in its own format.

A piece is a line (txt, md, vtt, srt, a PDF's extracted text), a Word paragraph, or a JSON string.
Speaker labels are marked so a pseudonym there is written bare ("PERSON-03: ...", "<v PERSON-03>"):
a label must still read as a label when the pseudonymised file is segmented.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.io.decode import decode_text
from pipeline.io.turns import CUE_TIMING, VOICE, match_label


@dataclass
class Piece:
    text: str
    line: int  # line, paragraph or JSON string number (1-based)
    labels: list[tuple[int, int]] = field(default_factory=list)  # spans that are speaker labels
    masked: str | None = None  # the text the detector reads, when markup is blanked out (same offsets)
    before: str = ""  # neighbouring text the detector reads with it (a subtitle cue's sentence
    after: str = ""  # runs on into the next cue); findings there belong to the neighbours

    @property
    def for_detection(self) -> str:
        return self.text if self.masked is None else self.masked


_CUE_TAG = re.compile(r"<v(?:\.[\w.]+)?\s+(?P<name>[^>]+)>|</?(?:[A-Za-z]|\d+:)[^>]*>")


def mask_cue_tags(line: str) -> str:
    """Cue markup as spaces, a voice tag's name kept: "<v Ann>Dr Lee</v>" reads "   Ann Dr Lee    " to
    the detector (tags glued to words make spaCy miss or stretch names); offsets do not move."""

    def blank(m: re.Match) -> str:
        if m.group("name") is None:
            return " " * len(m.group())
        a, b = m.span("name")
        a, b = a - m.start(), b - m.start()
        return " " * a + m.group()[a:b] + " " * (len(m.group()) - b)

    return _CUE_TAG.sub(blank, line)


@dataclass
class SourceFile:
    rel: str
    out_rel: str
    fmt: str
    pieces: list[Piece]
    # writes the file to the given path with each piece's new text; the format module that read it made it
    write_texts: Callable[[list[str], Path], None]

    def write(self, new_texts: list[str], dst: Path) -> None:
        path = dst / self.out_rel
        path.parent.mkdir(parents=True, exist_ok=True)
        self.write_texts(new_texts, path)


def line_labels(line: str, cue: bool) -> list[tuple[int, int]]:
    """Spans of a line's speaker labels: a `Label:` prefix, and in a subtitle cue its voice tags' names."""
    spans = [m.span("name") for m in VOICE.finditer(line)] if cue else []
    m = match_label(line)
    if m and m.group("label").strip():
        spans.append(m.span("label"))
    return spans


def text_source(rel: str, out_rel: str, text: str, fmt: str, cue: bool) -> SourceFile:
    """A text file line by line; it is written back as UTF-8 with its lines joined by newlines."""
    lines = text.split("\n")
    pieces, index = [], []
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or cue and (CUE_TIMING.match(line) or stripped.isdigit() or stripped.startswith("WEBVTT")):
            continue  # timing lines, cue numbers and the header carry no one's data
        pieces.append(Piece(line, i + 1, line_labels(line, cue), mask_cue_tags(line) if cue else None))
        index.append(i)
    if cue:  # a name cut by a cue boundary, or a sentence spread over cues, needs its neighbours
        for i, piece in enumerate(pieces):
            piece.before = pieces[i - 1].for_detection + " " if i > 0 else ""
            piece.after = " " + pieces[i + 1].for_detection if i + 1 < len(pieces) else ""

    def write(new_texts: list[str], path: Path) -> None:
        for i, new in zip(index, new_texts, strict=True):
            lines[i] = new
        path.write_text("\n".join(lines), encoding="utf-8")

    return SourceFile(rel, out_rel, fmt, pieces, write)


def text_file_source(path: Path, rel: str, fallbacks: list[str], cue: bool) -> SourceFile:
    """A text file (txt, md, vtt, srt) to pseudonymise line by line; cue: subtitle timing and voice tags kept."""
    text, _, _ = decode_text(path.read_bytes(), rel, fallbacks)
    return text_source(rel, rel, text, "text", cue=cue)
