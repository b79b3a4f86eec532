"""REFI-QDA (.qdpx): export valid against the REFI schema, exact round trip, and safe import."""
from __future__ import annotations

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


@pytest.fixture(scope="module")
def machine_run(example_segmented, tmp_path_factory):
    """The example study with the answer key's concepts as the machine's utterance coding and one
    first-order code per concept (a run as the map stage leaves it, without the models)."""
    run = tmp_path_factory.mktemp("qdpx_run")
    for name in ("utterances", "sources", "interviews"):
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
    written = {(s.name, a, b, c.name) for s in sources for a, b, codes in s.selections for c in codes}
    project = read_qdpx(out, **LIMITS)
    read_back = {(c.source, c.start, c.end, c.code) for c in project.codings}
    assert read_back == written
    assert len(project.codings) == counts["concept_codings"] + counts["first_order_codings"]
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


def test_cli_export_then_compare(machine_run, tmp_path):
    from pipeline.cli import app

    run = tmp_path / "run"
    shutil.copytree(machine_run, run)
    out = tmp_path / "m.qdpx"
    runner = CliRunner()
    result = runner.invoke(app, ["export", "qdpx", str(run), str(out)])
    assert result.exit_code == 0, result.output
    assert "28 sources" in result.output
    result = runner.invoke(app, ["compare", str(run), "--human", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    for name in ("agreement", "confusion", "disagreements", "human_codes"):
        assert (run / f"{name}.parquet").is_file()


def test_export_carries_participants_as_cases_with_role_and_shift(machine_run, tmp_path):
    from pipeline.runner import run_export_qdpx, run_shift

    run = tmp_path / "run"
    shutil.copytree(machine_run, run)
    ud = read_table(run, "utterance_dimensions").to_pandas()
    ud.loc[~ud["mapped"], "probability"] = 1 / 3  # the fixture's unmapped rows are not a distribution
    write_table(run, "utterance_dimensions", pa.Table.from_pandas(ud, UTTERANCE_DIMENSIONS, preserve_index=False))
    run_shift(run, load_config())
    out = tmp_path / "cases.qdpx"
    assert run_export_qdpx(run, out, load_config())["counts"]["cases"] == 14
    root = etree.fromstring(zipfile.ZipFile(out).read("project.qde"))
    schema = etree.XMLSchema(etree.parse(str(XSD)))
    assert schema.validate(root), schema.error_log.last_error
    ns = {"q": "urn:QDA-XML:project:1.0"}
    variables = {v.get("guid"): (v.get("name"), v.get("typeOfVariable")) for v in root.iterfind("q:Variables/q:Variable", ns)}
    assert sorted(variables.values()) == [("role", "Text"), ("shift_from", "Text"), ("shift_jsd", "Float"),
                                          ("shift_p_value", "Float"), ("shift_significant", "Boolean"),
                                          ("shift_to", "Text")]
    sources = {s.get("guid"): s.get("name") for s in root.iterfind("q:Sources/q:TextSource", ns)}
    cases = {}
    for case in root.iterfind("q:Cases/q:Case", ns):
        values = {variables[v.find("q:VariableRef", ns).get("targetGUID")][0]: v[1].text
                  for v in case.iterfind("q:VariableValue", ns)}
        cases[case.get("name")] = (values, sorted(sources[r.get("targetGUID")] for r in case.iterfind("q:SourceRef", ns)))
    assert sorted(cases) == [f"C0{i}" for i in range(1, 5)] + [f"P{i:02d}" for i in range(1, 11)]
    values, refs = cases["C01"]
    assert refs == ["C01-W1", "C01-W2"] and values["role"] == "CORE"
    shifts = read_table(run, "shifts").to_pandas().set_index("speaker_id")
    first_last = shifts[shifts["is_first_last"]]
    assert values["shift_significant"] == str(bool(first_last.loc["C01", "significant"])).lower()
    assert float(values["shift_jsd"]) == pytest.approx(first_last.loc["C01", "jsd"], abs=1e-6)
    assert cases["P03"][0]["role"] == "PROJECT"


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
