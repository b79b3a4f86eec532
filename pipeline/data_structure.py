"""The Gioia data structure: first-order codes (with exemplar quotes) -> second-order
concepts -> aggregate dimensions, as a tidy table and as a Markdown table for a paper."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa

from pipeline import schema
from pipeline.framework import Framework

if TYPE_CHECKING:  # map builds the data structure from its CodeMapping: a type only, no import cycle
    from pipeline.map import CodeMapping


def data_structure_table(
    codes: pa.Table, mapping: CodeMapping, framework: Framework, texts: dict[str, str], n_quotes: int
) -> pa.Table:
    """One row per code, grouped by dimension and concept in framework order (best fit first);
    a concept no code maps to gets one 'empty' row; unmapped codes come last, largest first."""
    c = codes.to_pydict()
    rows: list[dict] = []

    def code_row(i: int, concept, status: str) -> dict:
        j = mapping.assigned[i] if mapping.assigned[i] >= 0 else int(mapping.probabilities[i].argmax())
        quotes = [texts[u] for u in (c["exemplar_ids"][i] or []) if u in texts][:n_quotes]
        dim = framework.dimension(concept.dimension) if concept else None
        return {
            "dimension": dim.id if dim else None,
            "dimension_name": dim.name if dim else None,
            "concept_id": concept.id if concept else None,
            "second_order": concept.name if concept else None,
            "code_id": c["code_id"][i],
            "fingerprint": c["fingerprint"][i],
            "first_order": c["label"][i],
            "size": c["size"][i],
            "probability": float(mapping.probabilities[i, j]),
            "status": status,
            "source": mapping.source[i],
            "quotes": quotes,
        }

    for dim in framework.dimensions:
        for j, concept in enumerate(framework.concepts):
            if concept.dimension != dim.id:
                continue
            members = [i for i in range(codes.num_rows) if mapping.assigned[i] == j]
            members.sort(key=lambda i: (-mapping.probabilities[i, j], c["code_id"][i]))
            rows += [code_row(i, concept, "mapped") for i in members]
            if not members:
                rows.append(
                    {
                        "dimension": dim.id,
                        "dimension_name": dim.name,
                        "concept_id": concept.id,
                        "second_order": concept.name,
                        "code_id": None,
                        "fingerprint": None,
                        "first_order": None,
                        "size": None,
                        "probability": None,
                        "status": "empty",
                        "source": None,
                        "quotes": [],
                    }
                )
    unmapped = [i for i in range(codes.num_rows) if mapping.assigned[i] < 0]
    unmapped.sort(key=lambda i: (-c["size"][i], c["code_id"][i]))
    rows += [code_row(i, None, "unmapped") for i in unmapped]
    return pa.Table.from_pylist(rows, schema=schema.DATA_STRUCTURE)


def _cell(text: str | None) -> str:
    return (text or "").replace("|", "\\|").replace("\n", " ").strip()


def _quote(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rsplit(" ", 1)[0] + "…"


def data_structure_markdown(table: pa.Table, framework: Framework) -> str:
    """First-order codes | Second-order concepts | Aggregate dimensions, concept and dimension
    written once per group as in a Gioia figure; unmapped codes listed underneath."""
    rows = table.to_pylist()
    out = [
        f"# Data structure: {_cell(framework.name)}",
        "",
        "| First-order codes (exemplar quote) | Second-order concepts | Aggregate dimensions |",
        "|---|---|---|",
    ]
    last_concept = last_dim = None
    for r in rows:
        if r["status"] == "unmapped":
            continue
        if r["status"] == "empty":
            first = "*(no code mapped)*"
        else:
            first = f"{_cell(r['first_order'])} (n={r['size']})"
            if r["quotes"]:
                first += f': "{_cell(_quote(r["quotes"][0]))}"'
            if r["source"] == "human":
                first += " [researcher]"
        concept = _cell(r["second_order"]) if r["concept_id"] != last_concept else ""
        dim = _cell(r["dimension_name"]) if r["dimension"] != last_dim else ""
        last_concept, last_dim = r["concept_id"], r["dimension"]
        out.append(f"| {first} | {concept} | {dim} |")
    unmapped = [r for r in rows if r["status"] == "unmapped"]
    if unmapped:
        out += ["", f"Unmapped candidate codes ({len(unmapped)}): fit no concept clearly enough.", ""]
        out += [f"- {_cell(r['first_order'])} (n={r['size']}, fingerprint {r['fingerprint']})" for r in unmapped]
    return "\n".join(out) + "\n"
