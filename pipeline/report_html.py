"""HTML building blocks of report.html: escaping, table cells and tables, CSV downloads, figures,
quotes, the wording of significance, notes on missing tables."""

from __future__ import annotations

import base64
import csv
import io
import math
from collections.abc import Sequence
from html import escape

import numpy as np
import pandas as pd

from pipeline import report_figures as rf
from pipeline.io.spreadsheet import safe_cell
from pipeline.stages import remake_command


def esc(text) -> str:
    return escape("" if text is None else str(text), quote=True)


def is_missing(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x)) or x is pd.NA or x is pd.NaT


class Raw:
    """A table cell that is already HTML, with an optional sort key."""

    def __init__(self, html: str, sort=None):
        self.html, self.sort = html, sort


def _fmt(v, digits: int = 3) -> tuple[str, str | None]:
    """(cell text, numeric sort key)"""
    if isinstance(v, Raw):
        return v.html, None if v.sort is None else str(v.sort)
    if is_missing(v):
        return "–", ""
    if isinstance(v, (bool, np.bool_)):
        return ("yes" if v else "no"), None
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}", str(int(v))
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.{digits}f}", repr(float(v))
    return esc(v), None


# A table column: a Parquet column name (shown by its LABELS label, the name on hover), or
# (label, source): the label shown and what it comes from (Parquet column names, comma-separated).
Col = str | tuple[str, str]

# readable labels of the Parquet columns the report shows under their own name
LABELS = {
    "speaker_id": "speaker",
    "speaker_role": "role",
    "interview_id": "interview",
    "utterance_id": "utterance",
    "code_id": "code",
    "wave_from": "from wave",
    "wave_to": "to wave",
    "is_first_last": "first → last wave",
    "n_speakers": "speakers",
    "n_utterances": "utterances",
    "share_from": "share, earlier wave",
    "share_to": "share, later wave",
    "change": "change",
    "change_ci_low": "change, interval low",
    "change_ci_high": "change, interval high",
    "change_shrunk": "change, shrunk to group",
    "ci_low": "interval low",
    "ci_high": "interval high",
    "p_value": "p-value",
    "q_value": "q-value",
    "jsd": "magnitude (JSD)",
    "jsd_ci_low": "JSD, interval low",
    "jsd_ci_high": "JSD, interval high",
    "jsd_noise": "noise",
    "significant": "p < α (uncorrected)",
    "mean_share": "mean share",
    "pooled_share": "pooled share",
    "coder_a": "rater a",
    "coder_b": "rater b",
    "ari": "ARI",
    "nmi": "NMI",
    "matched_kappa": "matched κ",
    "cohen_kappa": "Cohen's κ",
    "krippendorff_alpha": "Krippendorff's α",
    "x": "x",
    "y": "y",
}

# readable names of values that are column-like identifiers (metrics, measures, methods)
VALUE_LABELS = {
    **{k: LABELS[k] for k in ("ari", "nmi", "matched_kappa", "cohen_kappa", "krippendorff_alpha")},
    "jsd": "magnitude (JSD)",
    "jsd_codes": "magnitude over codes (JSD)",
    "semantic_drift": "semantic drift",
    "semantic_ratio": "semantic ratio",
    "change": "change in share",
    "random_effects_hksj": "random effects (HKSJ)",
    "random_effects_welch": "random effects (Welch)",
    "random_effects_bonferroni": "random effects, Bonferroni over dimensions",
    "permutation": "permutation",
    "moderated_t": "moderated t",
    "second_order": "second-order",
}


def _col(c: Col) -> tuple[str, str]:
    """(label, title) of a column."""
    if isinstance(c, tuple):
        return c
    return LABELS.get(c, c.replace("_", " ")), c


def value_label(v) -> Raw | None:
    """An identifier-like value (a metric, a measure, a method) by its readable name, the raw one on hover."""
    if is_missing(v):
        return None
    name = VALUE_LABELS.get(str(v), str(v).replace("_", " "))
    return Raw(esc(name) if name == v else f'<span title="{esc(v)}">{esc(name)}</span>')


def _is_empty(v) -> bool:
    if isinstance(v, Raw):
        return v.html.strip() in ("", "–")
    return is_missing(v) or (isinstance(v, str) and v.strip() in ("", "–"))


def html_table(
    columns: Sequence[Col],
    rows: list[list],
    sortable: bool = True,
    cls: str = "",
    why_empty: dict[str, str] | None = None,
) -> str:
    """A table; a column empty in every row is left out and named, with why_empty's reason for it
    (keyed by its label or source) or a general one."""
    cols = [_col(c) for c in columns]
    notes = []
    if rows:
        empty = [i for i in range(len(cols)) if all(_is_empty(r[i]) for r in rows)]
        reasons: dict[str, list[str]] = {}  # one reason, the columns it empties
        for i in empty:
            label, title = cols[i]
            why = (why_empty or {}).get(title) or (why_empty or {}).get(label) or "no row has a value in this run"
            reasons.setdefault(why, []).append(f"<em>{esc(label)}</em> (<code>{esc(title)}</code>)")
        notes = [f"{join_and(names)}: {esc(why)}" for why, names in reasons.items()]
        keep = [i for i in range(len(cols)) if i not in empty]
        cols = [cols[i] for i in keep]
        rows = [[r[i] for i in keep] for r in rows]
    head = "".join(f'<th scope="col" title="{esc(title)}">{esc(label)}</th>' for label, title in cols)
    body = []
    for r in rows:
        cells = []
        for v in r:
            text, key = _fmt(v)
            num = key is not None
            attr = (f' data-v="{esc(key)}"' if num else "") + (' class="num"' if num and key != "" else "")
            cells.append(f"<td{attr}>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    classes = " ".join(c for c in ("sortable" if sortable else "", cls) if c)
    note = (
        '<p class="note empty-columns">Columns left out, empty in every row: ' + "; ".join(notes) + ".</p>"
        if notes
        else ""
    )
    return (
        f'{note}<div class="table-wrap"><table class="{classes}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def csv_text(columns: list[str], rows: list[list]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow(
            ["" if is_missing(v) else (f"{v:.6g}" if isinstance(v, (float, np.floating)) else safe_cell(v)) for v in r]
        )
    return buf.getvalue()


def csv_link(name: str, columns: list[str], rows: list[list], text: str = "Download the numbers (CSV)") -> str:
    data = base64.b64encode(csv_text(columns, rows).encode("utf-8")).decode("ascii")
    return f'<a class="download" download="{esc(name)}.csv" href="data:text/csv;base64,{data}">{esc(text)}</a>'


def figure_html(fig: rf.Figure, table: bool = True) -> str:
    numbers = (
        f"<details><summary>Numbers behind this figure</summary>{html_table(fig.columns, fig.rows)}</details>"
        if table
        else ""
    )
    return (
        f'<figure id="fig-{esc(fig.slug)}"><div class="svg">{fig.svg}</div>'
        f"<figcaption><strong>{esc(fig.title)}.</strong> {esc(fig.caption)}</figcaption>"
        f"{numbers}{csv_link(fig.slug, fig.columns, fig.rows)}</figure>"
    )


def shorten_quote(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1].rsplit(" ", 1)[0] + "…"


def significant(p, q, alpha: float) -> bool:
    """Called significant: a p-value, and its q-value (corrected for testing many speakers) below alpha."""
    return not is_missing(p) and not is_missing(q) and bool(q < alpha)


def verdict(p, q, alpha: float) -> str | None:
    """One wording of significance for every speaker row: a change is called significant only when its
    q-value (corrected for testing many speakers) is below alpha; a p-value alone below it says so."""
    if is_missing(p):
        return None
    if significant(p, q, alpha):
        return f"significant (q < {alpha:g})"
    if p < alpha:
        return f"p < {alpha:g} only; not after correction" if not is_missing(q) else f"p < {alpha:g}"
    return "not significant"


def missing_note(names: list[str], what: str) -> str:
    items = "".join(f"<li><code>{esc(n)}.parquet</code>: run <code>{esc(remake_command(n))}</code></li>" for n in names)
    return f'<div class="missing"><p>{esc(what)} Missing:</p><ul>{items}</ul></div>'


def wave_label(w) -> str:
    return "no wave" if is_missing(w) else f"wave {int(w)}"


def join_and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1] if items else ""
