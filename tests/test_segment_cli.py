"""Folder ingestion through the CLI: metadata, units, flags, stable ids, bad input."""
from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config import load_config
from pipeline.errors import ConfigError

runner = CliRunner()

INTERVIEW = (
    "Interviewer: How has the project gone so far? Tell me everything.\n"
    "Respondent: Yeah. It has been hard. The data toolkit took weeks to set up!\n"
    "We got there in the end.\n"
    "Interviewer: Mm-hmm.\n"
    "Respondent: And the team? They were brilliant. Really brilliant.\n"
)


def _segment(folder, out, *extra):
    return runner.invoke(app, ["segment", str(folder), "--out", str(out), "--quiet", *extra])


def _utterances(out):
    return pq.read_table(out / "utterances.parquet").to_pylist()


def test_filename_template_fills_speaker_and_wave(write, tmp_path):
    write("PL-03_wave2.txt", INTERVIEW)
    (tmp_path / "c.toml").write_text('[input]\nfilename_template = "{speaker}_wave{wave}"\n')
    res = _segment(write.dir, tmp_path / "run", "--config", str(tmp_path / "c.toml"))
    assert res.exit_code == 0, res.output
    rows = _utterances(tmp_path / "run")
    assert {r["wave"] for r in rows} == {2}
    assert {r["speaker_id"] for r in rows} == {"Interviewer", "PL-03"}
    assert rows[0]["interview_id"] == "PL-03_wave2"
    # 2 interviewer turns (one a back-channel) + 2 + 3 sentences split by rules
    assert [(r["turn_index"], r["sentence_index"], r["exclusion_reason"]) for r in rows] == [
        (0, 0, "interviewer"), (0, 1, "interviewer"),
        (1, 0, "backchannel"), (1, 1, None), (1, 2, None), (1, 3, None),
        (2, 0, "interviewer"),
        (3, 0, None), (3, 1, None), (3, 2, None),
    ]
    assert [r["is_backchannel"] for r in rows if r["turn_index"] == 1] == [True, False, False, False]


def test_manifest_and_speakers_files_resolve_ids_roles_and_aliases(write, tmp_path):
    write("w1/a.txt", "INT: Hello?\npl03: Hello, I lead the falls work.\n")
    write("w2/b.txt", "INT: Again?\nPL-03: Yes, a year on we share the lead.\n")
    write("manifest.csv", "file,interview_id,wave,date,site\nw1/a.txt,PL03-1,1,2019-10-01,North\n"
                          "w2/b.txt,PL03-2,W2,2021-04-01,North\n")
    write("speakers.csv", "speaker_id,role,is_interviewer,aliases\nINT,interviewer,true,\n"
                          "PL03,PROJECT,false,PL-03;pl03\n")
    res = _segment(write.dir, tmp_path / "run")
    assert res.exit_code == 0, res.output
    rows = [r for r in _utterances(tmp_path / "run") if not r["is_interviewer"]]
    assert [(r["interview_id"], r["speaker_id"], r["speaker_role"], r["wave"]) for r in rows] == [
        ("PL03-1", "PL03", "PROJECT", 1), ("PL03-2", "PL03", "PROJECT", 2)]
    interviews = pq.read_table(tmp_path / "run" / "interviews.parquet").to_pylist()
    assert [(i["interview_id"], i["date"], i["site"]) for i in interviews] == [
        ("PL03-1", "2019-10-01", "North"), ("PL03-2", "2021-04-01", "North")]


@pytest.mark.parametrize("unit,expected", [("turn", 4), ("sentence", 10), ("window", 6)])
def test_units(write, tmp_path, unit, expected):
    write("x.txt", INTERVIEW)
    (tmp_path / "c.toml").write_text(f'[segment]\nunit = "{unit}"\nwindow_size = 2\n')
    res = _segment(write.dir, tmp_path / "run", "--config", str(tmp_path / "c.toml"))
    assert res.exit_code == 0, res.output
    rows = _utterances(tmp_path / "run")
    assert len(rows) == expected
    sources = {s["source_file"]: s["source_text"] for s in pq.read_table(tmp_path / "run" / "sources.parquet").to_pylist()}
    assert all(sources[r["source_file"]][r["start_char"]:r["end_char"]] == r["text"] for r in rows)


def test_same_input_same_ids_and_manifest_counts_reconcile(write, tmp_path):
    write("x.txt", INTERVIEW)
    write("y.json", json.dumps([{"speaker": "Interviewer", "text": "Q?"}, {"speaker": "P2", "text": "It went well. Mostly."}]))
    for run in ("r1", "r2"):
        assert _segment(write.dir, tmp_path / run).exit_code == 0
    assert pq.read_table(tmp_path / "r1" / "utterances.parquet").equals(pq.read_table(tmp_path / "r2" / "utterances.parquet"))
    manifest = json.loads((tmp_path / "r1" / "manifest.json").read_text())
    counts = manifest["stages"]["segment"]["counts"]
    assert counts["utterances"] == 13 and counts["coded"] + sum(counts["excluded"].values()) == 13
    assert {i["path"] for i in manifest["stages"]["segment"]["inputs"]} == {"x.txt", "y.json"}
    assert all(len(i["sha256"]) == 64 for i in manifest["stages"]["segment"]["inputs"])
    assert manifest["config"]["run"]["seed"] == 42 and "pyarrow" in manifest["versions"]
    assert not list((tmp_path / "r1").glob("*.tmp"))


GOOD = "Interviewer: Q?\nP1: An answer.\n"


@pytest.mark.parametrize("files,message", [
    ({"a.txt": b""}, "a.txt: empty file"),
    ({"a.txt": bytes(range(256))}, "a.txt: binary file"),
    ({"a.xyz": b"hello", "manifest.csv": b"file\na.xyz\n"}, "a.xyz: unknown transcript format '.xyz'"),
    ({"a.xyz": b"hello"}, "no transcript, field note or document files found"),
    ({"a.txt": b"no labels here at all\n"}, "a.txt:1: no speaker labels"),
    ({"a.txt": GOOD.encode(), "manifest.csv": b"file,wave\na.txt,1\nb.txt,2\n"},
     "manifest.csv:3: manifest names a missing file 'b.txt'"),
    ({"a.txt": GOOD.encode(), "manifest.csv": b"file,wave\na.txt,first\n"},
     "manifest.csv:2: wave must be a whole number from 0 to 2147483647, got 'first'"),
    ({"a.txt": GOOD.encode(), "b.txt": GOOD.encode(), "manifest.csv": b"file,interview_id\na.txt,X1\nb.txt,X1\n"},
     "manifest.csv:3: duplicate interview_id 'X1' (also on line 2)"),
    ({"a.txt": GOOD.encode(), "speakers.csv": b"speaker_id,is_interviewer\nP1,maybe\n"},
     "speakers.csv:2: is_interviewer must be true or false"),
])
def test_bad_input_is_one_line_naming_file_and_line(write, tmp_path, files, message):
    for name, content in files.items():
        write(name, content)
    res = _segment(write.dir, tmp_path / "run")
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], res.stderr
    assert "Traceback" not in res.output
    assert not (tmp_path / "run" / "utterances.parquet").exists()


def test_duplicate_interview_ids_from_file_names(write, tmp_path):
    write("w1/P1.txt", GOOD)
    write("w2/P1.txt", GOOD)
    res = _segment(write.dir, tmp_path / "run")
    assert res.exit_code == 2 and "w2/P1.txt: duplicate interview_id 'P1' (also w1/P1.txt)" in res.stderr


def test_skip_bad_processes_the_rest_and_records_rejections(write, tmp_path):
    write("good.txt", GOOD)
    write("empty.txt", b"")
    write("binary.docx", b"\x00\x01garbage")
    res = _segment(write.dir, tmp_path / "run", "--skip-bad")
    assert res.exit_code == 0, res.output
    rejected = pq.read_table(tmp_path / "run" / "rejected.parquet").to_pylist()
    assert sorted((r["source_file"], r["reason"]) for r in rejected) == [
        ("binary.docx", "not a Word .docx file (not a zip archive)"), ("empty.txt", "empty file")]
    assert len(_utterances(tmp_path / "run")) == 2


def test_config_errors_name_the_key(tmp_path):
    bad = tmp_path / "c.toml"
    bad.write_text("[segment]\nunits = 'turn'\n")
    with pytest.raises(ConfigError, match="unknown key segment.units"):
        load_config(bad)
    bad.write_text("[segment]\nwindow_size = 'three'\n")
    with pytest.raises(ConfigError, match="segment.window_size must be a integer|segment.window_size must be a"):
        load_config(bad)
    bad.write_text("[segment]\nunit = 'paragraph'\n")
    with pytest.raises(ConfigError, match="segment.unit must be one of turn, sentence, window"):
        load_config(bad)
    res = runner.invoke(app, ["segment", str(tmp_path), "--out", str(tmp_path / "r"), "--config", str(bad)])
    assert res.exit_code == 2 and "segment.unit" in res.stderr


def test_help_teaches_with_examples():
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0 and "themeshift run examples/kt_study" in res.output
    res = runner.invoke(app, ["segment", "--help"])
    assert "--skip-bad" in res.output and "Example" in res.output
    res = runner.invoke(app, ["codes", "--help"])
    assert "scale" in res.output and "extra)" in res.output  # the --engine help says what Ray needs


COMMANDS = [[c] for c in ("init", "run", "anonymise", "segment", "embed", "codes", "map", "learn", "shift", "compare",
                          "report", "suggest", "transform", "stages")] + [["export", "qdpx"], ["config", "show"]]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_fits_80_columns_and_flags_take_no_value(command):
    """At 80 columns no help word is cut off with an ellipsis, and a flag shows no `<bool>` value."""
    res = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "80"}, terminal_width=80)
    assert res.exit_code == 0
    assert "…" not in res.output and "<bool>" not in res.output


def test_no_help_word_is_wider_than_runs_narrowest_column():
    """run's options table leaves its help column about 20 characters at 80 columns: a longer word would
    be broken across lines."""
    import typer.main

    params = typer.main.get_command(app).commands["run"].params
    long = [(p.name, w) for p in params for w in (getattr(p, "help", None) or "").split() if len(w) > 18]
    assert long == []


def test_run_flags_have_no_forms(tmp_path):
    from conftest import EXAMPLE

    res = runner.invoke(app, ["run", str(EXAMPLE), "--out", str(tmp_path / "r"), "--until", "segment", "--no-learn",
                              "--no-anonymise", "--quiet"])
    assert res.exit_code == 0, res.output


def test_run_until_segment_stops_there(tmp_path):
    from conftest import EXAMPLE

    res = runner.invoke(app, ["run", str(EXAMPLE), "--out", str(tmp_path / "r"), "--until", "segment", "--quiet"])
    assert res.exit_code == 0, res.output
    assert pq.read_metadata(tmp_path / "r" / "utterances.parquet").num_rows == 4227
    assert not (tmp_path / "r" / "embeddings.parquet").exists()
    assert list(json.loads((tmp_path / "r" / "manifest.json").read_text())["stages"]) == ["segment"]
    res = runner.invoke(app, ["run", str(EXAMPLE), "--out", str(tmp_path / "r2"), "--until", "report"])
    assert res.exit_code == 2 and "--until" in res.output


def test_log_json_writes_one_json_object_per_line(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("Interviewer: How did it go?\nP1: We mapped the discharge process.\n")
    res = runner.invoke(app, ["--log-json", "segment", str(tmp_path / "in"), "--out", str(tmp_path / "r")])
    events = [json.loads(line) for line in res.stderr.splitlines()]
    assert res.exit_code == 0 and res.stdout == ""
    assert [e["event"] for e in events] == ["progress", "done"] and events[-1]["command"] == "segment"
    assert (events[0]["stage"], events[0]["done"], events[0]["total"]) == ("segment", 1, 1)
    (tmp_path / "in" / "b.txt").write_bytes(b"P1: hi\x00\x01\x02\x00")
    res = runner.invoke(app, ["--log-json", "segment", str(tmp_path / "in"), "--out", str(tmp_path / "r2")])
    events = [json.loads(line) for line in res.stderr.splitlines()]
    assert res.exit_code == 2 and events[-1]["event"] == "error"
    assert events[-1]["file"] == "b.txt" and "binary" in events[-1]["message"]
    res = runner.invoke(app, ["segment", str(tmp_path / "in"), "--out", str(tmp_path / "r3")])
    assert res.exit_code == 2 and res.stderr.startswith("error: b.txt")  # plain lines again without the flag


def test_a_bare_label_in_two_party_transcripts_takes_the_manifests_speaker(tmp_path):
    """'Counsellor:' / 'Client:' sessions: with Counsellor an interviewer label, each session's one
    other label is the participant the manifest names; a bare label across sessions of different
    people without that rule is one speaker, with a warning."""
    from pipeline.ingest import segment_corpus
    from pipeline.settings import SegmentSettings, settings_for

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    rows = ["file,interview_id,wave,speaker_id"]
    for i in range(3):
        (corpus / f"s{i}.txt").write_text("Counsellor: How are you today?\nClient: Not so bad, thanks.\n"
                                          "Counsellor: Tell me more.\nClient: Work has been hard.\n", encoding="utf-8")
        rows.append(f"s{i}.txt,s{i},1,C{i}")
    (corpus / "manifest.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    cfg = load_config(overrides={"speakers": {"interviewer_labels": ["Counsellor"]}})
    corpus_tables = segment_corpus(corpus, settings_for(SegmentSettings, cfg))
    spk = corpus_tables.utterances.to_pandas()
    assert sorted(spk.loc[~spk["is_interviewer"], "speaker_id"].unique()) == ["C0", "C1", "C2"]
    assert not [w for w in corpus_tables.warnings if "one speaker across" in w]

    # Counsellor unknown too: two bare labels per session
    both = segment_corpus(corpus, settings_for(SegmentSettings, load_config()))
    assert set(both.utterances.to_pandas()["speaker_id"]) == {"Counsellor", "Client"}
    warned = [w for w in both.warnings if "one speaker across 3 interviews" in w]
    assert len(warned) == 2 and any("'Client'" in w for w in warned)


def test_with_a_manifest_only_its_files_are_read_and_the_others_are_named_once(write, tmp_path):
    write("a.txt", GOOD)
    write("b.txt", GOOD.replace("P1", "P2"))
    write("build.py", "print('not a transcript')\n")
    write("notes/codebook.md", "# Codebook\n\nPush: ...\n")
    write("manifest.csv", "file,wave\na.txt,1\n")
    res = runner.invoke(app, ["segment", str(write.dir), "--out", str(tmp_path / "run")])  # warnings shown
    assert res.exit_code == 0, res.stderr
    assert "3 file(s) not in manifest.csv, not read: b.txt, build.py, notes/codebook.md" in res.stderr
    utt = pq.read_table(tmp_path / "run" / "utterances.parquet")
    assert set(utt.column("source_file").to_pylist()) == {"a.txt"}


def test_a_run_folder_inside_the_input_folder_is_never_read_as_input(write):
    write("P1.txt", GOOD)
    first, second = write.dir / "runs" / "r1", write.dir / "runs" / "r2"
    assert _segment(write.dir, first).exit_code == 0
    res = runner.invoke(app, ["segment", str(write.dir), "--out", str(second)])  # r1 (tables, manifest.json, lineage.json) is output, not input
    assert res.exit_code == 0, res.stderr
    assert f"{first}: a themeshift run folder, not read as input" in res.stderr
    utt = pq.read_table(second / "utterances.parquet")
    assert set(utt.column("source_file").to_pylist()) == {"P1.txt"}
    assert pq.read_table(first / "utterances.parquet").equals(utt)


def test_without_a_manifest_files_of_other_formats_are_named_once_and_left_alone(write, tmp_path):
    write("P1.txt", GOOD)
    write("analysis/build.py", "print('not a transcript')\n")
    write("codes.xlsx", b"PK\x03\x04 not a transcript")
    res = runner.invoke(app, ["segment", str(write.dir), "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.stderr
    assert "2 file(s) not of a format themeshift reads" in res.stderr and "analysis/build.py, codes.xlsx" in res.stderr
    assert set(pq.read_table(tmp_path / "run" / "utterances.parquet").column("source_file").to_pylist()) == {"P1.txt"}


def test_a_group_by_column_that_does_not_exist_stops_run_before_segment(tmp_path):
    from conftest import EXAMPLE

    (tmp_path / "c.toml").write_text('[shift]\ngroup_by = "profesion"\n', encoding="utf-8")
    res = runner.invoke(app, ["run", str(EXAMPLE), "--out", str(tmp_path / "r"), "-c", str(tmp_path / "c.toml")])
    assert res.exit_code == 2 and "shift.group_by: no column 'profesion'" in res.output and "profession" in res.output
    assert not (tmp_path / "r").exists()
