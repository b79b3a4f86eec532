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
