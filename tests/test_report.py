"""report.html on the example study: sections, numbers, escaping, missing tables, figures,
bad input, and the page in a real headless Chromium."""

from __future__ import annotations

import csv
import os
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import lxml.html
import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pipeline import report_figures as rf
from pipeline.cli import app
from pipeline.config import load_config
from pipeline.report import SECTIONS, _reading, build_report, load_tables, project_2d
from pipeline.settings import ReportSettings, settings_for

REPO = Path(__file__).resolve().parent.parent
HUMAN = REPO / "examples" / "answer_key" / "human_codes.csv"
SECTION_IDS = [sid for sid, _ in SECTIONS]
runner = CliRunner()


def _cfg():
    # PCA and fewer resamples keep the test fast; UMAP is checked on its own below
    return load_config(
        overrides={
            "report": {"projection": "pca"},
            "shift": {"bootstrap": 200, "permutations": 200},
            "compare": {"bootstrap": 100},
        }
    )


def _report(tables, manifest, *args):
    """build_report with the settings of _cfg()."""
    cfg = _cfg()
    return build_report(tables, manifest, settings_for(ReportSettings, cfg), *args)


@pytest.fixture(scope="module")
def full_run(example_run, encoder, tmp_path_factory):
    """The example study through every stage (map, shift, compare on top of the shared codes run)."""
    from pipeline.runner import run_compare, run_map, run_report, run_shift

    run_dir = tmp_path_factory.mktemp("report_run") / "run"
    shutil.copytree(example_run, run_dir)
    cfg = _cfg()
    run_map(run_dir, cfg, encoder=encoder)
    run_shift(run_dir, cfg)
    run_compare(run_dir, HUMAN, cfg)
    record = run_report(run_dir, cfg, figures_dir=run_dir / "figures")
    return run_dir, record


def _cls(name: str) -> str:
    """XPath test for an HTML class."""
    return f"contains(concat(' ', normalize-space(@class), ' '), ' {name} ')"


def _doc(run_dir: Path):
    return lxml.html.fromstring((run_dir / "report.html").read_text(encoding="utf-8"))


def _columns(table) -> dict[str, int]:
    """A table's headings by their title (the Parquet column(s) each shows) -> position."""
    return {th.get("title"): i for i, th in enumerate(table.xpath("thead/tr/th"))}


def test_full_run_has_every_section_and_the_tables_numbers(full_run):
    run_dir, record = full_run
    assert record["sections"] == SECTION_IDS and record["missing"] == {}
    doc = _doc(run_dir)
    for sid in SECTION_IDS:
        assert doc.get_element_by_id(sid) is not None
    # self-contained: nothing refers outside the file
    assert not doc.xpath("//script[@src] | //link[@href] | //img[not(starts-with(@src, 'data:'))]")
    assert all(a.get("href", "").startswith(("#", "data:")) for a in doc.xpath("//a[@href]"))

    # per-speaker shift table: one row per shifts row, magnitude printed from shifts.parquet
    shifts = pq.read_table(run_dir / "shifts.parquet").to_pandas()
    table = doc.xpath(f"//table[{_cls('shift-table')}]")[0]
    rows = table.xpath("tbody/tr")
    assert len(rows) == len(shifts)
    col = _columns(table)  # the Parquet column(s) a heading shows -> its position
    by_speaker = {r.xpath("td")[0].text_content(): r for r in rows}
    for s in shifts.itertuples():
        cells = [td.text_content() for td in by_speaker[s.speaker_id].xpath("td")]
        assert cells[col["n_units_from, n_units_to, resample_unit"]] == (
            f"{s.n_units_from} + {s.n_units_to} {s.resample_unit}s"
        )
        method = {"permutation": "perm.", "moderated_t": "mod. t"}[s.p_method]
        assert cells[col["jsd"]] == f"{s.jsd:.3f}" and cells[col["p_value, p_method"]] == f"{s.p_value:.3f} ({method})"
        assert cells[col["q_value"]] == f"{s.q_value:.3f}"
        # one wording: significant only when q < alpha; a p-value alone below alpha says so
        expected = (
            "significant (q < 0.05)"
            if s.q_value < 0.05
            else "p < 0.05 only; not after correction"
            if s.p_value < 0.05
            else "not significant"
        )
        assert cells[col["p_value, q_value"]] == expected

    # Findings open the report: the same findings `run` prints, each linking to its evidence
    from pipeline.findings import run_findings

    found = run_findings(run_dir)
    items = doc.get_element_by_id("findings").xpath(".//ul[contains(@class, 'findings')]/li")
    texts = [li.text_content() for li in items]
    assert found["codes"] and f"“{found['codes'][0]['label']}” ({found['codes'][0]['size']:,} utterances" in texts[0]
    assert all(li.xpath("a[@class='evidence']/@href")[0].lstrip("#") in SECTION_IDS for li in items)
    assert sum(t in texts for t in (x + " How groups shifted" for x in found["groups"])) == len(found["groups"]) > 0
    assert any(t.startswith("Agreement with the coders' consensus") for t in texts)

    # groups first: the findings list is headline() of group_changes, estimates with intervals and p
    from pipeline.shift_groups import headline

    changes = pq.read_table(run_dir / "group_changes.parquet").to_pandas()
    dims = pq.read_table(run_dir / "shift_dimensions.parquet").to_pandas()
    findings = [li.text_content() for li in doc.get_element_by_id("groups").xpath(".//ul/li")]
    assert findings == headline(changes, dims, 0.05) and findings[0].startswith("CORE (4 speakers), wave 1 -> 2:")
    core = changes[(changes["group"] == "CORE") & (changes["level"] == "dimension")]
    top = core.loc[core["change"].abs().idxmax()]
    assert (
        f"{top.theme} {100 * top.change:+.1f} points [{100 * top.ci_low:+.1f}, {100 * top.ci_high:+.1f}]" in findings[0]
    )

    # the Gioia table: every mapped code once, with its concept and dimension spanning their rows
    ds = pq.read_table(run_dir / "data_structure.parquet").to_pandas()
    gioia = doc.xpath(f"//table[{_cls('gioia')}]")[0]
    assert len(gioia.xpath("tbody/tr")) == int((ds["status"] != "unmapped").sum())
    assert sorted(td.text_content() for td in gioia.xpath(f".//td[{_cls('dimension')}]")) == sorted(
        ds.dropna(subset=["dimension"])["dimension_name"].unique()
    )
    spans = [int(td.get("rowspan")) for td in gioia.xpath(f".//td[{_cls('concept')}]")]
    assert sum(spans) == len(gioia.xpath("tbody/tr"))

    # agreement: every kappa/alpha row with the conventional reading of its value
    ag = pq.read_table(run_dir / "agreement.parquet").to_pandas()
    text = doc.get_element_by_id("agreement").text_content()
    alpha = ag[(ag.metric == "krippendorff_alpha") & (ag.level == "dimension")]
    for r in alpha.itertuples():
        assert f"{r.value:.3f}" in text and _reading(r.metric, r.value) in text


def test_conventional_readings():
    assert _reading("krippendorff_alpha", 0.8) == "reliable (≥ 0.8)"
    assert _reading("krippendorff_alpha", 0.7) == "tentative (≥ 0.667)"
    assert _reading("krippendorff_alpha", 0.6669) == "unreliable (< 0.667)"
    assert _reading("cohen_kappa", 0.61) == "substantial (> 0.6)"
    assert _reading("cohen_kappa", 0.4) == "fair (> 0.2)"
    assert _reading("cohen_kappa", -0.1) == "poor (≤ 0)"
    assert _reading("cohen_kappa", float("nan")) == "undefined"


def test_methods_section_gives_a_citable_paragraph_from_the_manifest(full_run):
    """Method details sit in a collapsible Methods section, with a paragraph for a paper written from the
    manifest; the findings sections keep estimates and say where the method is."""
    import json

    run_dir, _ = full_run
    doc = _doc(run_dir)
    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    st = manifest["stages"]
    details = doc.get_element_by_id("methods").xpath(".//details[@id='methods-details']")
    assert len(details) == 1 and details[0].get("open") is None  # collapsed until asked for
    para = details[0].xpath(".//*[@id='methods-paragraph']")[0].text_content()
    assert st["embed"]["model_id"] in para and f"model {st['embed']['model']}" in para
    # the shift test: the configured one, or with `auto` the one(s) each speaker pair got
    test = st["shift"]["parameters"]["speaker_test"]
    used = set(pq.read_table(run_dir / "shifts.parquet").column("p_method").to_pylist()) if test == "auto" else {test}
    words = {"permutation": "permutation test", "moderated_t": "moderated t-test"}
    assert used and all(words[t] in para for t in used)
    units = set(pq.read_table(run_dir / "shifts.parquet").column("resample_unit").to_pylist())
    assert units == {"block"} and "blocks of whole answers (4 per interview)" in para
    p = st["shift"]["parameters"]
    for text in (
        f"“{st['map']['framework']['name']}”",
        f"minimum cluster size {st['codes']['min_cluster_size']}",
        f"({p['bootstrap']} resamples)",
        f"({p['permutations']} permutations)",
        "Benjamini-Hochberg",
        f"q < {p['alpha']}",
        "Hartung-Knapp-Sidik-Jonkman",
        f"random seed {manifest['seed']}",
        f"themeshift {manifest['versions']['themeshift']}",
        "Krippendorff's α",
    ):
        assert text in para, text
    assert "{" not in para and "_" not in para.replace(st["embed"]["model_id"], "")  # prose, not config keys
    # the calibration on other corpora is a method detail: in Methods, not in the findings sections
    assert "bench/shift_group.py" in doc.get_element_by_id("methods").text_content()
    for sid in ("groups", "shifts"):
        assert "bench/" not in doc.get_element_by_id(sid).text_content()
        assert doc.get_element_by_id(sid).xpath(".//a[@href='#methods']")
    # the reproducibility table reads as counts, not JSON
    repro = doc.get_element_by_id("reproducibility")
    counts = [td.text_content() for td in repro.xpath(".//table//ul[@class='counts']")]
    assert counts and not any("{" in c or '":' in c for c in counts)
    assert any("excluded: backchannel 79, interviewer 770" in c for c in counts)
    config = repro.xpath(".//pre")[0].text_content()
    assert config.startswith("[anonymise]") and "\n[shift]\n" in config and "seed = 42" in config


def test_table_headings_are_readable_with_the_parquet_column_on_hover(full_run):
    import re

    run_dir, _ = full_run
    doc = _doc(run_dir)
    heads = doc.xpath("//table//th")
    assert len(heads) > 100
    for th in heads:
        assert th.get("title"), th.text_content()
        assert not re.fullmatch(r"[a-z0-9]+(_[a-z0-9]+)+", th.text_content().strip()), th.text_content()
    # the shift and group tables name their Parquet columns exactly
    for cls, table in (
        ("shift-table", "shifts"),
        ("shift-more", "shifts"),
        ("group-table", "group_changes"),
        ("contrast-table", "group_contrasts"),
        ("movers-table", "group_changes"),
    ):
        names = set(pq.read_schema(run_dir / f"{table}.parquet").names)
        titles = [th.get("title") for th in doc.xpath(f"//table[{_cls(cls)}]/thead/tr/th")]
        assert titles, cls
        for title in titles:
            if title.startswith("text"):  # the movers' quotes come from utterances.parquet
                continue
            assert set(title.split(", ")) <= names, (cls, title)
    # agreement metrics by name, the Parquet value on hover
    metric = doc.xpath("//section[@id='agreement']//td/span[@title='krippendorff_alpha']")
    assert metric and metric[0].text_content() == "Krippendorff's α"


def test_group_tables_use_the_one_significance_wording(full_run):
    """estimate, interval, p, q, method, and 'significant' only where q < alpha."""
    run_dir, _ = full_run
    doc = _doc(run_dir)
    for cls in ("group-table", "contrast-table", "movers-table"):
        table = doc.xpath(f"//table[{_cls(cls)}]")[0]
        col = _columns(table)
        assert {"p_value", "q_value", "ci_low, ci_high", "p_value, q_value"} <= set(col), cls
        for tr in table.xpath("tbody/tr"):
            cells = [td.text_content() for td in tr.xpath("td")]
            q, verdict = cells[col["q_value"]], cells[col["p_value, q_value"]]
            assert "yes" not in cells
            if q not in ("", "–"):
                assert verdict.startswith("significant") == (float(q) < 0.05), (cls, cells)
    g = doc.xpath(f"//table[{_cls('group-shifts')}]")[0]
    assert not any(td.text_content() == "yes" for td in g.xpath(".//td"))
    assert any("significant (q < 0.05)" in td.text_content() for td in g.xpath(".//td"))


def test_shift_tables_leave_no_column_empty_without_saying_why(full_run):
    run_dir, _ = full_run
    doc = _doc(run_dir)
    shifts = pq.read_table(run_dir / "shifts.parquet").to_pandas()
    section = doc.get_element_by_id("shifts")
    notes = " ".join(p.text_content() for p in section.xpath(f".//p[{_cls('empty-columns')}]"))
    for table in section.xpath(".//table"):
        heads = table.xpath("thead/tr/th")
        for i, th in enumerate(heads):
            values = {tr.xpath("td")[i].text_content().strip() for tr in table.xpath("tbody/tr")}
            assert values - {"", "–"}, f"{th.text_content()} is empty in every row"
    # the fixture's question-matched magnitude and semantic p-values are empty for every speaker: named, with why
    assert shifts["jsd_matched"].isna().all() and shifts["p_semantic"].isna().all()
    assert "jsd_matched" in notes and "questions asked in both waves" in notes
    assert "p_semantic" in notes and "whole interviews" in notes
    # the table that must fit the page keeps the test of each change; the rest is one click away
    assert len(section.xpath(f".//table[{_cls('shift-table')}]/thead/tr/th")) <= 13
    assert section.xpath(f".//details/table[{_cls('shift-more')}] | .//details//table[{_cls('shift-more')}]")


def test_exemplar_quotes_are_informative_utterances_of_the_code(full_run):
    """A code's quotes: its most typical utterances of six words or more when it has them, not the
    one- or two-word answers its centroid lies closest to."""
    run_dir, _ = full_run
    doc = _doc(run_dir)
    codes = pq.read_table(run_dir / "codes.parquet").to_pandas()
    utterances = pq.read_table(run_dir / "utterances.parquet", columns=["utterance_id", "text"])
    text = dict(zip(utterances.column("utterance_id").to_pylist(), utterances.column("text").to_pylist()))
    a = pq.read_table(run_dir / "assignments.parquet").to_pandas()
    n = settings_for(ReportSettings, _cfg()).quotes

    def words(t: str) -> int:
        return len(t.split())

    def shown(cid: int) -> list[str]:
        boxes = doc.xpath(f"//div[@class='quotes'][@data-code='{cid}']")
        assert boxes, cid
        return [q.text_content() for q in boxes[0].xpath("q")]

    # the largest code, and the largest whose own exemplars open with short answers
    largest = codes.sort_values(["size", "code_id"], ascending=[False, True])
    short_first = [r for r in largest.itertuples() if words(text[r.exemplar_ids[0]]) < 6]
    assert short_first, "the example study has a code whose top exemplars are short answers"
    for r in (next(largest.itertuples()), short_first[0]):
        members = set(a.loc[a["code_id"] == r.code_id, "utterance_id"]) | set(r.exemplar_ids)
        long = [u for u in members if words(text[u]) >= 6]
        assert len(long) >= n
        quotes = shown(r.code_id)
        assert len(quotes) == n and all(words(q) >= 6 for q in quotes), quotes
        full = {" ".join(text[u].split()) for u in long}
        assert all(q in full or q.endswith("…") for q in quotes)  # the code's own utterances
        # the most representative long exemplars come first
        first = [" ".join(text[u].split()) for u in r.exemplar_ids if words(text[u]) >= 6][:n]
        assert quotes[: len(first)] == first


def test_map_points_carry_their_text_and_the_legend_every_dimension(full_run):
    run_dir, _ = full_run
    doc = _doc(run_dir)
    layout = pq.read_table(run_dir / "utterance_map.parquet").to_pandas()
    u = pq.read_table(run_dir / "utterances.parquet").to_pandas().set_index("utterance_id")
    svg = doc.get_element_by_id("map-svg")
    points = svg.xpath(".//circle")
    assert len(points) == len(layout)  # each point once, however many colourings
    titles = [c.xpath("title")[0].text_content() for c in points]
    assert all(titles)
    for uid in layout["utterance_id"][:: max(1, len(layout) // 50)]:
        r = u.loc[uid]
        start = f"{r.speaker_id}, wave {int(r.wave)}: " + " ".join(r.text.split())[:40]
        assert any(t.startswith(start) for t in titles), start
    assert [c.get("tabindex") for c in points].count("0") == 1  # one tab stop; arrow keys move on
    ds = pq.read_table(run_dir / "data_structure.parquet").to_pandas().dropna(subset=["dimension"])
    legend = [li.text_content() for li in doc.xpath("//div[@class='map-view'][@data-view='dimension']//li")]
    for dim, name in ds.drop_duplicates("dimension")[["dimension", "dimension_name"]].itertuples(index=False):
        assert any(dim in x or name in x for x in legend), dim
    codes = pq.read_table(run_dir / "codes.parquet").to_pandas()
    legend = [li.text_content() for li in doc.xpath("//div[@class='map-view'][@data-view='code']//li")]
    assert legend[:-1] == [f"{r.code_id}: {r.label}" for r in codes.sort_values("code_id").itertuples()]
    # the SVG files for manuscripts keep the whole legend inside the picture
    root = ET.parse(run_dir / "figures" / "utterance_map_by_code.svg").getroot()
    width = float(root.get("width"))
    ns = "{http://www.w3.org/2000/svg}"
    labels = [t for t in root.iter(f"{ns}text")]
    assert len(labels) == len(codes) + 1
    assert all(float(t.get("x")) + 6.0 * len(t.text) <= width for t in labels)


def test_quotes_from_the_corpus_and_hostile_text_are_escaped(full_run):
    run_dir, _ = full_run
    tables, manifest = load_tables(run_dir)
    # the corpus itself has "<10%", "A&E" and quotes; put a hostile line into a code's top exemplar too
    hostile = '</q><script>alert("x")</script> A&E said "<5%" & it\'s <b>fine</b>'
    first = tables["codes"].sort_values("code_id")["exemplar_ids"].iloc[0][0]
    u = tables["utterances"]
    tables["utterances"] = u.assign(text=u["text"].where(u["utterance_id"] != first, hostile))
    html = _report(tables, manifest).html
    assert hostile not in html and "&lt;/q&gt;&lt;script&gt;alert(&quot;x&quot;)" in html
    doc = lxml.html.fromstring(html)
    assert len(doc.xpath("//script")) == 1 and "alert" not in doc.xpath("//script")[0].text
    quotes = [q.text_content() for q in doc.xpath(f"//q[{_cls('quote')}]")]
    assert hostile in quotes  # round-trips as text, not markup
    corpus = [t for t in u["text"] if "<" in t or "&" in t]
    assert corpus, "the example corpus has texts with < and &"
    shown = [t for t in corpus if any(" ".join(t.split()) == q for q in quotes)]
    assert all(t not in html for t in shown if "<" in t)


def test_report_is_reproducible_and_map_layout_is_seeded(full_run):
    run_dir, _ = full_run
    tables, manifest = load_tables(run_dir)
    from pipeline.embed import vectors

    assert tables["embeddings"].column_names == ["utterance_id"]  # the map reads only the vectors it lays out
    emb = pq.read_table(run_dir / "embeddings.parquet")
    ids = emb.column("utterance_id").to_pylist()
    vec = vectors(emb)
    one = _report(tables, manifest, project_2d(vec, "pca", 42, 15), ids).html
    two = _report(tables, manifest, project_2d(vec, "pca", 42, 15), ids).html
    assert one == two
    sample = vec[:300]
    a, b = project_2d(sample, "umap", 7, 15), project_2d(sample, "umap", 7, 15)
    assert a.shape == (300, 2) and np.array_equal(a, b) and np.isfinite(a).all()
    layout = pq.read_table(run_dir / "utterance_map.parquet")
    assert layout.column("utterance_id").to_pylist() == ids and set(layout.column("projection").to_pylist()) == {"pca"}


def test_figures_are_svg_with_their_numbers(full_run):
    run_dir, record = full_run
    fig_dir = run_dir / "figures"
    names = {p.name for p in fig_dir.iterdir()}
    assert names == {
        "dimension_shares.svg",
        "dimension_shares.csv",
        "shift_magnitude.svg",
        "shift_magnitude.csv",
        "shift_directions.svg",
        "shift_directions.csv",
        "utterance_map_by_code.svg",
        "utterance_map_by_dimension.svg",
        "utterance_map.csv",
        "agreement.svg",
        "agreement.csv",
        "group_changes.svg",
        "group_changes.csv",
        "group_movers.svg",
        "group_movers.csv",
    }
    for p in fig_dir.glob("*.svg"):
        assert ET.parse(p).getroot().tag == "{http://www.w3.org/2000/svg}svg"
    shifts = pq.read_table(run_dir / "shifts.parquet").to_pandas().set_index("speaker_id")
    with open(fig_dir / "shift_magnitude.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == int(shifts["jsd"].notna().sum())
    for r in rows:
        assert float(r["jsd"]) == pytest.approx(shifts.loc[r["speaker_id"], "jsd"], rel=1e-5)
    with open(fig_dir / "utterance_map.csv", encoding="utf-8") as fh:
        assert sum(1 for _ in fh) == pq.read_metadata(run_dir / "embeddings.parquet").num_rows + 1


def test_missing_tables_give_a_report_of_what_exists(example_run, tmp_path):
    run_dir = tmp_path / "partial"
    shutil.copytree(example_run, run_dir)
    res = runner.invoke(app, ["report", str(run_dir), "-c", str(_toml(tmp_path))])
    assert res.exit_code == 0, res.output
    assert "missing: data_structure.parquet (run `themeshift map RUN`)" in res.output
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    doc = lxml.html.fromstring(html)
    note = doc.get_element_by_id("missing-tables").text_content()
    for table, command in [
        ("data_structure", "themeshift map RUN"),
        ("shifts", "themeshift shift RUN"),
        ("agreement", "themeshift compare RUN --human CODES"),
    ]:
        assert f"{table}.parquet" in note and command in note
    for sid in SECTION_IDS:  # every section is there, saying what it lacks
        assert doc.get_element_by_id(sid) is not None
    # codes without the map: first-order codes with their quotes
    n_codes = pq.read_metadata(run_dir / "codes.parquet").num_rows
    assert len(doc.get_element_by_id("data-structure").xpath(".//tbody/tr")) == n_codes


def _toml(tmp_path: Path) -> Path:
    path = tmp_path / "report.toml"
    path.write_text('[report]\nprojection = "pca"\n', encoding="utf-8")
    return path


def test_bad_run_directories_fail_in_one_line(tmp_path, example_segmented):
    res = runner.invoke(app, ["report", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "run directory not found" in res.output
    (tmp_path / "empty").mkdir()
    res = runner.invoke(app, ["report", str(tmp_path / "empty")])
    assert res.exit_code == 2 and "not a run directory" in res.output and "themeshift segment" in res.output
    run_dir = tmp_path / "broken"
    shutil.copytree(example_segmented, run_dir)
    (run_dir / "shifts.parquet").write_bytes(b"not parquet at all")
    res = runner.invoke(app, ["report", str(run_dir)])
    assert res.exit_code == 2 and "shifts.parquet" in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1
    (tmp_path / "c.toml").write_text('[report]\nprojection = "tsne"\n', encoding="utf-8")
    (run_dir / "shifts.parquet").unlink()
    res = runner.invoke(app, ["report", str(run_dir), "-c", str(tmp_path / "c.toml")])
    assert res.exit_code == 2 and "report.projection must be one of umap, pca" in res.output


# ---------------------------------------------------------------- in a real browser

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def chromium() -> str:
    """Path of Debian's chromium (THEMESHIFT_CHROMIUM overrides it); skips without one, fails under CI."""
    reason = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        reason = "playwright is not installed (pip install -e '.[test]')"
    exe = os.environ.get("THEMESHIFT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if reason is None and not Path(exe).is_file():
        reason = f"Debian's chromium is not installed at {exe} (make test installs it: apt-get install chromium)"
    if reason:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"browser test cannot run under CI: {reason}")
        pytest.skip(reason)
    return exe


def test_report_in_headless_chromium(chromium, full_run, tmp_path):
    from playwright.sync_api import sync_playwright

    exe = chromium
    run_dir, _ = full_run
    page_uri = (run_dir / "report.html").resolve().as_uri()
    shifts = pq.read_table(run_dir / "shifts.parquet").to_pandas()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            requests, errors = [], []
            page.on("request", lambda r: requests.append(r.url))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(page_uri, wait_until="load")
            assert requests == [page_uri]
            for sid, title in SECTIONS:
                assert page.locator(f"#{sid} h2").inner_text() == title

            # sorting: click the magnitude heading twice -> largest first
            head = page.locator("table.shift-table th", has_text="magnitude")
            head.click()
            head.click()
            assert head.get_attribute("aria-sort") == "descending"
            first = page.locator("table.shift-table tbody tr").first.locator("td")
            assert first.nth(0).inner_text() == shifts.loc[shifts["jsd"].idxmax(), "speaker_id"]

            # the map's colour toggle shows one view at a time
            code_view = page.locator('.map-view[data-view="code"]')
            dim_view = page.locator('.map-view[data-view="dimension"]')
            assert code_view.is_visible() and not dim_view.is_visible()

            def fill(selector: str) -> str:
                return page.eval_on_selector(selector, "c => getComputedStyle(c).fill")

            assert fill("#map-svg circle.c0") == _rgb(rf.CODE_COLOURS[0])
            page.get_by_role("button", name="Colour by aggregate dimension").click()
            assert dim_view.is_visible() and not code_view.is_visible()
            assert fill("#map-svg circle.d0") == _rgb(rf.DIMENSION_COLOURS[0])  # the same points, recoloured

            # a point's text on hover, and on keyboard focus (one tab stop, the arrow keys move on)
            said = page.locator("#map-point")
            top = page.locator("#map-svg circle").last  # drawn last: nothing covers it
            top.hover()
            assert said.inner_text() == top.locator("title").text_content()
            points = page.locator("#map-svg circle")
            assert points.first.get_attribute("tabindex") == "0"
            points.first.focus()
            assert said.inner_text() == points.first.locator("title").text_content()
            page.keyboard.press("ArrowRight")
            assert page.evaluate("document.activeElement === document.querySelectorAll('#map-svg circle')[1]")
            assert said.inner_text() == points.nth(1).locator("title").text_content()
            assert said.inner_text() != points.first.locator("title").text_content()
            assert page.locator("#map-svg circle[tabindex='0']").count() == 1

            # Methods: collapsed, one click away
            para = page.locator("#methods-paragraph")
            assert not para.is_visible()
            page.locator("#methods-details > summary").click()
            assert para.is_visible()

            # at 1280 px nothing overflows sideways: not the page, not a table, not a figure
            assert page.evaluate("document.documentElement.scrollWidth") <= 1280
            wide = page.evaluate("""() => Array.from(document.querySelectorAll('.table-wrap, figure .svg, .map-body'))
                .filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.closest('section').id)""")
            assert wide == []

            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 50_000
            assert errors == [] and requests == [page_uri]

            # the map's numbers download as CSV, built in the page
            with page.expect_download() as dl:
                page.locator("#map-download").click()
            lines = Path(dl.value.path()).read_text(encoding="utf-8").splitlines()
            assert lines[0] == "utterance_id,x,y,code_id,dimension"
            assert len(lines) == pq.read_metadata(run_dir / "embeddings.parquet").num_rows + 1

            # printed on A4 (210 mm less 2 x 12 mm margins = 703 CSS px): every table inside the page width
            page.emulate_media(media="print")
            page.set_viewport_size({"width": 703, "height": 1000})
            right = page.evaluate("""() => Array.from(document.querySelectorAll('table'))
                .map(t => [t.className, Math.ceil(t.getBoundingClientRect().right)])""")
            assert right and all(r <= 703 for _, r in right), right
            labels = page.locator("table.shift-table thead th").all_inner_texts()
            rows = [r.locator("td").all_inner_texts() for r in page.locator("table.shift-table tbody tr").all()]
        finally:
            browser.close()
    print(f"screenshot: {shot}")
    _check_printed_pdf(exe, page_uri, tmp_path / "report.pdf", labels, rows)


def _rgb(hex_colour: str) -> str:
    r, g, b = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgb({r}, {g}, {b})"


def _check_printed_pdf(exe: str, page_uri: str, pdf: Path, labels: list[str], rows: list[list[str]]) -> None:
    """chromium --headless --print-to-pdf: A4 pages, and the per-speaker table whole on them (a table
    wider than the page is cut at its edge, and what is cut is not in the PDF's text)."""
    import subprocess
    import unicodedata

    from pypdf import PdfReader

    done = subprocess.run(
        [exe, *CHROMIUM_ARGS, "--no-pdf-header-footer", f"--print-to-pdf={pdf}", page_uri],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0 and pdf.stat().st_size > 10_000, done.stderr[-2000:]
    reader = PdfReader(pdf)
    assert len(reader.pages) > 3
    for pg in reader.pages:  # A4: 595 x 842 points
        assert abs(float(pg.mediabox.width) - 595.3) < 2 and abs(float(pg.mediabox.height) - 841.9) < 2

    def squeeze(t: str) -> str:  # ligatures apart and line breaks gone
        return "".join(unicodedata.normalize("NFKC", t).split())

    text = squeeze("".join(pg.extract_text() for pg in reader.pages))
    at = text.index(squeeze("All speakers"))
    assert all(squeeze(x) in text[at:] for x in labels), labels  # the last column's heading too
    for cells in rows:  # every speaker's last columns: the verdict, the direction, the status
        assert squeeze("".join(cells[-3:])) in text[at:], cells


def test_learned_coder_section_with_a_single_coder():
    """One expert coder: learn_eval has no coder-vs-coder rows, and the learning-curve table must
    still render (a KeyError: False before)."""
    import pandas as pd

    from pipeline.report import _learned_coder
    from pipeline.report_context import ReportContext as _Ctx

    rows = []
    for n, value in ((1, 0.41), (2, 0.52)):
        rows.append(
            {
                "evaluation": "learning-curve",
                "feature_set": "context",
                "selected": True,
                "train_interviews": n,
                "draw": 0,
                "level": "dimension",
                "metric": "cohen_kappa",
                "coder_a": "machine",
                "coder_b": "expert",
                "dimension": None,
                "value": value,
                "ci_low": None,
                "ci_high": None,
                "n": 100,
            }
        )
    rows.append({**rows[0], "evaluation": "cross-validation", "train_interviews": None, "value": 0.6})
    ctx = _Ctx(
        {"learn_eval": pd.DataFrame(rows)},
        {"stages": {"learn": {"level": "second_order"}}},
        settings_for(ReportSettings, load_config()),
        [],
        {},
        {},
        [],
    )
    html = _learned_coder(ctx)
    assert "Learning curve" in html and "0.410" in html and "0.520" in html
