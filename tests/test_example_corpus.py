"""The bundled example study segments completely and lines up with its answer key."""
from __future__ import annotations

import csv
from collections import Counter

import pytest

from conftest import ANSWER_KEY, EXAMPLE
from pipeline.ingest import segment_corpus


@pytest.fixture(scope="module")
def corpus():
    from pipeline.config import load_config
    from pipeline.settings import SegmentSettings, settings_for

    return segment_corpus(EXAMPLE, settings_for(SegmentSettings, load_config()))


def _csv(name):
    with open(ANSWER_KEY / name, encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_every_interview_and_turn_is_read(corpus):
    interviews = corpus.interviews.to_pylist()
    assert len(interviews) == 28 and corpus.rejected.num_rows == 0
    assert all(i["n_turns"] == 46 for i in interviews)
    assert Counter(s["format"] for s in corpus.sources.to_pylist()) == {
        "txt": 8, "docx": 4, "vtt": 4, "md": 4, "srt": 4, "json": 4}
    utt = corpus.utterances.to_pylist()
    speakers = {(u["speaker_id"], u["speaker_role"]) for u in utt}
    assert sum(r == "CORE" for _, r in speakers) == 4 and sum(r == "PROJECT" for _, r in speakers) == 10
    assert ("INT", "interviewer") in speakers and ("Respondent", None) not in speakers
    assert {u["wave"] for u in utt} == {1, 2}


def test_answer_key_turns_match_parsed_turns(corpus):
    key = _csv("turns.csv")
    assert len(key) == 28 * 23
    turns = {(u["interview_id"], u["turn_index"]): u["speaker_id"] for u in corpus.utterances.to_pylist()}
    for row in key:
        assert turns[(row["interview_id"], int(row["turn_index"]))] == row["speaker_id"]


def test_human_code_spans_cover_whole_turns(corpus):
    sources = {s["source_file"]: s["source_text"] for s in corpus.sources.to_pylist()}
    starts = {(u["source_file"], u["start_char"]) for u in corpus.utterances.to_pylist() if u["sentence_index"] == 0}
    codes = _csv("human_codes.csv")
    assert {c["coder"] for c in codes} == {"coder_a", "coder_b"}
    assert len({c["interview_id"] for c in codes}) == 10
    for c in codes:
        assert (c["source_file"], int(c["start_char"])) in starts
        assert 0 < int(c["end_char"]) <= len(sources[c["source_file"]])
