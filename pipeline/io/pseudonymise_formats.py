"""Each source format as a list of texts to pseudonymise, and written back in the same format.

A text is a line (txt, md, vtt, srt, a PDF's extracted text), a Word paragraph, or a JSON string.
Speaker labels are marked so a pseudonym there is written bare ("PERSON-03: ...", "<v PERSON-03>"):
a label must still read as a label when the pseudonymised file is segmented. A PDF is written as
plain text (.txt) with its page breaks kept as form feeds, so pages survive. Each format's reading is
its module's ``read_for_pseudonymising`` (pipeline.io.formats); Piece and SourceFile are pipeline.io.pieces.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import InputError
from pipeline.io.formats import FORMATS
from pipeline.io.pieces import SourceFile

__all__ = ["SourceFile", "read_for_pseudonymising", "replace_spans"]  # anonymise imports them from here


def read_for_pseudonymising(path: Path, rel: str, fallbacks: list[str]) -> SourceFile:
    """Texts of one source file, ready to pseudonymise and write back."""
    suffix = path.suffix.lower()
    module = FORMATS.get(suffix)
    if module is None:
        raise InputError(f"cannot pseudonymise {suffix or '(none)'!r} files (known: {' '.join(FORMATS)})", rel)
    return module.read_for_pseudonymising(path, rel, fallbacks)


def replace_spans(text: str, spans: list[tuple[int, int, str]]) -> str:
    """`text` with each (start, end) replaced, through Presidio's anonymizer ('replace' operator)."""
    if not spans:
        return text
    from presidio_anonymizer import AnonymizerEngine
    from presidio_anonymizer.entities import OperatorConfig, RecognizerResult

    results = [RecognizerResult(f"S{i}", s, e, 1.0) for i, (s, e, _) in enumerate(spans)]
    operators = {f"S{i}": OperatorConfig("replace", {"new_value": new}) for i, (_, _, new) in enumerate(spans)}
    return _engine(AnonymizerEngine).anonymize(text, results, operators).text


_ENGINES: dict = {}


def _engine(cls):
    if cls not in _ENGINES:
        _ENGINES[cls] = cls()
    return _ENGINES[cls]
