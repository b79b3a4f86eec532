"""Every Parquet table the pipeline writes, in one place.

Each schema carries a one-line description per column (Arrow field metadata), so
`pyarrow.parquet.read_schema(path)` documents the file it came from. README.md
lists the same columns.
"""
from __future__ import annotations

import pyarrow as pa


def _f(name: str, type_: pa.DataType, doc: str, nullable: bool = False) -> pa.Field:
    return pa.field(name, type_, nullable=nullable, metadata={"doc": doc})


UTTERANCES = pa.schema([
    _f("utterance_id", pa.string(), "stable id: <interview_id>-t<turn>-u<unit>"),
    _f("interview_id", pa.string(), "interview the utterance belongs to"),
    _f("source_file", pa.string(), "transcript path relative to the input folder"),
    _f("speaker_id", pa.string(), "resolved speaker id (speakers.csv, manifest or label)"),
    _f("speaker_label", pa.string(), "speaker label as written in the transcript"),
    _f("speaker_role", pa.string(), "role from speakers.csv; 'interviewer' for interviewers", True),
    _f("wave", pa.int32(), "interview wave (1, 2, ...); null when unknown", True),
    _f("turn_index", pa.int32(), "0-based speaker turn within the interview"),
    _f("sentence_index", pa.int32(), "0-based unit within the turn"),
    _f("start_char", pa.int64(), "start offset into the interview's source_text (sources.parquet)"),
    _f("end_char", pa.int64(), "end offset (exclusive): source_text[start_char:end_char] == text"),
    _f("timestamp", pa.float64(), "seconds from the start of the recording, when the transcript gives it", True),
    _f("text", pa.string(), "the unit's text, exactly as in source_text"),
    _f("is_interviewer", pa.bool_(), "true for interviewer turns"),
    _f("is_backchannel", pa.bool_(), "true for short fragments such as 'Yeah.' or 'Mm-hmm.'"),
    _f("coded", pa.bool_(), "true when later stages code this unit"),
    _f("exclusion_reason", pa.string(), "why the unit is not coded: interviewer, backchannel", True),
])

SOURCES = pa.schema([
    _f("interview_id", pa.string(), "interview id"),
    _f("source_file", pa.string(), "transcript path relative to the input folder"),
    _f("format", pa.string(), "txt, md, docx, vtt, srt or json"),
    _f("encoding", pa.string(), "text encoding the file was decoded with"),
    _f("sha256", pa.string(), "hash of the file's bytes"),
    _f("source_text", pa.string(), "the plain text all character offsets refer to"),
])

INTERVIEWS = pa.schema([
    _f("interview_id", pa.string(), "interview id"),
    _f("source_file", pa.string(), "transcript path relative to the input folder"),
    _f("wave", pa.int32(), "interview wave", True),
    _f("date", pa.string(), "interview date as given in the manifest", True),
    _f("participant_id", pa.string(), "interviewee from the manifest or filename template", True),
    _f("n_turns", pa.int32(), "speaker turns parsed"),
    _f("n_utterances", pa.int32(), "units written to utterances.parquet"),
    _f("n_skipped_lines", pa.int32(), "non-empty lines before the first speaker label or headings"),
])
# Extra manifest columns are appended to INTERVIEWS as string columns at run time.

REJECTED = pa.schema([
    _f("source_file", pa.string(), "file that could not be read"),
    _f("line", pa.int32(), "line of the problem, when known", True),
    _f("reason", pa.string(), "why it was rejected"),
])


def embeddings_schema(dim: int) -> pa.Schema:
    return pa.schema([
        _f("utterance_id", pa.string(), "utterance (coded utterances only)"),
        _f("vector", pa.list_(pa.float32(), dim), "L2-normalised sentence embedding"),
    ])


def codes_schema(dim: int) -> pa.Schema:
    return pa.schema([
        _f("code_id", pa.int32(), "candidate first-order code (cluster) id, 0..n-1"),
        _f("label", pa.string(), "readable label from the top keywords"),
        _f("keywords", pa.list_(pa.string()), "top keywords, best first"),
        _f("size", pa.int32(), "utterances assigned to the code"),
        _f("exemplar_ids", pa.list_(pa.string()), "utterance ids ranked by representativeness"),
        _f("centroid", pa.list_(pa.float32(), dim), "L2-normalised mean embedding of the code's utterances"),
        _f("fingerprint", pa.string(), "stable id of the code's membership, survives re-runs on the same corpus"),
    ])


ASSIGNMENTS = pa.schema([
    _f("utterance_id", pa.string(), "coded utterance"),
    _f("code_id", pa.int32(), "assigned code; -1 when unassigned"),
    _f("probability", pa.float32(), "membership strength in [0, 1]"),
    _f("reason", pa.string(), "why code_id is -1 (outlier, too few utterances), else null", True),
])

UTTERANCE_DIMENSIONS = pa.schema([
    _f("utterance_id", pa.string(), "coded utterance"),
    _f("dimension", pa.string(), "aggregate dimension of the framework"),
    _f("probability", pa.float64(), "probability that the utterance expresses the dimension (sums to 1 per utterance)"),
    _f("is_argmax", pa.bool_(), "true for the utterance's most probable dimension"),
    _f("mapped", pa.bool_(), "false when the utterance's evidence is too weak or ambiguous to assign"),
    _f("second_order", pa.string(), "most probable second-order concept of the utterance", True),
    _f("source", pa.string(), "where the probability comes from: framework-similarity, learned or human"),
])
