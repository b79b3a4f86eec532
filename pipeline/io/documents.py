"""Sources without speaker labels: field notes and documents (PDF text layer, Word, plain text).

Their text is cut into paragraphs (blocks of non-blank lines) that play the part a speaker turn
plays in a transcript; every paragraph keeps its character span in ``source_text``. A PDF's
``source_text`` is its pages' extracted text joined by form feeds ("\\f"), and ``page_starts`` holds
the offset where each page begins, so any offset maps back to its page. A plain-text source with
form feeds (a pseudonymised PDF, or a text export that kept its page breaks) gets pages the same way.
Each format's reading is its module's ``read_paragraphs`` (pipeline.io.formats).
"""

from __future__ import annotations

from pathlib import Path

from pipeline.io.formats import FORMATS
from pipeline.io.turns import Document, refuse_paragraphs

SOURCE_TYPES = ("interview", "fieldnote", "document")


def read_unlabelled(path: Path, display: str, source_type: str, fallbacks: list[str]) -> Document:
    """A field note or document: its text and paragraphs. Formats: .pdf, .docx, .txt, .md."""
    module = FORMATS.get(path.suffix.lower())
    if module is None:
        refuse_paragraphs(path, display, source_type, fallbacks)
    return module.read_paragraphs(path, display, source_type, fallbacks)
