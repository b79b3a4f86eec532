"""WebVTT subtitles: cues rendered as `Speaker: text` lines, one per turn (the raw file interleaves timing
lines with speech); the speaker from a <v Name> voice tag or a `Name:` prefix."""

from __future__ import annotations

from pathlib import Path

from pipeline.io.pieces import SourceFile, text_file_source
from pipeline.io.turns import Document, decoded_turns, read_cues, refuse_paragraphs

EXTENSIONS = (".vtt",)


def read_turns(path: Path, display: str, known: set[str], fallbacks: list[str]) -> Document:
    return decoded_turns(path, display, fallbacks, lambda text, enc: read_cues(text, display, "vtt", enc, known))


read_paragraphs = refuse_paragraphs  # subtitles are speech: never a field note or document


def read_for_pseudonymising(path: Path, rel: str, fallbacks: list[str]) -> SourceFile:
    return text_file_source(path, rel, fallbacks, cue=True)
