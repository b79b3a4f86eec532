"""Themes by source type: which dimensions, concepts and codes appear in interviews, field notes
and documents, side by side (triangulation across the kinds of data a study collected)."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

from pipeline import schema

_ORDER = {"interview": 0, "fieldnote": 1, "document": 2}


def source_themes(
    utterances: pa.Table,
    utterance_dimensions: pa.Table,
    assignments: pa.Table | None = None,
    codes: pa.Table | None = None,
) -> pa.Table:
    """One row per (source type, level, theme): coded units and sources of that type where it appears.
    A unit counts for its most probable dimension and concept when the map (or learn) mapped it, and for
    its first-order code when it has one."""
    u = utterances.select(["utterance_id", "interview_id", "source_type", "coded"]).to_pandas()
    coded = u[u["coded"]]
    totals = coded.groupby("source_type").agg(units=("utterance_id", "size"), sources=("interview_id", "nunique"))
    all_sources = u.groupby("source_type")["interview_id"].nunique()
    d = utterance_dimensions.select(["utterance_id", "dimension", "is_argmax", "mapped", "second_order"]).to_pandas()
    d = d[d["is_argmax"] & d["mapped"]].merge(coded, on="utterance_id")
    parts = [
        d.assign(level="dimension", theme=d["dimension"]),
        d.dropna(subset=["second_order"]).assign(level="second_order", theme=lambda x: x["second_order"]),
    ]
    if assignments is not None and codes is not None:
        a = assignments.select(["utterance_id", "code_id"]).to_pandas()
        a = a[a["code_id"] >= 0].merge(coded, on="utterance_id")
        labels = dict(zip(codes.column("code_id").to_pylist(), codes.column("label").to_pylist()))
        parts.append(a.assign(level="code", theme=a["code_id"].map(lambda c: f"{c}: {labels.get(c, '')}")))
    rows = []
    for part in parts:
        if part.empty:
            continue
        g = part.groupby(["source_type", "level", "theme"]).agg(
            n_units=("utterance_id", "size"), n_sources=("interview_id", "nunique")
        )
        for (st, level, theme), r in g.iterrows():
            rows.append(
                {
                    "source_type": st,
                    "level": level,
                    "theme": str(theme),
                    "n_units": int(r.n_units),
                    "share": float(r.n_units / totals.loc[st, "units"]),
                    "n_sources": int(r.n_sources),
                    "source_share": float(r.n_sources / all_sources[st]),
                    "n_coded_units": int(totals.loc[st, "units"]),
                    "n_type_sources": int(all_sources[st]),
                }
            )
    level_order = {"dimension": 0, "second_order": 1, "code": 2}
    rows.sort(key=lambda r: (level_order[r["level"]], r["theme"], _ORDER.get(r["source_type"], 9), r["source_type"]))
    return pa.Table.from_pylist(rows, schema=schema.SOURCE_THEMES)


def side_by_side(table: pd.DataFrame, level: str) -> pd.DataFrame:
    """Themes as rows, source types as columns (share of the type's coded units, sources in brackets)."""
    t = table[table["level"] == level]
    types = sorted(t["source_type"].unique(), key=lambda s: (_ORDER.get(s, 9), s))
    return t.pivot_table(index="theme", columns="source_type", values="share", aggfunc="first")[types]
