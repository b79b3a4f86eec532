"""SubRip subtitles: cues rendered as `Speaker: text` lines, one per turn (the raw file interleaves cue
numbers and timing lines with speech); the speaker from a `Name:` prefix."""

from __future__ import annotations

from pathlib import Path

from pipeline.io.decode import decode_text
from pipeline.io.pieces import SourceFile, text_source
from pipeline.io.turns import Document, read_cues, refuse_paragraphs

EXTENSIONS = (".srt",)


def read_turns(path: Path, display: str, known: set[str], fallbacks: list[str]) -> Document:
    text, encoding, warning = decode_text(path.read_bytes(), display, fallbacks)
    doc = read_cues(text, display, "srt", encoding, known)
    if warning:
        doc.warnings.append(warning)
    return doc


read_paragraphs = refuse_paragraphs  # subtitles are speech: never a field note or document


def read_for_pseudonymising(path: Path, rel: str, fallbacks: list[str]) -> SourceFile:
    text, _, _ = decode_text(path.read_bytes(), rel, fallbacks)
    return text_source(rel, rel, text, "text", cue=True)
