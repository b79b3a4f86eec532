"""The README's command sequences, in the documented order and in the likely wrong ones: each ends in
exit 0 and a report made from current tables, or in one line naming the command that remakes what is
missing, and that command then works."""
from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.findings import findings_lines, run_findings
from pipeline.stages import STAGES, remake_command, stage, tables

from conftest import ANSWER_KEY, EXAMPLE

HUMAN = str(ANSWER_KEY / "human_codes.csv")
FAST_LEARN = '[learn]\nencoder = "frozen"\nfeature_sets = ["utterance", "context_prior"]\ncv_folds = 3\n' \
             'learning_curve_draws = 1\n'


@pytest.fixture
def run(example_run, tmp_path):
    """The example study after segment, embed and codes; a copy each test may change."""
    folder = tmp_path / "run"
    shutil.copytree(example_run, folder)
    (tmp_path / "fast.toml").write_text(FAST_LEARN, encoding="utf-8")
    return folder


def _cli(run, *args):
    config = ["--config", str(run.parent / "fast.toml")] if args[0] == "learn" else []
    result = CliRunner().invoke(app, [args[0], str(run), *args[1:], *config, "--quiet"])
    return result.exit_code, result.output.strip()


def _report_is_current(run) -> None:
    """The last report left nothing out as stale and its page was written."""
    code, out = _cli(run, "report")
    assert code == 0, out
    record = json.loads((run / "manifest.json").read_text(encoding="utf-8"))["stages"]["report"]
    assert record["path"].endswith("report.html") and "left out" not in out
    assert (run / "report.html").stat().st_size > 10_000


def test_the_documented_order_and_the_wrong_ones_all_end_in_a_current_report(tmp_path):
    run = tmp_path / "run"
    (tmp_path / "fast.toml").write_text(FAST_LEARN, encoding="utf-8")
    result = CliRunner().invoke(app, ["--log-json", "run", str(EXAMPLE), "--out", str(run)])
    assert result.exit_code == 0, result.output
    # run ends with its findings: one JSON object with --log-json, the same numbers as the tables
    events = [json.loads(x) for x in result.output.splitlines() if x.startswith("{")]
    found = next(e for e in events if e["event"] == "findings")
    assert found == {"time": found["time"], "event": "findings", "command": "run", **run_findings(run)}
    sizes = [c["size"] for c in found["codes"]]
    assert len(sizes) == 5 and sizes == sorted(sizes, reverse=True)
    for group_wave in {(s["group"], s["wave"]) for s in found["shares"]}:
        total = sum(s["share"] for s in found["shares"] if (s["group"], s["wave"]) == group_wave)
        assert abs(total - 1) < 1e-3
    assert {s["group"] for s in found["shares"]} == {"CORE", "PROJECT"}
    manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    assert found["groups"] == manifest["stages"]["shift"]["findings"] and found["groups"][0].startswith("CORE")
    changes = [abs(c["change"]) for c in found["largest_changes"]]
    assert len(changes) == 3 and changes == sorted(changes, reverse=True)
    assert all(c["ci_low"] <= c["change"] <= c["ci_high"] for c in found["largest_changes"])
    assert found["agreement"] == []  # no --human: no agreement figures, and none invented
    lines = findings_lines(found)
    assert lines[0] == "Findings" and "agreement with human coders: not measured" in lines[-1 - len(found["caveats"])]
    # the README's learning workflow: compare, learn, shift, compare, report
    for step in (["compare", "--human", HUMAN], ["learn", "--human", HUMAN], ["shift"], ["compare", "--human", HUMAN]):
        code, out = _cli(run, *step)
        assert code == 0, (step, out)
    _report_is_current(run)
    _report_is_current(run)                                  # report twice
    assert _cli(run, "learn", "--human", HUMAN)[0] == 0      # learn after report: shift's tables are now stale
    code, out = _cli(run, "report")
    assert code == 0 and (run / "report.html").is_file()     # the report leaves them out and says so
    assert _cli(run, "compare", "--human", HUMAN)[0] == 0    # compare after learn
    assert _cli(run, "shift")[0] == 0
    _report_is_current(run)
    assert _cli(run, "map")[0] == 0                          # map again after learn replaces its table
    for step in (["shift"], ["compare", "--human", HUMAN]):
        assert _cli(run, *step)[0] == 0
    _report_is_current(run)


def test_a_deleted_table_names_the_command_that_remakes_it_and_that_command_works(run):
    assert _cli(run, "map")[0] == 0 and _cli(run, "shift")[0] == 0
    (run / "shifts.parquet").unlink()
    code, _ = _cli(run, "report")                            # a report without shifts, naming what makes them
    assert code == 0
    missing = json.loads((run / "manifest.json").read_text(encoding="utf-8"))["stages"]["report"]["missing"]
    assert missing["shifts"] == "themeshift shift RUN"

    (run / "codes.parquet").unlink()
    code, out = _cli(run, "shift")                           # utterance_dimensions was made from the codes
    assert code == 2 and out.count("\n") == 0 and "re-run `themeshift map RUN`" in out, out
    code, out = _cli(run, "map")
    assert code == 2 and "missing codes.parquet; run `themeshift codes RUN` first" in out, out
    for step in ("codes", "map", "shift"):
        code, out = _cli(run, step)
        assert code == 0, (step, out)
    _report_is_current(run)


def test_every_table_has_one_writer_and_a_schema_and_every_read_is_written_somewhere():
    import pyarrow as pa

    from pipeline import schema

    written = set(tables())
    for s in STAGES:
        assert set(s.reads + s.optional) <= written, s.name
    documented = {name.lower() for name, value in vars(schema).items() if isinstance(value, pa.Schema)}
    documented |= {"embeddings", "codes", "utterance_dimensions_framework", "utterance_dimensions_cv"}
    assert written <= documented, written - documented
    assert remake_command("utterance_dimensions") == stage("map").command
    assert remake_command("agreement") == "themeshift compare RUN --human CODES"


def test_config_show_gives_every_setting_its_origin_and_loads_back_as_the_same_configuration(tmp_path):
    import tomllib

    from pipeline.config import load_config

    mine = tmp_path / "my.toml"
    mine.write_text("[shift]\nalpha = 0.1\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["config", "show", "--config", str(mine), "--model", "fast"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert f"alpha = 0.1 # file {mine}" in [" ".join(x.split()) for x in lines]
    assert any(x.startswith("model") and x.endswith('"fast"  # option') for x in lines)
    assert any(x.startswith("seed") and x.endswith("# default") for x in lines)
    shown = tmp_path / "shown.toml"
    shown.write_text(result.output, encoding="utf-8")
    assert tomllib.loads(result.output)["shift"]["alpha"] == 0.1
    assert load_config(shown) == load_config(mine, {"embed": {"model": "fast"}})


def test_a_study_without_waves_says_so_on_screen_and_at_the_top_of_the_report(tmp_path):
    """Two interviews of one person named sarah_time1/2 and no manifest: there is no shift, and the run
    says why and how to give it waves instead of ending as if all were well. Warnings of the stages after
    codes reach the screen (bertopic's import used to silence every later UserWarning)."""
    corpus = tmp_path / "study"
    corpus.mkdir()
    answers = [
        line.split(": ", 1)[1]
        for name in ("core/C01_wave2.txt", "project/P01_wave1.txt", "project/P04_wave2.txt")
        for line in (EXAMPLE / name).read_text(encoding="utf-8").splitlines()
        if ": " in line and "Interviewer:" not in line
    ]
    for wave in (1, 2):
        turns = [f"Interviewer: Could you say more?\nSarah: {a}" for a in answers[wave * 10: wave * 10 + 30]]
        (corpus / f"sarah_time{wave}.txt").write_text("\n".join(turns) + "\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["run", str(corpus), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "warning: no interview has a wave" in result.output and "'{speaker}_time{wave}'" in result.output
    assert "unmapped" in result.output or "have no wave" in result.output  # map's and shift's own warnings too
    page = (tmp_path / "run" / "report.html").read_text(encoding="utf-8")
    top = page[: page.index("<main>")]
    assert 'id="no-shift"' in top and "No shift results." in top


def test_a_transcript_folder_given_as_a_run_and_an_unknown_model_are_one_line_before_anything_is_written(tmp_path):
    result = CliRunner().invoke(app, ["shift", str(EXAMPLE)])
    lines = [x for x in result.output.splitlines() if x.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert "a folder of transcripts, not a run directory: run `themeshift run" in lines[0]
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", str(EXAMPLE), "--out", str(out), "--model", "nosuch"])
    assert result.exit_code == 2 and "unknown embedding model 'nosuch'" in result.output
    assert not out.exists()  # refused before segment wrote its tables
