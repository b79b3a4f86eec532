"""Sources without speaker labels: field notes and documents (PDF text layer, Word, plain text).

Their text is cut into paragraphs (blocks of non-blank lines) that play the part a speaker turn
plays in a transcript; every paragraph keeps its character span in ``source_text``. A PDF's
``source_text`` is its pages' extracted text joined by form feeds ("\\f"), and ``page_starts`` holds
the offset where each page begins, so any offset maps back to its page. A plain-text source with
form feeds (a pseudonymised PDF, or a text export that kept its page breaks) gets pages the same way.
"""
from __future__ import annotations

import re
import zipfile
from pathlib import Path

from pipeline.errors import InputError
from pipeline.io.decode import decode_text
from pipeline.io.pdf import PAGE_BREAK, page_starts, pdf_text
from pipeline.io.readers import Document, Turn, docx_text

SOURCE_TYPES = ("interview", "fieldnote", "document")
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


def read_unlabelled(path: Path, display: str, source_type: str, fallbacks: list[str]) -> Document:
    """A field note or document: its text and paragraphs. Formats: .pdf, .docx, .txt, .md."""
    suffix = path.suffix.lower()
    warnings: list[str] = []
    if suffix == ".pdf":
        text, warnings = pdf_text(path, display)
        fmt, encoding = "pdf", "pdf"
    elif suffix == ".docx":
        if not path.read_bytes():
            raise InputError("empty file", display)
        if not zipfile.is_zipfile(path):
            raise InputError("not a Word .docx file (not a zip archive)", display)
        try:
            text = docx_text(path).replace("\r\n", "\n")
        except InputError as exc:
            raise InputError(exc.message, display, exc.line) from None
        fmt, encoding = "docx", "docx"
    elif suffix in (".txt", ".md"):
        text, encoding, warning = decode_text(path.read_bytes(), display, fallbacks)
        warnings += [warning] if warning else []
        fmt = suffix[1:]
    else:
        raise InputError(f"a {source_type} must be .pdf, .docx, .txt or .md, not {suffix or '(none)'!r}", display)
    turns = paragraphs(text)
    if not turns:
        raise InputError("empty file (no text in the document)", display)
    paged = fmt == "pdf" or PAGE_BREAK in text
    return Document(text, turns, fmt, encoding, 0, warnings, source_type, page_starts(text) if paged else None)
