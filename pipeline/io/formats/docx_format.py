"""Word (.docx): the body's paragraphs joined by newlines, table rows read as `[time] Speaker: text` lines.
Pseudonymising rewrites every paragraph a person sees (body, tables, headers, footers) in place, keeping
its runs' formatting, and clears the author fields.

Named docx_format, not docx, so that nothing mistakes it for python-docx.
"""

from __future__ import annotations

import re
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path

from pipeline.errors import InputError
from pipeline.io.pieces import Piece, SourceFile, line_labels
from pipeline.io.safezip import SafeZip
from pipeline.io.turns import TIMESTAMP, Document, paragraph_document, parse_labelled_text

EXTENSIONS = (".docx",)

# A Word transcript of a few hours is a few MB of XML: these caps refuse bombs, not real documents.
DOCX_MAX_MEMBERS, DOCX_MAX_BYTES = 5_000, 200_000_000
DOCX_PARAGRAPHS_NOTICE = 50_000  # an interview of several hours has a few thousand


def docx_text(path: Path) -> str:
    """The body's text, one line per paragraph or table row; a damaged or hostile archive is an InputError."""
    import docx  # python-docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph
    from lxml import etree

    archive = SafeZip(path, DOCX_MAX_MEMBERS, DOCX_MAX_BYTES, "a Word .docx file (not a zip archive)")
    missing = [part for part in ("[Content_Types].xml", "word/document.xml") if part not in archive.names]
    paragraphs = 0
    for name in archive.names:  # each member read once: what is read counts towards the unpacked-size cap
        if name.endswith((".xml", ".rels")):
            data = archive.read(name)
            if re.search(rb"<!(DOCTYPE|ENTITY)", data):
                raise InputError(f"{name} declares a DTD or entities, which Word never writes; refused", path)
            if name == "word/document.xml":
                paragraphs = data.count(b"<w:p>") + data.count(b"<w:p ")
    if missing:
        raise InputError(f"not a complete Word document: the archive has no {missing[0]} (re-save it from Word)", path)
    if paragraphs > DOCX_PARAGRAPHS_NOTICE:  # said before the work, which is minutes and gigabytes
        warnings.warn(
            f"{path.name}: {paragraphs:,} paragraphs, far more than an interview holds (a merged or "
            "generated file?); reading it takes minutes and much memory",
            stacklevel=2,
        )
    try:
        document = docx.Document(str(path))
    except KeyError as exc:  # a part another part points to is missing
        raise InputError(f"not a complete Word document: {str(exc).strip(chr(34) + chr(39))}", path) from None
    except etree.XMLSyntaxError as exc:
        raise InputError(f"damaged Word XML: {exc}", path) from None
    except Exception as exc:  # noqa: BLE001 - python-docx raises many kinds on a damaged package
        raise InputError(f"not a readable Word .docx file ({exc.__class__.__name__})", path) from None
    lines = []
    for child in document.element.body.iterchildren():
        tag = child.tag.rsplit("}", 1)[-1]
        if tag == "p":
            lines.append(Paragraph(child, document).text)
        elif tag == "tbl":  # transcripts laid out as [time,] speaker, text rows
            for row in Table(child, document).rows:
                cells = [c.text.strip() for c in row.cells]
                if len(cells) >= 3 and re.fullmatch(TIMESTAMP, cells[0]):
                    lines.append(f"[{cells[0]}] {cells[1]}: {' '.join(cells[2:])}")
                elif len(cells) >= 2:
                    lines.append(f"{cells[0]}: {' '.join(cells[1:])}")
    return "\n".join(lines)


def _text(path: Path, display: str) -> str:
    """docx_text after the checks that need no unpacking, its errors naming the file as the user gave it."""
    if not path.read_bytes():
        raise InputError("empty file", display)
    if not zipfile.is_zipfile(path):
        raise InputError("not a Word .docx file (not a zip archive)", display)
    try:
        return docx_text(path).replace("\r\n", "\n")
    except InputError as exc:
        raise InputError(exc.message, display, exc.line) from None


def read_turns(path: Path, display: str, known: set[str], fallbacks: list[str]) -> Document:
    text = _text(path, display)
    if not text.strip():
        raise InputError("empty file (no text in the document)", display)
    return parse_labelled_text(text, display, known, "docx", "docx")


def read_paragraphs(path: Path, display: str, source_type: str, fallbacks: list[str]) -> Document:
    return paragraph_document(_text(path, display), display, "docx", "docx", source_type, [])


def every_paragraph(document) -> Iterator:
    """Every paragraph a reader or a person sees: body, table cells (nested too), headers and footers."""

    def walk(container):
        yield from container.paragraphs
        for table in getattr(container, "tables", []):
            for row in table.rows:
                seen = set()
                for cell in row.cells:
                    if id(cell._tc) in seen:  # a merged cell appears once per spanned column
                        continue
                    seen.add(id(cell._tc))
                    yield from walk(cell)

    yield from walk(document)
    for section in document.sections:
        for part in (
            section.header,
            section.footer,
            section.first_page_header,
            section.first_page_footer,
            section.even_page_header,
            section.even_page_footer,
        ):
            if part.is_linked_to_previous:
                continue
            yield from walk(part)


def read_for_pseudonymising(path: Path, rel: str, fallbacks: list[str]) -> SourceFile:
    import docx

    if not zipfile.is_zipfile(path):
        raise InputError("not a Word .docx file (not a zip archive)", rel)
    try:
        docx_text(path)  # the reader's own checks (caps, DTDs, damaged XML) first
        document = docx.Document(str(path))
    except InputError as exc:
        raise InputError(exc.message, rel, exc.line) from None
    except Exception as exc:  # noqa: BLE001 - python-docx raises many kinds on a damaged package
        raise InputError(f"not a readable Word .docx file ({exc.__class__.__name__})", rel) from None
    paragraphs = list(every_paragraph(document))
    pieces = [Piece(p.text, i + 1, line_labels(p.text, False)) for i, p in enumerate(paragraphs)]

    def write(new_texts: list[str], out: Path) -> None:
        for paragraph, piece, new in zip(paragraphs, pieces, new_texts, strict=True):
            if new != piece.text:
                _set_paragraph_text(paragraph, piece.text, new)
        props = document.core_properties  # the author of a transcript is often the interviewer
        for attr in ("author", "last_modified_by", "title", "subject", "keywords", "comments", "category"):
            setattr(props, attr, "")
        document.save(str(out))

    return SourceFile(rel, rel, "docx", pieces, write)


def _set_paragraph_text(paragraph, old: str, new: str) -> None:
    """Replace a paragraph's text keeping its runs' formatting where the change lies inside one run."""
    runs = paragraph.runs
    if "".join(r.text for r in runs) != old or not runs:
        paragraph.text = new  # hyperlinks or fields: one plain run (their targets may hold the data too)
        return
    # one contiguous difference region (prefix and suffix kept): rewrite only the runs it touches
    p = 0
    while p < min(len(old), len(new)) and old[p] == new[p]:
        p += 1
    s = 0
    while s < min(len(old), len(new)) - p and old[len(old) - 1 - s] == new[len(new) - 1 - s]:
        s += 1
    start, end, replacement = p, len(old) - s, new[p : len(new) - s]
    pos, placed = 0, False
    for run in runs:
        rs, re_ = pos, pos + len(run.text)
        pos = re_
        touches = (rs < end and re_ > start) if end > start else rs <= start <= re_
        if not touches:
            continue
        a, b = max(start, rs) - rs, min(end, re_) - rs
        run.text = run.text[:a] + ("" if placed else replacement) + run.text[b:]
        placed = True
        if end == start:
            break
