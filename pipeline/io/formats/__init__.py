"""The source formats themeshift reads, one module each, looked up by file extension.

Every format module declares EXTENSIONS and provides the same three functions (SourceFormat):
``read_turns`` for a transcript's speaker turns (pipeline.io.readers), ``read_paragraphs`` for a field
note or document (pipeline.io.documents), and ``read_for_pseudonymising`` for the texts the pseudonymiser
rewrites (pipeline.io.pseudonymise_formats). Adding a format is a module here, listed in MODULES, and its
tests. What the formats share lives in pipeline.io.turns and pipeline.io.pieces, which import no format.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from pipeline.errors import InputError
from pipeline.io.formats import docx_format, json_format, md, pdf, srt, txt, vtt
from pipeline.io.pieces import SourceFile
from pipeline.io.turns import Document


class SourceFormat(Protocol):
    @property
    def EXTENSIONS(self) -> tuple[str, ...]: ...  # a module constant

    def read_turns(self, path: Path, display: str, known: set[str], fallbacks: list[str]) -> Document:
        """A transcript: `display` names the file in messages, `known` holds label keys (readers.label_key)."""

    def read_paragraphs(self, path: Path, display: str, source_type: str, fallbacks: list[str]) -> Document:
        """A field note or document, its paragraphs as turns; formats that hold speech only refuse."""

    def read_for_pseudonymising(self, path: Path, rel: str, fallbacks: list[str]) -> SourceFile:
        """The texts to pseudonymise and the way to write them back."""


# In the order messages list them (and config's comment does).
MODULES: tuple[SourceFormat, ...] = (txt, md, docx_format, vtt, srt, json_format, pdf)
FORMATS: dict[str, SourceFormat] = {ext: module for module in MODULES for ext in module.EXTENSIONS}
EXTENSIONS = tuple(FORMATS)


def format_for(path: Path, display: str) -> SourceFormat:
    """The module that reads `path`, by its extension in any case; an unknown one is one line naming the file."""
    module = FORMATS.get(path.suffix.lower())
    if module is None:
        raise InputError(f"unknown transcript format {path.suffix!r} (known: {', '.join(FORMATS)})", display)
    return module
