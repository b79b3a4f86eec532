"""PDF text layers: a PDF's pages as one text joined by form feeds, with the offset of each page.

Transcripts (readers), field notes and documents (documents) and pseudonymised copies
(pseudonymise_formats) all read PDFs through here.
"""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path

from pipeline.errors import InputError
from pipeline.io.decode import clean_controls

PAGE_BREAK = "\f"
# A document of a few hundred pages is normal; this many pages is a mistake or a hostile file.
PDF_MAX_PAGES = 5_000


def page_starts(text: str) -> list[int]:
    """Offset at which each page begins (page 1 at 0); one page when the text has no form feed."""
    return [0] + [m.end() for m in re.finditer(PAGE_BREAK, text)]


def pdf_text(path: Path, display: str) -> tuple[str, list[str]]:
    """The text layer of a PDF, pages joined by form feeds, and warnings (pages without text)."""
    from pypdf import PdfReader
    from pypdf.errors import FileNotDecryptedError, LimitReachedError, PdfReadError

    data = path.read_bytes()
    if not data.strip():
        raise InputError("empty file", display)
    if not data.lstrip()[:1024].startswith(b"%PDF-") and b"%PDF-" not in data[:1024]:
        raise InputError("not a PDF file (no %PDF- header)", display)
    logging.getLogger("pypdf").setLevel(logging.ERROR)  # damaged-but-readable files: no log noise on stderr
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            try:  # many PDFs carry only an owner password and open with the empty user password
                if not reader.decrypt(""):
                    raise FileNotDecryptedError("password required")
            except (FileNotDecryptedError, NotImplementedError, ValueError):
                raise InputError(
                    "encrypted PDF (password-protected): save an unprotected copy first", display
                ) from None
        n_pages = len(reader.pages)
        if n_pages > PDF_MAX_PAGES:
            raise InputError(f"PDF has {n_pages} pages, more than the limit of {PDF_MAX_PAGES}", display)
        pages = [(page.extract_text() or "") for page in reader.pages]
    except InputError:
        raise
    except LimitReachedError as exc:
        raise InputError(
            f"PDF refused by the reader's safety limits ({exc}): a decompression bomb or a looping "
            "page tree, which no transcript needs",
            display,
        ) from None
    except (PdfReadError, FileNotDecryptedError) as exc:
        raise InputError(f"damaged or unreadable PDF ({exc.__class__.__name__}: {exc})", display) from None
    except Exception as exc:  # noqa: BLE001 - pypdf raises many kinds on a damaged file
        raise InputError(f"damaged or unreadable PDF ({exc.__class__.__name__})", display) from None
    if n_pages == 0:
        raise InputError("PDF has no pages", display)
    pages = [p.replace("\r\n", "\n").replace("\r", "\n").replace(PAGE_BREAK, "\n") for p in pages]
    if not any(p.strip() for p in pages):
        raise InputError(
            f"no text layer on any of its {n_pages} page(s) (a scan?): OCR it first, e.g. "
            "`ocrmypdf in.pdf out.pdf`, and read the OCR'd copy",
            display,
        )
    warnings = []
    blank = [i for i, p in enumerate(pages, 1) if not p.strip()]
    if blank:
        warnings.append(
            f"{display}: page(s) {', '.join(map(str, blank[:20]))} have no text layer (images only?); "
            "OCR the file to include them"
        )
    text, cleaned = clean_controls(PAGE_BREAK.join(pages), display)
    if cleaned:
        warnings.append(cleaned)
    return text, warnings
