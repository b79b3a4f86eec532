"""Plain text: the file's own text is the source text, so offsets match what a QDA tool shows."""

from __future__ import annotations

from pathlib import Path

from pipeline.io.pieces import SourceFile, text_file_source
from pipeline.io.turns import Document, decoded_paragraphs, decoded_turns, parse_labelled_text

EXTENSIONS = (".txt",)


def read_turns(path: Path, display: str, known: set[str], fallbacks: list[str]) -> Document:
    return decoded_turns(
        path, display, fallbacks, lambda text, enc: parse_labelled_text(text, display, known, "txt", enc)
    )


def read_paragraphs(path: Path, display: str, source_type: str, fallbacks: list[str]) -> Document:
    return decoded_paragraphs(path, display, source_type, fallbacks, "txt")


def read_for_pseudonymising(path: Path, rel: str, fallbacks: list[str]) -> SourceFile:
    return text_file_source(path, rel, fallbacks, cue=False)
