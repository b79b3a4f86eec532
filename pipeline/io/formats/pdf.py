"""PDF: its text layer (pipeline.io.pdf), pages joined by form feeds, read like plain text. A pseudonymised
PDF is written as plain text (.txt) with its page breaks kept as form feeds, so its pages survive."""

from __future__ import annotations

from pathlib import Path

from pipeline.io.pdf import page_starts, pdf_text
from pipeline.io.pieces import SourceFile, text_source
from pipeline.io.turns import Document, paragraph_document, parse_labelled_text

EXTENSIONS = (".pdf",)


def read_turns(path: Path, display: str, known: set[str], fallbacks: list[str]) -> Document:
    text, warnings = pdf_text(path, display)
    doc = parse_labelled_text(text, display, known, "pdf", "pdf")
    doc.warnings += warnings
    doc.page_starts = page_starts(text)
    return doc


def read_paragraphs(path: Path, display: str, source_type: str, fallbacks: list[str]) -> Document:
    text, warnings = pdf_text(path, display)
    return paragraph_document(text, display, "pdf", "pdf", source_type, warnings, paged=True)


def read_for_pseudonymising(path: Path, rel: str, fallbacks: list[str]) -> SourceFile:
    text, _ = pdf_text(path, rel)
    out_rel = str(Path(rel).with_suffix(".txt").as_posix())
    return text_source(rel, out_rel, text, "pdf", cue=False)
