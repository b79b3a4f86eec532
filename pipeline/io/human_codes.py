"""Human codes in: read them, name them in the framework's terms, align them to utterances.

Accepted files
- CSV or Parquet of character spans: (interview_id or source_file), start_char, end_char,
  code, coder; offsets index the run's source_text (sources.parquet), end exclusive.
- CSV or Parquet per utterance: utterance_id, code, coder.
- A REFI-QDA project (.qdpx): PlainTextSelection codings; the project's text must be the
  run's source_text, so that positions mean the same characters.

Overlap rule (span -> utterance). Per coder and code, the coder's spans are merged into
one set of characters. An utterance takes the code when those characters cover at least
compare.min_overlap of its characters (0 = any shared character). A span that reaches
that share on no utterance (a phrase inside a long sentence) codes the utterance it
overlaps most, so no span is lost. One utterance can take several codes from one coder
(multi-label); all are kept, with the share each covers.

Code names. A code names a framework concept (id or name) or a dimension directly, or
through the mapping file (CSV: human_code, concept and/or dimension; "none" marks a code
as outside the framework). A .qdpx code that matches nothing is looked up through the
codes it is nested in, innermost first.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import InputError
from pipeline.io.qdpx import HUMAN_GROUP, LOW_CONFIDENCE_CODE, UNMAPPED_GROUP, read_qdpx
from pipeline.schema import HUMAN_CODES

SPAN_COLUMNS = ("start_char", "end_char", "code", "coder")
UTTERANCE_COLUMNS = ("utterance_id", "code", "coder")
OUTSIDE_NAMES = (UNMAPPED_GROUP, HUMAN_GROUP, LOW_CONFIDENCE_CODE)  # code names outside the framework
PATH_SEP = "\x1f"  # joins a code's enclosing code names in one hashable string


@dataclass
class HumanCodes:
    """Raw human codings, one row each, with the file row they came from.

    Columns: interview_id, source_file, utterance_id, start_char, end_char, code,
    parents (enclosing code names, outermost first, joined by PATH_SEP), coder,
    row (file line or row number).
    texts: source name -> text, for .qdpx sources (checked against the run's text)."""

    path: Path
    frame: pd.DataFrame
    kind: str  # "span" or "utterance"
    texts: dict[str, str | None] = field(default_factory=dict)

    def where(self, row: int | None) -> dict:
        line = None if row is None or pd.isna(row) else int(row)
        return {"path": self.path, "line": line}


# ---------------------------------------------------------------- reading


def _read_csv(path: Path) -> tuple[list[str], list[dict], list[int]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            rows, lines = [], []
            for rec in reader:
                rows.append({k.strip(): (v.strip() if isinstance(v, str) else v) for k, v in rec.items() if k})
                lines.append(reader.line_num)
    except UnicodeDecodeError:
        raise InputError("human-code file is not UTF-8 text", path) from None
    except (OSError, csv.Error) as exc:
        raise InputError(f"cannot read human-code file: {exc}", path) from None
    return header, rows, lines


def _read_parquet(path: Path) -> tuple[list[str], list[dict], list[int]]:
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for damaged files
        raise InputError(f"cannot read Parquet file: {exc}", path) from None
    rows = [{k: (None if v is None else str(v)) for k, v in r.items()} for r in table.to_pylist()]
    return table.column_names, rows, list(range(1, len(rows) + 1))


def _int(value, name: str, path: Path, line: int) -> int:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a whole number, got {value!r}", path, line) from None


def read_human_codes(path: str | Path, max_members: int = 10_000, max_bytes: int = 500_000_000) -> HumanCodes:
    """Read a CSV, Parquet or .qdpx human-code file (see the module docstring)."""
    path = Path(path)
    if path.is_dir():
        raise InputError("is a folder; give the human-code file itself (CSV, Parquet or .qdpx)", path)
    if not path.is_file():
        raise InputError("human-code file not found", path)
    suffix = path.suffix.lower()
    if suffix == ".qdpx":
        return _from_qdpx(path, max_members, max_bytes)
    header, rows, lines = _read_parquet(path) if suffix == ".parquet" else _read_csv(path)
    if not rows:
        raise InputError("human-code file has no codings (only a header, or empty)", path)
    cols = set(header)
    if set(UTTERANCE_COLUMNS) <= cols:
        kind = "utterance"
    elif set(SPAN_COLUMNS) <= cols and cols & {"interview_id", "source_file"}:
        kind = "span"
    else:
        raise InputError(
            "human-code file needs columns (interview_id or source_file), start_char, end_char, code, "
            f"coder for spans, or utterance_id, code, coder per utterance; found: {', '.join(header)}",
            path,
        )
    records = []
    for rec, line in zip(rows, lines):
        code, coder = (rec.get("code") or "").strip(), (rec.get("coder") or "").strip()
        if not code:
            raise InputError("empty code", path, line)
        if not coder:
            raise InputError("empty coder", path, line)
        out = {
            "interview_id": rec.get("interview_id") or None,
            "source_file": rec.get("source_file") or None,
            "utterance_id": rec.get("utterance_id") or None,
            "start_char": None,
            "end_char": None,
            "code": code,
            "parents": "",
            "coder": coder,
            "row": line,
        }
        if kind == "span":
            if not (out["interview_id"] or out["source_file"]):
                raise InputError("no interview_id or source_file for this span", path, line)
            start = _int(rec.get("start_char"), "start_char", path, line)
            end = _int(rec.get("end_char"), "end_char", path, line)
            if not 0 <= start < end:
                raise InputError(
                    f"span {start}-{end} is empty or negative (need 0 <= start_char < end_char)", path, line
                )
            out["start_char"], out["end_char"] = start, end
        records.append(out)
    return HumanCodes(path, pd.DataFrame.from_records(records), kind)


def _from_qdpx(path: Path, max_members: int, max_bytes: int) -> HumanCodes:

    project = read_qdpx(path, max_members, max_bytes)
    if not project.codings:
        raise InputError("the REFI-QDA project holds no text codings", path)
    records = [
        {
            "interview_id": None,
            "source_file": c.source,
            "utterance_id": None,
            "start_char": c.start,
            "end_char": c.end,
            "code": c.code,
            "parents": PATH_SEP.join(c.parents),
            "coder": c.coder,
            "row": None,
        }
        for c in project.codings
    ]
    return HumanCodes(path, pd.DataFrame.from_records(records), "span", dict(project.sources))


# ---------------------------------------------------------------- naming codes


@dataclass(frozen=True)
class CodeTarget:
    second_order: str | None  # concept id
    dimension: str | None  # dimension id
    via: str  # "name", "mapping", "parent" or "unmapped"


def read_mapping(path: str | Path, framework) -> dict[str, CodeTarget]:
    """Mapping file (CSV: human_code, concept and/or dimension) -> code name (lower case) -> target."""
    path = Path(path)
    header, rows, lines = _read_csv(path) if path.is_file() else (None, None, None)
    if header is None:
        raise InputError("mapping file not found", path)
    assert rows is not None and lines is not None  # read together with header
    if "human_code" not in header or not {"concept", "dimension"} & set(header):
        raise InputError(
            f"mapping file needs columns human_code and concept and/or dimension; found: {', '.join(header)}", path
        )
    out: dict[str, CodeTarget] = {}
    for rec, line in zip(rows, lines):
        code = (rec.get("human_code") or "").strip()
        concept_name = (rec.get("concept") or "").strip()
        dim_name = (rec.get("dimension") or "").strip()
        if not code:
            raise InputError("empty human_code", path, line)
        if concept_name.lower() in ("", "none") and dim_name.lower() in ("", "none"):
            out[code.lower()] = CodeTarget(None, None, "mapping")
            continue
        concept = framework.concept(concept_name) if concept_name and concept_name.lower() != "none" else None
        if concept_name and concept_name.lower() != "none" and concept is None:
            raise InputError(
                f"concept {concept_name!r} is not in framework {framework.name!r} "
                f"(concepts: {', '.join(framework.concept_ids)})",
                path,
                line,
            )
        dim = framework.dimension(dim_name) if dim_name and dim_name.lower() != "none" else None
        if dim_name and dim_name.lower() != "none" and dim is None:
            raise InputError(
                f"dimension {dim_name!r} is not in framework {framework.name!r} "
                f"(dimensions: {', '.join(framework.dimension_ids)})",
                path,
                line,
            )
        if concept and dim and concept.dimension != dim.id:
            raise InputError(
                f"concept {concept.id!r} belongs to dimension {concept.dimension!r}, not {dim.id!r}", path, line
            )
        if concept:
            out[code.lower()] = CodeTarget(concept.id, concept.dimension, "mapping")
        else:
            assert dim is not None  # a dimension was named (none at all continued above) and found (else raised)
            out[code.lower()] = CodeTarget(None, dim.id, "mapping")
    return out


def _direct(name: str, framework) -> CodeTarget | None:

    # explicitly outside the framework; the exported project's "Human codes" holds the coders' codes outside it
    # directly (those inside sit in groups named after their concept), its low-confidence marker is no code
    if name.strip().lower() in ("none", "unmapped", *(n.lower() for n in OUTSIDE_NAMES)):
        return CodeTarget(None, None, "name")
    concept = framework.concept(name)
    if concept is not None:
        return CodeTarget(concept.id, concept.dimension, "name")
    dim = framework.dimension(name)
    return CodeTarget(None, dim.id, "name") if dim is not None else None


def resolve_codes(
    codes: HumanCodes, framework, mapping: dict[str, CodeTarget] | None, unknown: str = "error"
) -> tuple[pd.DataFrame, list[str]]:
    """Add second_order, dimension and via columns; unknown names are an error (or, with
    unknown="ignore", kept as unmapped and listed in the returned warnings)."""
    mapping = mapping or {}
    df = codes.frame
    missing: dict[str, Any]  # code -> the row of its first coding (NaN: no row)
    targets, missing = {}, {}
    for (code, parents), first_row in df.groupby(["code", "parents"], sort=True)["row"].first().items():
        target = mapping.get(code.lower()) or _direct(code, framework)
        if target is None:
            for parent in reversed(parents.split(PATH_SEP) if parents else []):
                hit = mapping.get(parent.lower()) or _direct(parent, framework)
                if hit is not None:
                    target = CodeTarget(hit.second_order, hit.dimension, "parent")
                    break
        if target is None:
            missing.setdefault(code, first_row)
            target = CodeTarget(None, None, "unmapped")
        targets[(code, parents)] = target
    warnings = []
    if missing:
        listed = ", ".join(repr(c) + ("" if pd.isna(r) else f" (line {int(r)})") for c, r in missing.items())
        msg = (
            f"{len(missing)} human code name(s) match no concept or dimension of framework {framework.name!r}: {listed}"
        )
        if unknown == "error":
            raise InputError(
                msg + "; map them with --mapping FILE (CSV columns human_code, concept, dimension)", codes.path
            )
        warnings.append(msg + "; treated as outside the framework")
    keys = list(zip(df["code"], df["parents"]))
    out = df.copy()
    out["second_order"] = [targets[k].second_order for k in keys]
    out["dimension"] = [targets[k].dimension for k in keys]
    out["via"] = [targets[k].via for k in keys]
    return out, warnings


# ---------------------------------------------------------------- alignment


def _source_index(codes: HumanCodes, sources: pa.Table) -> dict[str, str]:
    """Every name a source may go by (interview id, relative path, file name, stem) -> interview id."""
    index: dict[str, str] = {}
    ambiguous: set[str] = set()
    for iid, rel in zip(sources.column("interview_id").to_pylist(), sources.column("source_file").to_pylist()):
        for alias in (iid, rel, Path(rel).name, Path(rel).stem):
            if alias in index and index[alias] != iid:
                ambiguous.add(alias)
            index.setdefault(alias, iid)
    for alias in ambiguous - set(sources.column("interview_id").to_pylist()):
        index.pop(alias, None)
    return index


def _merge(spans: np.ndarray) -> np.ndarray:
    """Union of [start, end) intervals, sorted, as an (n, 2) array."""
    spans = spans[np.argsort(spans[:, 0], kind="stable")]
    merged = [list(spans[0])]
    for s, e in spans[1:]:
        if s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    return np.asarray(merged, dtype=np.int64)


def align_spans(
    frame: pd.DataFrame, u_start: np.ndarray, u_end: np.ndarray, min_overlap: float
) -> list[tuple[int, float]]:
    """Utterances one coder's spans of one code fall on: [(utterance position, covered share)].

    u_start, u_end: the interview's utterance offsets. See the module docstring for the rule."""
    length = np.maximum(u_end - u_start, 1)
    taken: dict[int, float] = {}
    merged = _merge(frame[["start_char", "end_char"]].to_numpy(np.int64))
    # overlap[i, j]: characters of merged interval i inside utterance j
    overlap = np.clip(np.minimum(merged[:, 1:2], u_end) - np.maximum(merged[:, 0:1], u_start), 0, None)
    share = overlap.sum(axis=0) / length
    hit = (share >= min_overlap) & (overlap.sum(axis=0) > 0)
    for j in np.nonzero(hit)[0]:
        taken[int(j)] = float(share[j])
    for i in range(len(merged)):
        row = overlap[i]
        if row.max() > 0 and not hit[row > 0].any():
            best = int(np.argmax(row))  # a span too short for the rule codes its best utterance
            taken[best] = float(share[best])
    return sorted(taken.items())


def _str(value) -> str | None:
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)


def align(
    codes: HumanCodes, resolved: pd.DataFrame, utterances: pa.Table, sources: pa.Table, min_overlap: float
) -> pa.Table:
    """Human codes per utterance (schema HUMAN_CODES): one row per utterance x coder x code."""

    utt = utterances.select(["utterance_id", "interview_id", "start_char", "end_char", "coded"]).to_pandas()
    texts = dict(zip(sources.column("interview_id").to_pylist(), sources.column("source_text").to_pylist()))
    rows: list[dict] = []
    df = resolved.copy()
    if codes.kind == "utterance":
        known = dict(zip(utt["utterance_id"], utt["interview_id"]))
        for uid, row in zip(df["utterance_id"], df["row"]):
            if uid not in known:
                raise InputError(f"utterance_id {uid!r} is not in the run's utterances.parquet", **codes.where(row))
        df["interview_id"] = [known[u] for u in df["utterance_id"]]
        df["overlap"] = 1.0
        grouped = df.groupby(["utterance_id", "coder", "code", "parents"], sort=False, as_index=False).first()
        rows = grouped.to_dict("records")
    else:
        index = _source_index(codes, sources)
        names = [i or s for i, s in zip(df["interview_id"], df["source_file"])]
        for name, row in zip(names, df["row"]):
            if name not in index:
                raise InputError(
                    f"source {name!r} is not in the run (known interviews: {', '.join(sorted(texts)[:5])}...)",
                    **codes.where(row),
                )
        for iid, src, row in zip(df["interview_id"], df["source_file"], df["row"]):
            if isinstance(iid, str) and isinstance(src, str) and src in index and index[src] != index.get(iid, iid):
                raise InputError(
                    f"interview_id {iid!r} and source_file {src!r} name different interviews "
                    f"({src!r} is {index[src]!r}); give one, or make them agree",
                    **codes.where(row),
                )
        df["interview_id"] = [index[n] for n in names]
        for name, text in codes.texts.items():
            iid = index.get(name)
            if iid is not None and text != texts[iid] and name in set(names):
                raise InputError(
                    f"source {name!r}: the project's text differs from the run's source_text for "
                    f"{iid}; positions would point at different characters",
                    codes.path,
                )
        too_long = df["end_char"].to_numpy() > np.array([len(texts[i]) for i in df["interview_id"]])
        if too_long.any():
            bad = df[too_long].iloc[0]
            raise InputError(
                f"span {bad['start_char']}-{bad['end_char']} ends past the end of {bad['interview_id']}'s "
                f"text ({len(texts[bad['interview_id']])} characters)",
                **codes.where(bad["row"]),
            )
        by_interview = {iid: g.sort_values("start_char") for iid, g in utt.groupby("interview_id")}
        for (iid, coder, code, parents), group in df.groupby(["interview_id", "coder", "code", "parents"], sort=True):
            u = by_interview.get(iid)
            if u is None:
                continue
            first = group.iloc[0]
            for j, share in align_spans(group, u["start_char"].to_numpy(), u["end_char"].to_numpy(), min_overlap):
                rows.append(
                    {
                        "utterance_id": u["utterance_id"].iat[j],
                        "interview_id": iid,
                        "coder": coder,
                        "code": code,
                        "parents": parents,
                        "second_order": first["second_order"],
                        "dimension": first["dimension"],
                        "via": first["via"],
                        "overlap": share,
                    }
                )
    coded = dict(zip(utt["utterance_id"], utt["coded"]))
    order = {u: i for i, u in enumerate(utt["utterance_id"])}
    rows.sort(key=lambda r: (order[r["utterance_id"]], r["coder"], r["code"]))
    return pa.Table.from_pylist(
        [
            {
                "utterance_id": r["utterance_id"],
                "interview_id": r["interview_id"],
                "coder": r["coder"],
                "code": r["code"],
                "code_path": r["parents"].split(PATH_SEP) if r["parents"] else [],
                "second_order": _str(r["second_order"]),
                "dimension": _str(r["dimension"]),
                "mapped_via": r["via"],
                "overlap": float(r["overlap"]),
                "coded": bool(coded[r["utterance_id"]]),
            }
            for r in rows
        ],
        schema=HUMAN_CODES,
    )
