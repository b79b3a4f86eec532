"""REFI-QDA (.qdpx): export valid against the REFI schema, exact round trip, and safe import."""
from __future__ import annotations

import datetime
import io
import shutil
import zipfile
from pathlib import Path

import pyarrow as pa
import pytest
from lxml import etree
from typer.testing import CliRunner

from conftest import gold_labels
from pipeline.config import load_config
from pipeline.errors import InputError
from pipeline.framework import load_framework
from pipeline.io.qdpx import ExportCode, ExportSource, machine_project, project_xml, read_qdpx, write_qdpx
from pipeline.io.rundir import read_table, write_table
from pipeline.schema import ASSIGNMENTS, UTTERANCE_DIMENSIONS, codes_schema
from pipeline.settings import CompareSettings, settings_for

XSD = Path("/work/shared/refi-qda/Project-mrt2019.xsd")
if not XSD.is_file():
    XSD = Path(__file__).resolve().parents[2] / "shared" / "refi-qda" / "Project-mrt2019.xsd"
LIMITS = {"max_members": 100, "max_bytes": 5_000_000}
NS = {"q": "urn:QDA-XML:project:1.0"}
ANSWER_KEY = Path(__file__).resolve().parents[1] / "examples" / "answer_key"
MANIFEST = Path(__file__).resolve().parents[1] / "examples" / "kt_study" / "manifest.csv"


@pytest.fixture(scope="module")
def machine_run(example_segmented, tmp_path_factory):
    """The example study with the answer key's concepts as the machine's utterance coding and one
    first-order code per concept (a run as the map stage leaves it, without the models)."""
    run = tmp_path_factory.mktemp("qdpx_run")
    for name in ("utterances", "sources", "interviews", "speakers"):
        shutil.copy(example_segmented / f"{name}.parquet", run / f"{name}.parquet")
    fw = load_framework()
    utt = read_table(run, "utterances")
    coded = set(utt.filter(utt.column("coded")).column("utterance_id").to_pylist())
    gold = {u: c for u, c in gold_labels(utt, "concept").items() if u in coded}
    dims, assign = [], []
    for uid, concept in gold.items():
        c = fw.concept(concept)
        for d in fw.dimension_ids:
            dims.append({"utterance_id": uid, "dimension": d, "probability": 0.8 if c and c.dimension == d else 0.1,
                         "is_argmax": (c.dimension if c else fw.dimension_ids[0]) == d, "mapped": c is not None,
                         "second_order": c.name if c else None, "source": "framework-similarity"})
        assign.append({"utterance_id": uid, "code_id": fw.concept_ids.index(c.id) if c else -1, "probability": 1.0,
                       "reason": None if c else "outlier"})
    write_table(run, "utterance_dimensions", pa.Table.from_pylist(dims, schema=UTTERANCE_DIMENSIONS))
    write_table(run, "assignments", pa.Table.from_pylist(assign, schema=ASSIGNMENTS))
    codes = [{"code_id": i, "label": c.keywords[0] if c.keywords else c.id, "keywords": c.keywords[:3], "size": 1,
              "exemplar_ids": [], "centroid": [0.0, 0.0, 0.0, 1.0], "fingerprint": c.id}
             for i, c in enumerate(fw.concepts)]
    write_table(run, "codes", pa.Table.from_pylist(codes, schema=codes_schema(4)))
    return run


def _project(run):
    fw = load_framework()
    return machine_project(read_table(run, "sources"), read_table(run, "utterances"), fw,
                           read_table(run, "utterance_dimensions"), read_table(run, "codes"),
                           read_table(run, "assignments"))


def test_export_is_valid_refi_qda_and_round_trips(machine_run, tmp_path):
    from pipeline.runner import run_export_qdpx

    out = tmp_path / "demo.qdpx"
    rec = run_export_qdpx(machine_run, out, load_config())
    assert rec["counts"]["sources"] == 28
    xml = zipfile.ZipFile(out).read("project.qde")
    schema = etree.XMLSchema(etree.parse(str(XSD)))
    assert schema.validate(etree.fromstring(xml)), schema.error_log.last_error

    book, sources, counts = _project(machine_run)
    written = {(s.name, x.start, x.end, c.name) for s in sources for x in s.selections for c in x.codes}
    project = read_qdpx(out, **LIMITS)
    read_back = {(c.source, c.start, c.end, c.code) for c in project.codings}
    assert read_back == written
    assert len(project.codings) == (counts["concept_codings"] + counts["first_order_codings"]
                                    + counts["low_confidence_codings"])
    assert {c.coder for c in project.codings} == {"themeshift"}
    # exact positions: each selection is the utterance's text in the exported source
    utt = read_table(machine_run, "utterances").to_pandas().set_index(["interview_id", "start_char"])
    for c in project.codings[:200]:
        assert project.sources[c.source][c.start:c.end] == utt.loc[(c.source, c.start), "text"]
    # nesting: dimension > second-order concept > first-order code
    tech = next(c for c in project.codings if c.code.startswith("0: "))
    assert tech.parents == ("Creating a new organizational form", "Developing a technical infrastructure for KT")
    # same run, same bytes
    again = tmp_path / "again.qdpx"
    run_export_qdpx(machine_run, again, load_config())
    assert again.read_bytes() == out.read_bytes()


def test_compare_against_own_export_agrees_perfectly(machine_run, tmp_path):
    """Export the concept coding, import it as a coder: every figure against the machine is 1."""
    from pipeline.compare import compare
    from pipeline.io.human_codes import read_human_codes

    fw = load_framework()
    book, sources, _ = machine_project(read_table(machine_run, "sources"), read_table(machine_run, "utterances"), fw,
                                       read_table(machine_run, "utterance_dimensions"))
    path = tmp_path / "concepts.qdpx"
    write_qdpx(path, "concepts", "themeshift", book, sources)
    result = compare(read_table(machine_run, "utterances"), read_table(machine_run, "sources"),
                     read_human_codes(path), fw, None, read_table(machine_run, "utterance_dimensions"),
                     read_table(machine_run, "assignments"), settings_for(CompareSettings, load_config()))
    a = result.agreement.to_pandas()
    kappas = a[a["metric"] == "cohen_kappa"]
    assert len(kappas) == 2 and list(kappas["value"]) == pytest.approx([1.0, 1.0]) and (kappas["n"] == 3378).all()
    assert a[(a["metric"] == "purity")]["value"].iloc[0] == pytest.approx(1.0)
    assert result.disagreements.num_rows == 0


def test_text_with_carriage_returns_markup_and_astral_characters_keeps_positions(tmp_path):
    text = "Q: A&E <5% of \"cases\"\r\nR: yes 😀 really\ttabbed\r\nend"
    code = ExportCode("Resistance towards top-down leadership", "why & <how>", True, [], ("c",))
    emoji = text.index("😀")
    src = ExportSource("I & <1>", "in/I1.txt", text, [(3, 6, [code]), (emoji, emoji + 1, [code])])
    path = tmp_path / "t.qdpx"
    write_qdpx(path, "t", "me", [code], [src])
    assert etree.XMLSchema(etree.parse(str(XSD))).validate(
        etree.fromstring(zipfile.ZipFile(path).read("project.qde")))
    project = read_qdpx(path, **LIMITS)
    assert project.sources["I & <1>"] == text
    assert [(c.start, c.end, text[c.start:c.end]) for c in project.codings] == [(3, 6, "A&E"), (emoji, emoji + 1, "😀")]
    with pytest.raises(InputError, match="U\\+000B"):
        project_xml("t", "me", [], [ExportSource("x", "x", "bad \x0b char", [])])


# ---------------------------------------------------------------- untrusted archives

def _zip(tmp_path, members: dict[str, bytes], name="bad.qdpx") -> Path:
    path = tmp_path / name
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for member, data in members.items():
            zf.writestr(member, data)
    return path


def _qde(body: str, prolog: str = "") -> bytes:
    return (f'<?xml version="1.0" encoding="utf-8"?>{prolog}<Project xmlns="urn:QDA-XML:project:1.0" name="p">'
            f"{body}</Project>").encode()


GOOD_CODE = ('<CodeBook><Codes><Code guid="11111111-1111-1111-1111-111111111111" name="resistance" '
             'isCodable="true"/></Codes></CodeBook>')


def _source(start: int, end: int, target="11111111-1111-1111-1111-111111111111") -> str:
    return (f'<Sources><TextSource guid="22222222-2222-2222-2222-222222222222" name="I1">'
            f"<PlainTextContent>Ten chars.</PlainTextContent>"
            f'<PlainTextSelection guid="33333333-3333-3333-3333-333333333333" startPosition="{start}" '
            f'endPosition="{end}"><Coding guid="44444444-4444-4444-4444-444444444444">'
            f'<CodeRef targetGUID="{target}"/></Coding></PlainTextSelection></TextSource></Sources>')


def test_valid_hand_written_project_reads(tmp_path):
    project = read_qdpx(_zip(tmp_path, {"project.qde": _qde(GOOD_CODE + _source(0, 3))}), **LIMITS)
    assert [(c.source, c.start, c.end, c.code, c.coder) for c in project.codings] == [("I1", 0, 3, "resistance",
                                                                                       "unknown")]


@pytest.mark.parametrize("members, message", [
    ({"project.qde": _qde(""), "../../evil.txt": b"x"}, "path traversal"),
    ({"project.qde": _qde(""), "/etc/passwd": b"x"}, "path traversal"),
    ({"project.qde": _qde(""), "sources\\..\\..\\evil.txt": b"x"}, "path traversal"),
    ({f"sources/{i}.txt": b"" for i in range(101)}, "more than the limit of 100"),
    ({"project.qde": _qde(""), "sources/bomb.txt": b"\0" * 6_000_000}, "more than the limit of 5000000"),
    ({"sources/a.txt": b"x"}, "no project.qde"),
    ({"project.qde": b"<Project"}, "not well-formed"),
    ({"project.qde": _qde("", '<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>')},
     "DTD or entities"),
    ({"project.qde": _qde("", '<!DOCTYPE p [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>')}, "DTD or entities"),
    ({"project.qde": b'<?xml version="1.0"?><Other/>'}, "not a QDA-XML Project"),
    ({"project.qde": _qde(GOOD_CODE + _source(5, 11))}, "positions 5-11 lie outside the source text"),
    ({"project.qde": _qde(GOOD_CODE + _source(-1, 3))}, "outside the source text"),
    ({"project.qde": _qde(GOOD_CODE + _source(0, 3, "55555555-5555-5555-5555-555555555555"))},
     "which the codebook lacks"),
])
def test_untrusted_archives_are_refused_with_one_clear_error(tmp_path, members, message):
    path = _zip(tmp_path, members)
    with pytest.raises(InputError, match=message) as exc:
        read_qdpx(path, **LIMITS)
    assert exc.value.path == str(path)


def test_zip_bomb_with_lying_headers_is_stopped_while_inflating(tmp_path):
    """A member whose header claims 10 bytes but inflates to 6 MB is cut off, never inflated whole."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("project.qde", b"\0" * 6_000_000)
    data = bytearray(buf.getvalue())
    # patch the uncompressed size in the central directory (offset 24 of the entry)
    cd = data.rfind(b"PK\x01\x02")
    data[cd + 24:cd + 28] = (10).to_bytes(4, "little")
    path = tmp_path / "liar.qdpx"
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="damaged archive member project.qde"):
        read_qdpx(path, **LIMITS)


def test_not_a_zip(tmp_path):
    path = tmp_path / "x.qdpx"
    path.write_text("hello")
    with pytest.raises(InputError, match="not a REFI-QDA project"):
        read_qdpx(path, **LIMITS)


def test_cli_export_then_compare_refuses_the_machines_own_coding_as_a_coder(machine_run, tmp_path):
    """An export without human codes holds only the machine's codings (user compare.qdpx_user) and its
    low-confidence markers: compare --human on it says so, instead of grading the machine against itself."""
    from pipeline.cli import app

    run = tmp_path / "run"
    shutil.copytree(machine_run, run)
    out = tmp_path / "m.qdpx"
    runner = CliRunner()
    result = runner.invoke(app, ["export", "qdpx", str(run), str(out)])
    assert result.exit_code == 0, result.output
    assert "28 sources" in result.output
    result = runner.invoke(app, ["compare", str(run), "--human", str(out), "--quiet"])
    assert result.exit_code != 0
    assert "only codings by themeshift's own users (themeshift)" in " ".join(result.output.split())
    assert not (run / "agreement.parquet").exists()


def test_export_carries_participants_as_cases_with_role_and_shift(machine_run, tmp_path):
    from pipeline.runner import run_export_qdpx, run_shift

    run = tmp_path / "run"
    shutil.copytree(machine_run, run)
    ud = read_table(run, "utterance_dimensions").to_pandas()
    ud.loc[~ud["mapped"], "probability"] = 1 / 3  # the fixture's unmapped rows are not a distribution
    write_table(run, "utterance_dimensions", pa.Table.from_pandas(ud, UTTERANCE_DIMENSIONS, preserve_index=False))
    # speakers.csv with the study's own columns (segment appends them to speakers as text)
    speakers = read_table(run, "speakers")
    ids = speakers.column("speaker_id").to_pylist()
    site = {"C01": "Leeds", "C02": "Leeds", "P03": "York"}
    speakers = speakers.append_column("site", pa.array([site.get(i, "") for i in ids]))
    speakers = speakers.append_column("years_in_post", pa.array([str(3 + k) for k in range(len(ids))]))
    write_table(run, "speakers", speakers)
    run_shift(run, load_config())
    out = tmp_path / "cases.qdpx"
    assert run_export_qdpx(run, out, load_config())["counts"]["cases"] == 14
    root = etree.fromstring(zipfile.ZipFile(out).read("project.qde"))
    schema = etree.XMLSchema(etree.parse(str(XSD)))
    assert schema.validate(root), schema.error_log.last_error
    sources = {s.get("guid"): s.get("name") for s in root.iterfind("q:Sources/q:TextSource", NS)}
    cases, on_cases = {}, set()
    for case in root.iterfind("q:Cases/q:Case", NS):
        typed = _values(root, case)
        values = {name: text for name, (_, _, text) in typed.items()}
        on_cases |= {(name, kind) for name, (kind, _, _) in typed.items()}
        refs = sorted(sources[r.get("targetGUID")] for r in case.iterfind("q:SourceRef", NS))
        cases[case.get("name")] = (values, refs)
    assert sorted(on_cases) == [("n_waves", "Integer"), ("profession", "Text"), ("role", "Text"),
                                ("shift_from", "Text"), ("shift_jsd", "Float"), ("shift_p_value", "Float"),
                                ("shift_significant", "Boolean"), ("shift_to", "Text"), ("site", "Text"),
                                ("years_in_post", "Integer")]
    assert sorted(cases) == [f"C0{i}" for i in range(1, 5)] + [f"P{i:02d}" for i in range(1, 11)]
    values, refs = cases["C01"]
    assert refs == ["C01-W1", "C01-W2"] and values["role"] == "CORE"
    assert values["n_waves"] == "2" and values["profession"] == "public-health consultant"
    assert values["site"] == "Leeds" and values["years_in_post"] == str(3 + ids.index("C01"))
    assert "site" not in cases["C03"][0]  # an empty cell is no value
    shifts = read_table(run, "shifts").to_pandas().set_index("speaker_id")
    first_last = shifts[shifts["is_first_last"]]
    assert values["shift_significant"] == str(bool(first_last.loc["C01", "significant"])).lower()
    assert float(values["shift_jsd"]) == pytest.approx(first_last.loc["C01", "jsd"], abs=1e-6)
    assert cases["P03"][0]["role"] == "PROJECT" and cases["P03"][0]["site"] == "York"


def test_export_never_credits_the_coders_labels_to_the_machine(machine_run, tmp_path):
    """After learn, human-coded utterances keep the coders' labels (source human): those codings are
    the coders', so the machine's project leaves them out."""
    dims = read_table(machine_run, "utterance_dimensions").to_pandas()
    human_ids = set(dims["utterance_id"].unique()[:100])
    dims.loc[dims["utterance_id"].isin(human_ids), "source"] = "human"
    fw = load_framework()
    _, sources, counts = machine_project(read_table(machine_run, "sources"), read_table(machine_run, "utterances"),
                                         fw, pa.Table.from_pandas(dims, schema=UTTERANCE_DIMENSIONS,
                                                                  preserve_index=False))
    top = dims[dims["is_argmax"] & dims["mapped"]]
    assert counts["human_codings_left_out"] == int(top["utterance_id"].isin(human_ids).sum()) > 0
    assert counts["concept_codings"] == int((~top["utterance_id"].isin(human_ids)).sum())


def test_a_codebook_nested_thousands_deep_is_read_not_a_recursion_error(tmp_path):
    import zipfile

    from pipeline.io.qdpx import read_qdpx

    depth = 3000
    codes = "".join(f'<Code guid="{i:08d}-0000-0000-0000-000000000000" name="c{i}" isCodable="true">'
                    for i in range(depth)) + "</Code>" * depth
    xml = ('<?xml version="1.0"?><Project xmlns="urn:QDA-XML:project:1.0" name="x"><CodeBook><Codes>'
           f"{codes}</Codes></CodeBook></Project>")
    path = tmp_path / "deep.qdpx"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("project.qde", xml)
    assert read_qdpx(path, 10_000, 10**9) is not None


# ---------------------------------------------------------------- the QDA round trip: variables, coders, confidence

def _root(path: Path):
    root = etree.fromstring(zipfile.ZipFile(path).read("project.qde"))
    schema = etree.XMLSchema(etree.parse(str(XSD)))
    assert schema.validate(root), schema.error_log.last_error
    return root


def _values(root, holder) -> dict[str, tuple[str, str, str]]:
    """name -> (declared type, value element, value text) of a case's or source's variables."""
    declared = {v.get("guid"): (v.get("name"), v.get("typeOfVariable"))
                for v in root.iterfind("q:Variables/q:Variable", NS)}
    out = {}
    for v in holder.iterfind("q:VariableValue", NS):
        name, kind = declared[v.find("q:VariableRef", NS).get("targetGUID")]
        out[name] = (kind, etree.QName(v[1]).localname, v[1].text)
    return out


def test_sources_carry_the_manifest_as_typed_variables(machine_run, tmp_path):
    import pandas as pd

    from pipeline.runner import run_export_qdpx

    out = tmp_path / "vars.qdpx"
    run_export_qdpx(machine_run, out, load_config())
    root = _root(out)
    names = [v.get("name") for v in root.iterfind("q:Variables/q:Variable", NS)]
    assert len(names) == len(set(names))  # each declared once, with one type
    sources = {s.get("name"): _values(root, s) for s in root.iterfind("q:Sources/q:TextSource", NS)}
    manifest = pd.read_csv(MANIFEST, dtype=str).set_index("interview_id")
    for iid, wave in (("C01-W1", "1"), ("C01-W2", "2")):
        v = sources[iid]
        assert v["interview_id"] == ("Text", "TextValue", iid)
        assert v["wave"] == ("Integer", "IntegerValue", wave) == ("Integer", "IntegerValue", manifest.loc[iid, "wave"])
        assert v["date"] == ("Date", "DateValue", manifest.loc[iid, "date"])
        assert v["participant_id"] == ("Text", "TextValue", "C01")
        assert v["profession"] == ("Text", "TextValue", manifest.loc[iid, "profession"])
        assert v["source_file"][2] == manifest.loc[iid, "file"] and v["source_type"][2] == "interview"
    assert sources["C01-W1"]["date"][2] == "2019-03-14" and sources["C01-W2"]["date"][2] == "2020-03-11"
    assert not {"n_turns", "n_utterances", "n_skipped_lines"} & set(names)  # processing counts, not attributes
    assert all(len(v) >= 6 for v in sources.values())


@pytest.mark.parametrize("values, kind", [
    ([3, "three"], "Text"),  # one name, mixed types: Text
    ([3, 0.5], "Float"),
    ([1e-05, float("nan")], "Float"),  # never an exponent (xsd:decimal); NaN is no value
    ([True, False], "Boolean"),
])
def test_a_variable_has_one_type_from_all_its_values(values, kind):
    from pipeline.io.qdpx import ExportCase

    cases = [ExportCase(f"c{i}", ["s"], {"x": v}) for i, v in enumerate(values[:1])]
    sources = [ExportSource("s", "s", "text", [], {"x": v}) for v in values[1:]]
    root = etree.fromstring(project_xml("p", "me", [], sources, cases))
    assert etree.XMLSchema(etree.parse(str(XSD))).validate(root)
    assert [v.get("typeOfVariable") for v in root.iterfind("q:Variables/q:Variable", NS)] == [kind]
    texts = [e.text for e in root.iter(f"{{urn:QDA-XML:project:1.0}}{kind}Value")]
    assert len(texts) == len([v for v in values if v == v])  # NaN (v != v) is no value
    if values[0] == 1e-05:
        assert texts == ["0.00001"]


@pytest.mark.parametrize("column, typed", [
    (["1", "2", None, ""], [1, 2, None, None]),
    (["007", "8"], ["007", "8"]),  # leading zeros: an identifier, kept as text
    (["2019-03-14", "2020-03-11"], [datetime.date(2019, 3, 14), datetime.date(2020, 3, 11)]),
    (["2019-02-30"], ["2019-02-30"]),  # not a date
    (["0.5", "2"], [0.5, 2.0]),
    (["True", "false"], [True, False]),
    (["Leeds", "3"], ["Leeds", "3"]),
])
def test_manifest_text_columns_are_typed_only_when_every_value_fits(column, typed):
    from pipeline.io.qdpx import typed_column

    assert typed_column(column) == typed


def _compare_export_compare(run: Path, human: Path, out: Path, mapping: Path | None = None):
    """compare --human CSV, export qdpx, compare --human export.qdpx (the CLI); the two agreement and
    human_codes tables."""
    from pipeline.cli import app

    runner = CliRunner()
    args = ["--mapping", str(mapping)] if mapping else []
    result = runner.invoke(app, ["compare", str(run), "--human", str(human), *args, "--quiet"])
    assert result.exit_code == 0, result.output
    first = read_table(run, "agreement").to_pandas(), read_table(run, "human_codes").to_pandas()
    result = runner.invoke(app, ["export", "qdpx", str(run), str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["compare", str(run), "--human", str(out), "--quiet"])  # no --mapping needed
    assert result.exit_code == 0, result.output
    return first, (read_table(run, "agreement").to_pandas(), read_table(run, "human_codes").to_pandas())


def _perturbed_answer_key(folder: Path) -> tuple[Path, Path]:
    """The answer key made harder: codes named through a mapping file, by a concept id, by a dimension
    (name and id), outside the framework; spans cut short (an utterance partly covered) or to 12
    characters (below min_overlap: the best-overlapping utterance)."""
    import pandas as pd

    h = pd.read_csv(ANSWER_KEY / "human_codes.csv")
    a, b = h["coder"] == "coder_a", h["coder"] == "coder_b"
    h.loc[b & (h["code"] == "Resistance towards top-down leadership"), "code"] = "Pushback"
    h.loc[a & (h["code"] == "Iterative cycles of action, feedback and learning"), "code"] = "iterative_learning"
    h.loc[a & (h["code"] == "Developing leadership capability"), "code"] = "Mobilizing leadership across boundaries"
    h.loc[b & (h["code"] == "Developing leadership capability"), "code"] = "pull"
    h.loc[b & (h.index % 7 == 0), "code"] = "Small talk"
    length = h["end_char"] - h["start_char"]
    part = h.index % 4 == 1
    h.loc[part, "start_char"] += (length[part] * 0.6).astype(int)
    tiny = h.index % 9 == 2
    middle = (h["start_char"] + length // 2)[tiny]
    h.loc[tiny, "start_char"], h.loc[tiny, "end_char"] = middle, middle + 12
    h.to_csv(folder / "hard_codes.csv", index=False)
    pd.DataFrame({"human_code": ["Pushback", "Small talk"], "concept": ["resistance", "none"],
                  "dimension": ["", "none"]}).to_csv(folder / "mapping.csv", index=False)
    return folder / "hard_codes.csv", folder / "mapping.csv"


@pytest.mark.parametrize("hard", [False, True], ids=["answer-key", "mapped-partial-outside"])
def test_compare_on_the_export_reproduces_the_agreement_from_the_csv(machine_run, tmp_path, hard):
    """export, then `compare --human export.qdpx` gives exactly the agreement table the CSV gave: every
    row (kappa and alpha between the coders, the machine against each coder and the consensus, the
    per-dimension and cluster rows), values, intervals and n. The machine's own codings in the
    project are no coder; each coder's codings come back on the same utterances with the same code
    names, framework targets and covered shares, so compare's alignment is the same."""
    run = tmp_path / "run"
    shutil.copytree(machine_run, run)
    human, mapping = _perturbed_answer_key(tmp_path) if hard else (ANSWER_KEY / "human_codes.csv", None)
    (csv_agreement, csv_codes), (qdpx_agreement, qdpx_codes) = _compare_export_compare(
        run, human, tmp_path / "export.qdpx", mapping)
    kappa = csv_agreement[csv_agreement["metric"] == "cohen_kappa"]
    assert {("coder_a", "coder_b"), ("coder_a", "machine"), ("coder_b", "machine")} <= set(
        zip(kappa["coder_a"], kappa["coder_b"]))
    pd_testing = pytest.importorskip("pandas.testing")
    pd_testing.assert_frame_equal(qdpx_agreement, csv_agreement)
    columns = ["utterance_id", "coder", "code", "second_order", "dimension", "overlap", "coded"]
    pd_testing.assert_frame_equal(qdpx_codes[columns], csv_codes[columns])
    if hard:
        assert set(csv_codes["mapped_via"]) == {"name", "mapping"} and (csv_codes["overlap"] < 1).any()
        assert set(qdpx_codes["mapped_via"]) == {"name", "parent"}  # through the "Human codes" groups


def test_export_after_compare_carries_each_coder_the_confidence_and_the_colours(machine_run, tmp_path):
    from pipeline.io.qdpx import GREY, HUMAN_GROUP, LOW_CONFIDENCE_CODE, PALETTE, human_span
    from pipeline.runner import run_compare, run_export_qdpx

    run = tmp_path / "run"
    shutil.copytree(machine_run, run)
    human, mapping = _perturbed_answer_key(tmp_path)
    run_compare(run, human, load_config(), mapping)
    out = tmp_path / "coders.qdpx"
    counts = run_export_qdpx(run, out, load_config())["counts"]
    root = _root(out)
    users = {u.get("guid"): u.get("name") for u in root.iterfind("q:Users/q:User", NS)}
    assert list(users.values()) == ["themeshift", "coder_a", "coder_b"] and counts["human_coders"] == ["coder_a",
                                                                                                      "coder_b"]
    # codebook: one colour per dimension, shared by its concepts and first-order codes; the other groups grey
    fw = load_framework()
    top = {c.get("name"): c for c in root.iterfind("q:CodeBook/q:Codes/q:Code", NS)}
    for i, d in enumerate(fw.dimensions):
        assert {c.get("color") for c in top[d.name].iter("{urn:QDA-XML:project:1.0}Code")} == {PALETTE[i]}
    assert top[HUMAN_GROUP].get("color") == GREY and top[HUMAN_GROUP].get("isCodable") == "false"
    human_tree = {c.get("name"): c for c in top[HUMAN_GROUP]}
    assert human_tree["Small talk"].get("color") == GREY  # outside the framework: directly under the group
    pushback = human_tree["Resistance towards top-down leadership"].find("q:Code", NS)  # mapped: its concept's group
    assert pushback.get("name") == "Pushback" and pushback.get("color") == PALETTE[1]
    # codings: per coder as many as compare aligned; framework-named codes use the framework's own code
    h = read_table(run, "human_codes").to_pandas()
    code_guid = {c.get("guid"): c.get("name") for c in root.iter("{urn:QDA-XML:project:1.0}Code")}
    concept_guid = {c.get("name"): c.get("guid") for d in fw.dimensions for c in top[d.name]}
    by_coder: dict[str, list] = {}
    guids = set()
    utt = read_table(run, "utterances").to_pandas().set_index("utterance_id")
    for src in root.iterfind("q:Sources/q:TextSource", NS):
        for sel in src.iterfind("q:PlainTextSelection", NS):
            assert sel.get("guid") not in guids
            guids.add(sel.get("guid"))
            user = users[sel.get("creatingUser")]
            for coding in sel.iterfind("q:Coding", NS):
                assert users[coding.get("creatingUser")] == user
                target = coding.find("q:CodeRef", NS).get("targetGUID")
                by_coder.setdefault(user, []).append((src.get("name"), int(sel.get("startPosition")),
                                                      int(sel.get("endPosition")), target))
            note = sel.findtext("q:Description", None, NS)
            assert (user == "themeshift") == (note is not None)
            if user == "themeshift":
                assert "p = " in note and note.startswith(("machine: ", "first-order code"))
    for coder in ("coder_a", "coder_b"):
        rows = h[h["coder"] == coder]
        assert len(by_coder[coder]) == len(rows) == counts["human_codings"] - len(h[h["coder"] != coder])
        expected = {(r.interview_id, *human_span(int(utt.loc[r.utterance_id, "start_char"]),
                                                 int(utt.loc[r.utterance_id, "end_char"]), r.overlap), r.code)
                    for r in rows.itertuples()}
        assert {(s, a, b, code_guid[t]) for s, a, b, t in by_coder[coder]} == expected
    shared = "Enacting the push model through top-down leadership"
    assert concept_guid[shared] in {t for *_, t in by_coder["coder_a"]} & {t for *_, t in by_coder["themeshift"]}
    # the machine's low-confidence marker: one coding per utterance the map left unmapped
    dims = read_table(run, "utterance_dimensions").to_pandas()
    unmapped = int((dims["is_argmax"] & ~dims["mapped"]).sum())
    marker = top[LOW_CONFIDENCE_CODE].get("guid")
    assert sum(t == marker for *_, t in by_coder["themeshift"]) == counts["low_confidence_codings"] == unmapped > 0
    # the same run gives the same bytes
    again = tmp_path / "again.qdpx"
    run_export_qdpx(run, again, load_config())
    assert again.read_bytes() == out.read_bytes()


def test_human_span_keeps_the_covered_share():
    from pipeline.io.qdpx import human_span

    assert human_span(100, 200, 1.0) == (100, 200)
    a, b = human_span(100, 200, 0.04)
    assert b - a == 4 and 100 < a and b < 200  # inside, touching neither neighbour
    a, b = human_span(10, 13, 0.34)
    assert (a, b) == (11, 12)


def test_themeshifts_own_users_are_nobodys_coding(tmp_path):
    import pandas as pd

    from pipeline.io.human_codes import HumanCodes
    from pipeline.learn import drop_suggestion_markers

    coders = ["coder_a", "themeshift", "themeshift-suggestions", "coder_b"]
    frame = pd.DataFrame({"coder": coders, "code": list("abcd")})
    codes = HumanCodes(tmp_path / "x.qdpx", frame, "span")
    kept = drop_suggestion_markers(codes, ("themeshift-suggestions", "themeshift"))
    assert list(kept.frame["coder"]) == ["coder_a", "coder_b"]
    assert drop_suggestion_markers(codes, "nobody") is codes
    with pytest.raises(InputError, match="only codings by themeshift's own users"):
        drop_suggestion_markers(HumanCodes(tmp_path / "x.qdpx", frame[frame["coder"] == "themeshift"], "span"),
                                {"themeshift"})


@pytest.mark.parametrize("level", ["second_order", "code"])
def test_learn_reads_the_same_targets_from_the_export_as_from_the_csv(machine_run, tmp_path, level):
    """learn's side of the round trip: the coders' labels it trains on, from the export (the machine's
    codings and markers left out, no --mapping), are those the CSV and its mapping give."""
    import numpy as np

    from pipeline.io.human_codes import read_human_codes, read_mapping
    from pipeline.learn import human_targets
    from pipeline.runner import run_compare, run_export_qdpx

    run = tmp_path / "run"
    shutil.copytree(machine_run, run)
    human, mapping = _perturbed_answer_key(tmp_path)
    run_compare(run, human, load_config(), mapping)
    run_export_qdpx(run, tmp_path / "export.qdpx", load_config())
    fw, settings = load_framework(), settings_for(CompareSettings, load_config())
    utt, src = read_table(run, "utterances"), read_table(run, "sources")
    from_csv = human_targets(utt, src, read_human_codes(human), fw, read_mapping(mapping, fw), level, settings)
    from_qdpx = human_targets(utt, src, read_human_codes(tmp_path / "export.qdpx"), fw, None, level, settings)
    assert from_qdpx.coders == from_csv.coders == ["coder_a", "coder_b"]
    assert from_qdpx.classes == from_csv.classes and list(from_qdpx.units["utterance_id"]) == list(
        from_csv.units["utterance_id"])
    for coder in from_csv.coders:
        assert np.array_equal(from_qdpx.primary[coder], from_csv.primary[coder])
        assert np.array_equal(from_qdpx.present[coder], from_csv.present[coder])
