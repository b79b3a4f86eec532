"""JSON transcripts: a list of turns (or an object with a 'turns' or 'utterances' list), each with a speaker,
its text and optionally a start time; rendered as `Speaker: text` lines, one per turn. Pseudonymising
rewrites every string in the file, whatever its shape, and writes the JSON back indented.

Named json_format, not json, so that nothing mistakes it for the standard library's module.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from pipeline.errors import InputError
from pipeline.io.decode import decode_text
from pipeline.io.pieces import Piece, SourceFile, line_labels
from pipeline.io.turns import Document, parse_timestamp, refuse_paragraphs, render_turns

EXTENSIONS = (".json",)
LABEL_KEYS = ("speaker", "name", "speaker_id")  # fields holding a turn's speaker label, in order of preference
TEXT_KEYS = ("text", "utterance", "content")
TIME_KEYS = ("start", "timestamp", "time")


def load_json(text: str, path: str) -> Any:
    """A JSON transcript's data; bad or too deeply nested JSON is one bad-input line naming the file."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON: {exc.msg}", path, exc.lineno) from None
    except RecursionError:
        raise InputError("JSON nested too deeply to be a transcript", path) from None


def read_turns(path: Path, display: str, known: set[str], fallbacks: list[str]) -> Document:
    text, encoding, warning = decode_text(path.read_bytes(), display, fallbacks)
    doc = _turns(text, display, encoding)
    if warning:
        doc.warnings.append(warning)
    return doc


def _turns(text: str, path: str, encoding: str) -> Document:
    data = load_json(text, path)
    if isinstance(data, dict):
        data = data.get("turns", data.get("utterances"))
    if not isinstance(data, list):
        raise InputError("JSON transcript must be a list of turns or an object with a 'turns' list", path)
    items = []
    for i, turn in enumerate(data):
        if not isinstance(turn, dict):
            raise InputError(f"turn {i} is not an object", path)
        label = next((turn[k] for k in LABEL_KEYS if turn.get(k)), None)
        body = next((turn[k] for k in TEXT_KEYS if k in turn), None)
        if not isinstance(label, str) or not isinstance(body, str):
            raise InputError(f"turn {i} needs string 'speaker' and 'text' fields", path)
        ts = _json_time(next((turn[k] for k in TIME_KEYS if turn.get(k) is not None), None), i, path)
        items.append((label.strip(), body, ts, i + 1))
    return render_turns(items, "json", encoding, path)


def _json_time(value: Any, turn: int, path: str) -> float | None:
    """A turn's start: seconds or 'hh:mm:ss'; anything else is one clear error."""
    if value is None or isinstance(value, str) and not value.strip():
        return None
    try:
        if isinstance(value, str):
            seconds = parse_timestamp(value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            seconds = float(value)
        else:
            raise TypeError
    except (TypeError, ValueError, OverflowError):
        seconds = None
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        raise InputError(f"turn {turn}: start {value!r} is not a time (seconds, or hh:mm:ss)", path)
    return seconds


read_paragraphs = refuse_paragraphs  # a JSON transcript is speech: never a field note or document


def read_for_pseudonymising(path: Path, rel: str, fallbacks: list[str]) -> SourceFile:
    text, _, _ = decode_text(path.read_bytes(), rel, fallbacks)
    data = load_json(text, rel)
    pieces: list[Piece] = []
    slots: list[tuple[Any, Any]] = []  # (object or list, key or index) holding each piece's string

    def walk(node: Any, depth: int) -> None:
        if depth > 50:
            raise InputError("JSON nested too deeply to be a transcript", rel)
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
        for k, v in list(items):
            if isinstance(v, str) and v.strip():
                label = isinstance(node, dict) and k in LABEL_KEYS
                pieces.append(Piece(v, len(pieces) + 1, [(0, len(v))] if label else line_labels(v, False)))
                slots.append((node, k))
            elif isinstance(v, (dict, list)):
                walk(v, depth + 1)

    walk(data, 0)

    def write(new_texts: list[str], out: Path) -> None:
        for (node, key), new in zip(slots, new_texts, strict=True):
            node[key] = new
        out.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")

    return SourceFile(rel, rel, "json", pieces, write)
