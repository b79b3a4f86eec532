"""Each transcript format parses into the right turns, with spans that slice back exactly."""
from __future__ import annotations

import json

import docx
import pytest

from pipeline.errors import InputError
from pipeline.io.readers import read_document

KNOWN = {"interviewer", "int", "i"}


def _turns(doc):
    return [(t.label, doc.source_text[t.start:t.end], t.timestamp) for t in doc.turns]


def test_plain_text_timestamps_and_continuation_lines(write):
    path = write("a.txt", (
        "Study X, interview 4\n\n"
        "[00:00:05] Interviewer: Could you tell me about your role?\n"
        "00:00:09 P04: Well, I lead the project.\n"
        "It started in May: we had no data at all.\n"
        "\n"
        "And then it changed.\n"
        "Interviewer [00:01:10]: Right.\n"
    ))
    doc = read_document(path, "a.txt", KNOWN, [])
    assert _turns(doc) == [
        ("Interviewer", "Could you tell me about your role?", 5.0),
        ("P04", "Well, I lead the project.\nIt started in May: we had no data at all.\n\nAnd then it changed.", 9.0),
        ("Interviewer", "Right.", 70.0),
    ]
    assert doc.n_skipped_lines == 1  # the title line before the first speaker


def test_one_off_colon_phrase_inside_an_answer_is_speech(write):
    path = write("a.txt", "Interviewer: Why?\nP1: Because.\nThe thing is: nobody asked.\nInterviewer: Ok.\nP1: Yes.\n")
    doc = read_document(path, "a.txt", KNOWN, [])
    assert [t[0] for t in _turns(doc)] == ["Interviewer", "P1", "Interviewer", "P1"]
    assert _turns(doc)[1][1] == "Because.\nThe thing is: nobody asked."


def test_markdown_bold_labels_and_headings(write):
    path = write("a.md", "# Interview 7\n\n**INT:** First question?\n\n**Dr Lee:** An answer & more.\n\n**INT**: Next?\n")
    doc = read_document(path, "a.md", KNOWN, [])
    assert _turns(doc) == [("INT", "First question?", None), ("Dr Lee", "An answer & more.", None),
                           ("INT", "Next?", None)]
    assert doc.n_skipped_lines == 1


def test_docx_paragraphs_and_tables(write):
    d = docx.Document()
    d.add_heading("Interview 2", level=1)
    d.add_paragraph("I: How did it go?")
    d.add_paragraph("P02: Badly at first.")
    table = d.add_table(rows=2, cols=3)
    for row, (ts, who, text) in zip(table.rows, [("00:02:00", "I", "And later?"), ("00:02:10", "P02", "Better.")]):
        row.cells[0].text, row.cells[1].text, row.cells[2].text = ts, who, text
    path = write.dir / "a.docx"
    d.save(str(path))
    doc = read_document(path, "a.docx", KNOWN, [])
    assert _turns(doc) == [("I", "How did it go?", None), ("P02", "Badly at first.", None),
                           ("I", "And later?", 120.0), ("P02", "Better.", 130.0)]


def test_vtt_voice_tags_merge_consecutive_cues(write):
    path = write("a.vtt", (
        "WEBVTT\n\nNOTE exported from a meeting tool\n\n"
        "1\n00:00:01.000 --> 00:00:03.000\n<v Interviewer>Shall we start?</v>\n\n"
        "2\n00:00:03.500 --> 00:00:06.000\n<v Ann Smith>Yes. I was going\nto say</v>\n\n"
        "3\n00:00:06.000 --> 00:00:08.000\n<v Ann Smith>that it <i>worked</i>.</v>\n\n"
        "4\n00:00:09.000 --> 00:00:10.000\nInterviewer: Good.\n"
    ))
    doc = read_document(path, "a.vtt", KNOWN, [])
    assert _turns(doc) == [("Interviewer", "Shall we start?", 1.0),
                           ("Ann Smith", "Yes. I was going to say that it worked.", 3.5),
                           ("Interviewer", "Good.", 9.0)]
    assert doc.source_text.startswith("Interviewer: Shall we start?\nAnn Smith: Yes.")


def test_vtt_entities_and_bare_angle_brackets_are_text(write):
    path = write("b.vtt", "WEBVTT\n\n00:00:01.000 --> 00:00:03.000\n"
                          "<v P1>Scores went &lt;3 &amp; then <c.loud>rose</c> <00:00:02.000>a bit; x < y.</v>\n")
    assert _turns(read_document(path, "b.vtt", KNOWN, [])) == [("P1", "Scores went <3 & then rose a bit; x < y.", 1.0)]


def test_srt_speaker_prefix_carries_over_unlabelled_cues(write):
    path = write("a.srt", (
        "1\n00:00:01,000 --> 00:00:02,000\nINT: Hello.\n\n"
        "2\n00:00:02,500 --> 00:00:04,000\nP7: Hi there, it has\n\n"
        "3\n00:00:04,000 --> 00:00:05,000\nbeen a long year.\n\n"
        "4\n00:00:06,000 --> 00:00:07,000\nINT: Indeed.\n\n"
        "5\n00:00:07,000 --> 00:00:08,000\nP7: Yes.\n"
    ))
    doc = read_document(path, "a.srt", KNOWN, [])
    assert [t[:2] for t in _turns(doc)] == [("INT", "Hello."), ("P7", "Hi there, it has been a long year."),
                                            ("INT", "Indeed."), ("P7", "Yes.")]


def test_json_list_and_object_forms(write):
    turns = [{"speaker": "Interviewer", "text": "Q one?", "start": 1.5}, {"speaker": "P1", "text": "A <one>."}]
    for name, payload in (("a.json", turns), ("b.json", {"turns": turns})):
        doc = read_document(write(name, json.dumps(payload)), name, KNOWN, [])
        assert _turns(doc) == [("Interviewer", "Q one?", 1.5), ("P1", "A <one>.", None)]


def test_utf8_bom_and_cp1252_fallback(write):
    bom = write("bom.txt", "Interviewer: Caf\u00e9?\nP1: Oui.\n".encode("utf-8-sig"))
    doc = read_document(bom, "bom.txt", KNOWN, ["cp1252"])
    assert doc.encoding == "utf-8-sig" and _turns(doc)[0][1] == "Caf\u00e9?"
    word = write("word.txt", "Interviewer: It\u2019s \u00a35?\nP1: Yes.\n".encode("cp1252"))
    doc = read_document(word, "word.txt", KNOWN, ["cp1252", "latin-1"])
    assert doc.encoding == "cp1252" and _turns(doc)[0][1] == "It\u2019s \u00a35?"
    assert doc.warnings and "word.txt" in doc.warnings[0] and "cp1252" in doc.warnings[0]


@pytest.mark.parametrize("name,content,message", [
    ("empty.txt", b"", "empty file"),
    ("blank.txt", b"\n \n", "empty file"),
    ("bin.txt", bytes(range(256)) * 4, "binary file"),
    ("nolabels.txt", b"just some prose\nwithout any speakers\n", "no speaker labels"),
    ("bad.json", b'{"turns": [1, 2', "not valid JSON"),
    ("fake.docx", b"this is not a zip", "not a Word .docx"),
    ("nocues.vtt", b"WEBVTT\n\nhello\n", "no VTT cues"),
])
def test_bad_files_raise_one_clear_error(write, name, content, message):
    path = write(name, content)
    with pytest.raises(InputError) as info:
        read_document(path, name, KNOWN, ["cp1252"])
    assert message in str(info.value) and str(info.value).startswith(name)


def test_a_speaker_label_at_the_top_of_a_pdf_page_starts_a_turn(tmp_path):
    """A three-page PDF interview: the label at the top of pages 2 and 3 (after the page break) starts a
    turn as anywhere else, so page 2's interviewer question is not coded as the participant's speech."""
    from pdf_fixtures import text_pdf

    from pipeline.io.readers import read_document

    pages = [["Interviewer: How did the project start?", "P01: With a small pilot on two wards."],
             ["Interviewer: And who led it?", "P01: The ward sister, with the data team behind her."],
             ["P01: Later the whole unit joined.", "Interviewer: Thank you."]]
    path = text_pdf(tmp_path / "interview.pdf", pages)
    doc = read_document(path, "interview.pdf", set(), ["cp1252"])
    expected = [line.split(": ", 1) for page in pages for line in page]
    assert [(t.label, doc.source_text[t.start:t.end]) for t in doc.turns] == [tuple(e) for e in expected]
    assert doc.page_starts is not None and len(doc.page_starts) == 3
    # each turn lies on its own page: turns 2-3 on page 2, turns 4-5 on page 3
    pages_of = [sum(start >= p for p in doc.page_starts) for start in (t.start for t in doc.turns)]
    assert pages_of == [1, 1, 2, 2, 3, 3]
