"""themeshift init: a folder of transcripts without a manifest gets draft manifest.csv and speakers.csv
that say which interview is which wave and who speaks, and a run over the drafts scores shifts."""
from __future__ import annotations

import csv
import shutil

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config import load_config
from pipeline.errors import InputError
from pipeline.settings import InputSettings, SpeakersSettings, settings_for
from pipeline.study_init import draft_study, manifest_csv, speakers_csv, write_draft

from conftest import EXAMPLE
from pdf_fixtures import text_pdf


def _draft(folder, waves=None):
    cfg = load_config()
    return draft_study(folder, settings_for(InputSettings, cfg), settings_for(SpeakersSettings, cfg), waves)


def _rows(text):
    return list(csv.DictReader(text.splitlines()))


@pytest.fixture
def bare_example(tmp_path):
    folder = tmp_path / "study"
    shutil.copytree(EXAMPLE, folder)
    (folder / "manifest.csv").unlink()
    (folder / "speakers.csv").unlink()
    return folder


def test_the_example_study_without_its_manifest_is_inferred_as_its_authors_wrote_it(bare_example):
    draft = _draft(bare_example)
    rows = {r["file"]: r for r in _rows(manifest_csv(draft))}
    truth = {r["file"]: r for r in csv.DictReader(open(EXAMPLE / "manifest.csv", encoding="utf-8"))}
    assert set(rows) == set(truth) and len(rows) == 28
    for file, row in rows.items():
        assert (row["wave"], row["speaker_id"]) == (truth[file]["wave"], truth[file]["speaker_id"]), file
    speakers = _rows(speakers_csv(draft))
    assert [s["speaker_id"] for s in speakers if s["is_interviewer"] == "true"] == ["Interviewer"]
    assert {s["speaker_id"]: s["role"] for s in speakers if s["is_interviewer"] == "false"} == {
        r["speaker_id"]: r["file"].split("/")[0] for r in truth.values()
    }
    assert not any("two waves" in c for c in draft.checks)


def test_a_run_over_the_drafts_scores_every_participant_across_two_waves(bare_example, tmp_path):
    result = CliRunner().invoke(app, ["init", str(bare_example)])
    assert result.exit_code == 0, result.output
    assert "waves: wave 1: 14, wave 2: 14" in result.output and "next:" in result.output
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", str(bare_example), "--out", str(out), "--until", "map", "--quiet"])
    assert result.exit_code == 0, result.output
    import pyarrow.parquet as pq

    utt = pq.read_table(out / "utterances.parquet", columns=["speaker_id", "wave", "is_interviewer"]).to_pandas()
    waves = utt[~utt.is_interviewer].groupby("speaker_id").wave.nunique()
    assert len(waves) == 14 and (waves == 2).all()


def test_waves_from_file_names_dates_and_folders_and_other_files_left_out(tmp_path):
    folder = tmp_path / "study"
    (folder / "T1").mkdir(parents=True)
    (folder / "T2").mkdir()
    turns = "Interviewer: How do you use research in your job?\n{who}: I read what the analysts send round.\n"
    (folder / "sarah_time1.txt").write_text(turns.format(who="Sarah"), encoding="utf-8")
    (folder / "sarah_time2.txt").write_text(turns.format(who="Sarah"), encoding="utf-8")
    (folder / "tom_2022-05-01.txt").write_text(turns.format(who="R"), encoding="utf-8")
    (folder / "tom_2021-03-04.txt").write_text(turns.format(who="R"), encoding="utf-8")
    (folder / "T1" / "anna.txt").write_text(turns.format(who="Respondent"), encoding="utf-8")
    (folder / "T2" / "anna.txt").write_text(turns.format(who="Respondent"), encoding="utf-8")
    (folder / "build.py").write_text("print(1)\n", encoding="utf-8")
    text_pdf(folder / "paper.pdf", [["Knowledge mobilisation strategy.", "It has no speaker labels at all."]])
    draft = _draft(folder)
    rows = {r["file"]: (r["interview_id"], r["wave"], r["speaker_id"], r["date"]) for r in _rows(manifest_csv(draft))}
    assert rows == {
        "T1/anna.txt": ("T1_anna", "1", "anna", ""),
        "T2/anna.txt": ("T2_anna", "2", "anna", ""),
        "sarah_time1.txt": ("sarah_time1", "1", "Sarah", ""),
        "sarah_time2.txt": ("sarah_time2", "2", "Sarah", ""),
        "tom_2021-03-04.txt": ("tom_2021-03-04", "1", "tom", "2021-03-04"),
        "tom_2022-05-01.txt": ("tom_2022-05-01", "2", "tom", "2022-05-01"),
    }
    assert draft.skipped == ["build.py", "paper.pdf"]  # a PDF paper is not a transcript, as segment reads it
    assert any("order of the dates" in c for c in draft.checks)
    assert any("no roles found" in c for c in draft.checks)
    # 'Respondent' and 'R' are generic labels: never recorded as one person's alias
    assert {r["speaker_id"]: r["aliases"] for r in _rows(speakers_csv(draft))}["anna"] == ""


def test_a_pattern_names_speaker_and_wave_and_missing_waves_are_said(tmp_path):
    folder = tmp_path / "study"
    folder.mkdir()
    for name in ("ward-a_2.txt", "ward-a_1.txt", "notes.txt"):
        (folder / name).write_text("Q: What changed?\nMs Patel: We plan the audits with the university.\n", "utf-8")
    draft = _draft(folder, "{speaker}_{wave}")
    rows = {r["file"]: (r["wave"], r["speaker_id"]) for r in _rows(manifest_csv(draft))}
    assert rows == {"ward-a_1.txt": ("1", "ward-a"), "ward-a_2.txt": ("2", "ward-a"), "notes.txt": ("", "Ms Patel")}
    assert any(c.startswith("1 interview(s) have no wave (notes.txt)") for c in draft.checks)


def test_existing_files_are_kept_unless_forced(bare_example):
    (bare_example / "speakers.csv").write_text("speaker_id,role\nC01,CORE\n", encoding="utf-8")
    draft = _draft(bare_example)
    with pytest.raises(InputError, match="speakers.csv already exists; give --force"):
        write_draft(draft, "manifest.csv", "speakers.csv")
    assert not (bare_example / "manifest.csv").exists()  # nothing half-written
    result = CliRunner().invoke(app, ["init", str(bare_example)])
    assert result.exit_code == 2 and "already exists" in result.output
    write_draft(draft, "manifest.csv", "speakers.csv", force=True)
    assert (bare_example / "speakers.csv").read_text(encoding="utf-8").startswith("speaker_id,role,is_interviewer")
