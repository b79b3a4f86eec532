"""Property: for every utterance, source_text[start_char:end_char] == text, and the
units of a turn cover all of its non-space characters, whatever the format."""
from __future__ import annotations

import html
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.ingest import segment_corpus
from pipeline.settings import SegmentSettings, settings_for

words = st.text(alphabet=st.characters(codec="utf-8", categories=("L", "N"), include_characters="'-&<>\u00e9\u2019"),
                min_size=1, max_size=9)
sentence = st.builds(lambda ws, end: " ".join(ws) + end, st.lists(words, min_size=1, max_size=8),
                     st.sampled_from([".", "?", "!", "...", "", ","]))
turn_text = st.lists(sentence, min_size=1, max_size=4).map(" ".join)
turns = st.lists(st.tuples(st.sampled_from(["Interviewer", "P01", "Dr Ann Lee"]), turn_text,
                           st.booleans()), min_size=1, max_size=6)


def _render(fmt: str, items) -> str:
    if fmt == "txt":
        lines = []
        for i, (who, text, wrap) in enumerate(items):
            if wrap and " " in text:  # a continuation line
                cut = text.index(" ")
                text = text[:cut] + "\n" + text[cut + 1:]
            lines.append(f"[00:00:{i:02d}] {who}: {text}")
        return "\n".join(lines) + "\n"
    if fmt == "json":
        return json.dumps([{"speaker": w, "text": t} for w, t, _ in items])
    # WebVTT escapes &, < and > in cue text; the reader gives the characters back
    cues = [f"00:00:{i:02d}.000 --> 00:00:{i + 1:02d}.000\n<v {w}>{html.escape(t, quote=False)}</v>\n"
            for i, (w, t, _) in enumerate(items)]
    return "WEBVTT\n\n" + "\n".join(cues)


@pytest.mark.parametrize("fmt", ["txt", "json", "vtt"])
@pytest.mark.parametrize("unit", ["sentence", "window", "turn"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(items=turns)
def test_offsets_slice_back_to_text(tmp_path_factory, cfg, fmt, unit, items):
    folder = tmp_path_factory.mktemp("c")
    (folder / f"t.{fmt}").write_text(_render(fmt, items), encoding="utf-8")
    cfg["segment"]["unit"] = unit
    corpus = segment_corpus(folder, settings_for(SegmentSettings, cfg))
    source = corpus.sources.column("source_text")[0].as_py()
    rows = corpus.utterances.to_pylist()
    assert rows, "every generated transcript has speech"
    by_turn: dict[int, list[dict]] = {}
    for r in rows:
        assert source[r["start_char"]:r["end_char"]] == r["text"]
        assert r["text"] == r["text"].strip()
        by_turn.setdefault(r["turn_index"], []).append(r)
    for units in by_turn.values():
        # the units of a turn cover every non-space character between its first and last unit
        covered = {i for u in units for i in range(u["start_char"], u["end_char"])}
        lo, hi = min(covered), max(covered)
        assert all(source[i].isspace() or i in covered for i in range(lo, hi + 1))
    # subtitle cues of one speaker in a row form one turn
    merged = [w for i, (w, _, _) in enumerate(items) if fmt != "vtt" or i == 0 or items[i - 1][0] != w]
    assert len(by_turn) == len(merged)
    assert len({r["utterance_id"] for r in rows}) == len(rows)
