"""Pseudonymisation: Presidio detection, one pseudonym per entity per study, formats kept, key file
apart and study-bound, review table and decisions, measured recall on the identifiable example
study, and no original name left anywhere in a `run --anonymise`."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import docx
import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pdf_fixtures import text_pdf
from pipeline.cli import app
from pipeline.config import load_config
from pipeline.pseudonym_key import PseudonymKey
from pipeline.settings import AnonymiseSettings, settings_for

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
import pii_study  # noqa: E402  (the identifiable example study and its answer key)

runner = CliRunner()
ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}

TXT = ("Interviewer: Thanks for coming in. How is the falls work going?\n"
       "Sarah Jones: It's going well. Dr Mike Thompson at Leeds General Infirmary backed us from the start.\n"
       "Interviewer: And the data?\n"
       "Sarah Jones: Mike sends them every month. Ring me on 07911 123456 if they stop, or write to "
       "sarah.jones@nhs.net.\n")
VTT = ("WEBVTT\n\n1\n00:00:01.000 --> 00:00:04.000\n<v Interviewer>Who else is on the team?</v>\n\n"
       "2\n00:00:04.500 --> 00:00:09.000\n<v Sarah Jones>Mike Thompson, and a patient whose NHS number "
       "is 943 476 5919.</v>\n")
SRT = ("1\n00:00:01,000 --> 00:00:03,000\nInterviewer: Where is the clinic?\n\n"
       "2\n00:00:03,500 --> 00:00:06,000\nP02: In Harrogate, next to the library. Sarah Jones runs it.\n")
JSON = [{"speaker": "Interviewer", "text": "When were you born?"},
        {"speaker": "Sarah Jones", "text": "On 14 February 1979, in Harrogate. Mike Thompson was born the same year."}]


def _study(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "a.txt").write_text(TXT, encoding="utf-8")
    (folder / "b.vtt").write_text(VTT, encoding="utf-8")
    (folder / "c.srt").write_text(SRT, encoding="utf-8")
    (folder / "d.json").write_text(json.dumps(JSON, indent=1), encoding="utf-8")
    d = docx.Document()
    d.core_properties.author = "Sarah Jones"
    p = d.add_paragraph("Interviewer: ")
    p.add_run("Tell me about ").bold = True
    p.add_run("Harrogate.")
    d.add_paragraph("Sarah Jones: I moved there with Mike Thompson in 2015.")
    d.save(str(folder / "e.docx"))
    (folder / "documents").mkdir()
    text_pdf(folder / "documents" / "minutes.pdf", [["Minutes of the falls group.", "Present: Sarah Jones, Mike Thompson."],
                                                   ["Action: Mike Thompson to email the data team."]])
    (folder / "speakers.csv").write_text("speaker_id,name,role,is_interviewer,aliases\nINT,,interviewer,true,Interviewer\n"
                                         "S01,Sarah Jones,PROJECT,false,Sarah Jones\nP02,Priya Shah,PROJECT,false,\n",
                                         encoding="utf-8")
    return folder


def _anonymise(src, out, *extra):
    return runner.invoke(app, ["anonymise", str(src), "--out", str(out), "--quiet", *extra], env=ENV)


def test_key_links_a_persons_names_and_continues_numbering():
    key = PseudonymKey("s")
    a = key.assign("person", "Sarah Jones")
    assert key.assign("person", "Sarah") is a and key.assign("person", "Ms Jones") is a
    assert key.assign("person", "JONES's") is a
    assert key.assign("org", "the University of Leeds") is key.assign("org", "University of Leeds")
    assert [e.pseudonym for e in key.entries] == ["PERSON-01", "ORG-01"]
    key.assign("person", "Sarah Brown")  # now "Sarah" is two people's: a new bare "Sarah" is not linked
    assert key.lookup("Sarah") is a  # ... but what was decided stays
    assert key.assign("person", "Brown").pseudonym == "PERSON-02"


def test_every_format_pseudonymised_consistently_and_still_readable(tmp_path):
    src = _study(tmp_path / "study")
    res = _anonymise(src, tmp_path / "out", "--review")
    assert res.exit_code == 0, res.output
    out = tmp_path / "out"
    key = json.loads((tmp_path / "out.pseudonym-key.json").read_text())
    assert key["study"] == "study" and (tmp_path / "out.pseudonym-key.json").stat().st_mode & 0o077 == 0
    names = {n: e["pseudonym"] for e in key["entries"] for n in e["names"]}
    sj, mt = names["Sarah Jones"], names["Mike Thompson"]
    assert names["Mike"] == mt and sj == "PERSON-01"  # speakers.csv names come first
    txt = (out / "a.txt").read_text()
    assert txt.splitlines()[1].startswith(f"{sj}: It's going well. Dr [{mt}] at [{names['Leeds General Infirmary']}]")
    assert f"[{mt}] sends them" in txt and "[PHONE-01]" in txt and "[EMAIL-01]" in txt
    assert f"<v {sj}>[{mt}], and a patient whose NHS number is [NHS-NUMBER-01].</v>" in (out / "b.vtt").read_text()
    assert "00:00:04.500 --> 00:00:09.000" in (out / "b.vtt").read_text()  # timing untouched
    assert f"P02: In [{names['Harrogate']}], next to the library. [{sj}] runs it." in (out / "c.srt").read_text()
    j = json.loads((out / "d.json").read_text())
    assert j[1]["speaker"] == sj and j[1]["text"].startswith(f"On [DATE-01], in [{names['Harrogate']}]. [{mt}]")
    d = docx.Document(str(out / "e.docx"))
    assert [p.text for p in d.paragraphs] == [f"Interviewer: Tell me about [{names['Harrogate']}].",
                                              f"{sj}: I moved there with [{mt}] in 2015."]
    assert d.paragraphs[0].runs[1].bold and d.core_properties.author == ""  # formatting kept, author gone
    assert (out / "documents" / "minutes.txt").read_text() == (
        f"Minutes of the falls group.\nPresent: [{sj}], [{mt}].\n\fAction: [{mt}] to email the data team.\n")
    speakers = (out / "speakers.csv").read_text()
    assert f"S01,{sj},PROJECT,false,{sj}" in speakers and "P02,PERSON-02,PROJECT" in speakers
    # the pseudonymised folder segments: labels still resolve to the speakers
    res = runner.invoke(app, ["segment", str(out), "--out", str(tmp_path / "run"), "--quiet"], env=ENV)
    assert res.exit_code == 0, res.output
    u = pq.read_table(tmp_path / "run" / "utterances.parquet").to_pandas()
    assert set(u["speaker_id"]) == {"INT", "S01", "P02", "minutes"}  # a document without a case: itself
    assert set(u.loc[u["interview_id"] == "minutes", "page"]) == {1, 2}
    # the review table lists every replacement with its context, originals marked
    review = pd.read_csv(tmp_path / "out.pseudonym-review.csv", keep_default_na=False)
    made = {f: len(re.findall(r"\b(?:PERSON|PLACE|ORG|PHONE|EMAIL|NHS-NUMBER|DATE|POSTCODE)-\d\d\b", t))
            for f, t in [("a.txt", txt), ("b.vtt", (out / "b.vtt").read_text()), ("c.srt", (out / "c.srt").read_text()),
                         ("d.json", (out / "d.json").read_text()), ("e.docx", "\n".join(p.text for p in d.paragraphs)),
                         ("documents/minutes.pdf", (out / "documents" / "minutes.txt").read_text())]}
    assert review.groupby("source_file").size().to_dict() == made
    row = review[(review["source_file"] == "a.txt") & (review["entity"] == "phone")].iloc[0]
    assert row["original"] == "07911 123456" and "<<07911 123456>>" in row["context"] and row["line"] == 4
    assert set(review["entity"]) == {"person", "place", "org", "phone", "email", "nhs_number", "date"}
    # the doubtful come first: lowest score, then fewest recognisers agreeing
    assert list(zip(review["score"], review["agreeing"])) == sorted(zip(review["score"], review["agreeing"]))
    assert not any("Sarah" in t or "Thompson" in t or "Harrogate" in t
                   for p in out.rglob("*") if p.is_file() and p.suffix != ".docx" for t in [p.read_text()])


def test_same_inputs_same_pseudonyms_and_a_later_batch_keeps_them(tmp_path):
    src = _study(tmp_path / "study")
    assert _anonymise(src, tmp_path / "o1", "--key", str(tmp_path / "k1.json")).exit_code == 0
    assert _anonymise(src, tmp_path / "o2", "--key", str(tmp_path / "k2.json")).exit_code == 0
    assert (tmp_path / "k1.json").read_bytes() == (tmp_path / "k2.json").read_bytes()
    for f in ("a.txt", "b.vtt", "c.srt", "d.json", "documents/minutes.txt"):
        assert (tmp_path / "o1" / f).read_bytes() == (tmp_path / "o2" / f).read_bytes()
    # a second batch of the same study, with the key: known people keep their pseudonyms
    before = {e["pseudonym"] for e in json.loads((tmp_path / "k1.json").read_text())["entries"]}
    batch = tmp_path / "batch2" / "study"
    batch.mkdir(parents=True)
    (batch / "f.txt").write_text("Interviewer: Anything new?\nP09: Mike Thompson retired. Gemma Hart took over.\n")
    res = _anonymise(batch, tmp_path / "o3", "--key", str(tmp_path / "k1.json"))
    assert res.exit_code == 0, res.output
    key = json.loads((tmp_path / "k1.json").read_text())
    names = {n: e["pseudonym"] for e in key["entries"] for n in e["names"]}
    assert f"P09: [{names['Mike Thompson']}] retired. [{names['Gemma Hart']}] took over." in (tmp_path / "o3" / "f.txt").read_text()
    prefix, number = names["Gemma Hart"].rsplit("-", 1)  # a new entity: numbering continues the key's
    assert int(number) == 1 + max((int(p.rsplit("-", 1)[1]) for p in before if p.rsplit("-", 1)[0] == prefix),
                                  default=0)


def test_a_key_from_another_study_is_refused(tmp_path):
    src = _study(tmp_path / "study")
    other = tmp_path / "other"
    other.mkdir()
    (other / "x.txt").write_text("Interviewer: Hello?\nP01: Hello.\n")
    assert _anonymise(other, tmp_path / "o0", "--key", str(tmp_path / "k.json")).exit_code == 0
    res = _anonymise(src, tmp_path / "o1", "--key", str(tmp_path / "k.json"))
    assert res.exit_code == 2
    assert res.output.strip() == (f"error: {tmp_path / 'k.json'}: key file belongs to study 'other', not 'study': "
                                  "refused (one key per study; give this study's key with --key, or a new file name "
                                  "for a new study)")
    (tmp_path / "bad.json").write_text('{"entries": []}')
    res = _anonymise(src, tmp_path / "o2", "--key", str(tmp_path / "bad.json"))
    assert res.exit_code == 2 and "not a themeshift pseudonym key" in res.output


@pytest.mark.parametrize("where", ["inside-out", "inside-input"])
def test_key_never_inside_the_shared_folders(tmp_path, where):
    src = _study(tmp_path / "study")
    key = tmp_path / "out" / "k.json" if where == "inside-out" else src / "k.json"
    res = _anonymise(src, tmp_path / "out", "--key", str(key))
    assert res.exit_code == 2 and "the key file holds the original names" in res.output


def test_decisions_keep_rejected_texts_and_the_key_remembers(tmp_path):
    src = _study(tmp_path / "study")
    assert _anonymise(src, tmp_path / "o1", "--review").exit_code == 0
    review = pd.read_csv(tmp_path / "o1.pseudonym-review.csv", keep_default_na=False)
    review.loc[review["original"] == "Harrogate", "decision"] = "reject"
    review.to_csv(tmp_path / "decisions.csv", index=False)
    res = _anonymise(src, tmp_path / "o1", "--key", str(tmp_path / "o1.pseudonym-key.json"),
                     "--decisions", str(tmp_path / "decisions.csv"))
    assert res.exit_code == 0, res.output
    assert "P02: In Harrogate, next to the library." in (tmp_path / "o1" / "c.srt").read_text()
    assert {"kind": "place", "text": "Harrogate"} in json.loads((tmp_path / "o1.pseudonym-key.json").read_text())["kept"]
    review.loc[0, "decision"] = "maybe"
    review.to_csv(tmp_path / "bad.csv", index=False)
    res = _anonymise(src, tmp_path / "o1", "--decisions", str(tmp_path / "bad.csv"))
    assert res.exit_code == 2 and "bad.csv:2: decision must be accept or reject, got 'maybe'" in res.output


def test_the_identifiable_example_study_answer_key_and_recall(tmp_path):
    """The builder still makes the committed answer key; detection meets the recall targets on it."""
    study = tmp_path / "study"
    rows = pii_study.build(study)
    assert rows == pii_study.read_key()
    res = _anonymise(study, tmp_path / "out", "--review")
    assert res.exit_code == 0, res.output
    review = pd.read_csv(tmp_path / "out.pseudonym-review.csv", keep_default_na=False)
    recall = {g: v["value"] for g, v in pii_study.evaluate(study, review, rows)["recall"].items()}
    assert recall["person_listed"] >= 0.95 and recall["person"] >= 0.85
    assert all(recall[k] == 1.0 for k in ("nhs_number", "phone", "email", "date", "postcode", "org"))


def test_run_anonymise_leaves_no_original_name_anywhere(tmp_path):
    """Tables, report, REFI-QDA export, manifest, the pseudonymised copy: no answer-key name survives
    (the study's list of local places and the people it names is given with --names)."""
    study = tmp_path / "study"
    rows = pii_study.build(study)
    out = tmp_path / "run"
    res = runner.invoke(app, ["run", str(study), "--out", str(out), "--anonymise", "--quiet",
                              "--names", str(pii_study.NAMES), "--human",
                              str(REPO / "examples" / "answer_key" / "human_codes.csv")], env=ENV)
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["export", "qdpx", str(out), str(out / "study.qdpx"), "--quiet"], env=ENV)
    assert res.exit_code == 0, res.output
    assert (out / "report.html").is_file() and (out / "source_themes.parquet").is_file()
    assert not (out / "pseudonym-key.json").exists() and (tmp_path / "run.pseudonym-key.json").is_file()
    assert pii_study.surviving(out, rows) == {}
    manifest = json.loads((out / "manifest.json").read_text())
    # about one replacement per answer-key occurrence (154): common nouns and products are no longer replaced
    assert 150 < manifest["stages"]["anonymise"]["counts"]["replacements"] < 200


def test_detection_opens_no_network_connection(monkeypatch, tmp_path):
    """Presidio, spaCy, tldextract's e-mail check and phonenumbers all run with sockets refused."""
    import socket

    from pipeline.pii import Detector

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    detector = Detector(settings_for(AnonymiseSettings, load_config()), {"person": ["Sarah Jones"]})
    text = "Sarah Jones (sarah.jones@nhs.net, 07911 123456) lives in LS1 4AP."
    found = detector.detect([text])[0]
    assert [(text[f.start:f.end], f.kind) for f in found] == [
        ("Sarah Jones", "person"), ("sarah.jones@nhs.net", "email"), ("07911 123456", "phone"),
        ("LS1 4AP", "postcode")]


@pytest.mark.parametrize("number", ["07700 900123", "07700900123", "07700 900 123", "07911-123456",
                                    "020 7946 0018", "02079460018", "0161 496 0123", "01632 960123",
                                    "0113 496 0000", "03069 990000"])
def test_uk_national_phone_formats_are_found(number):
    """British transcripts hold national formats, drama ranges (07700 900xxx, 01632 960xxx) included, which
    the number library alone skips; years, NHS numbers and counts are not phone numbers."""
    from pipeline.pii import Detector

    detector = Detector(settings_for(AnonymiseSettings, load_config()), {})
    text = f"She called on {number} yesterday, in 2019 about 20 of the 943 476 5919 records."
    found = [(text[f.start:f.end], f.kind) for f in detector.detect([text])[0]]
    assert (number, "phone") in found
    assert [k for _, k in found].count("phone") == 1


def test_the_example_study_keeps_its_common_nouns_products_and_programme_name(tmp_path):
    """examples/kt_study holds no real person: the programme's own "the Collaboration" (104 times), answers
    starting with a common noun ("Attendance has roughly tripled"), products (Gantt, Zoom, WhatsApp) and
    abbreviations (A4, FEV1) stay; the few left are sorted first by score in the review table."""
    out = tmp_path / "anon"
    res = _anonymise(REPO / "examples" / "kt_study", out, "--review")
    assert res.exit_code == 0, res.output
    review = pd.read_csv(tmp_path / "anon.pseudonym-review.csv", keep_default_na=False)
    assert len(review) <= 8, review[["entity", "original"]].to_string()
    kept = {"Collaboration", "Attendance", "Consistency", "Fidelity", "Inhaler", "Gantt", "Zoom", "WhatsApp",
            "PowerPoint", "Teams", "A4", "FEV1", "Nobody"}
    assert not kept & set(review["original"])
    assert list(review["score"]) == sorted(review["score"]) and "agreeing" in review.columns


def test_a_rejected_term_stays_rejected_as_any_kind_casing_possessive_and_plural(tmp_path):
    """Rejected once as an organisation, a term is not replaced as a person, in capitals, with a possessive
    or as a plural."""
    from pipeline.pseudonym_key import PseudonymKey

    key = PseudonymKey("s")
    key.keep("org", "Collaboration")
    for text in ("Collaboration", "collaboration's", "COLLABORATION", "Collaborations", "the Collaboration"):
        assert key.is_kept("person", text), text
    assert not key.is_kept("person", "Collaborator")


def test_a_repeat_found_by_the_study_key_keeps_the_doubt_of_its_first_detection():
    from pipeline.anonymise import _repeat
    from pipeline.pseudonym_key import PseudonymKey, normalise

    key = PseudonymKey("s")
    key.assign("place", "Harrogate")
    found = _repeat("Harrogate", 3, 12, key, {normalise("Harrogate"): (0.85, {"SpacyRecognizer"})})
    assert (found.start, found.end, found.kind, found.score) == (3, 12, "place", 0.85)
    assert found.recognizer == "study-key (SpacyRecognizer)"
