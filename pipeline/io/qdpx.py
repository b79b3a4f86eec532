"""REFI-QDA project exchange (.qdpx): safe import of codings, export of the machine's coding.

A .qdpx is a zip holding project.qde (QDA-XML, namespace urn:QDA-XML:project:1.0) and
optionally sources/ with the documents' plain text. It comes from outside, so reading it
is defensive: member names may not leave the archive, the member count and the total
uncompressed size are capped (and the size is counted while reading, not taken from the
zip's own headers), the XML is parsed without DTDs or entities (defusedxml), and every
selection must lie inside its source's text.

Positions are REFI-QDA character positions: Unicode code points into the plain text,
end exclusive, which is what Python string indices are.

The export (`themeshift export qdpx`) carries the run for a QDA tool and back: the machine's coding
by compare.qdpx_user (each selection's description gives its probabilities; utterances the map left
unmapped carry the marker code "Low confidence (machine)"), one colour per aggregate dimension, the
coders' codings (after compare) by their own users, the manifest's columns as the sources' variables
and the participants as cases with theirs. Reading such a project back as human codes leaves the
machine's user out (pipeline.learn.drop_suggestion_markers), so `compare --human export.qdpx`
reproduces the agreement the coders' own file gave.
"""

from __future__ import annotations

import datetime
import math
import re
import uuid
import zipfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import numpy as np

from pipeline.errors import InputError
from pipeline.io.rundir import atomic_write
from pipeline.io.safezip import SafeZip
from pipeline.io.spreadsheet import safe_cell
from pipeline.schema import INTERVIEWS

NS = "urn:QDA-XML:project:1.0"
_Q = "{" + NS + "}"
_GUID_NAMESPACE = uuid.UUID("5f0c7a3e-2d1b-4c62-9a8e-3b1f6d0e9c41")
UNMAPPED_GROUP = "Unmapped first-order codes"  # exported parent of codes the framework does not fit
HUMAN_GROUP = "Human codes"  # exported parent of the coders' codes; directly under it: outside the framework
LOW_CONFIDENCE_CODE = "Low confidence (machine)"  # marks the utterances the map left unmapped
# One colour per aggregate dimension: the Okabe-Ito palette (distinguishable with any colour-vision deficiency),
# black left out; a framework with more dimensions cycles through it. Groups outside the framework are grey.
PALETTE = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7")
GREY = "#999999"
MARKER_COLOUR = "#000000"
_XML_BAD_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


@dataclass
class QdpxCoding:
    source: str  # the TextSource's name
    start: int  # startPosition
    end: int  # endPosition (exclusive)
    code: str  # the Code's name
    parents: tuple[str, ...]  # names of the enclosing codes, outermost first
    coder: str  # User name of the coding's creator ("unknown" when not given)


@dataclass
class QdpxProject:
    name: str
    sources: dict[str, str | None] = field(default_factory=dict)  # TextSource name -> plain text (None: none)
    codings: list[QdpxCoding] = field(default_factory=list)


# ---------------------------------------------------------------- reading


def _code_names(codes_el) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Code GUID -> (name, names of the enclosing codes)."""
    out: dict[str, tuple[str, tuple[str, ...]]] = {}
    # depth first in document order, with a stack instead of recursion: a codebook nested thousands
    # deep is no crash
    stack: list[tuple[Any, tuple[str, ...]]]  # (Code element, names of the enclosing codes)
    stack = [(code, ()) for code in reversed(codes_el.findall(_Q + "Code"))] if codes_el is not None else []
    while stack:
        code, parents = stack.pop()
        name = code.get("name") or ""
        out[code.get("guid", "").strip("{}").lower()] = (name, parents)
        stack.extend((child, (*parents, name)) for child in reversed(code.findall(_Q + "Code")))
    return out


def read_qdpx(path: str | Path, max_members: int, max_bytes: int) -> QdpxProject:
    """Read the text sources and their PlainTextSelection codings from a .qdpx file."""
    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import fromstring

    path = Path(path)
    archive = SafeZip(
        path,
        max_members,
        max_bytes,
        "a REFI-QDA project (.qdpx zip archive)",
        "compare.qdpx_max_members",
        "compare.qdpx_max_bytes",
    )
    if "project.qde" not in archive.names:
        raise InputError("no project.qde in the archive; not a REFI-QDA project", path)
    qde = archive.read("project.qde")  # a damaged member says so itself, before any XML is parsed
    try:
        root = fromstring(qde, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise InputError(f"project.qde uses a DTD or entities, which are refused: {exc}", path) from None
    except Exception as exc:  # ParseError
        raise InputError(f"project.qde is not well-formed XML: {exc}", path) from None
    if root.tag != _Q + "Project":
        raise InputError(f"project.qde's root is {root.tag!r}, not a QDA-XML Project ({NS})", path)

    users = {
        u.get("guid", "").strip("{}").lower(): u.get("name") or u.get("id") or "unknown"
        for u in root.iterfind(f"{_Q}Users/{_Q}User")
    }
    codes = _code_names(root.find(f"{_Q}CodeBook/{_Q}Codes"))
    project = QdpxProject(name=root.get("name", ""))
    for src in root.iterfind(f"{_Q}Sources/{_Q}TextSource"):
        name = src.get("name") or src.get("guid", "")
        text = _source_text(src, archive, path, name)
        project.sources[name] = text
        for sel in src.iterfind(_Q + "PlainTextSelection"):
            where = f"selection {sel.get('guid')} in source {name!r}"
            try:
                start, end = int(sel.get("startPosition")), int(sel.get("endPosition"))
            except (TypeError, ValueError):
                raise InputError(f"{where}: startPosition/endPosition are not integers", path) from None
            if text is None:
                raise InputError(f"{where}: the source has no plain text (PlainTextContent or plainTextPath)", path)
            if not 0 <= start < end <= len(text):
                raise InputError(f"{where}: positions {start}-{end} lie outside the source text (0-{len(text)})", path)
            sel_user = sel.get("creatingUser", "").strip("{}").lower()
            for coding in sel.iterfind(_Q + "Coding"):
                ref = coding.find(_Q + "CodeRef")
                target = (ref.get("targetGUID", "") if ref is not None else "").strip("{}").lower()
                if target not in codes:
                    raise InputError(f"{where}: coding refers to code {target!r}, which the codebook lacks", path)
                code, parents = codes[target]
                user = coding.get("creatingUser", "").strip("{}").lower() or sel_user
                project.codings.append(QdpxCoding(name, start, end, code, parents, users.get(user, "unknown")))
    return project


def _source_text(src, archive: SafeZip, path: Path, name: str) -> str | None:
    content = src.find(_Q + "PlainTextContent")
    if content is not None:
        return content.text or ""
    ref = src.get("plainTextPath")
    if not ref:
        return None
    member = ref.removeprefix("internal://")
    member = member if member in archive.names else f"sources/{member}"
    if member not in archive.names:
        raise InputError(f"source {name!r}: plainTextPath {ref!r} is not in the archive", path)
    try:
        return archive.read(member).decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"source {name!r}: {member} is not UTF-8 text", path) from None


# ---------------------------------------------------------------- writing


def guid(*parts: object) -> str:
    """Deterministic GUID for an exported object, so the same run exports the same file."""
    return str(uuid.uuid5(_GUID_NAMESPACE, "\x1f".join(map(str, parts))))


@dataclass
class ExportCode:
    name: str
    description: str = ""
    codable: bool = True
    children: list["ExportCode"] = field(default_factory=list)
    key: tuple = ()  # unique key the GUID is derived from
    color: str | None = None  # "#RRGGBB"

    @property
    def guid(self) -> str:
        return guid("code", *self.key)


@dataclass
class ExportSelection:
    """A coded span: its codes, who coded it (None: the project's own user, the machine) and a note."""

    start: int
    end: int
    codes: list[ExportCode]
    user: str | None = None
    description: str = ""


@dataclass
class ExportSource:
    name: str
    description: str
    text: str
    # (start, end, codes applied) by the project's user, or an ExportSelection
    selections: Sequence[tuple[int, int, list[ExportCode]] | ExportSelection]
    values: dict[str, object] = field(default_factory=dict)  # variable name -> value (see ExportCase)


@dataclass
class ExportCase:
    """A participant as a QDA case: the interviews they speak in and their attributes."""

    name: str
    source_names: list[str]
    values: dict[str, object]  # variable name -> str, bool, int, float or datetime.date (None: no value)


_VARIABLE_TYPES = {
    bool: ("Boolean", "BooleanValue"),
    int: ("Integer", "IntegerValue"),
    float: ("Float", "FloatValue"),
    datetime.date: ("Date", "DateValue"),
    str: ("Text", "TextValue"),
}


def _selection(sel: tuple[int, int, list[ExportCode]] | ExportSelection) -> ExportSelection:
    return sel if isinstance(sel, ExportSelection) else ExportSelection(*sel)


def _plain(value: object) -> object:
    """A numpy scalar as its Python value; NaN and infinities as no value."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, datetime.datetime):
        return value.date()
    return value


def _variable_types(holders: Sequence[ExportCase | ExportSource]) -> dict[str, tuple[str, str]]:
    """Variable name -> (typeOfVariable, value element), in first-seen order. One type per name, from its
    values' Python types: integers and floats together are Float, any other mix is Text."""
    kinds: dict[str, set[type]] = {}
    for holder in holders:
        for name, value in holder.values.items():
            value = _plain(value)
            kinds.setdefault(name, set())
            if value is not None:
                kinds[name].add(type(value))
    out = {}
    for name, seen in kinds.items():
        if not seen:
            continue  # no value anywhere: not declared
        if seen == {int, float}:
            seen = {float}
        only = next(iter(seen))
        out[name] = _VARIABLE_TYPES[only] if len(seen) == 1 and only in _VARIABLE_TYPES else _VARIABLE_TYPES[str]
    return out


def _decimal(value: float) -> str:
    """xsd:decimal (never an exponent), to 6 places."""
    text = f"{value:.6f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def _value(value: object, kind: str) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return _decimal(value)
    if isinstance(value, datetime.date):
        return value.isoformat()
    if kind != "Text":
        return str(value)
    return _text(safe_cell(str(value)), "a variable value")  # metadata, not transcript text


def _text(value: str, what: str) -> str:
    bad = _XML_BAD_CHARS.search(value)
    if bad:
        raise InputError(f"{what} holds character U+{ord(bad.group()):04X}, which XML 1.0 cannot carry")
    # \r must survive parsing (XML turns a literal CR into LF), so it travels as a reference.
    return escape(value, {"\r": "&#13;"})


def _attr(value: str) -> str:
    _text(value, f"name {value!r}")  # the same character check; quoteattr escapes CR, LF and tab itself
    return quoteattr(value)


def _variable_values(values: dict[str, object], variables: dict[str, tuple[str, str]]) -> list[str]:
    out = []
    for var, value in values.items():
        value = _plain(value)
        if value is not None:
            kind, element = variables[var]
            out.append(
                f'<VariableValue><VariableRef targetGUID="{guid("variable", var)}"/>'
                f"<{element}>{_value(value, kind)}</{element}></VariableValue>"
            )
    return out


def project_xml(
    name: str, user: str, codes: list[ExportCode], sources: list[ExportSource], cases: Sequence[ExportCase] = ()
) -> bytes:
    """QDA-XML for the codebook, the users (the project's own, then every other selection's creator),
    the cases and sources with their variables, and the sources' codings (in the order the schema requires)."""
    user_guid = guid("user", user)
    others = sorted({s.user for src in sources for s in map(_selection, src.selections) if s.user} - {user})
    users = "".join(f'<User guid="{guid("user", u)}" name={_attr(u)}/>' for u in [user, *others])
    out = [
        '<?xml version="1.0" encoding="utf-8"?>',
        f'<Project xmlns="{NS}" name={_attr(name)} origin="themeshift" creatingUserGUID="{user_guid}">',
        f"<Users>{users}</Users>",
    ]

    def code_xml(code: ExportCode, depth: int) -> None:
        pad = "  " * depth
        color = f' color="{code.color}"' if code.color else ""
        head = f'{pad}<Code guid="{code.guid}" name={_attr(code.name)} isCodable="{str(code.codable).lower()}"{color}'
        if not code.description and not code.children:
            out.append(head + "/>")
            return
        out.append(head + ">")
        if code.description:
            out.append(f"{pad}  <Description>{_text(code.description, 'a code description')}</Description>")
        for child in code.children:
            code_xml(child, depth + 1)
        out.append(f"{pad}</Code>")

    if codes:
        out.append("<CodeBook><Codes>")
        for code in codes:
            code_xml(code, 1)
        out.append("</Codes></CodeBook>")
    variables = _variable_types([*cases, *sources])
    if variables:
        out.append("<Variables>")
        for var, (kind, _) in variables.items():
            out.append(f'<Variable guid="{guid("variable", var)}" name={_attr(var)} typeOfVariable="{kind}"/>')
        out.append("</Variables>")
    if cases:
        out.append("<Cases>")
    for case in cases:
        out.append(f'<Case guid="{guid("case", case.name)}" name={_attr(case.name)}>')
        out += _variable_values(case.values, variables)
        for source_name in case.source_names:
            out.append(f'<SourceRef targetGUID="{guid("source", source_name)}"/>')
        out.append("</Case>")
    if cases:
        out.append("</Cases>")
    if sources:
        out.append("<Sources>")
    for src in sources:
        src_guid = guid("source", src.name)
        out.append(
            f'<TextSource guid="{src_guid}" name={_attr(src.name)} plainTextPath="internal://{src_guid}.txt" '
            f'creatingUser="{user_guid}">'
        )
        out.append(f"<Description>{_text(src.description, f'source {src.name}')}</Description>")
        out.append(f"<PlainTextContent>{_text(src.text, f'source {src.name}')}</PlainTextContent>")
        for sel in map(_selection, src.selections):
            by = guid("user", sel.user or user)
            # the machine's selections keep their GUIDs; another user's may share its span, so name the user
            key = ("selection", src.name, sel.start, sel.end) + ((sel.user,) if sel.user not in (None, user) else ())
            sel_guid = guid(*key)
            out.append(
                f'<PlainTextSelection guid="{sel_guid}" startPosition="{sel.start}" endPosition="{sel.end}" '
                f'creatingUser="{by}">'
            )
            if sel.description:
                out.append(f"<Description>{_text(sel.description, f'a selection in {src.name}')}</Description>")
            for code in sel.codes:
                out.append(
                    f'<Coding guid="{guid("coding", sel_guid, code.guid)}" creatingUser="{by}">'
                    f'<CodeRef targetGUID="{code.guid}"/></Coding>'
                )
            out.append("</PlainTextSelection>")
        out += _variable_values(src.values, variables)
        out.append("</TextSource>")
    if sources:
        out.append("</Sources>")
    out.append("</Project>")
    return ("\n".join(out) + "\n").encode("utf-8")


def write_qdpx(
    path: str | Path,
    name: str,
    user: str,
    codes: list[ExportCode],
    sources: list[ExportSource],
    cases: Sequence[ExportCase] = (),
) -> None:
    """Write project.qde plus sources/<guid>.txt (for tools that read plainTextPath), atomically."""

    xml = project_xml(name, user, codes, sources, cases)

    def write(tmp: str) -> None:
        # Fixed timestamps keep the archive byte-identical across runs.
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(zipfile.ZipInfo("project.qde", (1980, 1, 1, 0, 0, 0)), xml, zipfile.ZIP_DEFLATED)
            for src in sources:
                info = zipfile.ZipInfo(f"sources/{guid('source', src.name)}.txt", (1980, 1, 1, 0, 0, 0))
                zf.writestr(info, src.text.encode("utf-8"), zipfile.ZIP_DEFLATED)

    atomic_write(Path(path), write)


# ---------------------------------------------------------------- the machine's coding as a project


def _p(value) -> str:
    return f"p = {float(value):.2f}"


def machine_project(
    sources, utterances, framework, utterance_dimensions=None, codes=None, assignments=None, code_dimensions=None
) -> tuple[list[ExportCode], list[ExportSource], dict]:
    """The run's coding as a Gioia codebook (dimension > second-order concept > first-order
    code) plus one selection per coded utterance at its exact character positions.

    An utterance mapped by the map stage is coded with its second-order concept (its
    dimension when the concept is unknown); an utterance in a first-order code (cluster) is
    also coded with that code. A first-order code sits under the concept the map stage
    assigned it (without code_dimensions: the concept most of its mapped utterances take); codes
    without one sit under "Unmapped first-order codes".

    Each selection's description gives the machine's probabilities: the dimension's probability for
    the concept coding, the membership strength for the first-order code. An utterance the map left
    unmapped (no framework text within the map's min_similarity, or its best dimension below the
    map's utterance_threshold or margin: the `mapped` flag, so the run's own map settings decide) is
    coded with the marker code "Low confidence (machine)", its best guess in the description. Each
    dimension has its own colour, shared by its concepts and their first-order codes; the unmapped
    group is grey."""
    import pandas as pd

    if utterance_dimensions is None and assignments is None:
        raise InputError("the run has no machine codes yet; run `themeshift codes` and `themeshift map` first")
    dim_codes = {
        d.id: ExportCode(d.name, d.description, True, [], ("dimension", d.id), PALETTE[i % len(PALETTE)])
        for i, d in enumerate(framework.dimensions)
    }
    concept_codes = {}
    for c in framework.concepts:
        color = dim_codes[c.dimension].color
        concept_codes[c.id] = ExportCode(c.name, " ".join(c.descriptions), True, [], ("concept", c.id), color)
        dim_codes[c.dimension].children.append(concept_codes[c.id])
    unmapped = ExportCode(
        UNMAPPED_GROUP, "first-order codes the framework does not fit", False, [], ("unmapped",), GREY
    )
    marker = ExportCode(
        LOW_CONFIDENCE_CODE,
        "utterances the map left unmapped: their best dimension's probability is below the map's threshold or "
        "too close to the runner-up (the selection's description gives the best guess); un-code once reviewed",
        True,
        [],
        ("low-confidence",),
        MARKER_COLOUR,
    )
    applied: dict[str, list[ExportCode]] = {}
    notes: dict[str, list[str]] = {}
    counts = {"concept_codings": 0, "first_order_codings": 0, "first_order_codes": 0, "low_confidence_codings": 0}

    if utterance_dimensions is not None:
        ud = utterance_dimensions.to_pandas()
        best = ud[ud["is_argmax"]].drop_duplicates("utterance_id")
        if "source" in best:  # after learn, human-coded utterances keep the coders' labels: not the machine's
            human = best["source"] == "human"
            counts["human_codings_left_out"] = int((human & best["mapped"]).sum())
            best = best[~human]
        top = best[best["mapped"]]
        for uid, dim, concept_name, p in zip(
            top["utterance_id"], top["dimension"], top["second_order"], top["probability"]
        ):
            concept = framework.concept(concept_name) if isinstance(concept_name, str) else None
            target = concept_codes[concept.id] if concept else dim_codes.get(dim)
            if target is not None:
                applied.setdefault(uid, []).append(target)
                counts["concept_codings"] += 1
                dim_name = dim_codes[dim].name if dim in dim_codes else dim
                what = (
                    f"concept {target.name} (dimension {dim_name}, {_p(p)})"
                    if concept
                    else (f"dimension {target.name}, {_p(p)}")
                )
                notes.setdefault(uid, []).append(f"machine: {what}")
        low = best[~best["mapped"]]
        for uid, dim, concept_name, p in zip(
            low["utterance_id"], low["dimension"], low["second_order"], low["probability"]
        ):
            applied.setdefault(uid, []).append(marker)
            counts["low_confidence_codings"] += 1
            dim_name = dim_codes[dim].name if dim in dim_codes else dim
            guess = f"concept {concept_name}, " if isinstance(concept_name, str) else ""
            notes.setdefault(uid, []).append(
                f"machine: not mapped (low confidence; best guess {guess}dimension {dim_name}, {_p(p)})"
            )

    if codes is not None and assignments is not None:
        parent_of = {}
        if code_dimensions is not None:
            cd = code_dimensions.to_pandas()
            for cid, concept_id in zip(cd.loc[cd["assigned"], "code_id"], cd.loc[cd["assigned"], "concept_id"]):
                parent_of[int(cid)] = concept_codes.get(concept_id)
        if not parent_of and utterance_dimensions is not None:
            # no code_dimensions: a code goes under the concept most of its mapped utterances take
            a = assignments.to_pandas()
            votes = a.merge(top[["utterance_id", "second_order"]], on="utterance_id").dropna(subset=["second_order"])
            for cid, g in votes[votes["code_id"] >= 0].groupby("code_id"):
                counts_ = g["second_order"].value_counts()
                best_name = sorted(counts_.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
                concept = framework.concept(best_name)
                if concept is not None and counts_[best_name] * 2 > len(g):
                    parent_of[int(cid)] = concept_codes[concept.id]
        first_order = {}
        for row in codes.select(["code_id", "label", "keywords"]).to_pylist():
            cid = int(row["code_id"])
            parent = parent_of.get(cid) or unmapped
            code = ExportCode(
                f"{cid}: {row['label']}", ", ".join(row["keywords"] or []), True, [], ("code", cid), parent.color
            )
            parent.children.append(code)
            first_order[cid] = code
        counts["first_order_codes"] = len(first_order)
        a = assignments.to_pandas()
        for uid, cid, p in zip(a["utterance_id"], a["code_id"], a["probability"]):
            if int(cid) in first_order:
                applied.setdefault(uid, []).append(first_order[int(cid)])
                counts["first_order_codings"] += 1
                notes.setdefault(uid, []).append(f"first-order code {int(cid)}, {_p(p)}")

    utt = utterances.select(["utterance_id", "interview_id", "start_char", "end_char"]).to_pandas()
    utt = utt[utt["utterance_id"].isin(applied)]
    by_interview = {iid: g.sort_values("start_char") for iid, g in utt.groupby("interview_id")}
    out_sources = []
    types = (
        sources.column("source_type").to_pylist()
        if "source_type" in sources.column_names
        else ["interview"] * sources.num_rows
    )
    for iid, rel, text, stype in zip(
        *(sources.column(c).to_pylist() for c in ("interview_id", "source_file", "source_text")), types
    ):
        g = by_interview.get(iid, pd.DataFrame(columns=utt.columns))
        selections: list[tuple[int, int, list[ExportCode]] | ExportSelection] = [
            ExportSelection(int(s), int(e), applied[u], None, "; ".join(notes.get(u, [])))
            for u, s, e in zip(g["utterance_id"], g["start_char"], g["end_char"])
        ]
        # field notes and documents travel as text sources (a PDF as its text layer). XML cannot carry the
        # form feeds that mark its pages: each becomes a newline, one character for one, so offsets hold
        description = rel if stype == "interview" else f"{rel} ({stype})"
        out_sources.append(ExportSource(iid, description, text.replace("\f", "\n"), selections))
    book = list(dim_codes.values()) + ([unmapped] if unmapped.children else [])
    book += [marker] if counts["low_confidence_codings"] else []
    counts["selections"] = sum(len(s.selections) for s in out_sources)
    counts["sources"] = len(out_sources)
    return book, out_sources, counts


# ---------------------------------------------------------------- the coders' codings


def _walk(codes: list[ExportCode]):
    stack = list(codes)
    while stack:
        code = stack.pop()
        yield code
        stack.extend(code.children)


def human_span(start: int, end: int, overlap: float) -> tuple[int, int]:
    """The span a coder's coding of one utterance is exported at: the whole utterance when the coder's
    spans covered all of it, else a span in its middle covering the same number of characters, so that
    importing it gives the utterance the same covered share (compare's primary label and overlap rule)."""
    length = max(end - start, 1)
    k = min(max(round(overlap * length), 1), length)
    if k >= end - start:
        return start, end
    a = start + (length - k) // 2
    return a, a + k


def add_human_codings(
    book: list[ExportCode], sources: list[ExportSource], human_codes, utterances, framework, machine_user: str
) -> dict:
    """The coders' codings (human_codes, as compare aligned them to utterances) as selections by each
    coder's own user, beside the machine's.

    A code named exactly as a framework concept or dimension it maps to is coded with that framework code,
    so the codebook is shared. Any other code sits under "Human codes": inside a group named after the
    concept or dimension it maps to (by its name, the mapping file or its parent codes), directly under
    "Human codes" when it is outside the framework; importing the project again resolves every code to
    the same concept without the mapping file. Each coding goes at the utterance it was aligned to
    (human_span: human_codes keeps utterances, not the coders' own spans). Returns counts."""
    h = human_codes.to_pandas()
    if h.empty:
        return {}
    if machine_user in set(h["coder"]):
        raise InputError(
            f"a human coder is called {machine_user!r}, the exported project's own user (the machine); "
            "rename the coder or set compare.qdpx_user"
        )
    index = {code.key: code for code in _walk(book)}
    dims = {d.id: d for d in framework.dimensions}
    concepts = {c.id: c for c in framework.concepts}
    group = ExportCode(
        HUMAN_GROUP,
        "the coders' own codes: under the name of the concept or dimension each maps to, directly here when "
        "outside the framework",
        False,
        [],
        ("human",),
        GREY,
    )
    made: dict[tuple, ExportCode] = {}

    def code_for(name: str, concept_id, dim_id) -> ExportCode:
        concept_id = concept_id if isinstance(concept_id, str) else None
        dim_id = dim_id if isinstance(dim_id, str) else None
        own = index.get(("concept", concept_id)) if concept_id else index.get(("dimension", dim_id))
        if own is not None and own.name == name:
            return own  # the framework's code itself
        key = ("human-code", name, concept_id or "", dim_id or "")
        if key in made:
            return made[key]
        parent = group
        if own is not None:
            target = concepts[concept_id].name if concept_id else dims[dim_id].name
            gkey = ("human-group", concept_id or "", dim_id or "")
            if gkey not in made:
                made[gkey] = ExportCode(target, f"coders' codes that map to {target}", False, [], gkey, own.color)
                group.children.append(made[gkey])
            parent = made[gkey]
        made[key] = ExportCode(name, "", True, [], key, parent.color)
        parent.children.append(made[key])
        return made[key]

    utt = utterances.select(["utterance_id", "start_char", "end_char"]).to_pandas().set_index("utterance_id")
    h = h.join(utt, on="utterance_id")
    spans: dict[tuple[str, str, int, int], list[ExportCode]] = {}
    for r in h.sort_values(["interview_id", "start_char", "coder", "code"]).itertuples():
        a, b = human_span(int(r.start_char), int(r.end_char), float(r.overlap))
        codes_here = spans.setdefault((r.interview_id, r.coder, a, b), [])
        code = code_for(r.code, r.second_order, r.dimension)
        if all(c is not code for c in codes_here):
            codes_here.append(code)
    by_source: dict[str, list[ExportSelection]] = {}
    for (iid, coder, a, b), codes_here in spans.items():
        by_source.setdefault(iid, []).append(ExportSelection(a, b, codes_here, coder))
    for src in sources:
        if src.name in by_source:
            both: list[ExportSelection] = [*map(_selection, src.selections), *by_source[src.name]]
            both.sort(key=lambda s: (s.start, s.end, s.user is not None, s.user or ""))
            src.selections = both
    # the groups named after framework codes first, in the framework's order; then codes outside it, by name
    rank = {("", d.id): (i, -1) for i, d in enumerate(framework.dimensions)}
    order = framework.dimension_ids
    rank.update({(c.id, c.dimension): (order.index(c.dimension), j) for j, c in enumerate(framework.concepts)})
    group.children.sort(key=lambda c: (rank.get(c.key[1:], (len(order), 0)), c.name))
    if group.children:
        book.append(group)
    return {
        "human_coders": sorted(set(h["coder"])),
        "human_codings": len(h),
        "human_selections": len(spans),
    }


# ---------------------------------------------------------------- variables

_INT = re.compile(r"-?[1-9][0-9]*|0")
_FLOAT = re.compile(r"-?[0-9]+\.[0-9]+")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
COUNT_COLUMNS = ("n_turns", "n_utterances", "n_skipped_lines")  # interviews' processing counts: not attributes


def typed_column(values: list) -> list:
    """A column's values in the type all of them fit: integers, decimals, ISO dates (YYYY-MM-DD) or
    true/false, else the text as given; empty strings and NaN are no value."""
    values = [None if v is None or (isinstance(v, str) and not v.strip()) else _plain(v) for v in values]
    present = [v for v in values if v is not None]
    if not present or not all(isinstance(v, str) for v in present):
        return values
    text = [v.strip() for v in present]

    def convert(fn):
        return [None if v is None else fn(v.strip()) for v in values]

    if all(_INT.fullmatch(v) for v in text):
        return convert(int)
    if all(_INT.fullmatch(v) or _FLOAT.fullmatch(v) for v in text):
        return convert(float)
    if all(_DATE.fullmatch(v) for v in text):
        try:
            return convert(datetime.date.fromisoformat)
        except ValueError:  # 2019-02-30
            return values
    if all(v.lower() in ("true", "false") for v in text):
        return convert(lambda v: v.lower() == "true")
    return values


def source_variables(sources: list[ExportSource], interviews) -> None:
    """Each source's manifest attributes as its variables: interview_id, source_file, wave, date,
    participant_id, source_type and every extra manifest column (not the processing counts); a column
    empty everywhere is left out."""
    columns = [c for c in interviews.column_names if c not in COUNT_COLUMNS]
    ids = interviews.column("interview_id").to_pylist()
    typed = {c: typed_column(interviews.column(c).to_pylist()) for c in columns}
    rows = {iid: {c: typed[c][i] for c in columns if any(v is not None for v in typed[c])} for i, iid in enumerate(ids)}
    for src in sources:
        src.values.update(rows.get(src.name, {}))


def speaker_cases(utterances, shifts=None, speakers=None, interviews=None) -> list[ExportCase]:
    """One case per participant (interviewers are not cases): role, the number of waves they speak in,
    every column of speakers.csv, every extra manifest column (site, profession, ...: their most frequent
    value over their interviews, as [shift] group_by takes it) and the interviews they speak in, plus,
    when the shift stage has run,
    their first-to-last-wave shift (JSD, p-value, whether it is significant, from and to dimension) so
    a QDA tool can filter shifters."""
    columns = ["speaker_id", "speaker_role", "interview_id", "is_interviewer"]
    u = utterances.select(columns + (["wave"] if "wave" in utterances.column_names else [])).to_pandas()
    u = u[~u["is_interviewer"]]
    shift_of = {}
    if shifts is not None:
        sh = shifts.to_pandas()
        sh = sh[sh["is_first_last"] & (sh["status"] == "ok")].astype(object)
        shift_of = {r.speaker_id: r for r in sh.where(sh.notna(), None).itertuples()}  # missing -> no value
    extra: dict[str, dict[str, object]] = {}
    role_of: dict[str, object] = {}
    if speakers is not None:
        own = [c for c in speakers.column_names if c not in ("speaker_id", "speaker_role", "is_interviewer")]
        ids = speakers.column("speaker_id").to_pylist()
        role_of = dict(zip(ids, speakers.column("speaker_role").to_pylist()))
        typed = {c: typed_column(speakers.column(c).to_pylist()) for c in own}
        extra = {sid: {c: typed[c][i] for c in own} for i, sid in enumerate(ids)}
    manifest: dict[str, dict[str, object]] = {}  # interview -> extra manifest column -> value
    if interviews is not None:
        own = [c for c in interviews.column_names if c not in INTERVIEWS.names]
        typed = {c: typed_column(interviews.column(c).to_pylist()) for c in own}
        manifest = {
            iid: {c: typed[c][i] for c in own} for i, iid in enumerate(interviews.column("interview_id").to_pylist())
        }
    cases = []
    for speaker, g in u.groupby("speaker_id", sort=True):
        role = next((r for r in g["speaker_role"] if isinstance(r, str) and r), None) or role_of.get(speaker)
        values: dict[str, object] = {"role": role}
        if "wave" in g:
            values["n_waves"] = int(g["wave"].dropna().nunique())
        rows = [manifest[i] for i in sorted(g["interview_id"].unique()) if i in manifest]
        for column in rows[0] if rows else ():
            seen = Counter(r[column] for r in rows if r[column] is not None)
            values[column] = min(seen, key=lambda v: (-seen[v], str(v))) if seen else None
        values.update(extra.get(speaker, {}))  # speakers.csv's own column wins over the manifest's
        r = shift_of.get(speaker)
        if r is not None:
            values.update(
                {
                    "shift_jsd": r.jsd,
                    "shift_p_value": r.p_value,
                    "shift_significant": r.significant,
                    "shift_from": r.from_dimension,
                    "shift_to": r.to_dimension,
                }
            )
        cases.append(ExportCase(str(speaker), sorted(g["interview_id"].unique()), values))
    return cases
