"""Human codes: reading, naming in framework terms, the span -> utterance overlap rule, bad input."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from conftest import ANSWER_KEY
from pipeline.errors import InputError
from pipeline.framework import load_framework
from pipeline.io.human_codes import align, read_human_codes, read_mapping, resolve_codes
from pipeline.io.rundir import read_table

# One interview, four utterances: [0,20) [21,41) [42,62) [63,113)
TEXT = "Alpha beta gamma de. Epsilon zeta eta t. Iota kappa lambda. Mu nu xi omicron pi rho sigma tau upsilon phi."
OFFSETS = [(0, 20), (21, 41), (42, 62), (63, 113)]


@pytest.fixture
def tiny():
    utt = pa.table({"utterance_id": [f"I1-u{i}" for i in range(4)], "interview_id": ["I1"] * 4,
                    "start_char": [s for s, _ in OFFSETS], "end_char": [e for _, e in OFFSETS],
                    "coded": [True, True, True, True]})
    src = pa.table({"interview_id": ["I1"], "source_file": ["grp/I1.txt"], "source_text": [TEXT]})
    return utt, src


def _csv(tmp_path, rows, header="interview_id,start_char,end_char,code,coder"):
    path = tmp_path / "codes.csv"
    path.write_text(header + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def _align(path, tiny, min_overlap=0.5, mapping=None):
    codes = read_human_codes(path)
    resolved, _ = resolve_codes(codes, load_framework(), mapping)
    return align(codes, resolved, *tiny, min_overlap).to_pylist()


def _hits(rows):
    return sorted((r["utterance_id"], r["coder"], r["second_order"], round(r["overlap"], 2)) for r in rows)


def test_span_crossing_an_utterance_border_codes_only_the_mostly_covered_one(tmp_path, tiny):
    # [8, 30): 12 of u0's 20 characters (0.6), 9 of u1's 20 (0.45)
    rows = _align(_csv(tmp_path, ["I1,8,30,resistance,a"]), tiny)
    assert _hits(rows) == [("I1-u0", "a", "resistance", 0.6)]
    # any shared character when min_overlap = 0
    rows = _align(_csv(tmp_path, ["I1,8,30,resistance,a"]), tiny, min_overlap=0.0)
    assert [r["utterance_id"] for r in rows] == ["I1-u0", "I1-u1"]


def test_span_covering_several_utterances_codes_each(tmp_path, tiny):
    rows = _align(_csv(tmp_path, ["grp/I1.txt,0,62,Developing leadership capability,a"],
                       header="source_file,start_char,end_char,code,coder"), tiny)
    assert _hits(rows) == [(f"I1-u{i}", "a", "leadership_capability", 1.0) for i in range(3)]


def test_nested_spans_merge_per_code_and_stay_multi_label_across_codes(tmp_path, tiny):
    rows = _align(_csv(tmp_path, [
        "I1,0,41,resistance,a",          # covers u0 and u1
        "I1,5,15,resistance,a",          # nested in the first, same code: merged, not double counted
        "I1,25,39,top_down_push,a",      # nested inside u1 with another code: 14/20 = 0.7
        "I1,0,20,resistance,b",
    ]), tiny)
    assert _hits(rows) == [("I1-u0", "a", "resistance", 1.0), ("I1-u0", "b", "resistance", 1.0),
                           ("I1-u1", "a", "resistance", 1.0), ("I1-u1", "a", "top_down_push", 0.7)]


def test_short_span_below_the_threshold_still_codes_its_best_utterance(tmp_path, tiny):
    # "sigma" (5 of u3's 50 characters) and a 3-character sliver of u2: neither reaches 0.5
    rows = _align(_csv(tmp_path, ["I1,89,94,ambiguity_roles,a", "I1,18,23,push,a"]), tiny)
    assert _hits(rows) == [("I1-u0", "a", None, 0.1), ("I1-u3", "a", "ambiguity_roles", 0.1)]
    assert [r["dimension"] for r in rows] == ["push", "exchange"]


def test_per_utterance_codes_and_parquet(tmp_path, tiny):
    table = pa.table({"utterance_id": ["I1-u2", "I1-u2", "I1-u3"], "code": ["resistance", "Pull", "exchange"],
                      "coder": ["x", "x", "y"]})
    pq.write_table(table, tmp_path / "codes.parquet")
    rows = _align(tmp_path / "codes.parquet", tiny)
    assert sorted((r["utterance_id"], r["coder"], r["code"], r["dimension"]) for r in rows) == [
        ("I1-u2", "x", "Pull", "pull"), ("I1-u2", "x", "resistance", "pull"), ("I1-u3", "y", "exchange", "exchange")]


def test_mapping_file_names_codes(tmp_path, tiny):
    mapping = tmp_path / "map.csv"
    mapping.write_text("human_code,concept,dimension\nPDSA talk,technical_infrastructure,\n"
                       "Shared leadership,,exchange\nSmall talk,none,\n")
    rows = _align(_csv(tmp_path, ["I1,0,20,PDSA talk,a", "I1,21,41,Shared leadership,a", "I1,42,62,Small talk,a"]),
                  tiny, mapping=read_mapping(mapping, load_framework()))
    assert [(r["second_order"], r["dimension"], r["mapped_via"]) for r in rows] == [
        ("technical_infrastructure", "push", "mapping"), (None, "exchange", "mapping"), (None, None, "mapping")]


def test_bad_mapping_rows_name_the_line(tmp_path):
    fw = load_framework()
    bad = tmp_path / "map.csv"
    bad.write_text("human_code,concept\nA,technical_infrastructure\nB,not_a_concept\n")
    with pytest.raises(InputError, match="not_a_concept") as exc:
        read_mapping(bad, fw)
    assert exc.value.line == 3
    bad.write_text("human_code,concept,dimension\nA,resistance,push\n")
    with pytest.raises(InputError, match="belongs to dimension 'pull'"):
        read_mapping(bad, fw)


def test_unknown_code_names_are_listed(tmp_path, tiny):
    path = _csv(tmp_path, ["I1,0,20,resistance,a", "I1,21,41,Coffee breaks,a", "I1,42,62,Parking,b"])
    codes = read_human_codes(path)
    with pytest.raises(InputError, match=r"2 human code name\(s\).*'Coffee breaks' \(line 3\).*--mapping") as exc:
        resolve_codes(codes, load_framework(), None)
    assert exc.value.path == str(path)
    resolved, warnings = resolve_codes(codes, load_framework(), None, unknown="ignore")
    assert resolved["via"].tolist() == ["name", "unmapped", "unmapped"] and "Parking" in warnings[0]


@pytest.mark.parametrize("rows, header, message, line", [
    ([], "interview_id,start_char,end_char,code,coder", "no codings", None),
    (["I1,0,20,resistance"], "interview_id,start_char,end_char,code", "needs columns", None),
    (["I1,zero,20,resistance,a"], None, "start_char must be a whole number", 2),
    (["I1,0,20,resistance,a", "I1,30,30,resistance,a"], None, "empty or negative", 3),
    (["I1,0,20,,a"], None, "empty code", 2),
])
def test_bad_files_are_one_clear_error(tmp_path, rows, header, message, line):
    path = _csv(tmp_path, rows, header or "interview_id,start_char,end_char,code,coder")
    with pytest.raises(InputError, match=message) as exc:
        read_human_codes(path)
    assert exc.value.path == str(path) and exc.value.line == line


@pytest.mark.parametrize("row, message, line", [
    ("I9,0,20,resistance,a", "source 'I9' is not in the run", 2),
    ("I1,100,120,resistance,a", "ends past the end of I1's text", 2),
])
def test_spans_must_point_into_the_run(tmp_path, tiny, row, message, line):
    with pytest.raises(InputError, match=message) as exc:
        _align(_csv(tmp_path, [row]), tiny)
    assert exc.value.line == line


def test_unknown_utterance_id(tmp_path, tiny):
    path = _csv(tmp_path, ["I1-u9,resistance,a"], header="utterance_id,code,coder")
    with pytest.raises(InputError, match="utterance_id 'I1-u9'"):
        _align(path, tiny)


def test_example_human_codes_align_turn_by_turn(example_segmented):
    """The example study's spans are whole participant turns: each of the turn's utterances is
    covered completely and no other utterance is touched."""
    utt, src = read_table(example_segmented, "utterances"), read_table(example_segmented, "sources")
    codes = read_human_codes(ANSWER_KEY / "human_codes.csv")
    assert len(codes.frame) == 373
    resolved, warnings = resolve_codes(codes, load_framework(), None)
    assert not warnings and set(resolved["via"]) == {"name"}
    rows = align(codes, resolved, utt, src, 0.5).to_pandas()
    u = utt.to_pandas()
    expected = 0
    for r in codes.frame.itertuples():
        inside = u[(u["interview_id"] == r.interview_id) & (u["start_char"] >= r.start_char)
                   & (u["end_char"] <= r.end_char)]
        expected += len(inside)
    assert len(rows) == expected == 2221
    assert (rows["overlap"] == 1.0).all()
    assert set(rows["coder"]) == {"coder_a", "coder_b"}
    assert rows["interview_id"].nunique() == 10
    assert (~rows["coded"]).sum() == 29  # back-channels inside coded turns: kept, flagged, not compared


def test_cli_bad_human_file_exits_2_with_one_line(example_segmented, tmp_path):
    from pipeline.cli import app

    bad = tmp_path / "codes.csv"
    bad.write_text("interview_id,start_char,end_char,code,coder\n")
    result = CliRunner().invoke(app, ["compare", str(example_segmented), "--human", str(bad)])
    assert result.exit_code == 2
    out = result.output.strip().splitlines()
    assert len(out) == 1 and "error:" in out[0] and "codes.csv" in out[0] and "Traceback" not in result.output


def test_interview_id_and_source_file_that_disagree_are_named(tmp_path, tiny):
    utt, src = tiny
    two = pa.concat_tables([src, pa.table({"interview_id": ["I2"], "source_file": ["grp/I2.txt"],
                                           "source_text": [TEXT]})])
    header = "interview_id,source_file,start_char,end_char,code,coder"
    agree = _csv(tmp_path, ["I1,grp/I1.txt,0,20,resistance,a"], header)
    assert _align(agree, (utt, two))
    path = _csv(tmp_path, ["I1,grp/I1.txt,0,20,resistance,a", "I1,grp/I2.txt,0,20,resistance,a"], header)
    with pytest.raises(InputError, match="interview_id 'I1' and source_file 'grp/I2.txt' name different interviews") \
            as exc:
        _align(path, (utt, two))
    assert exc.value.line == 3
