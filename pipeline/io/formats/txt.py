"""Plain text: the file's own text is the source text, so offsets match what a QDA tool shows."""

from __future__ import annotations

from pathlib import Path

from pipeline.io.decode import decode_text
from pipeline.io.pieces import SourceFile, text_source
from pipeline.io.turns import Document, paragraph_document, parse_labelled_text

EXTENSIONS = (".txt",)


def read_turns(path: Path, display: str, known: set[str], fallbacks: list[str]) -> Document:
    text, encoding, warning = decode_text(path.read_bytes(), display, fallbacks)
    doc = parse_labelled_text(text, display, known, "txt", encoding)
    if warning:
        doc.warnings.append(warning)
    return doc


def read_paragraphs(path: Path, display: str, source_type: str, fallbacks: list[str]) -> Document:
    text, encoding, warning = decode_text(path.read_bytes(), display, fallbacks)
    return paragraph_document(text, display, "txt", encoding, source_type, [warning] if warning else [])


def read_for_pseudonymising(path: Path, rel: str, fallbacks: list[str]) -> SourceFile:
    text, _, _ = decode_text(path.read_bytes(), rel, fallbacks)
    return text_source(rel, rel, text, "text", cue=False)
