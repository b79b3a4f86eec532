"""PDFs made at test time with reportlab (a real text layer) and pypdf (encryption), so the bad-PDF
cases are real files of each kind, not hand-written bytes."""
from __future__ import annotations

from pathlib import Path


def text_pdf(path: Path, pages: list[list[str]], title: str = "") -> Path:
    """One paragraph line per entry; an empty entry leaves a blank line (a paragraph break)."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    c = canvas.Canvas(str(path), pagesize=A4, invariant=1)  # invariant: same bytes on every run
    if title:
        c.setTitle(title)
    for lines in pages:
        y = 800
        for line in lines:
            if line:
                c.drawString(60, y, line)
            y -= 16
        c.showPage()
    c.save()
    return path


def scanned_pdf(path: Path) -> Path:
    """A page with a drawn picture and no text layer, as a scanner makes."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    c = canvas.Canvas(str(path), pagesize=A4, invariant=1)
    for i in range(2):
        c.rect(50 + i * 10, 400, 300, 200, fill=1)
        c.showPage()
    c.save()
    return path


def encrypted_pdf(path: Path, source: Path, password: str = "secret") -> Path:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(source))
    writer.encrypt(user_password=password, owner_password=password + "-owner", algorithm="AES-128")
    with open(path, "wb") as fh:
        writer.write(fh)
    return path


def corrupt_pdf(path: Path, source: Path) -> Path:
    """The first bytes of a real PDF: a download cut short."""
    data = source.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    return path
