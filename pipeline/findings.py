"""What a run found, in a few lines: how `themeshift run` ends (and, with --log-json, one JSON object).

Read from the run's tables and manifest, so the summary is the numbers the report and the Parquet
files hold: the largest codes, the data structure, dimension shares by group and wave, the shift
results (groups first, then the largest individual changes with their intervals), agreement with
the human coders when there were any, and every caveat a stage recorded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from pipeline.io.rundir import read_run_manifest, read_table, table_path
from pipeline.stages import STAGES

# The tables the findings use, and their columns (utterances can be millions of rows: never read whole).
COLUMNS: dict[str, list[str]] = {
    "code_dimensions": ["code_id", "label", "size", "rank", "status", "dimension"],
    "data_structure": ["code_id", "dimension_name", "second_order", "size"],
    "utterance_dimensions": ["utterance_id", "dimension", "is_argmax", "mapped"],
    "utterances": ["utterance_id", "speaker_role", "wave"],
    "shift_dimensions": [
        "speaker_id",
        "speaker_role",
        "wave_from",
        "wave_to",
        "dimension",
        "change",
        "change_ci_low",
        "change_ci_high",
        "q_value",
    ],
    "agreement": ["metric", "coder_a", "coder_b", "level", "value", "ci_low", "ci_high", "n"],
}


def run_findings(run_dir: Path, top: int = 5) -> dict[str, Any]:
    """The findings of a run directory as plain data (lists of dicts and strings)."""
    run_dir = Path(run_dir)
    tables = {
        name: read_table(run_dir, name, check=False, columns=columns).to_pandas()
        for name, columns in COLUMNS.items()
        if table_path(run_dir, name).exists()
    }
    return findings_from(tables, read_run_manifest(run_dir), top)


def findings_from(t: Mapping[str, pd.DataFrame], manifest: dict, top: int = 5) -> dict[str, Any]:
    """The findings from a run's tables (those in COLUMNS, where present) and its manifest: what `run`
    prints at its end and what the report's Findings section says."""
    stages = manifest.get("stages", {})
    out: dict[str, Any] = {
        "codes": [],
        "data_structure": [],
        "shares": [],
        "groups": [],
        "largest_changes": [],
        "agreement": [],
        "caveats": [],
    }
    codes = t.get("code_dimensions")
    if codes is not None and len(codes):
        best = codes[codes["rank"] == 1].sort_values(["size", "code_id"], ascending=[False, True]).head(top)
        out["codes"] = [
            {"label": r.label, "size": int(r.size), "dimension": r.dimension if r.status == "mapped" else "unmapped"}
            for r in best.itertuples()
        ]
    structure = t.get("data_structure")
    if structure is not None and len(structure):
        coded = structure[structure["code_id"].notna()]
        for name, rows in coded.groupby("dimension_name", sort=False):
            out["data_structure"].append(
                {
                    "dimension": name,
                    "concepts": int(rows["second_order"].nunique()),
                    "codes": int(len(rows)),
                    "utterances": int(rows["size"].sum()),
                }
            )
    dims, utterances = t.get("utterance_dimensions"), t.get("utterances")
    if dims is not None and utterances is not None and len(dims):
        chosen = dims[dims["is_argmax"] & dims["mapped"]][["utterance_id", "dimension"]].merge(
            utterances[["utterance_id", "speaker_role", "wave"]], on="utterance_id"
        )
        chosen["speaker_role"] = chosen["speaker_role"].fillna("(no role)")
        chosen = chosen.dropna(subset=["wave"])
        counts = chosen.groupby(["speaker_role", "wave", "dimension"]).size()
        shares = counts / counts.groupby(level=[0, 1]).transform("sum")
        out["shares"] = [
            {"group": g, "wave": int(w), "dimension": d, "share": round(float(s), 4)} for (g, w, d), s in shares.items()
        ]
    out["groups"] = list(stages.get("shift", {}).get("findings", []))
    changes = t.get("shift_dimensions")
    if changes is not None and len(changes):
        biggest = changes.dropna(subset=["change"]).assign(size=lambda t: t["change"].abs())
        biggest = biggest.sort_values(["size", "speaker_id"], ascending=[False, True]).head(3)
        out["largest_changes"] = [
            {
                "speaker_id": r.speaker_id,
                "group": r.speaker_role,
                "wave_from": int(r.wave_from),
                "wave_to": int(r.wave_to),
                "dimension": r.dimension,
                "change": float(r.change),
                "ci_low": float(r.change_ci_low),
                "ci_high": float(r.change_ci_high),
                "q_value": None if pd.isna(r.q_value) else float(r.q_value),
            }
            for r in biggest.itertuples()
        ]
    agreement = t.get("agreement")
    if agreement is not None and len(agreement):
        machine = manifest.get("config", {}).get("compare", {}).get("machine_name", "machine")
        rows = agreement[
            (agreement["metric"] == "cohen_kappa")
            & (agreement["coder_a"] == machine)
            & (agreement["coder_b"] == "consensus")
            & (agreement["n"] > 0)
        ]
        out["agreement"] = [
            {
                "level": r.level,
                "kappa": float(r.value),
                "ci_low": float(r.ci_low),
                "ci_high": float(r.ci_high),
                "n": int(r.n),
            }
            for r in rows.itertuples()
        ]
    seen: set[str] = set()
    for s in STAGES:  # every caveat a stage recorded, in pipeline order, once
        for message in stages.get(s.name, {}).get("warnings", []):
            if message not in seen:
                seen.add(message)
                out["caveats"].append(message)
    return out


def _points(x: float) -> str:
    return f"{100 * x:+.1f}"


def findings_lines(f: dict[str, Any]) -> list[str]:
    """The findings as lines for the terminal."""
    lines = ["Findings"]
    if f["codes"]:
        lines.append(
            "  largest codes: "
            + "; ".join(f'"{c["label"]}" ({c["size"]} utterances, {c["dimension"]})' for c in f["codes"])
        )
    if f["data_structure"]:
        lines.append(
            "  data structure: "
            + "; ".join(
                f"{d['dimension']}: {d['concepts']} concepts, {d['codes']} codes, {d['utterances']} utterances"
                for d in f["data_structure"]
            )
        )
    if f["shares"]:
        by = pd.DataFrame(f["shares"])
        for (group, wave), rows in by.groupby(["group", "wave"], sort=True):
            parts = ", ".join(f"{r.dimension} {100 * r.share:.0f}%" for r in rows.itertuples())
            lines.append(f"  shares, {group} wave {wave}: {parts}")
    for line in f["groups"]:
        lines.append(f"  shift: {line}")
    for c in f["largest_changes"]:
        q = "" if c["q_value"] is None else f", q {c['q_value']:.3f}"
        lines.append(
            f"  largest individual change: {c['speaker_id']} ({c['group']}), wave {c['wave_from']} -> "
            f"{c['wave_to']}: {c['dimension']} {_points(c['change'])} points "
            f"[{_points(c['ci_low'])}, {_points(c['ci_high'])}]{q}"
        )
    if not f["agreement"]:  # never a silent absence
        lines.append("  agreement with human coders: not measured (no human codes: run with --human CODES)")
    for a in f["agreement"]:
        lines.append(
            f"  agreement with the coders' consensus ({a['level']}): kappa {a['kappa']:.2f} "
            f"[{a['ci_low']:.2f}, {a['ci_high']:.2f}] (n={a['n']})"
        )
    for c in f["caveats"]:
        lines.append(f"  caveat: {c}")
    return lines
