"""Field notes and documents as sources: PDF text layer with pages, paragraphs attributed to a case,
folder convention and manifest source_type, triangulation table, shift per case, REFI-QDA, bad PDFs."""
from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pdf_fixtures import corrupt_pdf, encrypted_pdf, scanned_pdf, text_pdf
from pipeline.cli import app
from pipeline.config import load_config
from pipeline.errors import InputError
from pipeline.io.documents import read_unlabelled
from pipeline.io.pdf import pdf_text

runner = CliRunner()
FIXTURES = Path(__file__).parent / "fixtures" / "sources"
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "kt_study"


def _strategy_pdf(path: Path) -> Path:
    pages = [p.strip().splitlines() for p in (FIXTURES / "strategy_paper_pages.txt").read_text().split("---page---")]
    return text_pdf(path, pages, title="Strategy")


def _study(folder: Path) -> Path:
    """Two interviews of the example study, a field note (folder convention) and a PDF strategy paper
    (manifest source_type), with their own metadata."""
    (folder / "interviews").mkdir(parents=True)
    for rel in ("core/C01_wave1.docx", "core/C01_wave2.txt"):
        shutil.copy(EXAMPLE / rel, folder / "interviews" / Path(rel).name)
    (folder / "fieldnotes").mkdir()
    shutil.copy(FIXTURES / "programme_board_fieldnote.md", folder / "fieldnotes" / "board_2019-11.md")
    (folder / "papers").mkdir()
    _strategy_pdf(folder / "papers" / "strategy.pdf")
    (folder / "manifest.csv").write_text(
        "file,interview_id,wave,date,speaker_id,source_type,case,author,setting\n"
        "interviews/C01_wave1.docx,C01-W1,1,2019-03-14,C01,,,,\n"
        "interviews/C01_wave2.txt,C01-W2,2,2020-03-11,C01,,,,\n"
        "fieldnotes/board_2019-11.md,FN-BOARD-1,1,2019-11-20,,,North,R2,programme board\n"
        "papers/strategy.pdf,DOC-STRATEGY,2,2020-01-10,,document,North,central team,\n", encoding="utf-8")
    shutil.copy(EXAMPLE / "speakers.csv", folder / "speakers.csv")
    return folder


def test_pdf_text_layer_pages_and_offsets_slice_back(tmp_path):
    path = _strategy_pdf(tmp_path / "s.pdf")
    doc = read_unlabelled(path, "s.pdf", "document", [])
    assert doc.format == "pdf" and doc.source_type == "document"
    assert doc.page_starts == [0, doc.source_text.index("\f") + 1]
    assert doc.source_text.count("\f") == 1
    for turn in doc.turns:  # paragraphs never cross a page break, and slice back to the text
        assert "\f" not in doc.source_text[turn.start:turn.end]
        assert doc.source_text[turn.start:turn.end].strip() == doc.source_text[turn.start:turn.end]
    assert doc.source_text[doc.turns[0].start:].startswith("Knowledge Mobilisation Strategy 2020-2023")
    assert doc.source_text[doc.turns[-1].start:].startswith("Evidence from the first two years")


def test_field_notes_and_documents_are_segmented_attributed_and_paged(tmp_path):
    study = _study(tmp_path / "study")
    res = runner.invoke(app, ["segment", str(study), "--out", str(tmp_path / "run"), "--quiet"])
    assert res.exit_code == 0, res.output
    u = pq.read_table(tmp_path / "run" / "utterances.parquet").to_pylist()
    sources = {r["interview_id"]: r for r in pq.read_table(tmp_path / "run" / "sources.parquet").to_pylist()}
    assert {r["interview_id"]: r["source_type"] for r in sources.values()} == {
        "C01-W1": "interview", "C01-W2": "interview", "FN-BOARD-1": "fieldnote", "DOC-STRATEGY": "document"}
    for r in u:  # every unit slices back out of its source's text
        assert sources[r["interview_id"]]["source_text"][r["start_char"]:r["end_char"]] == r["text"]
    fn = [r for r in u if r["interview_id"] == "FN-BOARD-1"]
    doc = [r for r in u if r["interview_id"] == "DOC-STRATEGY"]
    # attributed to the case, never to a speaker turn; nothing flagged as interviewer
    assert {(r["speaker_id"], r["source_type"], r["is_interviewer"]) for r in fn} == {("North", "fieldnote", False)}
    assert {r["speaker_id"] for r in doc} == {"North"}
    # the field note: a heading and five paragraphs -> six "turns"; 15 sentences, no pages
    assert [r["turn_index"] for r in fn] == [0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 5]
    assert all(r["page"] is None for r in fn) and fn[9]["text"] == "There was a long pause."
    # the PDF: one paragraph per page (its text layer has no blank lines); the title runs into the
    # first sentence (no full stop between them)
    assert [(r["turn_index"], r["page"]) for r in doc] == [(0, 1)] * 3 + [(1, 2)] * 4
    assert doc[0]["text"] == ("Knowledge Mobilisation Strategy 2020-2023\nThe Collaboration will move from "
                              "disseminating findings to co-producing them with services.")
    page2 = sources["DOC-STRATEGY"]["page_starts"][1]
    assert all((r["start_char"] >= page2) == (r["page"] == 2) for r in doc)
    interviews = {r["interview_id"]: r for r in pq.read_table(tmp_path / "run" / "interviews.parquet").to_pylist()}
    assert interviews["FN-BOARD-1"]["author"] == "R2" and interviews["FN-BOARD-1"]["setting"] == "programme board"
    assert interviews["DOC-STRATEGY"]["source_type"] == "document" and interviews["C01-W2"]["source_type"] == "interview"


def test_a_speaker_in_the_manifest_takes_the_document(write, tmp_path):
    write("documents/reflective_log.txt", "My log for March.\n\nThe board asked me to present. I said yes.\n")
    write("manifest.csv", "file,interview_id,speaker_id\ndocuments/reflective_log.txt,LOG-1,P-05\n")
    write("speakers.csv", "speaker_id,role,is_interviewer,aliases\nP05,PROJECT,false,P-05\n")
    res = runner.invoke(app, ["segment", str(write.dir), "--out", str(tmp_path / "run"), "--quiet"])
    assert res.exit_code == 0, res.output
    rows = pq.read_table(tmp_path / "run" / "utterances.parquet").to_pylist()
    assert [(r["speaker_id"], r["speaker_role"], r["turn_index"], r["text"]) for r in rows] == [
        ("P05", "PROJECT", 0, "My log for March."), ("P05", "PROJECT", 1, "The board asked me to present."),
        ("P05", "PROJECT", 1, "I said yes.")]


def test_source_themes_and_shift_per_case(encoder, tmp_path, cfg):
    """Triangulation table from a run whose corpus holds interviews, a field note and a document."""
    from pipeline.runner import run_codes, run_embed, run_map, run_segment, run_shift

    study = _study(tmp_path / "study")
    run_dir = tmp_path / "run"
    run_segment(study, run_dir, cfg)
    run_embed(run_dir, cfg, encoder=encoder)
    run_codes(run_dir, cfg, encoder=encoder)
    run_map(run_dir, cfg, encoder=encoder)
    rec = run_shift(run_dir, cfg, encoder=encoder)
    u = pq.read_table(run_dir / "utterances.parquet")
    n_other = sum(t != "interview" for t in u.column("source_type").to_pylist())
    assert rec["counts"]["utterances_of_other_source_types_left_out"] == n_other == 22  # 15 field-note + 7 document units
    assert "North" not in set(pq.read_table(run_dir / "shifts.parquet").column("speaker_id").to_pylist())
    themes = pq.read_table(run_dir / "source_themes.parquet").to_pandas()
    dims = themes[themes["level"] == "dimension"]
    assert set(dims["source_type"]) <= {"interview", "fieldnote", "document"} and "interview" in set(dims["source_type"])
    d = pq.read_table(run_dir / "utterance_dimensions.parquet").to_pandas()
    d = d[d["is_argmax"] & d["mapped"]].merge(u.select(["utterance_id", "source_type", "coded"]).to_pandas())
    for r in dims.itertuples():  # the counts are the mapped units of that type, nothing else
        assert r.n_units == ((d["source_type"] == r.source_type) & (d["dimension"] == r.theme)).sum()
        assert r.share == pytest.approx(r.n_units / r.n_coded_units)
    # asked for, field notes and documents count for their case
    cfg2 = load_config(overrides={"shift": {"source_types": ["interview", "fieldnote", "document"]}})
    run_shift(run_dir, cfg2, encoder=encoder)
    waves = pq.read_table(run_dir / "speaker_waves.parquet").to_pandas()
    north = waves[waves["speaker_id"] == "North"]
    assert sorted(north["wave"].unique()) == [1, 2] and north.groupby("wave")["n_spoken"].first().sum() == n_other
    # the export carries them as text sources, offsets intact
    from pipeline.runner import run_export_qdpx

    run_export_qdpx(run_dir, tmp_path / "p.qdpx", cfg)
    with zipfile.ZipFile(tmp_path / "p.qdpx") as z:
        xml = z.read("project.qde").decode("utf-8")
    assert 'name="DOC-STRATEGY"' in xml and "papers/strategy.pdf (document)" in xml
    assert "fieldnotes/board_2019-11.md (fieldnote)" in xml


@pytest.mark.parametrize("make,message", [
    (lambda p, src: scanned_pdf(p), "no text layer on any of its 2 page(s) (a scan?): OCR it first"),
    (lambda p, src: encrypted_pdf(p, src), "encrypted PDF (password-protected)"),
    (lambda p, src: corrupt_pdf(p, src), "damaged or unreadable PDF"),
    (lambda p, src: p.write_bytes(b"PK\x03\x04 not a pdf at all") and p, "not a PDF file"),
])
def test_bad_pdfs_fail_in_one_line_naming_the_file_or_are_skipped(write, tmp_path, make, message):
    src = _strategy_pdf(tmp_path / "good.pdf")
    write("documents/notes.md", "A field note.\n\nIt has two paragraphs.\n")
    make(write.dir / "documents" / "board.pdf", src)
    res = runner.invoke(app, ["segment", str(write.dir), "--out", str(tmp_path / "run")])
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert lines == [f"error: documents/board.pdf: {message}" + lines[0].split(message, 1)[1]], res.output
    res = runner.invoke(app, ["segment", str(write.dir), "--out", str(tmp_path / "run2"), "--skip-bad", "--quiet"])
    assert res.exit_code == 0, res.output
    rejected = pq.read_table(tmp_path / "run2" / "rejected.parquet").to_pylist()
    assert [r["source_file"] for r in rejected] == ["documents/board.pdf"] and message in rejected[0]["reason"]


def test_an_owner_password_only_pdf_opens(tmp_path):
    from pypdf import PdfReader, PdfWriter

    src = _strategy_pdf(tmp_path / "s.pdf")
    writer = PdfWriter(clone_from=PdfReader(src))
    writer.encrypt(user_password="", owner_password="owner", algorithm="AES-128")
    with open(tmp_path / "o.pdf", "wb") as fh:
        writer.write(fh)
    assert pdf_text(tmp_path / "o.pdf", "o.pdf")[0] == pdf_text(src, "s.pdf")[0]


def test_a_labelled_transcript_kept_as_pdf_reads_as_an_interview(write, tmp_path):
    text_pdf(write.dir / "int.pdf", [["Interviewer: How did it go?", "P01: Well. We got there in the end."]])
    res = runner.invoke(app, ["segment", str(write.dir), "--out", str(tmp_path / "run"), "--quiet"])
    assert res.exit_code == 0, res.output
    rows = pq.read_table(tmp_path / "run" / "utterances.parquet").to_pylist()
    assert [(r["speaker_id"], r["text"], r["page"]) for r in rows] == [
        ("Interviewer", "How did it go?", 1), ("P01", "Well.", 1), ("P01", "We got there in the end.", 1)]


def test_unknown_source_type_in_the_manifest(write, tmp_path):
    write("a.md", "Notes.\n")
    write("manifest.csv", "file,source_type\na.md,diary\n")
    res = runner.invoke(app, ["segment", str(write.dir), "--out", str(tmp_path / "run")])
    assert res.exit_code == 2
    assert res.output.strip().endswith("manifest.csv:2: source_type must be interview, fieldnote or document, "
                                       "got 'diary'")


def test_a_field_note_without_labels_outside_the_convention_says_what_to_do(write, tmp_path):
    write("notes.md", "We observed the board.\n")
    res = runner.invoke(app, ["segment", str(write.dir), "--out", str(tmp_path / "run")])
    assert res.exit_code == 2 and "notes.md:1: no speaker labels found" in res.output
    assert "fieldnotes/ or documents/ folder" in res.output


def test_a_pdf_past_the_readers_safety_limits_is_named_as_such(tmp_path, monkeypatch):
    """pypdf's LimitReachedError (a decompression bomb, a looping page tree) is not 'damaged'."""
    import pypdf
    from pypdf.errors import LimitReachedError

    def refuse(*args, **kwargs):
        raise LimitReachedError("Maximum /ToUnicode size limit reached: 11000000 > 10000000.")

    path = text_pdf(tmp_path / "big.pdf", [["Interviewer: Hello?", "P01: Hello."]])
    monkeypatch.setattr(pypdf, "PdfReader", refuse)
    with pytest.raises(InputError, match=r"big.pdf.*PDF refused by the reader's safety limits \(Maximum /ToUnicode"):
        pdf_text(path, "big.pdf")


def test_without_a_manifest_a_pdf_paper_among_the_transcripts_is_named_and_left_out(tmp_path):
    """A strategy paper dropped beside the interviews (no speaker labels, no documents/ folder) is not a
    broken transcript: one warning names it and the interviews are segmented."""
    folder = tmp_path / "study"
    folder.mkdir()
    for rel in ("core/C01_wave1.docx", "core/C01_wave2.txt"):
        shutil.copy(EXAMPLE / rel, folder / Path(rel).name)
    _strategy_pdf(folder / "strategy.pdf")
    res = runner.invoke(app, ["segment", str(folder), "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    assert "1 PDF file(s) without speaker labels, not read as transcripts" in res.output
    assert "strategy.pdf" in res.output
    sources = pq.read_table(tmp_path / "run" / "sources.parquet").column("source_file").to_pylist()
    assert sources == ["C01_wave1.docx", "C01_wave2.txt"]
    # in a documents/ folder the same file is read, as a document
    (folder / "documents").mkdir()
    (folder / "strategy.pdf").rename(folder / "documents" / "strategy.pdf")
    res = runner.invoke(app, ["segment", str(folder), "--out", str(tmp_path / "run2"), "--quiet"])
    assert res.exit_code == 0, res.output
    types = pq.read_table(tmp_path / "run2" / "sources.parquet", columns=["source_file", "source_type"]).to_pylist()
    assert {"source_file": "documents/strategy.pdf", "source_type": "document"} in types
