"""Each source format as a list of texts to pseudonymise, and written back in the same format.

A text is a line (txt, md, vtt, srt, a PDF's extracted text), a Word paragraph, or a JSON string.
Speaker labels are marked so a pseudonym there is written bare ("PERSON-03: ...", "<v PERSON-03>"):
a label must still read as a label when the pseudonymised file is segmented. A PDF is written as
plain text (.txt) with its page breaks kept as form feeds, so pages survive.
"""
from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import InputError
from pipeline.io.decode import decode_text
from pipeline.io.pdf import pdf_text
from pipeline.io.readers import CUE_TIMING, VOICE, docx_text, load_json, match_label

TEXT_FORMATS = (".txt", ".md", ".vtt", ".srt")
LABEL_KEYS = ("speaker", "name", "speaker_id")  # JSON fields holding a speaker label (as the reader reads them)


@dataclass
class Piece:
    text: str
    line: int                                                   # line, paragraph or JSON string number (1-based)
    labels: list[tuple[int, int]] = field(default_factory=list)  # spans that are speaker labels
    masked: str | None = None  # the text the detector reads, when markup is blanked out (same offsets)
    before: str = ""           # neighbouring text the detector reads with it (a subtitle cue's sentence
    after: str = ""            # runs on into the next cue); findings there belong to the neighbours

    @property
    def for_detection(self) -> str:
        return self.text if self.masked is None else self.masked


_CUE_TAG = re.compile(r"<v(?:\.[\w.]+)?\s+(?P<name>[^>]+)>|</?(?:[A-Za-z]|\d+:)[^>]*>")


def mask_cue_tags(line: str) -> str:
    """Cue markup as spaces, a voice tag's name kept: "<v Ann>Dr Lee</v>" reads "   Ann Dr Lee    " to
    the detector (tags glued to words make spaCy miss or stretch names); offsets do not move."""
    def blank(m: re.Match) -> str:
        if m.group("name") is None:
            return " " * len(m.group())
        a, b = m.span("name")
        a, b = a - m.start(), b - m.start()
        return " " * a + m.group()[a:b] + " " * (len(m.group()) - b)
    return _CUE_TAG.sub(blank, line)


@dataclass
class SourceFile:
    rel: str
    out_rel: str
    fmt: str
    pieces: list[Piece]
    payload: object = None  # what write() needs besides the pieces (lines, a docx Document, JSON data)

    def write(self, new_texts: list[str], dst: Path) -> None:
        path = dst / self.out_rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.fmt in ("text", "pdf"):
            lines, index = self.payload
            for i, text in zip(index, new_texts):
                lines[i] = text
            path.write_text("\n".join(lines), encoding="utf-8")
        elif self.fmt == "docx":
            document, paragraphs = self.payload
            for paragraph, (old, new) in zip(paragraphs, zip((p.text for p in self.pieces), new_texts)):
                if new != old:
                    _set_paragraph_text(paragraph, old, new)
            props = document.core_properties  # the author of a transcript is often the interviewer
            for attr in ("author", "last_modified_by", "title", "subject", "keywords", "comments", "category"):
                setattr(props, attr, "")
            document.save(str(path))
        else:  # json
            data, setters = self.payload
            for setter, text in zip(setters, new_texts):
                setter(text)
            path.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def _line_labels(line: str, cue: bool) -> list[tuple[int, int]]:
    spans = [m.span("name") for m in VOICE.finditer(line)] if cue else []
    m = match_label(line)
    if m and m.group("label").strip():
        spans.append(m.span("label"))
    return spans


def _text_source(rel: str, out_rel: str, text: str, fmt: str, cue: bool) -> SourceFile:
    lines = text.split("\n")
    pieces, index = [], []
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or cue and (CUE_TIMING.match(line) or stripped.isdigit() or stripped.startswith("WEBVTT")):
            continue  # timing lines, cue numbers and the header carry no one's data
        pieces.append(Piece(line, i + 1, _line_labels(line, cue), mask_cue_tags(line) if cue else None))
        index.append(i)
    if cue:  # a name cut by a cue boundary, or a sentence spread over cues, needs its neighbours
        for prev, piece, nxt in zip([None] + pieces[:-1], pieces, pieces[1:] + [None]):
            piece.before = prev.for_detection + " " if prev else ""
            piece.after = " " + nxt.for_detection if nxt else ""
    return SourceFile(rel, out_rel, fmt, pieces, (lines, index))


def _paragraphs(document):
    """Every paragraph a reader or a person sees: body, table cells (nested too), headers and footers."""
    def walk(container):
        for p in container.paragraphs:
            yield p
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
        for part in (section.header, section.footer, section.first_page_header, section.first_page_footer,
                     section.even_page_header, section.even_page_footer):
            if part.is_linked_to_previous:
                continue
            yield from walk(part)


def _docx_source(path: Path, rel: str) -> SourceFile:
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
    paragraphs = list(_paragraphs(document))
    pieces = [Piece(p.text, i + 1, _line_labels(p.text, False)) for i, p in enumerate(paragraphs)]
    return SourceFile(rel, rel, "docx", pieces, (document, paragraphs))


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
    start, end, replacement = p, len(old) - s, new[p:len(new) - s]
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


def _json_source(text: str, rel: str) -> SourceFile:
    data = load_json(text, rel)
    pieces, setters = [], []

    def walk(node, depth: int) -> None:
        if depth > 50:
            raise InputError("JSON nested too deeply to be a transcript", rel)
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
        for k, v in list(items):
            if isinstance(v, str) and v.strip():
                label = isinstance(node, dict) and k in LABEL_KEYS
                pieces.append(Piece(v, len(pieces) + 1, [(0, len(v))] if label else _line_labels(v, False)))
                setters.append(lambda t, node=node, k=k: node.__setitem__(k, t))
            elif isinstance(v, (dict, list)):
                walk(v, depth + 1)

    walk(data, 0)
    return SourceFile(rel, rel, "json", pieces, (data, setters))


def read_for_pseudonymising(path: Path, rel: str, fallbacks: list[str]) -> SourceFile:
    """Texts of one source file, ready to pseudonymise and write back."""
    suffix = path.suffix.lower()
    if suffix == ".docx":
        return _docx_source(path, rel)
    if suffix == ".pdf":

        text, _ = pdf_text(path, rel)
        out_rel = str(Path(rel).with_suffix(".txt").as_posix())
        return _text_source(rel, out_rel, text, "pdf", False)
    if suffix not in TEXT_FORMATS + (".json",):
        raise InputError(f"cannot pseudonymise {suffix or '(none)'!r} files (known: .txt .md .docx .vtt .srt "
                         ".json .pdf)", rel)
    text, _, _ = decode_text(path.read_bytes(), rel, fallbacks)
    if suffix == ".json":
        return _json_source(text, rel)
    return _text_source(rel, rel, text, "text", suffix in (".vtt", ".srt"))


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

