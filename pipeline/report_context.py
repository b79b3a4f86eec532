"""What every section of report.html reads: the run's tables, manifest and settings, the order of
the framework's dimensions, and what the sections collect (figures, missing tables, empty sections)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from pipeline import report_figures as rf
from pipeline.settings import ReportSettings
from pipeline.stages import remake_command


@dataclass
class ReportContext:
    t: dict[str, pd.DataFrame]
    manifest: dict
    s: ReportSettings
    dimensions: list[str]
    dimension_names: dict[str, str]
    missing: dict[str, str]
    figures: list[rf.Figure]
    empty: set[str] = field(default_factory=set)  # sections with nothing but a missing-table note

    def has(self, *names: str) -> bool:
        return all(n in self.t for n in names)

    def need(self, *names: str) -> list[str]:
        gone = [n for n in names if n not in self.t]
        for n in gone:
            self.missing[n] = remake_command(n)
        return gone


def dimension_order(t: dict[str, pd.DataFrame], manifest: dict) -> tuple[list[str], dict[str, str]]:
    order = list(manifest.get("stages", {}).get("map", {}).get("framework", {}).get("dimensions", []))
    for name in ("data_structure", "utterance_dimensions", "group_trajectory"):
        if name in t and "dimension" in t[name]:
            order += [d for d in t[name]["dimension"].dropna().unique().tolist() if d not in order]
    names = {d: d for d in order}
    if "data_structure" in t:
        ds = t["data_structure"].dropna(subset=["dimension"])
        names.update({d: f"{n} ({d})" for d, n in zip(ds["dimension"], ds["dimension_name"]) if n and n != d})
    return order, names
