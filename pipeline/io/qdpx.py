"""REFI-QDA project exchange (.qdpx): safe import of codings, export of the machine's coding.

A .qdpx is a zip holding project.qde (QDA-XML, namespace urn:QDA-XML:project:1.0) and
optionally sources/ with the documents' plain text. It comes from outside, so reading it
is defensive: member names may not leave the archive, the member count and the total
uncompressed size are capped (and the size is counted while reading, not taken from the
zip's own headers), the XML is parsed without DTDs or entities (defusedxml), and every
selection must lie inside its source's text.

Positions are REFI-QDA character positions: Unicode code points into the plain text,
end exclusive, which is what Python string indices are.
"""

from __future__ import annotations

import re
import uuid
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from pipeline.errors import InputError
from pipeline.io.rundir import atomic_write
from pipeline.io.safezip import SafeZip
from pipeline.io.spreadsheet import safe_cell

NS = "urn:QDA-XML:project:1.0"
_Q = "{" + NS + "}"
_GUID_NAMESPACE = uuid.UUID("5f0c7a3e-2d1b-4c62-9a8e-3b1f6d0e9c41")
UNMAPPED_GROUP = "Unmapped first-order codes"  # exported parent of codes the framework does not fit
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

    @property
    def guid(self) -> str:
        return guid("code", *self.key)


@dataclass
class ExportSource:
    name: str
    description: str
    text: str
    selections: list[tuple[int, int, list[ExportCode]]]  # (start, end, codes applied)


@dataclass
class ExportCase:
    """A participant as a QDA case: the interviews they speak in and their attributes."""

    name: str
    source_names: list[str]
    values: dict[str, object]  # variable name -> str, bool, int or float (None: no value)


_VARIABLE_TYPES = {
    bool: ("Boolean", "BooleanValue"),
    int: ("Integer", "IntegerValue"),
    float: ("Float", "FloatValue"),
    str: ("Text", "TextValue"),
}


def _variable_types(cases: Sequence[ExportCase]) -> dict[str, tuple[str, str]]:
    """Variable name -> (typeOfVariable, value element), from the values' Python types, in first-seen order."""
    out: dict[str, tuple[str, str]] = {}
    for case in cases:
        for name, value in case.values.items():
            if value is not None and name not in out:
                out[name] = _VARIABLE_TYPES[type(value)]
    return out


def _value(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return repr(round(value, 6))
    return _text(safe_cell(str(value)), "a case variable")  # metadata, not transcript text


def _text(value: str, what: str) -> str:
    bad = _XML_BAD_CHARS.search(value)
    if bad:
        raise InputError(f"{what} holds character U+{ord(bad.group()):04X}, which XML 1.0 cannot carry")
    # \r must survive parsing (XML turns a literal CR into LF), so it travels as a reference.
    return escape(value, {"\r": "&#13;"})


def _attr(value: str) -> str:
    _text(value, f"name {value!r}")  # the same character check; quoteattr escapes CR, LF and tab itself
    return quoteattr(value)


def project_xml(
    name: str, user: str, codes: list[ExportCode], sources: list[ExportSource], cases: Sequence[ExportCase] = ()
) -> bytes:
    """QDA-XML for the codebook, one user, the cases with their variables and the text sources
    with their codings (in the order the schema requires)."""
    user_guid = guid("user", user)
    out = [
        '<?xml version="1.0" encoding="utf-8"?>',
        f'<Project xmlns="{NS}" name={_attr(name)} origin="themeshift" creatingUserGUID="{user_guid}">',
        f'<Users><User guid="{user_guid}" name={_attr(user)}/></Users>',
    ]

    def code_xml(code: ExportCode, depth: int) -> None:
        pad = "  " * depth
        head = f'{pad}<Code guid="{code.guid}" name={_attr(code.name)} isCodable="{str(code.codable).lower()}"'
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
    variables = _variable_types(cases)
    if variables:
        out.append("<Variables>")
        for var, (kind, _) in variables.items():
            out.append(f'<Variable guid="{guid("variable", var)}" name={_attr(var)} typeOfVariable="{kind}"/>')
        out.append("</Variables>")
    if cases:
        out.append("<Cases>")
    for case in cases:
        out.append(f'<Case guid="{guid("case", case.name)}" name={_attr(case.name)}>')
        for var, value in case.values.items():
            if value is not None:
                out.append(
                    f'<VariableValue><VariableRef targetGUID="{guid("variable", var)}"/>'
                    f"<{variables[var][1]}>{_value(value)}</{variables[var][1]}></VariableValue>"
                )
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
        for start, end, applied in src.selections:
            sel_guid = guid("selection", src.name, start, end)
            out.append(
                f'<PlainTextSelection guid="{sel_guid}" startPosition="{start}" endPosition="{end}" '
                f'creatingUser="{user_guid}">'
            )
            for code in applied:
                out.append(
                    f'<Coding guid="{guid("coding", sel_guid, code.guid)}" creatingUser="{user_guid}">'
                    f'<CodeRef targetGUID="{code.guid}"/></Coding>'
                )
            out.append("</PlainTextSelection>")
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


def machine_project(
    sources, utterances, framework, utterance_dimensions=None, codes=None, assignments=None, code_dimensions=None
) -> tuple[list[ExportCode], list[ExportSource], dict]:
    """The run's coding as a Gioia codebook (dimension > second-order concept > first-order
    code) plus one selection per coded utterance at its exact character positions.

    An utterance mapped by the map stage is coded with its second-order concept (its
    dimension when the concept is unknown); an utterance in a first-order code (cluster) is
    also coded with that code. A first-order code sits under the concept the map stage
    assigned it (without code_dimensions: the concept most of its mapped utterances take); codes
    without one sit under "Unmapped first-order codes"."""
    import pandas as pd

    if utterance_dimensions is None and assignments is None:
        raise InputError("the run has no machine codes yet; run `themeshift codes` and `themeshift map` first")
    dim_codes = {d.id: ExportCode(d.name, d.description, True, [], ("dimension", d.id)) for d in framework.dimensions}
    concept_codes = {}
    for c in framework.concepts:
        concept_codes[c.id] = ExportCode(c.name, " ".join(c.descriptions), True, [], ("concept", c.id))
        dim_codes[c.dimension].children.append(concept_codes[c.id])
    unmapped = ExportCode(UNMAPPED_GROUP, "first-order codes the framework does not fit", False, [], ("unmapped",))
    applied: dict[str, list[ExportCode]] = {}
    counts = {"concept_codings": 0, "first_order_codings": 0, "first_order_codes": 0}

    if utterance_dimensions is not None:
        ud = utterance_dimensions.to_pandas()
        top = ud[ud["is_argmax"] & ud["mapped"]].drop_duplicates("utterance_id")
        if "source" in top:  # after learn, human-coded utterances keep the coders' labels: not the machine's
            counts["human_codings_left_out"] = int((top["source"] == "human").sum())
            top = top[top["source"] != "human"]
        for uid, dim, concept_name in zip(top["utterance_id"], top["dimension"], top["second_order"]):
            concept = framework.concept(concept_name) if isinstance(concept_name, str) else None
            target = concept_codes[concept.id] if concept else dim_codes.get(dim)
            if target is not None:
                applied.setdefault(uid, []).append(target)
                counts["concept_codings"] += 1

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
                best = sorted(counts_.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
                concept = framework.concept(best)
                if concept is not None and counts_[best] * 2 > len(g):
                    parent_of[int(cid)] = concept_codes[concept.id]
        first_order = {}
        for row in codes.select(["code_id", "label", "keywords"]).to_pylist():
            cid = int(row["code_id"])
            code = ExportCode(f"{cid}: {row['label']}", ", ".join(row["keywords"] or []), True, [], ("code", cid))
            (parent_of.get(cid) or unmapped).children.append(code)
            first_order[cid] = code
        counts["first_order_codes"] = len(first_order)
        a = assignments.to_pandas()
        for uid, cid in zip(a["utterance_id"], a["code_id"]):
            if int(cid) in first_order:
                applied.setdefault(uid, []).append(first_order[int(cid)])
                counts["first_order_codings"] += 1

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
        selections = [
            (int(s), int(e), applied[u]) for u, s, e in zip(g["utterance_id"], g["start_char"], g["end_char"])
        ]
        # field notes and documents travel as text sources (a PDF as its text layer). XML cannot carry the
        # form feeds that mark its pages: each becomes a newline, one character for one, so offsets hold
        description = rel if stype == "interview" else f"{rel} ({stype})"
        out_sources.append(ExportSource(iid, description, text.replace("\f", "\n"), selections))
    book = list(dim_codes.values()) + ([unmapped] if unmapped.children else [])
    counts["selections"] = sum(len(s.selections) for s in out_sources)
    counts["sources"] = len(out_sources)
    return book, out_sources, counts


def speaker_cases(utterances, shifts=None) -> list[ExportCase]:
    """One case per participant (interviewers are not cases): role and the interviews they speak
    in, plus, when the shift stage has run, their first-to-last-wave shift (JSD, p-value,
    whether it is significant, from and to dimension) so a QDA tool can filter shifters."""
    u = utterances.select(["speaker_id", "speaker_role", "interview_id", "is_interviewer"]).to_pandas()
    u = u[~u["is_interviewer"]]
    shift_of = {}
    if shifts is not None:
        sh = shifts.to_pandas()
        sh = sh[sh["is_first_last"] & (sh["status"] == "ok")].astype(object)
        shift_of = {r.speaker_id: r for r in sh.where(sh.notna(), None).itertuples()}  # missing -> no value
    cases = []
    for speaker, g in u.groupby("speaker_id", sort=True):
        values: dict[str, object] = {"role": next((r for r in g["speaker_role"] if isinstance(r, str) and r), None)}
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
