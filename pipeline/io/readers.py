"""Transcript readers: each format becomes a plain ``source_text`` and speaker turns
whose character spans point into it.

Plain text and Markdown keep the file's own text (offsets match what a QDA tool
shows). Word files become their paragraphs joined by newlines. Subtitle (VTT, SRT)
and JSON transcripts are rendered as ``Speaker: text`` lines, one per turn, because
their raw files interleave timing lines with speech. Each format is a module of
pipeline.io.formats; the turns and label parsing they share are pipeline.io.turns.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.io.formats import format_for
from pipeline.io.turns import Document, Turn, label_key

__all__ = ["Document", "Turn", "label_key", "read_document"]  # segment, shift, metadata, ingest import these here


def read_document(path: Path, display: str, known: set[str], fallbacks: list[str]) -> Document:
    """Read one transcript. `display` names it in messages; `known` holds label keys."""
    return format_for(path, display).read_turns(path, display, known, fallbacks)
