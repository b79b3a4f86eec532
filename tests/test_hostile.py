"""Hostile inputs, faults and odd environments (the catalogue in hostile_cases.py, plus human codes,
.qdpx projects, disk full and a kill during a stage): every one ends in one line naming the file,
the right exit code, no traceback and no half-written table.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from conftest import EXAMPLE, REPO
from hostile_cases import GOOD, cases
from pipeline.cli import app

CASES = cases()
AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _invoke(args: list[str]):
    return CliRunner().invoke(app, args)


def _no_partial_tables(folder: Path) -> None:
    leftovers = [p.name for p in folder.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".")
                 and p.suffix == ".tmp"]
    assert not leftovers, leftovers
    for table in folder.rglob("*.parquet"):
        pq.read_metadata(table)  # every table that exists is whole


def test_the_catalogue_is_broad():
    families = {c.family for c in CASES}
    assert len(CASES) >= 60 and families >= {"transcript", "metadata", "framework", "config", "environment"}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_case(case, tmp_path):
    if case.root_skip and AS_ROOT:
        pytest.skip("permissions do not bind root")
    result = _invoke(case.build(tmp_path))
    assert "Traceback" not in result.output and not (
        result.exception and not isinstance(result.exception, SystemExit)), result.output
    assert result.exit_code == case.code, result.output
    if case.code == 0:
        assert case.names in result.stderr, result.stderr  # the warning names file and line
    else:
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and len(result.stderr.strip().splitlines()) >= 1, result.stderr
        assert case.names in errors[0], errors[0]
        assert "\n" not in errors[0]
    _no_partial_tables(tmp_path)


SKIPPABLE = [c for c in CASES if c.skip_bad_ok]


@pytest.mark.parametrize("case", SKIPPABLE, ids=[c.name for c in SKIPPABLE])
def test_skip_bad_lists_the_file_and_keeps_the_rest(case, tmp_path):
    if case.root_skip and AS_ROOT:
        pytest.skip("permissions do not bind root")
    result = _invoke(case.build(tmp_path) + ["--skip-bad"])
    assert result.exit_code == 0, result.output
    rejected = pq.read_table(tmp_path / "run" / "rejected.parquet").to_pandas()
    assert len(rejected) == 1 and case.names.split(":")[0] in rejected["source_file"].iloc[0]
    utterances = pq.read_table(tmp_path / "run" / "utterances.parquet").to_pandas()
    assert set(utterances["source_file"]) == {"ok.txt"}


def test_symlinked_file_outside_the_folder_never_reaches_the_tables(tmp_path):
    case = next(c for c in CASES if c.name == "symlink out of the folder")
    result = _invoke(case.build(tmp_path) + ["--skip-bad"])
    assert result.exit_code == 0
    sources = pq.read_table(tmp_path / "run" / "sources.parquet").to_pandas()
    assert not sources["source_text"].str.contains("private words").any()


def _segment_empty_file(tmp_path: Path, name: str):
    """Segment a corpus holding one empty file of this name (its error line names it)."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / name).write_bytes(b"")
    return _invoke(["segment", str(corpus), "--out", str(tmp_path / "run")])


def test_error_lines_print_file_names_literally(tmp_path):
    result = _segment_empty_file(tmp_path, "[draft] interview P05.txt")
    assert result.exit_code == 2
    assert "error: [draft] interview P05.txt: empty file" in result.stderr


def test_a_newline_in_a_file_name_cannot_forge_a_second_error_line(tmp_path):
    result = _segment_empty_file(tmp_path, "a\nerror: fake.txt")
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: a\\nerror: fake.txt: "), errors


@pytest.mark.skipif(sys.platform != "linux", reason="file names as bytes: POSIX")
def test_a_file_name_that_is_not_utf8_is_named_not_a_crash(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    os.makedirs(corpus, exist_ok=True)
    with open(os.path.join(os.fsencode(corpus), b"caf\xe9.txt"), "wb") as fh:
        fh.write(b"")
    result = _invoke(["segment", str(corpus), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "caf\\xe9.txt: the file name is not UTF-8 text; rename the file" in result.stderr
    (corpus / "ok.txt").write_text(GOOD, encoding="utf-8")
    skipped = _invoke(["segment", str(corpus), "--out", str(tmp_path / "run2"), "--skip-bad"])
    assert skipped.exit_code == 0, skipped.output  # the table names the file with the byte escaped
    assert pq.read_table(tmp_path / "run2" / "rejected.parquet").column("source_file").to_pylist() == ["caf\\xe9.txt"]


def test_tables_are_written_with_the_users_umask(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "ok.txt").write_text(GOOD, encoding="utf-8")
    old = os.umask(0o022)
    try:
        assert _invoke(["segment", str(corpus), "--out", str(tmp_path / "run")]).exit_code == 0
    finally:
        os.umask(old)
    for table in (tmp_path / "run").glob("*.parquet"):
        assert table.stat().st_mode & 0o777 == 0o644, table


def test_a_full_disk_is_one_line_with_exit_3_and_no_half_table(tmp_path):
    """RLIMIT_FSIZE makes every write past 64 kB fail like a full disk (EFBIG / ENOSPC)."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "big.txt").write_text("".join(f"P01: Sentence number {i} about the project and its wards.\n"
                                            for i in range(20_000)), encoding="utf-8")
    script = ("import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
              "resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536)); "
              "from pipeline.cli import app; sys.argv = ['themeshift'] + sys.argv[1:]; app()")
    proc = subprocess.run([sys.executable, "-c", script, "segment", str(corpus), "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 3, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr
    assert "too large" in errors[0] or "no space" in errors[0]
    _no_partial_tables(tmp_path)
    assert not (tmp_path / "run" / "utterances.parquet").exists()


def test_ctrl_c_says_interrupted_and_logs_an_event(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(1500):  # enough work that the interrupt lands while files are still being read
        (corpus / f"i{i:04d}.txt").write_text(GOOD * 40, encoding="utf-8")
    # a shell starts background jobs with SIGINT ignored, and Python then installs no handler: restore the
    # terminal's behaviour so the test does not depend on how the suite was launched
    script = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
              "from pipeline.cli import app; sys.argv = ['themeshift'] + sys.argv[1:]; app()")
    proc = subprocess.Popen([sys.executable, "-c", script, "--log-json", "segment", str(corpus), "--out",
                             str(tmp_path / "run")], cwd=REPO, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stderr:  # interrupt once the work has started
        lines.append(line)
        if '"event": "progress"' in line:
            proc.send_signal(signal.SIGINT)
            break
    lines += proc.stderr.readlines()
    proc.wait(timeout=120)
    stderr = "".join(lines)
    if proc.returncode == 0:
        pytest.skip("segment finished before the interrupt")
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr
    assert '"event": "error"' in stderr and "interrupted" in stderr
    _no_partial_tables(tmp_path)
    assert not (tmp_path / "run" / "utterances.parquet").exists()


# ---------------------------------------------------------------- human codes and .qdpx


@pytest.fixture(scope="module")
def segmented(tmp_path_factory):
    """The example study segmented, with framework probabilities faked from nothing: compare's
    readers fail before they need any."""
    run = tmp_path_factory.mktemp("hostile_run")
    assert _invoke(["segment", str(EXAMPLE), "--out", str(run), "--quiet"]).exit_code == 0
    return run


def _qdpx(tmp_path: Path, members: dict[str, bytes], compress: int = zipfile.ZIP_DEFLATED) -> Path:
    path = tmp_path / "project.qdpx"
    with zipfile.ZipFile(path, "w", compress) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


HUMAN_CASES = {
    "csv missing columns": (lambda d: _write(d, "codes.csv", "interview_id,code\nP01_w1,push\n"), "codes.csv"),
    "csv start after end": (lambda d: _write(d, "codes.csv", "interview_id,start_char,end_char,code,coder\n"
                                                            "P01_w1,50,10,push,A\n"), "codes.csv:2"),
    "csv start not a number": (lambda d: _write(d, "codes.csv", "interview_id,start_char,end_char,code,coder\n"
                                                               "P01_w1,ten,20,push,A\n"), "codes.csv:2"),
    "csv empty": (lambda d: _write(d, "codes.csv", ""), "codes.csv"),
    "csv binary": (lambda d: _write(d, "codes.csv", b"\x00\xff\xfe" * 100), "codes.csv"),
    "qdpx not a zip": (lambda d: _write(d, "p.qdpx", b"not a zip"), "p.qdpx"),
    "qdpx without project.qde": (lambda d: _qdpx(d, {"sources/a.txt": b"x"}), "project.qdpx"),
    "qdpx path traversal": (lambda d: _qdpx(d, {"../../evil.qde": b"x", "project.qde": b"<x/>"}), "project.qdpx"),
    "qdpx malformed xml": (lambda d: _qdpx(d, {"project.qde": b"<Project><CodeBook>"}), "project.qdpx"),
    "qdpx entity bomb": (lambda d: _qdpx(d, {"project.qde": b'<?xml version="1.0"?><!DOCTYPE p [<!ENTITY a "aaaa">'
                                                            b']><Project>&a;</Project>'}), "project.qdpx"),
    "qdpx zip bomb": (lambda d: _qdpx(d, {"project.qde": b"<Project/>", "sources/big.txt": b"\0" * 600_000_000}),
                      "project.qdpx"),
    "qdpx member with a bad checksum": (lambda d: _bad_crc_qdpx(d),
                                        "project.qdpx: damaged archive member project.qde: Bad CRC-32"),
    "a folder given as --human": (lambda d: (d / "coding").mkdir() or d / "coding",
                                  "coding: is a folder; give the human-code file itself"),
}


def _bad_crc_qdpx(folder: Path) -> Path:
    """A stored (uncompressed) project.qde with one byte changed after the checksum was written."""
    path = _qdpx(folder, {"project.qde": b'<?xml version="1.0"?><Project xmlns="urn:QDA-XML:project:1.0" name="x"/>'},
                 zipfile.ZIP_STORED)
    data = bytearray(path.read_bytes())
    data[data.find(b"name=")] = ord("N")
    path.write_bytes(bytes(data))
    return path


def _write(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


@pytest.mark.parametrize("name", list(HUMAN_CASES))
def test_bad_human_codes_are_one_line(name, segmented, tmp_path):
    build, names = HUMAN_CASES[name]
    human = build(tmp_path)
    run = tmp_path / "run"
    shutil.copytree(segmented, run)
    before = sorted(p.name for p in run.iterdir())
    result = _invoke(["compare", str(run), "--human", str(human)])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and names in errors[0], result.stderr
    assert sorted(p.name for p in run.iterdir()) == before  # nothing written


@pytest.mark.parametrize("name", list(HUMAN_CASES))
def test_run_checks_human_codes_before_the_first_stage(name, tmp_path):
    build, names = HUMAN_CASES[name]
    human = build(tmp_path)
    result = _invoke(["run", str(EXAMPLE), "--out", str(tmp_path / "run"), "--human", str(human)])
    assert result.exit_code == 2 and names in result.stderr
    assert not (tmp_path / "run").exists()  # failed before segment wrote anything


def test_spreadsheet_exports_neutralise_formulas():
    import pandas as pd

    from pipeline.io.spreadsheet import safe_cell, safe_frame
    from pipeline.report_html import csv_text as _csv

    assert safe_cell('=HYPERLINK("http://x","click")') == '\'=HYPERLINK("http://x","click")'
    assert [safe_cell(v) for v in ("@SUM(A1)", "+44 20 7946", "-cmd|' /C calc'!A0", "\tTAB")] == [
        "'@SUM(A1)", "'+44 20 7946", "'-cmd|' /C calc'!A0", "'\tTAB"]
    assert [safe_cell(v) for v in ("-0.25", "+3", "1e-5", "plain text", 7, -0.5)] == [
        "-0.25", "+3", "1e-5", "plain text", 7, -0.5]  # numbers stay numbers
    df = safe_frame(pd.DataFrame({"text": ["=1+1", "fine"], "score": [-0.5, 0.25]}))
    assert df["text"].tolist() == ["'=1+1", "fine"] and df["score"].tolist() == [-0.5, 0.25]
    assert _csv(["speaker", "value"], [["=cmd()", -0.5]]) == "speaker,value\n'=cmd(),-0.5\n"


def test_a_corpus_of_interviewer_turns_only_stops_before_embedding(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "i1.txt").write_text("Interviewer: How did it start?\nINT: And then what happened next?\n",
                                   encoding="utf-8")
    assert _invoke(["segment", str(corpus), "--out", str(tmp_path / "run")]).exit_code == 0
    result = _invoke(["embed", str(tmp_path / "run")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    [line] = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert "utterances.parquet: no utterance is left to code (2 interviewer)" in line
    assert not (tmp_path / "run" / "embeddings.parquet").exists()


def test_tables_made_from_an_earlier_corpus_are_refused_by_name(tmp_path):
    """Re-segmenting a changed corpus into the same folder leaves older downstream tables behind:
    reading one is refused, naming it and the command that remakes it; the report leaves it out."""
    import pyarrow as pa

    from pipeline.errors import InputError
    from pipeline.io.rundir import input_digests, read_table, record_lineage, write_table

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text(GOOD, encoding="utf-8")
    run = tmp_path / "run"
    assert _invoke(["segment", str(corpus), "--out", str(run)]).exit_code == 0
    utt = read_table(run, "utterances")  # a stage reads utterances and writes a table made from them
    write_table(run, "shifts", pa.table({"speaker_id": utt.column("speaker_id").unique()}))
    record_lineage(run, ["shifts"], input_digests(run, ["utterances"]))
    read_table(run, "shifts")  # fresh: fine

    (corpus / "b.txt").write_text(GOOD.replace("P01", "P02"), encoding="utf-8")
    assert _invoke(["segment", str(corpus), "--out", str(run)]).exit_code == 0
    with pytest.raises(InputError, match=r"stale table: it was made from an earlier utterances.parquet; "
                                         r"re-run `themeshift shift RUN`") as info:
        read_table(run, "shifts")
    assert info.value.path == str(run / "shifts.parquet")
    result = _invoke(["report", str(run)])
    assert result.exit_code == 0 and "shifts.parquet left out of the report" in result.stderr
    assert "Left out because they no longer match" in (run / "report.html").read_text(encoding="utf-8")


def test_kill_9_during_embed_then_rerun_gives_the_uninterrupted_tables(tmp_path):
    """A kill leaves no half table and no corrupt cache shard: the rerun's embeddings equal those of
    a run that was never interrupted (each with its own, fresh embedding cache)."""
    script = "import sys; from pipeline.cli import app; sys.argv = ['themeshift'] + sys.argv[1:]; app()"
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for f in sorted(EXAMPLE.rglob("*.txt"))[:6]:  # six of the example study's interviews
        shutil.copy(f, corpus / f.name)

    def run(name: str, kill: bool) -> Path:
        out, cache = tmp_path / name, tmp_path / f"cache_{name}"
        cfg = tmp_path / f"{name}.toml"
        cfg.write_text(f'[embed]\ncache_dir = "{cache}"\nbatch_size = 16\n', encoding="utf-8")
        assert _invoke(["segment", str(corpus), "--out", str(out), "--quiet"]).exit_code == 0
        cmd = [sys.executable, "-c", script, "--log-json", "embed", str(out), "--config", str(cfg)]
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        if kill:
            proc = subprocess.Popen(cmd, cwd=REPO, stderr=subprocess.PIPE, text=True, env=env)
            for line in proc.stderr:
                if '"event": "progress"' in line and '"done": 0' not in line:
                    proc.send_signal(signal.SIGKILL)
                    break
            proc.wait(timeout=300)
            assert not (out / "embeddings.parquet").exists()
            _no_partial_tables(out)
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
        assert done.returncode == 0, done.stderr
        return out

    interrupted, clean = run("killed", kill=True), run("clean", kill=False)
    a = pq.read_table(interrupted / "embeddings.parquet")
    b = pq.read_table(clean / "embeddings.parquet")
    assert a.num_rows == b.num_rows > 0 and a.equals(b)


def test_an_unforeseen_error_logs_its_traceback_in_the_run_folder_else_the_current_one(tmp_path, monkeypatch):
    import pipeline.cli

    def boom(*args, **kwargs):
        raise RuntimeError("something nobody planned for")

    monkeypatch.setattr(pipeline.cli, "run_shift", boom)
    monkeypatch.setattr(pipeline.cli, "run_segment", boom)
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    result = CliRunner().invoke(app, ["shift", str(run)])
    assert result.exit_code == 1 and "unexpected RuntimeError: something nobody planned for" in result.output
    assert len(list(run.glob("themeshift-error-*.log"))) == 1
    result = CliRunner().invoke(app, ["segment", str(tmp_path), "--out", str(tmp_path / "new")])
    assert result.exit_code == 1
    logs = list(tmp_path.glob("themeshift-error-*.log"))
    assert len(logs) == 1 and "RuntimeError" in logs[0].read_text(encoding="utf-8")
