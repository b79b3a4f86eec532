"""report.html: one self-contained page (inline CSS, JS and SVG; no request leaves the file)
that a researcher can email. Each section is built from the run's tables when they exist;
a missing table is named together with the command that makes it.

build_report(tables, manifest, settings, xy, ids) is a pure function of its inputs: the same run
directory gives the same bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import report_figures as rf
from pipeline.errors import InputError
from pipeline.findings import findings_from
from pipeline.io.rundir import (
    atomic_write,
    read_run_manifest,
    read_table,
    stale_reason,
    table_path,
)
from pipeline.learn import MACHINE
from pipeline.reduce import fit_umap
from pipeline.report_context import ReportContext, dimension_order
from pipeline.report_html import (
    VALUE_LABELS,
    Col,
    Raw,
    csv_link,
    csv_text,
    esc,
    figure_html,
    html_table,
    is_missing,
    missing_note,
    shorten_quote,
    significant,
    value_label,
    verdict,
    wave_label,
)
from pipeline.report_methods import methods_section
from pipeline.report_page import PAGE_CSS, PAGE_JS
from pipeline.settings import ReportSettings
from pipeline.shift import missing_shift_reason
from pipeline.shift_groups import headline
from pipeline.stages import remake_command, stage

# the tables the report reads, when they exist
REPORTED = stage("report").optional  # its own utterance_map is never an input

SECTIONS = [
    ("findings", "Findings"),
    ("overview", "Corpus overview"),
    ("data-structure", "Data structure"),
    ("dimension-shares", "Dimension shares by wave and role"),
    ("sources", "Themes by source type"),
    ("groups", "How groups shifted"),
    ("shifts", "Per-speaker shifts"),
    ("utterance-map", "Map of utterances"),
    ("agreement", "Agreement with human coders"),
    ("methods", "Methods"),
    ("reproducibility", "Reproducibility"),
]

EXCLUSION_WHY = {
    "interviewer": "interviewer turns are kept in utterances.parquet but not coded",
    "backchannel": "short fragments such as 'Yeah.' or 'Mm-hmm.' carry no theme",
    "annotation": "bracketed transcriber notes such as [inaudible]",
}


@dataclass
class Report:
    html: str
    figures: list[rf.Figure]
    sections: list[str]  # section ids with content
    missing: dict[str, str] = field(default_factory=dict)  # table -> command that makes it


# ---------------------------------------------------------------- loading


def load_tables(run_dir: Path) -> tuple[dict[str, pd.DataFrame], dict]:
    """Every table the report can use that exists in the run directory, and the manifest."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError("run directory not found", run_dir)
    if not table_path(run_dir, "utterances").exists() and not (run_dir / "manifest.json").is_file():
        raise InputError(
            "not a run directory (no utterances.parquet, no manifest.json); "
            "run `themeshift segment TRANSCRIPTS --out RUN` first",
            run_dir,
        )
    tables: dict[str, pd.DataFrame] = {}
    stale: dict[str, str] = {}
    for name in REPORTED:
        if table_path(run_dir, name).exists():
            if why := stale_reason(run_dir, name):  # left out, and named in the page, never mixed in
                stale[name] = why
                continue
            if name == "embeddings":  # only the ids: the map reads the vectors of the utterances it lays out
                tables[name] = read_table(run_dir, name, check=False, columns=["utterance_id"])
                continue
            tables[name] = read_table(run_dir, name, check=False).to_pandas()
    manifest = read_run_manifest(run_dir)
    manifest["_stale_tables"] = stale
    return tables, manifest


def project_2d(vectors: np.ndarray, method: str, seed: int, neighbors: int) -> np.ndarray:
    """Seeded 2-D layout of the embeddings. UMAP with PCA initialisation is bit-identical across
    runs (spectral initialisation is not); PCA is instant but overlaps more."""
    if len(vectors) < 3:
        return np.zeros((len(vectors), 2))
    if method == "pca" or len(vectors) <= neighbors + 1:
        from sklearn.decomposition import PCA

        out = PCA(n_components=2, random_state=seed).fit_transform(vectors)
    else:  # umap (config.py allows only these two)
        out = fit_umap(np.asarray(vectors, dtype=np.float32), 2, neighbors, 0.1, "pca", seed)
    return np.asarray(out, dtype=np.float64)


# ---------------------------------------------------------------- sections


def _findings(c: ReportContext) -> str:
    """What the run found, in plain sentences with their numbers, each linking to its evidence below:
    the same findings `themeshift run` prints at its end (pipeline.findings)."""
    f = findings_from(c.t, c.manifest)
    names = c.dimension_names

    def evidence(anchor: str, text: str) -> str:
        return f' <a class="evidence" href="#{anchor}">{esc(text)}</a>'

    items = []
    if f["codes"]:
        codes = "; ".join(
            f"“{esc(x['label'])}” ({x['size']:,} utterances, {esc(names.get(x['dimension'], x['dimension']))})"
            for x in f["codes"]
        )
        items.append(f"The largest first-order codes: {codes}." + evidence("data-structure", "Data structure"))
    if f["data_structure"]:
        parts = "; ".join(
            f"{esc(d['dimension'])}: {d['concepts']} concepts from {d['codes']} codes ({d['utterances']:,} utterances)"
            for d in f["data_structure"]
        )
        items.append(f"Mapped onto the framework: {parts}." + evidence("data-structure", "Data structure"))
    if f["shares"]:
        shares = pd.DataFrame(f["shares"])
        for group, rows in shares.groupby("group", sort=True):
            waves = "; ".join(
                f"wave {w}: "
                + ", ".join(f"{esc(names.get(r.dimension, r.dimension))} {100 * r.share:.0f}%" for r in g.itertuples())
                for w, g in rows.groupby("wave", sort=True)
            )
            items.append(
                f"{esc(group)}, share of mapped talk by dimension: {waves}." + evidence("dimension-shares", "Shares")
            )
    for line in f["groups"]:
        items.append(esc(line) + evidence("groups", "How groups shifted"))
    for x in f["largest_changes"]:
        q = "" if x["q_value"] is None else f", q = {x['q_value']:.3f}"
        items.append(
            f"Among the largest individual changes: {esc(x['speaker_id'])} ({esc(x['group'])}), wave {x['wave_from']} "
            f"→ {x['wave_to']}, {esc(names.get(x['dimension'], x['dimension']))} {100 * x['change']:+.1f} points "
            f"({c.s.shift.ci_level:.0%} interval {100 * x['ci_low']:+.1f} to {100 * x['ci_high']:+.1f}{q})."
            + evidence("shifts", "Per-speaker shifts")
        )
    for a in f["agreement"]:
        items.append(
            f"Agreement with the coders' consensus ({esc(a['level'])}): Cohen's κ {a['kappa']:.2f} "
            f"({a['ci_low']:.2f} to {a['ci_high']:.2f}, n = {a['n']:,})." + evidence("agreement", "Agreement")
        )
    if not items:
        c.empty.add("findings")
        return "<p>No findings yet: the run holds no mapped codes, shifts or agreement.</p>"
    out = '<ul class="findings">' + "".join(f"<li>{x}</li>" for x in items) + "</ul>"
    if f["caveats"]:
        out += (
            '<h3>Caveats</h3><p>What limits these conclusions, as the stages recorded it:</p><ul class="caveats">'
            + "".join(f"<li>{esc(x)}</li>" for x in f["caveats"])
            + "</ul>"
        )
    return out


def _overview(c: ReportContext) -> str:
    if c.need("utterances"):
        c.empty.add("overview")
        return missing_note(["utterances"], "No utterances: nothing to report.")
    u = c.t["utterances"]
    interviews = c.t.get("interviews")
    n_interviews = len(interviews) if interviews is not None else u["interview_id"].nunique()
    talk = u[~u["is_interviewer"]]
    roles = talk.groupby(talk["speaker_role"].fillna("(no role)"))["speaker_id"].nunique()
    waves = u.groupby(u["wave"].astype("Int64").astype(str).replace("<NA>", "none"))["interview_id"].nunique()
    coded = int(u["coded"].sum())
    facts = [
        ("Interviews", f"{n_interviews:,}"),
        ("Interviewees", f"{talk['speaker_id'].nunique():,} ({', '.join(f'{n} {r}' for r, n in roles.items())})"),
        ("Interviewers", f"{u.loc[u['is_interviewer'], 'speaker_id'].nunique():,}"),
        (
            "Waves",
            ", ".join(
                f"wave {w}: {n} interviews" if w != "none" else f"no wave: {n} interviews" for w, n in waves.items()
            ),
        ),
        ("Utterances", f"{len(u):,} units, {coded:,} coded"),
    ]
    out = ['<dl class="facts">' + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in facts) + "</dl>"]

    grp = u.assign(role=u["speaker_role"].fillna("(no role)"), w=u["wave"].astype("Int64"))
    by = grp.groupby(["role", "w"], dropna=False).agg(
        speakers=("speaker_id", "nunique"),
        interviews=("interview_id", "nunique"),
        units=("utterance_id", "size"),
        coded=("coded", "sum"),
    )
    rows = [
        [role, wave_label(w), int(r.speakers), int(r.interviews), int(r.units), int(r.coded)]
        for (role, w), r in by.iterrows()
    ]
    out.append(
        "<h3>Speakers and utterances by role and wave</h3>"
        + html_table(
            [
                "speaker_role",
                "wave",
                ("speakers", "speaker_id (distinct)"),
                ("interviews", "interview_id (distinct)"),
                ("units", "utterance_id (count)"),
                ("coded units", "coded (count)"),
            ],
            rows,
        )
    )

    # every unit that is not coded, or drops out later, and why
    excl = u.loc[~u["coded"], "exclusion_reason"].fillna("not coded").value_counts().sort_index()
    ex_rows = [[f"not coded: {r}", int(n), EXCLUSION_WHY.get(r, "")] for r, n in excl.items()]
    if "assignments" in c.t:
        a = c.t["assignments"]
        for reason, n in a.loc[a["code_id"] < 0, "reason"].fillna("unassigned").value_counts().sort_index().items():
            ex_rows.append(
                [
                    f"coded, no first-order code: {reason}",
                    int(n),
                    "no candidate code fits it; still in the dimension shares and shifts",
                ]
            )
    if "utterance_dimensions" in c.t:
        ud = c.t["utterance_dimensions"]
        n_unmapped = int((~ud.loc[ud["is_argmax"], "mapped"]).sum())
        kept = c.s.shift.include_unmapped
        ex_rows.append(
            [
                "coded, not mapped",
                n_unmapped,
                "no framework text close enough (map.min_similarity), or dimension evidence too weak or "
                "ambiguous (map.utterance_threshold, utterance_margin); "
                + ("its probabilities still count in shares" if kept else "left out of shares and shifts"),
            ]
        )
    out.append(
        "<h3>What was excluded and why</h3>"
        + html_table(
            [("units", "exclusion_reason, reason"), ("count", "utterance_id (count)"), ("why", "explanation")],
            ex_rows,
            sortable=False,
        )
    )

    rej = c.t.get("rejected")
    if rej is not None and len(rej):
        out.append(
            f"<h3>Files rejected ({len(rej)})</h3>"
            + html_table(
                [("file", "source_file"), "line", "reason"],
                [[r.source_file, r.line, r.reason] for r in rej.itertuples()],
            )
        )
    else:
        out.append("<p>No transcript file was rejected.</p>")

    sp = talk.assign(w=talk["wave"].astype("Int64")).groupby(["speaker_id", "w"], dropna=False)["coded"].sum()
    role_of = talk.groupby("speaker_id")["speaker_role"].first()
    wave_list = sorted({int(w) for w in talk["wave"].dropna()})
    sp_rows = []
    for sid in sorted(talk["speaker_id"].unique()):
        s = sp.loc[sid]
        sp_rows.append([sid, role_of.get(sid)] + [int(s.get(w, 0)) for w in wave_list] + [int(s.sum())])
    out.append(
        f"<details><summary>Coded utterances per interviewee ({len(sp_rows)})</summary>"
        + html_table(
            ["speaker_id", "speaker_role"]
            + [(f"wave {w}", f"coded (count, wave {w})") for w in wave_list]
            + [("total", "coded (count)")],
            sp_rows,
        )
        + "</details>"
    )
    return "".join(out)


QUOTE_MIN_WORDS = 6  # an exemplar quote says something when it has this many words


def _words(text) -> int:
    return len(str(text).split())


def _informative_first(texts: list[str]) -> list[str]:
    """The same texts, those of QUOTE_MIN_WORDS words or more first (each part in its given order)."""
    return sorted(texts, key=lambda t: _words(t) < QUOTE_MIN_WORDS)


def _code_quotes(c: ReportContext, limit: int) -> dict[int, list[str]]:
    """Per code, its c.s.quotes most typical utterances that say something: the exemplars (most
    representative first) of QUOTE_MIN_WORDS words or more, then the code's other utterances of that
    length by how firmly they belong to it, and only when the code has too few such utterances its
    shorter exemplars. A code of 150 one-word answers and 40 sentences shows sentences."""
    if not c.has("codes", "utterances"):
        return {}
    u = c.t["utterances"]
    texts = dict(zip(u["utterance_id"], u["text"]))
    n = c.s.quotes
    others: dict[int, list[str]] = {}
    if "assignments" in c.t:
        a = c.t["assignments"]
        a = a[(a["code_id"] >= 0) & a["utterance_id"].isin(texts.keys())]
        a = a[[_words(texts[x]) >= QUOTE_MIN_WORDS for x in a["utterance_id"]]]
        prob = a["probability"] if "probability" in a else pd.Series(0.0, index=a.index)
        a = a.assign(p=prob.fillna(0.0)).sort_values(["code_id", "p", "utterance_id"], ascending=[True, False, True])
        k = n + max([len(x) for x in c.t["codes"]["exemplar_ids"]] + [0])  # enough beside the exemplars
        for cid, ids in a.groupby("code_id", sort=False)["utterance_id"]:
            others[int(cid)] = ids.head(k).tolist()
    out = {}
    for cid, ex in zip(c.t["codes"]["code_id"], c.t["codes"]["exemplar_ids"]):
        ex = [x for x in list(ex) if x in texts]
        long = [x for x in ex if _words(texts[x]) >= QUOTE_MIN_WORDS]
        more = [x for x in others.get(int(cid), []) if x not in long]
        short = [x for x in ex if x not in long]
        out[int(cid)] = [shorten_quote(texts[x], limit) for x in (long + more + short)[:n]]
    return out


def _quotes_html(quotes: list[str], code=None) -> str:
    data = "" if is_missing(code) else f' data-code="{int(code)}"'
    return f'<div class="quotes"{data}>' + "".join(f'<q class="quote">{esc(q)}</q>' for q in quotes) + "</div>"


def _data_structure(c: ReportContext) -> str:
    limit = c.s.quote_chars
    quotes = _code_quotes(c, limit)
    if "data_structure" not in c.t:
        gone = c.need("data_structure")
        if "codes" not in c.t:
            c.empty.add("data-structure")
            return missing_note(gone + c.need("codes"), "No codes and no data structure.")
        codes = c.t["codes"].sort_values(["size", "code_id"], ascending=[False, True])
        rows = [
            [int(r.code_id), r.label, int(r.size), Raw(_quotes_html(quotes.get(int(r.code_id), []), r.code_id))]
            for r in codes.itertuples()
        ]
        return missing_note(gone, "Codes are not yet mapped onto the framework; first-order codes only.") + html_table(
            ["code_id", ("first-order code", "label"), ("utterances", "size"), ("exemplar quotes", "exemplar_ids")],
            rows,
        )
    ds = c.t["data_structure"]

    def first_order(r) -> str:
        if r.status == "empty":
            return '<td class="empty">(no code mapped)</td>'
        qs = quotes.get(int(r.code_id)) if not is_missing(r.code_id) else None
        if qs is None:
            qs = [shorten_quote(q, limit) for q in _informative_first(list(r.quotes))[: c.s.quotes]]
        who = ' <span class="tag">researcher</span>' if r.source == "human" else ""
        return (
            f'<td><span class="code">{esc(r.first_order)}</span> <span class="n">n={int(r.size)}, '
            f"p={r.probability:.2f}</span>{who}{_quotes_html(qs, r.code_id)}</td>"
        )

    mapped = ds[ds["status"] != "unmapped"]
    dim_span = mapped.groupby("dimension", sort=False).size()
    con_span = mapped.groupby("concept_id", sort=False).size()
    body, last_d, last_c = [], None, None
    for r in mapped.itertuples():
        cells = first_order(r)
        if r.concept_id != last_c:
            cells += f'<td rowspan="{con_span[r.concept_id]}" class="concept">{esc(r.second_order)}</td>'
        if r.dimension != last_d:
            cells += f'<td rowspan="{dim_span[r.dimension]}" class="dimension">{esc(r.dimension_name)}</td>'
        last_c, last_d = r.concept_id, r.dimension
        body.append(f"<tr>{cells}</tr>")
    out = [
        '<div class="table-wrap"><table class="gioia"><thead><tr><th scope="col" title="first_order, quotes">'
        'First-order codes (exemplar quotes)</th><th scope="col" title="second_order">Second-order concepts</th>'
        '<th scope="col" title="dimension_name">Aggregate dimensions'
        f"</th></tr></thead><tbody>{''.join(body)}</tbody></table></div>"
    ]
    un = ds[ds["status"] == "unmapped"]
    if len(un):
        rows = [
            [
                int(r.code_id),
                r.first_order,
                int(r.size),
                r.probability,
                r.fingerprint,
                Raw(
                    _quotes_html(
                        quotes.get(
                            int(r.code_id), [shorten_quote(q, limit) for q in _informative_first(list(r.quotes))]
                        ),
                        r.code_id,
                    )
                ),
            ]
            for r in un.itertuples()
        ]
        out.append(
            f"<h3>Unmapped candidate codes ({len(un)})</h3><p>These fit no concept clearly enough. "
            "To map one by hand, add its fingerprint and a concept to <code>overrides.csv</code> in the run "
            "directory and re-run <code>themeshift map RUN</code>.</p>"
            + html_table(
                [
                    "code_id",
                    ("first-order code", "first_order"),
                    ("utterances", "size"),
                    ("best p", "probability"),
                    "fingerprint",
                    ("exemplar quotes", "quotes"),
                ],
                rows,
            )
        )
    return "".join(out)


def _dimension_shares(c: ReportContext) -> str:
    caption = (
        "Mean share of each aggregate dimension in a speaker's talk (each speaker counts once), "
        "with the bootstrap interval over speakers."
    )
    note = ""
    if "group_trajectory" in c.t:
        g = c.t["group_trajectory"]
        values = {(r.group, int(r.wave), r.dimension): (r.mean_share, r.ci_low, r.ci_high) for r in g.itertuples()}
        rows = [
            [
                r.group,
                int(r.wave),
                r.dimension,
                int(r.n_speakers),
                int(r.n_utterances),
                r.mean_share,
                r.ci_low,
                r.ci_high,
                r.pooled_share,
            ]
            for r in g.itertuples()
        ]
        columns = [
            "group",
            "wave",
            "dimension",
            "speakers",
            "utterances",
            "mean_share",
            "ci_low",
            "ci_high",
            "pooled_share",
        ]
        groups = ["all"] + sorted(x for x in g["group"].unique() if x != "all")
    else:
        gone = c.need("group_trajectory")
        if not c.has("utterance_dimensions", "utterances"):
            c.empty.add("dimension-shares")
            return missing_note(gone + c.need("utterance_dimensions"), "No dimension probabilities yet.")
        note = missing_note(gone, "Shares below are pooled over utterances, without intervals.")
        caption = "Share of each aggregate dimension, pooled over the group's utterances (no intervals)."
        u = c.t["utterances"][["utterance_id", "speaker_role", "wave"]]
        d = c.t["utterance_dimensions"].merge(u, on="utterance_id").dropna(subset=["wave"])
        parts = [d.assign(group="all"), d.assign(group=d["speaker_role"].fillna("(no role)"))]
        pooled = pd.concat(parts).groupby(["group", "wave", "dimension"])["probability"].agg(["mean", "size"])
        values = {(gname, int(w), dim): (m, None, None) for (gname, w, dim), (m, _) in pooled.iterrows()}
        rows = [[gname, int(w), dim, int(n), m] for (gname, w, dim), (m, n) in pooled.iterrows()]
        columns = ["group", "wave", "dimension", "utterances", "pooled_share"]
        groups = ["all"] + sorted({k[0] for k in values} - {"all"})
    waves = sorted({k[1] for k in values})
    svg = rf.trajectory_chart(
        groups, waves, c.dimensions, values, c.dimension_names, "Dimension shares per wave, all speakers and by role"
    )
    fig = rf.Figure("dimension_shares", "Dimension shares per wave and role", svg, columns, rows, caption)
    c.figures.append(fig)
    return note + figure_html(fig)


_SOURCE_ORDER = {"interview": 0, "fieldnote": 1, "document": 2}


def _source_themes(c: ReportContext) -> str:
    """Triangulation: each dimension and concept next to the source types it appears in."""
    if c.need("source_themes"):
        c.empty.add("sources")
        return missing_note(["source_themes"], "No themes by source type yet.")
    t = c.t["source_themes"]
    types = sorted(t["source_type"].unique(), key=lambda s: (_SOURCE_ORDER.get(s, 9), s))
    sources = t.drop_duplicates("source_type").set_index("source_type")["n_type_sources"].to_dict()
    note = (
        ""
        if len(types) > 1
        else "<p>Every source is an interview. Field notes and documents (PDF, Word, text; see the README) "
        "are compared here side by side with the interviews.</p>"
    )
    out = [
        note,
        f"<p>Share of each source type's coded units whose most probable theme this is, and in how many "
        f"of its sources the theme appears ({', '.join(f'{sources[s]} {s}s' for s in types)}).</p>",
    ]
    for level, name in (("dimension", "Aggregate dimensions"), ("second_order", "Second-order concepts")):
        part = t[t["level"] == level]
        if part.empty:
            continue
        cell = {(r.theme, r.source_type): (r.share, r.n_sources) for r in part.itertuples()}
        themes = sorted(part["theme"].unique(), key=lambda x: (c.dimensions.index(x) if x in c.dimensions else 99, x))
        columns = [name] + [f"{s} share" for s in types] + [f"{s} sources" for s in types]
        rows = [
            [c.dimension_names.get(th, th)]
            + [cell.get((th, s), (0.0, 0))[0] for s in types]
            + [cell.get((th, s), (0.0, 0))[1] for s in types]
            for th in themes
        ]
        shown: list[Col] = [(name, "theme")]
        shown += [(f"{s} share", f"share (source_type {s})") for s in types]
        shown += [(f"{s} sources", f"n_sources (source_type {s})") for s in types]
        out.append(html_table(shown, rows) + csv_link(f"source_themes_{level}", columns, rows))
    return "".join(out)


def _pts(x, signed: bool = True) -> str:
    return "–" if is_missing(x) else (f"{100 * x:+.1f}" if signed else f"{100 * x:.1f}")


def _pair_label(r) -> str:
    return "first → last" if is_missing(r.wave_from) else f"{int(r.wave_from)} → {int(r.wave_to)}"


def _interval_cell(lo, hi) -> Raw:
    return Raw("–", "") if is_missing(lo) else Raw(f"{_pts(lo)} to {_pts(hi)}", float(lo))


def _groups(c: ReportContext) -> str:
    """Group findings first: each group's mean change per dimension with its interval, the
    contrasts between groups, and where the talk moved (concepts and codes) with quotes."""

    gone = c.need("group_changes")
    if gone:
        c.empty.add("groups")
        return missing_note(gone, "No group estimates yet.")
    g, alpha = c.t["group_changes"], c.s.shift.alpha
    dims = c.t.get("shift_dimensions", pd.DataFrame())
    out = [
        "<p><strong>Findings</strong> (estimates first; p-values beside them, with the method):</p><ul>"
        + "".join(f"<li>{esc(line)}</li>" for line in headline(g, dims, alpha))
        + "</ul>",
        "<p>A group's change: the precision-weighted mean of its speakers' changes in a dimension's share, in "
        f"points, with its {c.s.shift.ci_level:.0%} interval, p-value and q-value (corrected for testing many "
        f"themes); <em>at α = {alpha:g}</em> calls a change significant only when its q-value is below "
        'α. How it is tested: <a href="#methods">Methods</a>.</p>',
    ]
    d = g[g["level"].isin(["dimension", "profile"])]
    rows = [
        [
            r.group,
            _pair_label(r),
            "whole profile" if r.level == "profile" else r.theme,
            int(r.n_speakers),
            Raw("–", "")
            if is_missing(r.share_from)
            else Raw(f"{_pts(r.share_from, False)} → {_pts(r.share_to, False)}", r.share_from),
            Raw(_pts(r.change, r.level != "profile"), "" if is_missing(r.change) else r.change),
            _interval_cell(r.ci_low, r.ci_high),
            r.p_value,
            r.q_value,
            verdict(r.p_value, r.q_value, alpha),
            value_label(r.method),
            Raw(
                "–"
                if is_missing(r.tau2)
                else f"τ² {float(r.tau2) * 1e4:.1f}" + ("" if is_missing(r.i2) else f", I² {float(r.i2):.0%}"),
                "" if is_missing(r.tau2) else r.tau2,
            ),
            "–" if is_missing(r.n_rising) else f"{int(r.n_rising)} up, {int(r.n_falling)} down",
        ]
        for r in d.itertuples()
    ]
    out.append(
        html_table(
            [
                "group",
                ("waves", "wave_from, wave_to"),
                ("dimension", "theme"),
                "n_speakers",
                ("share (points)", "share_from, share_to"),
                ("change (points)", "change"),
                ("interval", "ci_low, ci_high"),
                "p_value",
                "q_value",
                (f"at α = {alpha:g}", "p_value, q_value"),
                "method",
                ("spread (points²)", "tau2, i2"),
                ("speakers up / down", "n_rising, n_falling"),
            ],
            rows,
            cls="group-table",
        )
    )
    arrows = d[(d["level"] == "dimension") & d["ci_low"].notna()]
    if len(arrows):
        labels = list(dict.fromkeys(f"{r.group} {_pair_label(r)}" for r in arrows.itertuples()))
        values = {
            (f"{r.group} {_pair_label(r)}", r.theme): (r.share_from, r.share_to, r.ci_low, r.ci_high)
            for r in arrows.itertuples()
        }
        cols = [
            "group",
            "wave_from",
            "wave_to",
            "is_first_last",
            "theme",
            "n_speakers",
            "share_from",
            "share_to",
            "change",
            "ci_low",
            "ci_high",
            "p_value",
            "q_value",
        ]
        fig = rf.Figure(
            "group_changes",
            "Mean change per group",
            rf.change_arrow_chart(
                labels, c.dimensions, values, "Each group's mean share per dimension, earlier wave to later wave"
            ),
            cols,
            [[getattr(r, k) for k in cols] for r in arrows.itertuples()],
            "Arrow: the group's (precision-weighted) share in the earlier wave to the later one; shaded band: the "
            f"{c.s.shift.ci_level:.0%} interval of the mean change.",
        )
        c.figures.append(fig)
        out.append(figure_html(fig))
    if "group_contrasts" in c.t and len(c.t["group_contrasts"]):
        ct = c.t["group_contrasts"]
        rows = [
            [
                f"{r.group_a} vs {r.group_b}",
                _pair_label(r),
                Raw(f"{esc(r.theme)} <small>({esc(VALUE_LABELS.get(r.level, r.level))})</small>"),
                f"{int(r.n_a)} + {int(r.n_b)}",
                Raw(f"{_pts(r.change_a)}; {_pts(r.change_b)}"),
                Raw(_pts(r.difference), "" if is_missing(r.difference) else r.difference),
                _interval_cell(r.ci_low, r.ci_high),
                r.p_value,
                r.q_value,
                verdict(r.p_value, r.q_value, alpha),
                value_label(r.method),
            ]
            for r in ct.itertuples()
        ]
        out.append(
            "<h3>Did the groups shift differently?</h3><p>The difference between two groups' mean changes, "
            "with a Welch interval.</p>"
            + html_table(
                [
                    ("groups", "group_a, group_b"),
                    ("waves", "wave_from, wave_to"),
                    ("theme (level)", "theme, level"),
                    ("speakers", "n_a, n_b"),
                    ("changes a; b (points)", "change_a, change_b"),
                    ("difference (points)", "difference"),
                    ("interval", "ci_low, ci_high"),
                    "p_value",
                    "q_value",
                    (f"at α = {alpha:g}", "p_value, q_value"),
                    "method",
                ],
                rows,
                cls="contrast-table",
            )
        )
    out.append(_movers(c, g))
    return "".join(out)


def _movers(c: ReportContext, g: pd.DataFrame, top: int = 3) -> str:
    """The concepts that grew and shrank most per group and wave pair, with a quote from each wave."""
    m = g[(g["level"] == "concept") & g["change"].notna()]
    if m.empty:
        return ""
    quotes = _concept_quotes(c)
    rows = []
    for (grp, wf, wt), r in m.groupby(["group", m["wave_from"].fillna(-1), m["wave_to"].fillna(-1)], sort=True):
        r = r.reindex(r["change"].abs().sort_values(ascending=False).index).head(top)
        for x in r.itertuples():
            q_from = quotes.get((grp, x.theme, None if wf < 0 else int(wf)), "")
            q_to = quotes.get((grp, x.theme, None if wt < 0 else int(wt)), "")
            rows.append(
                [
                    grp,
                    _pair_label(x),
                    x.theme,
                    Raw("–", "")
                    if is_missing(x.share_from)
                    else Raw(f"{_pts(x.share_from, False)} → {_pts(x.share_to, False)}", x.share_from),
                    Raw(_pts(x.change), x.change),
                    _interval_cell(x.ci_low, x.ci_high),
                    x.p_value,
                    x.q_value,
                    verdict(x.p_value, x.q_value, c.s.shift.alpha),
                    Raw(esc(shorten_quote(q_from, 160)) if q_from else "–"),
                    Raw(esc(shorten_quote(q_to, 160)) if q_to else "–"),
                ]
            )
    figure = _movers_figure(c, m)
    return (
        "<h3>Where the talk moved</h3>"
        + figure
        + "<p>The second-order concepts whose share changed most in each group "
        "(an utterance counts for its most probable concept), with a typical sentence from each wave. Per "
        "speaker and per first-order code: <code>shift_codes_change.parquet</code>.</p>"
        + html_table(
            [
                "group",
                ("waves", "wave_from, wave_to"),
                ("concept", "theme"),
                ("share (points)", "share_from, share_to"),
                ("change (points)", "change"),
                ("interval", "ci_low, ci_high"),
                "p_value",
                "q_value",
                (f"at α = {c.s.shift.alpha:g}", "p_value, q_value"),
                ("quote, earlier wave", "text (utterances)"),
                ("quote, later wave", "text (utterances)"),
            ],
            rows,
            cls="movers-table",
        )
    )


def _movers_figure(c: ReportContext, m: pd.DataFrame, most: int = 8) -> str:
    """A slope panel per group and wave pair: each concept's share in the earlier and the later wave."""
    m = m[m["ci_low"].notna()]
    if m.empty:
        return ""
    panel = m["group"] + " " + [_pair_label(r) for r in m.itertuples()]
    m = m.assign(panel=panel)
    ranked = m.assign(size=m["change"].abs()).sort_values(["size", "theme"], ascending=[False, True])
    concepts = list(dict.fromkeys(ranked["theme"]))[:most]
    short = {t: t if len(t) <= 38 else t[:36] + "…" for t in concepts}
    m = m[m["theme"].isin(concepts)]
    values = {(short[r.theme], r.panel): (r.share_from, r.share_to, r.ci_low, r.ci_high) for r in m.itertuples()}
    cols = [
        "group",
        "wave_from",
        "wave_to",
        "is_first_last",
        "theme",
        "n_speakers",
        "share_from",
        "share_to",
        "change",
        "ci_low",
        "ci_high",
        "p_value",
        "q_value",
    ]
    fig = rf.Figure(
        "group_movers",
        "Where each group's talk moved",
        rf.change_arrow_chart(
            [short[t] for t in concepts],
            list(dict.fromkeys(m["panel"])),
            values,
            "Share of each concept per group, earlier wave to later wave",
            label_w=260,
        ),
        cols,
        [[getattr(r, k) for k in cols] for r in m.itertuples()],
        f"The {len(concepts)} concepts whose group share changed most; arrow: earlier to later wave; shaded band: "
        "the interval of the group's mean change.",
    )
    c.figures.append(fig)
    return figure_html(fig)


def _concept_quotes(c: ReportContext) -> dict:
    """(group, concept, wave) -> the most confidently labelled utterance of the group's speakers."""
    if not c.has("utterances", "utterance_dimensions", "shift_codes_change"):
        return {}
    group = c.t["shift_codes_change"].drop_duplicates("speaker_id").set_index("speaker_id")["group"]
    u = c.t["utterances"][["utterance_id", "speaker_id", "wave", "text"]]
    d = c.t["utterance_dimensions"]
    d = d[d["is_argmax"]][["utterance_id", "second_order", "probability"]].merge(u, on="utterance_id")
    d = d[d["text"].str.split().str.len() >= 6].sort_values(["probability", "utterance_id"], ascending=[False, True])
    out: dict[tuple, str] = {}
    for r in d.itertuples():
        if is_missing(r.wave):
            continue
        for grp in ("all", group.get(r.speaker_id)):
            out.setdefault((grp, r.second_order, int(r.wave)), r.text)
    return out


def _shift_label(r) -> str:
    role = f" ({r.speaker_role})" if not is_missing(r.speaker_role) else ""
    return f"{r.speaker_id}{role} w{int(r.wave_from)}→{int(r.wave_to)}"


def _p_cell(p, method) -> Raw | None:
    if is_missing(p):
        return None
    short = {"permutation": "perm.", "moderated_t": "mod. t"}.get(method, "")
    return Raw(f"{p:.3f}" + (f" <small>({short})</small>" if short else ""), p)


def _shift_evidence_note(s: pd.DataFrame) -> str:
    weak = s[s["status"].isin(["no_evidence", "too_few_units"])] if "status" in s else s.iloc[:0]
    if weak.empty:
        return ""
    counts = weak["status"].value_counts()
    parts = []
    if counts.get("no_evidence"):
        parts.append(
            f"{counts['no_evidence']} speaker pair(s) have <strong>no evidence</strong>: most of their units "
            "were left unmapped or their probabilities are near uniform, so no p-value is given and their "
            "distances describe noise, not a finding"
        )
    if counts.get("too_few_units"):
        parts.append(
            f"{counts['too_few_units']} pair(s) have too few units for any p-value to fall below alpha "
            "(short interviews, or two or three interviews in all)"
        )
    return '<div class="missing"><p>' + "; ".join(parts) + ".</p></div>"


def _question_note(s: pd.DataFrame) -> str:
    """How much of the shifts goes with the interview guide having changed between waves."""
    if "jsd_matched" not in s or s["jsd_matched"].notna().sum() == 0:
        return ""
    m = s[s["jsd_matched"].notna() & s["jsd"].notna() & (s["jsd"] > 0)]
    kept = (m["jsd_matched"] / m["jsd"]).median()
    share = (m["n_matched_from"] + m["n_matched_to"]).sum() / (m["n_from"] + m["n_to"]).sum()
    return (
        f"<p>Topic control: {share:.0%} of the scored answers respond to a question asked in both waves (the "
        f"interviewer's question embedded, matched across waves). Over those answers alone the median speaker "
        f"keeps {kept:.0%} of the raw magnitude; the rest goes with the questions having changed "
        f"({len(m)} speaker pair(s); column <em>JSD, matched questions</em>).</p>"
    )


def _shifts(c: ReportContext) -> str:
    gone = c.need("shifts")
    if gone:
        c.empty.add("shifts")
        return missing_note(gone, "No shift scores yet.")
    s = c.t["shifts"]
    scored = s[s["jsd"].notna()].sort_values(["jsd", "speaker_id"], ascending=[False, True])
    alpha = c.s.shift.alpha
    out = [
        "<p>Magnitude: the Jensen-Shannon distance between a speaker's dimension profiles in two waves (0 = the "
        "same mix of dimensions, 1 = no overlap), with its interval and the distance that shuffling alone gives "
        "(noise). Direction: the dimension whose share fell most → the one that rose most. A change is called "
        f"significant when its q-value (the p-value corrected for testing many speakers) is below {alpha:g}. "
        'How it is tested: <a href="#methods">Methods</a>.</p>',
        _shift_evidence_note(s),
        _question_note(s),
    ]
    if len(scored):
        dumbbell = [
            {
                "label": _shift_label(r),
                "value": r.jsd,
                "lo": r.jsd_ci_low,
                "hi": r.jsd_ci_high,
                "noise": r.jsd_noise,
                "p": r.p_value,
                "significant": significant(r.p_value, getattr(r, "q_value", None), alpha),
                "direction": (r.direction or "").replace("->", "→"),
            }
            for r in scored.itertuples()
        ]
        cols = [
            "speaker_id",
            "speaker_role",
            "wave_from",
            "wave_to",
            "jsd",
            "jsd_ci_low",
            "jsd_ci_high",
            "jsd_noise",
            "p_value",
            "significant",
            "direction",
        ]
        fig = rf.Figure(
            "shift_magnitude",
            "Shift magnitude per speaker",
            rf.shift_dumbbell_chart(
                dumbbell,
                "Per-speaker shift: Jensen-Shannon distance with interval and noise level",
                f"significant (q < {alpha:g})",
            ),
            cols,
            [[getattr(r, k) for k in cols] for r in scored.itertuples()],
            f"Filled dot: distance, bar: {c.s.shift.ci_level:.0%} bootstrap interval, open dot: noise level; "
            f"dark = significant after correction for testing many speakers (q < {alpha:g}).",
        )
        c.figures.append(fig)
        out.append(figure_html(fig))
    if "shift_dimensions" in c.t and len(scored):
        sd = c.t["shift_dimensions"]
        order = {(r.speaker_id, int(r.wave_from), int(r.wave_to)): _shift_label(r) for r in scored.itertuples()}
        sd = sd[[(a, int(b), int(d)) in order for a, b, d in zip(sd["speaker_id"], sd["wave_from"], sd["wave_to"])]]
        values = {
            (order[(r.speaker_id, int(r.wave_from), int(r.wave_to))], r.dimension): (
                r.share_from,
                r.share_to,
                r.change_ci_low,
                r.change_ci_high,
            )
            for r in sd.itertuples()
        }
        shrunk = (
            {
                (order[(r.speaker_id, int(r.wave_from), int(r.wave_to))], r.dimension): r.share_from + r.change_shrunk
                for r in sd.itertuples()
                if not is_missing(r.change_shrunk)
            }
            if "change_shrunk" in sd
            else {}
        )
        cols = [
            k
            for k in (
                "speaker_id",
                "speaker_role",
                "wave_from",
                "wave_to",
                "dimension",
                "share_from",
                "share_to",
                "change",
                "change_ci_low",
                "change_ci_high",
                "change_shrunk",
                "p_value",
                "q_value",
            )
            if k in sd
        ]
        fig = rf.Figure(
            "shift_directions",
            "Direction of each speaker's shift",
            rf.change_arrow_chart(
                list(order.values()),
                c.dimensions,
                values,
                "Per-speaker change in each dimension's share between waves",
                marks=shrunk,
            ),
            cols,
            [[getattr(r, k) for k in cols] for r in sd.itertuples()],
            "Arrow: from the share in the earlier wave to the share in the later one; shaded band: the interval "
            "of the change; black tick: where the arrow ends when the change is shrunk towards the speaker's "
            "group (empirical Bayes: noisy speakers move further). Rows in the order of the chart above.",
        )
        c.figures.append(fig)
        out.append(figure_html(fig))
    elif "shift_dimensions" not in c.t:
        out.append(missing_note(c.need("shift_dimensions"), "No per-dimension changes."))
    out.append(_speaker_tables(c, s))
    if "group_shifts" in c.t:
        out.append(_group_shifts(c))
    return "".join(out)


def _empty_reasons(c: ReportContext, s: pd.DataFrame) -> dict[str, str]:
    """Why a per-speaker column can be empty for every speaker pair."""
    sc = c.s.shift
    why = {}
    if "n_matched_from" in s and s["n_matched_from"].notna().any():
        most = int(np.nanmax(np.minimum(s["n_matched_from"].to_numpy(float), s["n_matched_to"].to_numpy(float))))
        why["jsd_matched"] = why["p_matched"] = (
            f"no speaker has {sc.min_utterances_per_wave} or more answers in each wave to questions asked in both "
            f"waves (at most {most}; questions match at cosine similarity {sc.question_match_similarity:g} or "
            "more), so no question-matched shift is computed"
        )
    else:
        why["jsd_matched"] = why["p_matched"] = (
            "no interviewer questions were embedded, so answers could not be matched to questions asked in both waves"
        )
    units = set(s["resample_unit"].dropna()) if "resample_unit" in s else set()
    why["p_semantic"] = why["q_semantic"] = (
        "semantic drift gets a p-value only from whole interviews, and every pair here was resampled in blocks "
        "of one interview per wave"
        if units == {"block"}
        else "no pair had units to shuffle"
    )
    why["max_change"] = "no pair has dimension shares"
    why["jsd_codes"] = why["p_codes"] = why["q_codes"] = "the run has no first-order codes (assignments)"
    return why


def _speaker_tables(c: ReportContext, s: pd.DataFrame) -> str:
    """All speaker pairs: the test of each change in one table that fits the page, further measures in a
    second one below it."""
    alpha = c.s.shift.alpha
    main, more = [], []
    for r in s.sort_values(["speaker_id", "wave_from", "wave_to"], na_position="last").itertuples():
        ci = "–" if is_missing(r.jsd_ci_low) else f"{r.jsd_ci_low:.3f}–{r.jsd_ci_high:.3f}"
        flag = r.status if r.status == "ok" else f"{r.status}: {r.reason}"
        waves = (
            "–"
            if is_missing(r.wave_from)
            else f"{int(r.wave_from)}" + ("" if is_missing(r.wave_to) else f" → {int(r.wave_to)}")
        )
        unit = getattr(r, "resample_unit", None)
        units = None if is_missing(unit) else f"{int(r.n_units_from)} + {int(r.n_units_to)} {unit}s"
        n = None if is_missing(r.n_from) else Raw(f"{int(r.n_from):,} + {int(r.n_to):,}", int(r.n_from) + int(r.n_to))
        main.append(
            [
                r.speaker_id,
                r.speaker_role,
                waves,
                n,
                units,
                r.jsd,
                Raw(esc(ci), "" if is_missing(r.jsd_ci_low) else r.jsd_ci_low),
                r.jsd_noise,
                _p_cell(r.p_value, getattr(r, "p_method", None)),
                getattr(r, "q_value", None),
                verdict(r.p_value, getattr(r, "q_value", None), alpha),
                None if is_missing(r.direction) else r.direction.replace("->", "→"),
                flag,
            ]
        )
        more.append(
            [r.speaker_id, waves, r.max_change]
            + [getattr(r, k, None) for k in ("unmapped_share", "evidence", "jsd_codes", "q_codes")]
            + [getattr(r, k, None) for k in ("jsd_matched", "p_matched", "semantic_ratio", "p_semantic")]
        )
    why = _empty_reasons(c, s)
    return (
        "<h3>All speakers</h3><p>Click a column heading to sort. <em>utterances</em>: coded units in the "
        "earlier + the later wave. <em>units</em>: what was resampled and shuffled as a whole in each wave. "
        "<em>q-value</em>: the p-value corrected for testing many speakers (Benjamini-Hochberg false discovery "
        f"rate). <em>at α = {alpha:g}</em>: significant only when the q-value is below α.</p>"
        + html_table(
            [
                "speaker_id",
                "speaker_role",
                ("waves", "wave_from, wave_to"),
                ("utterances", "n_from, n_to"),
                ("units", "n_units_from, n_units_to, resample_unit"),
                "jsd",
                ("interval", "jsd_ci_low, jsd_ci_high"),
                "jsd_noise",
                ("p-value", "p_value, p_method"),
                "q_value",
                (f"at α = {alpha:g}", "p_value, q_value"),
                "direction",
                ("status", "status, reason"),
            ],
            main,
            cls="shift-table",
            why_empty=why,
        )
        + "<details><summary>Further measures per speaker</summary><p><em>largest rise</em>: the largest "
        "rise of one dimension's share. <em>unmapped share</em> and <em>evidence</em>: how much of the talk "
        "the map could place (evidence 0 = every unit uniform, 1 = every unit certain). <em>JSD over codes</em>: "
        "the magnitude over first-order codes instead of dimensions. <em>JSD, matched questions</em>: the "
        "magnitude over answers to questions asked in both waves. <em>semantic ratio</em>: how far the "
        "speaker's mean sentence embedding moved between waves, over how far it moves when the same units are "
        "shuffled between the waves (about 1 = no change); its p-value comes from the same shuffling.</p>"
        + html_table(
            [
                "speaker_id",
                ("waves", "wave_from, wave_to"),
                ("largest rise", "max_change"),
                ("unmapped share", "unmapped_share"),
                "evidence",
                ("JSD over codes", "jsd_codes"),
                ("q (codes)", "q_codes"),
                ("JSD, matched questions", "jsd_matched"),
                ("p (matched)", "p_matched"),
                "semantic_ratio",
                ("p (semantic)", "p_semantic"),
            ],
            more,
            cls="shift-more",
            why_empty=why,
        )
        + "</details>"
    )


def _group_shifts(c: ReportContext) -> str:
    """Each group's mean magnitude, semantic ratio and dimension changes, and how many of its speakers
    changed significantly, in verdict's wording."""
    alpha = c.s.shift.alpha
    g = c.t["group_shifts"]
    g = g[g["measure"].isin(["jsd", "semantic_ratio", "change"])]
    s = c.t["shifts"]
    ok = s[s["status"] == "ok"] if "status" in s else s
    q_of = {"jsd": "q_value", "jsd_codes": "q_codes", "semantic_drift": "q_semantic"}

    def flagged(r) -> str | None:
        if is_missing(r.n_significant):
            return None
        text = f"{int(r.n_significant)} with p < {alpha:g}"
        q = q_of.get(r.measure)
        if q in ok:
            who = ok if r.group == "all" else ok[ok["speaker_role"] == r.group]
            who = who[(who["wave_from"] == r.wave_from) & (who["wave_to"] == r.wave_to)]
            text += f"; {int((who[q] < alpha).sum())} significant (q < {alpha:g})"
        return text

    rows = [
        [
            r.group,
            f"{int(r.wave_from)} → {int(r.wave_to)}",
            value_label(r.measure),
            r.dimension,
            int(r.n_speakers),
            r.mean,
            Raw(f"{r.ci_low:.3f} to {r.ci_high:.3f}", r.ci_low) if not is_missing(r.ci_low) else None,
            flagged(r),
        ]
        for r in g.itertuples()
    ]
    return (
        "<h3>By group</h3><p>Each group's mean over its speakers, with a bootstrap interval over speakers, and "
        "how many of its speakers changed: with a p-value below α, and significant after the correction for "
        "testing many speakers.</p>"
        + html_table(
            [
                "group",
                ("waves", "wave_from, wave_to"),
                "measure",
                "dimension",
                "n_speakers",
                "mean",
                ("interval", "ci_low, ci_high"),
                ("speakers changed", "n_significant, q_value (shifts)"),
            ],
            rows,
            cls="group-shifts",
        )
    )


def _map_legend(labels: list[str], colours: list[str], grey: str | None) -> str:
    items = [(lab, colours[k % len(colours)]) for k, lab in enumerate(labels)] + (
        [(grey, rf.NONE_COLOUR)] if grey else []
    )
    return (
        '<ul class="legend">'
        + "".join(f'<li><span class="swatch" style="background:{col}"></span>{esc(lab)}</li>' for lab, col in items)
        + "</ul>"
    )


def _utterance_map(c: ReportContext, xy: np.ndarray | None, ids: list[str] | None) -> str:
    gone = c.need("embeddings")
    if gone or xy is None:
        c.empty.add("utterance-map")
        return missing_note(gone, "No embeddings to lay out.")
    assert ids is not None  # build_report's callers give map_ids with xy
    method = c.s.projection
    n = len(ids)
    codes = np.full(n, -1)
    code_labels: list[str] = []
    if "assignments" in c.t and "codes" in c.t:
        a = dict(zip(c.t["assignments"]["utterance_id"], c.t["assignments"]["code_id"]))
        cd = c.t["codes"].sort_values("code_id")
        index = {int(k): i for i, k in enumerate(cd["code_id"])}
        code_labels = [f"{int(k)}: {lab}" for k, lab in zip(cd["code_id"], cd["label"])]
        codes = np.array([index.get(int(a.get(u, -1)), -1) for u in ids])
    dims = np.full(n, -1)
    if "utterance_dimensions" in c.t:
        ud = c.t["utterance_dimensions"]
        top = ud[ud["is_argmax"] & ud["mapped"]]
        di: dict[str | None, int] = {d: i for i, d in enumerate(c.dimensions)}  # looked up with None too
        best = dict(zip(top["utterance_id"], top["dimension"]))
        dims = np.array([di.get(best.get(u), -1) for u in ids])
    x, y = xy[:, 0], xy[:, 1]
    how = "UMAP (cosine, seeded, PCA initialisation)" if method == "umap" else "PCA"
    dim_labels = [c.dimension_names[d] for d in c.dimensions]
    # (key, button label, colours, legend labels, colour index per point, grey's legend label)
    views: list[tuple[str, str, list[str], list[str], np.ndarray, str | None]] = []
    if code_labels:
        views.append(("code", "first-order code", rf.CODE_COLOURS, code_labels, codes, "no code"))
    if len(c.dimensions) and (dims >= 0).any():
        views.append(("dimension", "aggregate dimension", rf.DIMENSION_COLOURS, dim_labels, dims, "not mapped"))
    files = {
        f"utterance_map_by_{k}": rf.scatter_chart(x, y, idx, cols, labs, f"Utterances coloured by {label}")
        for k, label, cols, labs, idx, _ in views
    }
    if not views:
        views.append(("plain", "no colouring", [], [], dims, None))
        files = {"utterance_map_by_plain": rf.scatter_chart(x, y, dims, rf.DIMENSION_COLOURS, [], "Utterances")}
    columns = ["utterance_id", "x", "y", "code_id", "dimension"]
    code_ids = c.t["codes"].sort_values("code_id")["code_id"].tolist() if code_labels else []
    rows = [
        [
            u,
            round(float(a), 4),
            round(float(b), 4),
            int(code_ids[k]) if k >= 0 else -1,
            c.dimensions[d] if d >= 0 else None,
        ]
        for u, a, b, k, d in zip(ids, x, y, codes, dims)
    ]
    fig = rf.Figure(
        "utterance_map",
        "Map of utterances",
        next(iter(files.values())),
        columns,
        rows,
        f"Each dot is a coded utterance; nearby dots say similar things ({how} of the sentence "
        "embeddings). Grey: no code / not mapped.",
        files,
    )
    c.figures.append(fig)
    notes = [
        missing_note(c.need("codes", "assignments"), "Colouring by code unavailable.") if not code_labels else "",
        missing_note(c.need("utterance_dimensions"), "Colouring by dimension unavailable.")
        if "utterance_dimensions" not in c.t
        else "",
    ]
    # each point once, with its text; the colourings are CSS classes (c<code index>, d<dimension index>)
    u = c.t["utterances"].set_index("utterance_id") if "utterances" in c.t else pd.DataFrame()
    limit = min(c.s.quote_chars, 200)

    def point_text(uid: str) -> str:
        if uid not in u.index:
            return uid
        r = u.loc[uid]
        return f"{r['speaker_id']}, {wave_label(r['wave'])}: {shorten_quote(r['text'], limit)}"

    classes = [" ".join(([f"c{k}"] if k >= 0 else []) + ([f"d{d}"] if d >= 0 else [])) for k, d in zip(codes, dims)]
    order = np.lexsort((x, (codes >= 0).astype(int) + (dims >= 0).astype(int)))  # grey underneath
    svg = rf.map_points_svg(
        x[order],
        y[order],
        [classes[i] for i in order],
        [point_text(ids[i]) for i in order],
        {k: [cols[i % len(cols)] for i in range(len(labs))] for k, _, cols, labs, _, _ in views if k != "plain"},
        "Map of utterances; each point's text on hover or focus",
    )
    buttons = "".join(
        f'<button type="button" data-view="{k}" aria-pressed="{"true" if i == 0 else "false"}">'
        f"Colour by {esc(label)}</button>"
        for i, (k, label, *_rest) in enumerate(views)
    )
    legends = "".join(
        f'<div class="map-view" data-view="{k}"{"" if i == 0 else " hidden"}>'
        + (_map_legend(labs, cols, grey if (idx < 0).any() else None) if labs else "")
        + "</div>"
        for i, (k, _, cols, labs, idx, grey) in enumerate(views)
    )
    total = len(c.t["embeddings"]) if "embeddings" in c.t else n
    shown = f"{n:,} utterances" if n == total else f"a seeded random sample of {n:,} of {total:,} utterances"
    payload = json.dumps({"columns": columns, "rows": rows}, separators=(",", ":"), ensure_ascii=True)
    payload = payload.replace("</", "<\\/")  # nothing in the data can close the script element
    return (
        "".join(notes) + f'<figure id="fig-utterance_map"><div class="toggle" role="group" '
        f'aria-label="Colour the map by">{buttons}</div><div class="map-body"><div class="map-plot">{svg}</div>'
        f"{legends}</div>"
        '<p class="map-point" id="map-point" aria-live="polite">Point at a dot, or press Tab to reach the map and '
        "the arrow keys to move between dots, to read its utterance here.</p>"
        f"<figcaption><strong>{esc(fig.title)}.</strong> {esc(fig.caption)} {shown}.</figcaption>"
        f'<button type="button" class="download" id="map-download">Download the coordinates (CSV)</button>'
        f'<script type="application/json" id="map-data">{payload}</script></figure>'
    )


def _reading(metric: str, v) -> str:
    if is_missing(v):
        return "undefined"
    if metric == "krippendorff_alpha":
        return "reliable (≥ 0.8)" if v >= 0.8 else "tentative (≥ 0.667)" if v >= 0.667 else "unreliable (< 0.667)"
    if metric in ("cohen_kappa", "matched_kappa"):  # Landis & Koch (1977)
        for cut, word in (
            (0.8, "almost perfect"),
            (0.6, "substantial"),
            (0.4, "moderate"),
            (0.2, "fair"),
            (0.0, "slight"),
        ):
            if v > cut:
                return f"{word} (> {cut:g})"
        return "poor (≤ 0)"
    return ""


def _raters(r) -> str:
    return r.coder_a.replace("+", " + ") if is_missing(r.coder_b) else f"{r.coder_a} vs {r.coder_b}"


def _interval(r) -> Raw:
    """An agreement row's interval cell, sorting by its lower end."""
    if is_missing(r.ci_low):
        return Raw(esc("–"), "")
    return Raw(esc(f"{r.ci_low:.3f} to {r.ci_high:.3f}"), r.ci_low)


def _learned_coder(c: ReportContext) -> str:
    """How well the model learned from the coders' own coding agrees with them (learn_eval), if learn ran."""
    if "learn_eval" not in c.t:
        return ""

    e = c.t["learn_eval"]
    rec = c.manifest.get("stages", {}).get("learn", {})
    by_source = rec.get("counts", {}).get("utterances_by_source", {})
    e = e[e["metric"] == "cohen_kappa"]
    e = e.assign(machine=(e["coder_a"] == MACHINE) | (e["coder_b"] == MACHINE))
    k = e[e["evaluation"].isin(["cross-validation", "framework-similarity"])]
    k = k[k["machine"] | (k["evaluation"] == "cross-validation")]  # the coders' own figure once per level
    k = k.assign(
        order=k["level"].map({"dimension": 0, "second-order": 1}).fillna(2),
        baseline=k["evaluation"] != "cross-validation",
    ).sort_values(["order", "machine", "baseline"], kind="stable")
    rows = [
        [
            r.level,
            ("learned model" if r.evaluation == "cross-validation" else "framework similarity alone")
            if r.machine
            else "(the coders)",
            _raters(r),
            r.value,
            _interval(r),
            r.n,
        ]
        for r in k.itertuples()
    ]
    out = [
        f"<h3>The learned coder</h3><p>A model trained on the hand-coded utterances (it learns "
        f"{esc(str(rec.get('level', '?')).replace('_', '-'))} codes from feature set "
        f"<code>{esc(rec.get('feature_set', '?'))}</code>) coded the rest: "
        f"{by_source.get('human', 0):,} utterances keep their human codes, {by_source.get('learned', 0):,} were "
        "coded by the model. Cross-validated by interview, so the model is scored only on interviews it never saw; "
        "the coders' agreement with each other is the ceiling to read it against.</p>",
        html_table(
            [
                "level",
                ("machine", "evaluation"),
                ("raters", "coder_a, coder_b"),
                ("Cohen's κ", "value (metric cohen_kappa)"),
                ("interval", "ci_low, ci_high"),
                "n",
            ],
            rows,
        ),
    ]
    counts = rec.get("counts", {})
    if counts.get("encoder_reason"):
        kept = (
            "a sentence model fine-tuned on the coded units"
            if counts.get("encoder") == "finetune"
            else "the sentence model as shipped (frozen)"
        )
        out.append(f"<p>The model reads {kept}: {esc(counts['encoder_reason'])}.</p>")
    if counts.get("multi_code"):
        sets = c.t["learn_eval"]
        sets = sets[
            (sets["evaluation"] == "cross-validation")
            & sets["metric"].isin(["f1", "jaccard", "exact_set"])
            & ((sets["metric"] != "f1") | (sets["dimension"] == "micro"))
            & ((sets["coder_a"] == MACHINE) | (sets["coder_b"] == MACHINE))
        ]
        names = {
            "f1": "micro-F1 of the code sets",
            "jaccard": "mean Jaccard overlap of the sets",
            "exact_set": "share with exactly the coders' set",
        }
        rows = [[r.level, names[r.metric], _raters(r), r.value, _interval(r), r.n] for r in sets.itertuples()]
        out.append(
            "<p>The coders put several codes on one passage, so the model gives each unit a set of codes "
            "(one model per code, each with its own threshold); how those sets agree with the coders':</p>"
            + html_table(
                [
                    "level",
                    ("measure", "metric"),
                    ("raters", "coder_a, coder_b"),
                    "value",
                    ("interval", "ci_low, ci_high"),
                    "n",
                ],
                rows,
            )
        )
    curve = e[(e["evaluation"] == "learning-curve") & (e["level"] == "dimension") & (e["coder_b"] != "consensus")]
    if len(curve):
        by = curve.groupby(["train_interviews", "machine"])["value"].mean().unstack("machine")
        # one coder: no coder-vs-coder rows, so no False column
        rows = [
            [int(n), by.at[n, True] if True in by else None, by.at[n, False] if False in by else None] for n in by.index
        ]
        out.append(
            "<p>Learning curve: mean machine-coder κ (dimension level) on the interviews left out, by how "
            "many hand-coded interviews the model learned from; how many more interviews are worth coding.</p>"
            + html_table(
                [
                    ("hand-coded interviews", "train_interviews"),
                    ("machine-coder κ", "value (mean, machine rows)"),
                    ("coders' κ (same utterances)", "value (mean, coder rows)"),
                ],
                rows,
            )
        )
    return "".join(out)


def _agreement(c: ReportContext) -> str:
    learned = _learned_coder(c)
    if "agreement" not in c.t:
        c.need("agreement")
        if not learned:
            c.empty.add("agreement")
        return (
            "<p>No comparison with human coders in this run. To add one, run "
            "<code>themeshift compare RUN --human CODES</code> with a CSV of coded character spans or a REFI-QDA "
            "project (.qdpx) exported from NVivo, ATLAS.ti, MAXQDA or QualCoder, then "
            "<code>themeshift report RUN</code> again.</p>" + learned
        )
    ag = c.t["agreement"]
    machine = c.s.machine_name
    main = ag[ag["metric"].isin(["krippendorff_alpha", "cohen_kappa"])]
    rows_fig = [
        {
            "label": f"{r.level}: {'α' if r.metric == 'krippendorff_alpha' else 'κ'} {_raters(r)}",
            "value": r.value,
            "lo": r.ci_low,
            "hi": r.ci_high,
            "human_only": machine not in f"{r.coder_a}+{r.coder_b}".split("+")
            and machine not in (r.coder_a, r.coder_b),
        }
        for r in main.itertuples()
        if not is_missing(r.value)
    ]
    cols = ["level", "metric", "coder_a", "coder_b", "value", "ci_low", "ci_high", "n"]
    out = [
        "<p>Chance-corrected agreement on the compared utterances. Conventional reading: Krippendorff's α ≥ 0.8 "
        "reliable, ≥ 0.667 acceptable for tentative conclusions, lower unreliable (Krippendorff 2004); Cohen's κ "
        "by Landis &amp; Koch (1977): &gt; 0.8 almost perfect, &gt; 0.6 substantial, &gt; 0.4 moderate, &gt; 0.2 "
        "fair. Compare the machine's figures with the human coders' agreement with each other: that is the "
        "ceiling.</p>"
    ]
    if rows_fig:
        fig = rf.Figure(
            "agreement",
            "Agreement between raters",
            rf.agreement_chart(rows_fig, "Chance-corrected agreement with intervals"),
            cols,
            [[getattr(r, k) for k in cols] for r in main.itertuples()],
            "Dots: Krippendorff's α (all raters joined by +) and Cohen's κ (rater pairs); bars: bootstrap "
            "intervals over interviews; dashed lines: the conventional α thresholds.",
        )
        c.figures.append(fig)
        out.append(figure_html(fig, table=False))
    rows = [
        [r.level, value_label(r.metric), _raters(r), r.value, _interval(r), r.n, _reading(r.metric, r.value)]
        for r in main.itertuples()
    ]
    out.append(
        html_table(
            [
                "level",
                "metric",
                ("raters", "coder_a, coder_b"),
                "value",
                ("interval", "ci_low, ci_high"),
                "n",
                ("reading", "value (conventional reading)"),
            ],
            rows,
        )
    )
    prf = ag[ag["metric"].isin(["precision", "recall", "f1"]) & (ag["level"] == "dimension")]
    if len(prf):
        piv = prf.pivot_table(index=["coder_b", "dimension"], columns="metric", values="value", sort=False)
        rows = [
            [
                who,
                dim,
                piv.loc[(who, dim)].get("precision"),
                piv.loc[(who, dim)].get("recall"),
                piv.loc[(who, dim)].get("f1"),
            ]
            for who, dim in piv.index
        ]
        out.append(
            "<h3>Per dimension: the machine against each coder</h3>"
            + html_table(
                [
                    ("reference", "coder_b"),
                    "dimension",
                    ("precision", "value (metric precision)"),
                    ("recall", "value (metric recall)"),
                    ("F1", "value (metric f1)"),
                ],
                rows,
            )
        )
    cl = ag[ag["level"] == "code"]
    if len(cl):
        piv = cl.pivot_table(index="coder_b", columns="metric", values="value", sort=False)
        ms = [m for m in ["ari", "nmi", "homogeneity", "completeness", "purity", "matched_kappa"] if m in piv.columns]
        out.append(
            "<h3>Candidate codes against human codes</h3><p>How well the machine's first-order clusters line up "
            "with the human codes (ARI and NMI: 0 = chance, 1 = identical partitions).</p>"
            + html_table(
                [("reference", "coder_b")] + [(VALUE_LABELS.get(m, m), f"value (metric {m})") for m in ms],
                [[who] + [piv.loc[who, m] for m in ms] for who in piv.index],
            )
        )
    if "confusion" in c.t:
        cf = c.t["confusion"]
        sel = cf[(cf["level"] == "dimension") & (cf["coder_a"] == machine)]
        if len(sel):
            ref = "consensus" if (sel["coder_b"] == "consensus").any() else sel["coder_b"].iloc[0]
            sel = sel[sel["coder_b"] == ref]
            labels = [
                d
                for d in c.dimensions + sorted(set(sel["label_a"]) | set(sel["label_b"]))
                if d in set(sel["label_a"]) | set(sel["label_b"])
            ]
            labels = list(dict.fromkeys(labels))
            m = sel.pivot_table(index="label_a", columns="label_b", values="n", aggfunc="sum", fill_value=0)
            m = m.reindex(index=labels, columns=labels, fill_value=0)
            peak = max(1, int(m.values.max()))
            head = "".join(f'<th scope="col" title="label_b">{esc(b)}</th>' for b in labels)
            body = "".join(
                f'<tr><th scope="row" title="label_a">{esc(a)}</th>'
                + "".join(
                    f'<td class="num" style="background:rgba(0,114,178,{0.08 + 0.6 * int(m.loc[a, b]) / peak:.2f})">'
                    f"{int(m.loc[a, b]):,}</td>"
                    for b in labels
                )
                + "</tr>"
                for a in labels
            )
            out.append(
                f"<h3>Confusion: {esc(machine)} (rows) vs {esc(ref)} (columns), dimension level</h3>"
                '<div class="table-wrap"><table class="confusion"><thead><tr>'
                f'<th title="label_a (rows), label_b (columns)"></th>{head}</tr></thead>'
                f"<tbody>{body}</tbody></table></div>"
            )
    if "disagreements" in c.t:
        d = c.t["disagreements"]
        d = d[(d["level"] == "dimension") & (d["humans_agree"].fillna(False).astype(bool))]
        d = d.sort_values(["machine_probability", "utterance_id", "coder"], ascending=[False, True, True])
        d = d.drop_duplicates("utterance_id").head(c.s.disagreements)
        if len(d):
            limit = c.s.quote_chars
            rows = [
                [
                    r.utterance_id,
                    r.speaker_id,
                    Raw(f'<q class="quote">{esc(shorten_quote(r.text, limit))}</q>'),
                    r.machine_label,
                    r.machine_probability,
                    r.human_label,
                ]
                for r in d.itertuples()
            ]
            out.append(
                f"<h3>Where the machine and the human coders differ</h3><p>The {len(d)} utterances where the "
                "human coders agree with each other and the machine was most confident in another dimension "
                "(all in <code>disagreements.parquet</code>).</p>"
                + html_table(
                    [
                        "utterance_id",
                        "speaker_id",
                        "text",
                        ("machine", "machine_label"),
                        ("machine p", "machine_probability"),
                        ("humans", "human_label"),
                    ],
                    rows,
                )
            )
    out.append(learned)
    return "".join(out)


def _reproducibility(c: ReportContext) -> str:
    m = c.manifest
    if not m:
        c.empty.add("reproducibility")
        return "<p>No manifest.json in the run directory.</p>"
    st = m.get("stages", {})
    seg, emb = st.get("segment", {}), st.get("embed", {})
    fw = st.get("map", {}).get("framework", {})
    human = st.get("compare", {}).get("human_codes", {})
    facts = [
        ("Seed", m.get("seed")),
        ("Input folder", seg.get("input_dir")),
        (
            "Embedding model",
            f"{emb.get('model')} ({emb.get('model_id')}, {emb.get('dim')} dimensions)" if emb else None,
        ),
        (
            "Codes",
            f"{st['codes'].get('method')}, min cluster size {st['codes'].get('min_cluster_size')}"
            if "codes" in st
            else None,
        ),
        ("Framework", f"{fw.get('name')} (sha256 {fw.get('sha256')})" if fw else None),
        ("Human codes", f"{human.get('path')} (sha256 {human.get('sha256')})" if human else None),
        ("Versions", ", ".join(f"{k} {v}" for k, v in sorted(m.get("versions", {}).items()))),
    ]
    out = ['<dl class="facts">' + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in facts if v) + "</dl>"]
    order = ["segment", "embed", "codes", "map", "shift", "compare"]
    stages = [
        [name, st[name].get("seconds"), Raw(_counts_html(st[name].get("counts", {})))]
        for name in order + sorted(set(st) - set(order) - {"report"})
        if name in st
    ]
    out.append(html_table([("stage", "stages"), ("seconds", "seconds"), ("counts", "counts")], stages))
    inputs = seg.get("inputs", [])
    if inputs:
        out.append(
            f"<details><summary>Input files and their SHA-256 hashes ({len(inputs)})</summary>"
            + html_table(
                [("file", "path"), "bytes", ("SHA-256", "sha256")],
                [[i.get("path"), i.get("bytes"), Raw(f"<code>{esc(i.get('sha256'))}</code>")] for i in inputs],
            )
            + "</details>"
        )
    out.append(
        "<details><summary>Configuration of the run (as a themeshift configuration file)</summary><pre>"
        + esc(_config_text(m.get("config", {})))
        + "</pre></details>"
    )
    return "".join(out)


def _count(v) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.4g}"
    if isinstance(v, dict):
        return ", ".join(f"{esc(str(k).replace('_', ' '))} {_count(x)}" for k, x in sorted(v.items())) or "none"
    if isinstance(v, list):
        return ", ".join(_count(x) for x in v) or "none"
    return esc(v)


def _counts_html(counts: dict) -> str:
    """A stage's counts as a readable list: 'assigned 2,821', 'excluded: backchannel 79, interviewer 770'."""
    items = [
        f"{esc(str(k).replace('_', ' '))}{':' if isinstance(v, (dict, list)) else ''} {_count(v)}"
        for k, v in sorted(counts.items())
    ]
    return '<ul class="counts">' + "".join(f"<li>{x}</li>" for x in items) + "</ul>" if items else "–"


def _config_text(config: dict, prefix: str = "") -> str:
    """The configuration in the TOML of a configuration file: the run can be repeated with it."""
    plain = {k: v for k, v in sorted(config.items()) if not isinstance(v, dict)}
    lines = [f"[{prefix}]"] if prefix and plain else []
    lines += [f"{k} = {json.dumps(v, ensure_ascii=False)}" for k, v in plain.items() if v is not None]
    for k, v in sorted(config.items()):
        if isinstance(v, dict):
            lines += ["", _config_text(v, f"{prefix}.{k}" if prefix else k)]
    return "\n".join(lines).strip("\n")


def build_report(
    tables: dict[str, pd.DataFrame],
    manifest: dict,
    s: ReportSettings,
    xy: np.ndarray | None = None,
    map_ids: list[str] | None = None,
    title: str = "",
) -> Report:
    """The HTML page and its figures. xy: the 2-D layout of the embedded utterances map_ids."""
    dims, names = dimension_order(tables, manifest)
    c = ReportContext(tables, manifest, s, dims, names, {}, [])
    builders = {
        "findings": _findings,
        "overview": _overview,
        "data-structure": _data_structure,
        "dimension-shares": _dimension_shares,
        "sources": _source_themes,
        "groups": _groups,
        "shifts": _shifts,
        "utterance-map": lambda ctx: _utterance_map(ctx, xy, map_ids),
        "agreement": _agreement,
        "methods": methods_section,
        "reproducibility": _reproducibility,
    }
    bodies = {sid: builders[sid](c) for sid, _ in SECTIONS}
    present = [sid for sid, _ in SECTIONS if sid not in c.empty]
    fw = manifest.get("stages", {}).get("map", {}).get("framework", {}).get("name")
    heading = title or "themeshift report"
    sub = " · ".join(
        x
        for x in [manifest.get("stages", {}).get("segment", {}).get("input_dir"), f"framework: {fw}" if fw else ""]
        if x
    )
    missing = ""
    if c.missing:
        by_cmd: dict[str, list[str]] = {}
        for t, cmd in c.missing.items():
            by_cmd.setdefault(cmd, []).append(f"{t}.parquet")
        items = "".join(f"<li><code>{esc(cmd)}</code> makes {esc(', '.join(ts))}</li>" for cmd, ts in by_cmd.items())
        missing = (
            f'<div class="missing" id="missing-tables"><p>This report shows what the run directory holds. '
            f"Not there yet:</p><ul>{items}</ul></div>"
        )
    no_shift = missing_shift_reason(tables["shifts"]["status"]) if "shifts" in tables else None
    if no_shift:  # the headline result is absent: said first, with how to get it
        missing = (
            f'<div class="missing" id="no-shift"><p><strong>No shift results.</strong> {esc(no_shift)}.</p></div>'
            + missing
        )
    stale = manifest.get("_stale_tables", {})
    if stale:
        items = "".join(
            f"<li><code>{esc(t)}.parquet</code>: {esc(why)}; re-run <code>{esc(remake_command(t))}</code></li>"
            for t, why in stale.items()
        )
        missing += (
            f'<div class="missing" id="stale-tables"><p>Left out because they no longer match the tables '
            f"they were made from:</p><ul>{items}</ul></div>"
        )
    nav = "".join(f'<li><a href="#{sid}">{esc(name)}</a></li>' for sid, name in SECTIONS)
    sections = "".join(
        f'<section id="{sid}"><h2>{esc(name)}</h2>{bodies[sid]}</section>'
        for sid, name in SECTIONS
        if sid != "reproducibility"
    )
    html = (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        # nothing may load from outside this file
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
        f"script-src 'unsafe-inline'; img-src data:\">"
        f"<title>{esc(heading)}</title><style>{PAGE_CSS}</style></head><body>"
        f'<header><h1>{esc(heading)}</h1><p class="sub">{esc(sub)}</p><nav aria-label="Sections"><ul>{nav}</ul></nav>'
        f"{missing}</header><main>{sections}</main>"
        f'<footer><section id="reproducibility"><h2>Reproducibility</h2>{bodies["reproducibility"]}</section>'
        f"<p>Made by themeshift {esc(manifest.get('versions', {}).get('themeshift', ''))}. Every number here "
        f"comes from the Parquet tables in the run directory.</p></footer>"
        f"<script>{PAGE_JS}</script></body></html>"
    )
    return Report(html, c.figures, present, dict(c.missing))


def write_shareable(path: Path, text: str) -> Path:
    """Atomic write, readable by others (the page and figures are meant to be passed on)."""
    import os

    def write(tmp: str) -> None:
        Path(tmp).write_bytes(text.encode("utf-8"))
        os.chmod(tmp, 0o644)

    atomic_write(Path(path), write)
    return Path(path)


def write_figures(figures: list[rf.Figure], out_dir: Path) -> list[Path]:
    """Each figure as SVG (and its numbers as CSV) for manuscripts."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError("--figures must be a folder", out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for fig in figures:
        for slug, svg in (fig.extra_svgs or {fig.slug: fig.svg}).items():
            written.append(
                write_shareable(out_dir / f"{slug}.svg", '<?xml version="1.0" encoding="UTF-8"?>\n' + svg + "\n")
            )
        written.append(write_shareable(out_dir / f"{fig.slug}.csv", csv_text(fig.columns, fig.rows)))
    return written
