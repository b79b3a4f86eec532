"""The report's charts as standalone SVG strings: plain string building, no plotting library,
so the same bytes go inline into report.html and into `--figures DIR` for manuscripts.

Every chart comes with the numbers it draws (columns + rows) so the report can show them as
a table and a CSV download, and `--figures` writes them next to the SVG.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape
from typing import TypeGuard

import numpy as np

# Okabe-Ito: distinguishable with the common colour-vision deficiencies, and in greyscale print.
DIMENSION_COLOURS = ["#E69F00", "#0072B2", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#F0E442", "#000000"]
# Codes need more colours than any safe palette has: a 20-colour qualitative palette, cycled.
CODE_COLOURS = [
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
    "#aec7e8",
    "#ffbb78",
    "#98df8a",
    "#ff9896",
    "#c5b0d5",
    "#c49c94",
    "#f7b6d2",
    "#dbdb8d",
    "#9edae5",
    "#393b79",
]
NONE_COLOUR = "#c8c8c8"  # unassigned / unmapped
FONT = "font-family:system-ui,-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif"


@dataclass
class Figure:
    slug: str  # file name stem under --figures, and the HTML id
    title: str
    svg: str
    columns: list[str]  # the numbers behind the figure
    rows: list[list]
    caption: str = ""
    extra_svgs: dict[str, str] = field(default_factory=dict)  # other views of the same data (slug -> svg)


def _e(text) -> str:
    return escape(str(text), quote=True)


def _n(x: float) -> str:
    """Coordinates with one decimal: small files, sub-pixel exact enough."""
    return f"{x:.1f}".rstrip("0").rstrip(".") if abs(x) < 1e9 else "0"


def svg_document(width: int, height: int, body: str, title: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" style="{FONT};font-size:12px;max-width:100%;height:auto">'
        f'<title>{_e(title)}</title><rect width="{width}" height="{height}" fill="#fff"/>{body}</svg>'
    )


def _finite(x) -> TypeGuard[float]:  # True: a finite number (None and NaN are not)
    return x is not None and isinstance(x, (int, float, np.floating)) and math.isfinite(float(x))


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    step = (hi - lo) / n
    return [lo + i * step for i in range(n + 1)]


def _width(s: str, size: float = 12) -> float:
    """A generous estimate of a label's width in px (system sans-serif, no measuring without a browser)."""
    wide = sum(1 for ch in s if ch.isupper() or ch in "mwMW@%")
    return size * (0.56 * len(s) + 0.2 * wide)


def _text(x: float, y: float, s: str, anchor: str = "start", extra: str = "") -> str:
    return f'<text x="{_n(x)}" y="{_n(y)}" text-anchor="{anchor}"{extra}>{_e(s)}</text>'


def _x_axis(x0: float, x1: float, y: float, lo: float, hi: float, label: str, top: float, n: int = 5) -> str:
    """Gridlines from `top` down to the axis at `y`, tick labels below it."""
    out = [f'<line x1="{_n(x0)}" y1="{_n(y)}" x2="{_n(x1)}" y2="{_n(y)}" stroke="#333"/>']
    for t in _ticks(lo, hi, n):
        x = x0 + (t - lo) / (hi - lo) * (x1 - x0)
        out.append(f'<line x1="{_n(x)}" y1="{_n(top)}" x2="{_n(x)}" y2="{_n(y)}" stroke="#e5e5e5"/>')
        out.append(_text(x, y + 14, f"{t:.2f}".rstrip("0").rstrip(".") if t else "0", "middle"))
    out.append(_text((x0 + x1) / 2, y + 30, label, "middle", ' font-weight="600"'))
    return "".join(out)


def legend(items: list[tuple[str, str]], x: float, y: float, width: float, shape: str = "rect") -> tuple[str, float]:
    """Items laid out left to right, wrapping at `width`; returns (svg, height used)."""
    out, cx, cy = [], x, y
    for label, colour in items:
        w = 22 + 7 * len(label)
        if cx + w > x + width and cx > x:
            cx, cy = x, cy + 18
        mark = (
            f'<circle cx="{_n(cx + 5)}" cy="{_n(cy - 4)}" r="5" fill="{colour}"/>'
            if shape == "circle"
            else f'<rect x="{_n(cx)}" y="{_n(cy - 9)}" width="10" height="10" fill="{colour}"/>'
        )
        out.append(mark + _text(cx + 14, cy, label))
        cx += w
    return "".join(out), cy - y + 18


def trajectory_chart(
    groups: list[str],
    waves: list[int],
    dimensions: list[str],
    values: dict[tuple[str, int, str], tuple[float, float | None, float | None]],
    dimension_names: dict[str, str],
    title: str,
) -> str:
    """One panel per group (all speakers, then each role): a dimension's share per wave as a line,
    with its interval as a whisker."""
    panel_w, panel_h, gap, left, top = 230, 200, 30, 58, 34
    width = left + len(groups) * panel_w + (len(groups) - 1) * gap + 20
    colours = {d: DIMENSION_COLOURS[i % len(DIMENSION_COLOURS)] for i, d in enumerate(dimensions)}
    hi = max([v[2] if _finite(v[2]) else v[0] for v in values.values() if _finite(v[0])] + [0.1])
    y_max = min(1.0, math.ceil(hi * 5) / 5)  # a multiple of 20%: round tick labels
    out = []
    for g, group in enumerate(groups):
        x0 = left + g * (panel_w + gap)
        x1 = x0 + panel_w
        y0, y1 = top + panel_h, top

        def ys(v: float, y0: float = y0, y1: float = y1) -> float:
            return y0 - v / y_max * (y0 - y1)

        def xs(k: int, x0: float = x0) -> float:
            return x0 + 30 + (k * (panel_w - 60) / max(1, len(waves) - 1) if len(waves) > 1 else (panel_w - 60) / 2)

        out.append(_text((x0 + x1) / 2, top - 12, group, "middle", ' font-weight="600"'))
        for t in _ticks(0, y_max, round(y_max / (0.1 if y_max <= 0.6 else 0.2))):
            out.append(f'<line x1="{x0}" y1="{_n(ys(t))}" x2="{x1}" y2="{_n(ys(t))}" stroke="#e5e5e5"/>')
            if g == 0:
                out.append(_text(x0 - 6, ys(t) + 4, f"{t:.0%}", "end"))
        out.append(f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="#333"/>')
        for k, w in enumerate(waves):
            out.append(_text(xs(k), y0 + 16, f"wave {w}", "middle"))
        for j, d in enumerate(dimensions):
            pts = [
                (k, values[(group, w, d)])
                for k, w in enumerate(waves)
                if (group, w, d) in values and _finite(values[(group, w, d)][0])
            ]
            c = colours[d]
            # dodge the dimensions a little so overlapping whiskers stay readable
            dx = (j - (len(dimensions) - 1) / 2) * 5
            if len(pts) > 1:
                path = " ".join(f"{_n(xs(k) + dx)},{_n(ys(v[0]))}" for k, v in pts)
                out.append(f'<polyline points="{path}" fill="none" stroke="{c}" stroke-width="2.5"/>')
            for k, (m, lo, hi_) in pts:
                x = xs(k) + dx
                if _finite(lo) and _finite(hi_):
                    out.append(
                        f'<line x1="{_n(x)}" y1="{_n(ys(lo))}" x2="{_n(x)}" y2="{_n(ys(hi_))}" '
                        f'stroke="{c}" stroke-width="1.5"/>'
                    )
                out.append(f'<circle cx="{_n(x)}" cy="{_n(ys(m))}" r="4" fill="{c}"/>')
    out.append(
        _text(
            14,
            top + panel_h / 2,
            "share of talk",
            "middle",
            f' transform="rotate(-90 14 {_n(top + panel_h / 2)})" font-weight="600"',
        )
    )
    leg, lh = legend(
        [(dimension_names.get(d, d), colours[d]) for d in dimensions], left, top + panel_h + 42, width - left - 10
    )
    return svg_document(width, int(top + panel_h + 42 + lh), "".join(out) + leg, title)


def shift_dumbbell_chart(rows: list[dict], title: str, dark_label: str = "significant shift") -> str:
    """One row per speaker and wave pair: the Jensen-Shannon distance between the waves'
    dimension profiles (filled dot, bootstrap interval as a bar), joined to the distance
    sampling noise alone gives (open dot); significant shifts (rows' "significant") dark."""
    label_w, right, row_h, top = 150, 190, 20, 28
    plot_w = 420
    width = label_w + plot_w + right
    height = top + row_h * len(rows) + 64
    hi = max([r["hi"] for r in rows if _finite(r["hi"])] + [r["value"] for r in rows] + [0.1])
    x_max = min(1.0, math.ceil(hi * 10) / 10)
    x0, x1 = label_w, label_w + plot_w

    def xs(v: float) -> float:
        return x0 + v / x_max * plot_w

    y_axis = top + row_h * len(rows) + 4
    out = [
        _x_axis(
            x0, x1, y_axis, 0, x_max, "Jensen-Shannon distance between waves (0 = same profile, 1 = disjoint)", top - 6
        )
    ]
    out.append(_text(x1 + 10, top - 10, "direction (p-value)", extra=' font-weight="600"'))
    for i, r in enumerate(rows):
        y = top + row_h * i + row_h / 2
        dark = "#111" if r["significant"] else "#8a8a8a"
        out.append(_text(x0 - 8, y + 4, r["label"], "end"))
        if _finite(r.get("noise")):
            out.append(
                f'<line x1="{_n(xs(r["noise"]))}" y1="{_n(y)}" x2="{_n(xs(r["value"]))}" y2="{_n(y)}" '
                f'stroke="#bbb" stroke-width="2" stroke-dasharray="3 2"/>'
                f'<circle cx="{_n(xs(r["noise"]))}" cy="{_n(y)}" r="4" fill="#fff" stroke="#777"/>'
            )
        if _finite(r["lo"]) and _finite(r["hi"]):
            out.append(
                f'<line x1="{_n(xs(r["lo"]))}" y1="{_n(y)}" x2="{_n(xs(r["hi"]))}" y2="{_n(y)}" '
                f'stroke="{dark}" stroke-width="3" stroke-opacity="0.45"/>'
            )
        out.append(f'<circle cx="{_n(xs(r["value"]))}" cy="{_n(y)}" r="5" fill="{dark}"/>')
        p = f" (p={r['p']:.3f})" if _finite(r.get("p")) else ""
        out.append(_text(x1 + 10, y + 4, f"{r['direction']}{p}", extra=f' fill="{dark}"'))
    leg_y = y_axis + 48
    out.append(
        f'<circle cx="{x0 + 5}" cy="{leg_y - 4}" r="5" fill="#111"/>'
        + _text(x0 + 14, leg_y, dark_label)
        + f'<circle cx="{x0 + 30 + _width(dark_label)}" cy="{leg_y - 4}" r="5" fill="#8a8a8a"/>'
        + _text(x0 + 39 + _width(dark_label), leg_y, "not significant")
        + f'<circle cx="{x0 + 150 + _width(dark_label)}" cy="{leg_y - 4}" r="4" fill="#fff" stroke="#777"/>'
        + _text(x0 + 159 + _width(dark_label), leg_y, "noise level; bar = interval")
    )
    return svg_document(width, int(height), "".join(out), title)


def change_arrow_chart(
    labels: list[str],
    dimensions: list[str],
    values: dict[tuple[str, str], tuple[float, float, float | None, float | None]],
    title: str,
    marks: dict[tuple[str, str], float] | None = None,
    label_w: int = 150,
) -> str:
    """One panel per dimension, one row per speaker: an arrow from the share in the earlier wave
    to the share in the later one; the shaded band is the interval of the change, drawn around
    the earlier share (where the arrow could end). marks: an optional second end per row (e.g.
    the shrunken change), drawn as a black tick."""
    panel_w, gap, row_h, top = 200, 24, 20, 30
    width = label_w + len(dimensions) * (panel_w + gap)
    y_axis = top + row_h * len(labels) + 4
    ends = [v for a, b, lo, hi in values.values() for v in (a, b, a + hi if _finite(hi) else a) if _finite(v)]
    x_max = min(1.0, math.ceil(max(ends + [0.1]) * 5) / 5)
    out = []
    for j, d in enumerate(dimensions):
        c = DIMENSION_COLOURS[j % len(DIMENSION_COLOURS)]
        x0 = label_w + j * (panel_w + gap)

        def xs(v: float, x0=x0) -> float:
            return x0 + max(0.0, min(x_max, v)) / x_max * panel_w

        out.append(_text(x0 + panel_w / 2, top - 12, d, "middle", ' font-weight="600"'))
        out.append(_x_axis(x0, x0 + panel_w, y_axis, 0, x_max, f"share of {d}", top - 4, 4))
        for i, lab in enumerate(labels):
            if (lab, d) not in values:
                continue
            a, b, lo, hi = values[(lab, d)]
            y = top + row_h * i + row_h / 2
            if _finite(lo) and _finite(hi):
                band = max(0.5, xs(a + hi) - xs(a + lo))
                out.append(
                    f'<rect x="{_n(xs(a + lo))}" y="{_n(y - 5)}" width="{_n(band)}" '
                    f'height="10" fill="{c}" fill-opacity="0.18"/>'
                )
            out.append(f'<circle cx="{_n(xs(a))}" cy="{_n(y)}" r="2.5" fill="{c}"/>')
            if marks and _finite(marks.get((lab, d))):
                xm = xs(marks[(lab, d)])
                out.append(
                    f'<line x1="{_n(xm)}" y1="{_n(y - 6)}" x2="{_n(xm)}" y2="{_n(y + 6)}" stroke="#222" '
                    'stroke-width="1.5"/>'
                )
            if abs(xs(b) - xs(a)) >= 3:
                sgn = 1 if b > a else -1
                tip = xs(b)
                out.append(
                    f'<line x1="{_n(xs(a))}" y1="{_n(y)}" x2="{_n(tip - sgn * 4)}" y2="{_n(y)}" stroke="{c}" '
                    f'stroke-width="2"/><path d="M{_n(tip)},{_n(y)} l{-sgn * 6},-4 v8 z" fill="{c}"/>'
                )
            else:
                out.append(
                    f'<circle cx="{_n(xs(b))}" cy="{_n(y)}" r="3.5" fill="none" stroke="{c}" stroke-width="1.5"/>'
                )
    for i, lab in enumerate(labels):
        out.append(_text(label_w - 8, top + row_h * i + row_h / 2 + 4, lab, "end"))
    return svg_document(int(width), int(y_axis + 40), "".join(out), title)


def _unit_square(x: np.ndarray, y: np.ndarray, size: int, pad: int) -> tuple[np.ndarray, np.ndarray]:
    def scale(v: np.ndarray) -> np.ndarray:
        lo, hi = float(v.min()), float(v.max())
        return (v - lo) / (hi - lo if hi > lo else 1.0)

    return pad + scale(x) * (size - 2 * pad), size - pad - scale(y) * (size - 2 * pad)


def scatter_chart(
    x: np.ndarray,
    y: np.ndarray,
    colour_index: np.ndarray,
    colours: list[str],
    labels: list[str],
    title: str,
    size: int = 560,
) -> str:
    """Utterances in 2-D; colour_index -1 = grey (unassigned / unmapped), drawn first so the
    coloured points sit on top. One <path> per colour keeps the file small. The legend beside the
    plot is as wide as its longest label and takes more columns when the labels outnumber the rows."""
    pad = 12
    xs, ys = _unit_square(x, y, size, pad)
    out = [f'<rect x="0.5" y="0.5" width="{size - 1}" height="{size - 1}" fill="none" stroke="#ddd"/>']
    for k in [-1] + list(range(len(labels))):
        m = colour_index == k
        if not m.any():
            continue
        c = NONE_COLOUR if k < 0 else colours[k % len(colours)]
        # a zero-length round-capped segment per point draws a dot
        d = "".join(f"M{_n(a)} {_n(b)}h0" for a, b in zip(xs[m], ys[m]))
        out.append(f'<path d="{d}" stroke="{c}" stroke-width="5" stroke-linecap="round" stroke-opacity="0.8"/>')
    items = [(lab if len(lab) <= 60 else lab[:59] + "…", colours[k % len(colours)]) for k, lab in enumerate(labels)]
    if (colour_index < 0).any():
        items.append(("none", NONE_COLOUR))
    per_col = max(1, (size - 8) // 16)
    col_w = 30 + max([_width(lab) for lab, _ in items] + [0])
    for i, (lab, c) in enumerate(items):
        lx, ly = size + 16 + (i // per_col) * col_w, 16 + (i % per_col) * 16
        out.append(f'<circle cx="{_n(lx)}" cy="{ly - 4}" r="5" fill="{c}"/>' + _text(lx + 10, ly, lab))
    width = size + 16 + math.ceil(len(items) / per_col) * col_w if items else size
    return svg_document(int(math.ceil(width)), size, "".join(out), title)


def map_points_svg(
    x: np.ndarray,
    y: np.ndarray,
    classes: list[str],
    texts: list[str],
    colourings: dict[str, list[str]],
    title: str,
    size: int = 560,
) -> str:
    """Utterances in 2-D for the report page: each point a <circle> with its text as <title> (shown on
    hover), coloured by its CSS classes, so the page switches between colourings (colourings: the
    svg's data-colour value -> one colour per class index, classes named by its first letter) with one
    copy of the points. Points without a class of the current colouring stay grey. The first point is
    in the tab order; the page's script moves the focus between points with the arrow keys."""
    xs, ys = _unit_square(x, y, size, 12)
    rules = [
        "#map-svg circle{r:3px;fill:" + NONE_COLOUR + ";fill-opacity:.8}",
        "#map-svg circle:hover,#map-svg circle:focus{stroke:#000;stroke-width:2;fill-opacity:1;outline:none}",
    ]
    for name, colours in colourings.items():
        rules += [f"#map-svg[data-colour={name}] .{name[0]}{k}{{fill:{c}}}" for k, c in enumerate(colours)]
    pts = "".join(
        f'<circle cx="{_n(a)}" cy="{_n(b)}"'
        + (f' class="{cl}"' if cl else "")
        + (' tabindex="0"' if i == 0 else "")
        + f"><title>{escape(t, quote=False)}</title></circle>"
        for i, (a, b, cl, t) in enumerate(zip(xs, ys, classes, texts))
    )
    first = next(iter(colourings), "")
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" id="map-svg" data-colour="{first}" viewBox="0 0 {size} {size}" '
        f'width="{size}" height="{size}" role="group" aria-label="{_e(title)}" '
        f'style="{FONT};font-size:12px;max-width:100%;height:auto"><style>{"".join(rules)}</style>'
        f'<rect x="0.5" y="0.5" width="{size - 1}" height="{size - 1}" fill="#fff" stroke="#ddd"/>'
        f'<g class="pts">{pts}</g></svg>'
    )


def agreement_chart(rows: list[dict], title: str) -> str:
    """Chance-corrected agreement per rater pair with intervals, against the conventional
    thresholds for Krippendorff's alpha (0.667 tentative, 0.8 reliable)."""
    label_w, plot_w, row_h, top = 300, 380, 22, 24
    lo_v = min([0.0] + [r["lo"] for r in rows if _finite(r["lo"])] + [r["value"] for r in rows])
    x_lo, x_hi = math.floor(lo_v * 5) / 5, 1.0
    x0, x1 = label_w, label_w + plot_w

    def xs(v: float) -> float:
        return x0 + (v - x_lo) / (x_hi - x_lo) * plot_w

    y_axis = top + row_h * len(rows) + 4
    out = [_x_axis(x0, x1, y_axis, x_lo, x_hi, "agreement (1 = perfect, 0 = chance)", top - 6)]
    for thr, name, anchor, dx in ((0.667, "tentative 0.667", "end", -3), (0.8, "0.8 reliable", "start", 3)):
        out.append(
            f'<line x1="{_n(xs(thr))}" y1="{top - 6}" x2="{_n(xs(thr))}" y2="{y_axis}" stroke="#c0392b" '
            f'stroke-dasharray="4 3"/>' + _text(xs(thr) + dx, top - 10, name, anchor, ' fill="#c0392b" font-size="11"')
        )
    for i, r in enumerate(rows):
        y = top + row_h * i + row_h / 2
        c = "#0072B2" if r.get("human_only") else "#D55E00"
        out.append(_text(x0 - 8, y + 4, r["label"], "end"))
        if _finite(r["lo"]) and _finite(r["hi"]):
            out.append(
                f'<line x1="{_n(xs(r["lo"]))}" y1="{_n(y)}" x2="{_n(xs(r["hi"]))}" y2="{_n(y)}" stroke="{c}" '
                f'stroke-width="3" stroke-opacity="0.5"/>'
            )
        out.append(f'<circle cx="{_n(xs(r["value"]))}" cy="{_n(y)}" r="5" fill="{c}"/>')
    leg, lh = legend(
        [("human coders only", "#0072B2"), ("includes the machine", "#D55E00")], x0, y_axis + 50, plot_w, "circle"
    )
    return svg_document(x1 + 20, int(y_axis + 50 + lh), "".join(out) + leg, title)
