"""Render the example study from its authored sources.

examples/source/<interview>.json holds each interview as written for the project,
with the intended concept of every participant turn. This script renders them into
the transcript formats researchers have (Word, plain text, Markdown, WebVTT, SRT,
JSON), writes manifest.csv and speakers.csv, the answer key and a double-coded
human-codes file. Re-run it after editing a source:

    .venv/bin/python examples/build_corpus.py
"""
from __future__ import annotations

import csv
import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE, CORPUS, KEY = HERE / "source", HERE / "kt_study", HERE / "answer_key"

CONCEPT_NAMES = {
    "technical_infrastructure": "Developing a technical infrastructure for KT",
    "top_down_push": "Enacting the push model through top-down leadership",
    "resistance": "Resistance towards top-down leadership",
    "leadership_capability": "Developing leadership capability",
    "iterative_learning": "Iterative cycles of action, feedback and learning",
    "ambiguity_roles": "Using ambiguity to define leadership roles",
    "reengineering_relations": "Re-engineering social relations and governance structures",
}
PROFESSIONS = {
    "C01": "public-health consultant", "C02": "statistician", "C03": "nurse", "C04": "contracts manager",
    "P01": "nurse", "P02": "respiratory physician", "P03": "physiotherapist", "P04": "nurse",
    "P05": "podiatry manager", "P06": "pharmacist", "P07": "geriatrician", "P08": "occupational therapist",
    "P09": "general practitioner", "P10": "business manager",
}
# Formats cycle so every format appears in both waves and both roles.
FORMAT_CYCLE = [".docx", ".txt", ".vtt", ".md", ".srt", ".json", ".txt"]
# Interviewer label as each format's transcriber would write it.
INTERVIEWER_LABEL = {".txt": "Interviewer", ".md": "INT", ".docx": "I", ".vtt": "Interviewer",
                     ".srt": "INT", ".json": "Interviewer"}
GENERIC_PARTICIPANT = {"P09"}  # transcribed as "Respondent"; the manifest names the speaker
ALIASES = {"P05": "P-05"}      # P05 is written "P-05" in one transcript; speakers.csv lists the alias
# The shifts the interviews were written to carry (dominant dimension per wave).
PLANTED = {
    "C01": ("push", "exchange"), "C02": ("push", "exchange"), "C03": ("push", "pull"), "C04": ("push", "push"),
    "P01": ("pull", "exchange"), "P02": ("pull", "exchange"), "P03": ("pull", "pull"), "P04": ("pull", "exchange"),
    "P05": ("pull", "pull"), "P06": ("push", "pull"), "P07": ("exchange", "exchange"),
    "P08": ("pull", "exchange"), "P09": ("mixed", "mixed"), "P10": ("push", "push"),
}
DOUBLE_CODED = ["C01-W1", "C02-W2", "C03-W1", "C04-W2", "P01-W1", "P01-W2", "P02-W2", "P04-W1",
                "P06-W2", "P08-W1"]


def _clock(seconds: float, sep: str = ".") -> str:
    h, rem = divmod(int(seconds), 3600)
    m, s = divmod(rem, 60)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{int((seconds % 1) * 1000):03d}"


def _timed_turns(doc: dict) -> list[tuple[str, str, float, float]]:
    """(speaker, text, start, end) with a plausible speaking rate of 2.6 words/s."""
    out, t = [], 3.0
    for turn in doc["turns"]:
        dur = max(1.0, len(turn["text"].split()) / 2.6)
        out.append((turn["speaker"], turn["text"], t, t + dur))
        t += dur + 0.8
    return out


def _label(speaker: str, doc: dict, ext: str) -> str:
    if speaker == "INT":
        return INTERVIEWER_LABEL[ext]
    if speaker in GENERIC_PARTICIPANT:
        return "Respondent"
    if speaker in ALIASES and doc["wave"] == 2:
        return ALIASES[speaker]
    return speaker


def _chunks(text: str, size: int = 14) -> list[str]:
    words = text.split()
    return [" ".join(words[i:i + size]) for i in range(0, len(words), size)]


def render(doc: dict, ext: str, path: Path) -> None:
    turns = [(_label(s, doc, ext), text, a, b) for s, text, a, b in _timed_turns(doc)]
    header = f"Interview {doc['interview_id']} - transcribed verbatim, anonymised\n\n"
    if ext == ".txt":
        body = "".join(f"[{_clock(a)[:8]}] {lab}: {text}\n" for lab, text, a, _ in turns)
        path.write_text(header + body, encoding="utf-8")
    elif ext == ".md":
        body = "".join(f"**{lab}:** {text}\n\n" for lab, text, _, _ in turns)
        path.write_text(f"# Interview {doc['interview_id']}\n\n" + body, encoding="utf-8")
    elif ext == ".docx":
        import docx

        d = docx.Document()
        d.add_heading(f"Interview {doc['interview_id']}", level=1)
        for lab, text, _, _ in turns:
            d.add_paragraph(f"{lab}: {text}")
        import datetime

        d.core_properties.created = d.core_properties.modified = datetime.datetime.fromisoformat(doc["date"])
        d.save(str(path))
    elif ext in (".vtt", ".srt"):
        cues, n = [], 0
        for lab, text, a, b in turns:
            parts = _chunks(text)
            step = (b - a) / len(parts)
            for i, part in enumerate(parts):
                n += 1
                start, end = a + i * step, a + (i + 1) * step
                if ext == ".vtt":
                    cues.append(f"{n}\n{_clock(start)} --> {_clock(end)}\n<v {lab}>{part}</v>\n")
                else:  # SRT names the speaker where a turn starts, as Zoom-style exports do
                    who = f"{lab}: " if i == 0 else ""
                    cues.append(f"{n}\n{_clock(start, ',')} --> {_clock(end, ',')}\n{who}{part}\n")
        head = "WEBVTT\n\n" if ext == ".vtt" else ""
        path.write_text(head + "\n".join(cues), encoding="utf-8")
    elif ext == ".json":
        data = [{"speaker": lab, "start": round(a, 2), "text": text} for lab, text, a, _ in turns]
        path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def main() -> None:
    docs = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(SOURCE.glob("*.json"))]
    CORPUS.mkdir(exist_ok=True)
    KEY.mkdir(exist_ok=True)
    for old in CORPUS.rglob("*"):
        if old.is_file():
            old.unlink()
    manifest, key_rows, files = [], [], {}
    for i, doc in enumerate(docs):
        ext = FORMAT_CYCLE[i % len(FORMAT_CYCLE)]
        folder = CORPUS / ("core" if doc["role"] == "CORE" else "project")
        folder.mkdir(exist_ok=True)
        rel = f"{folder.name}/{doc['participant']}_wave{doc['wave']}{ext}"
        render(doc, ext, CORPUS / rel)
        files[doc["interview_id"]] = rel
        manifest.append({"file": rel, "interview_id": doc["interview_id"], "wave": doc["wave"],
                         "date": doc["date"], "speaker_id": doc["participant"],
                         "profession": PROFESSIONS[doc["participant"]]})
        for t, turn in enumerate(doc["turns"]):
            if turn["speaker"] != "INT":
                key_rows.append({"interview_id": doc["interview_id"], "turn_index": t,
                                 "speaker_id": doc["participant"], "wave": doc["wave"],
                                 "dimension": turn["dimension"], "concept": turn["concept"],
                                 "alt_concept": turn.get("alt_concept", "")})
    _write_csv(CORPUS / "manifest.csv", manifest)
    speakers = [{"speaker_id": "INT", "role": "interviewer", "is_interviewer": "true", "aliases": "Interviewer;I"}]
    for pid in sorted({d["participant"] for d in docs}):
        role = next(d["role"] for d in docs if d["participant"] == pid)
        speakers.append({"speaker_id": pid, "role": role, "is_interviewer": "false", "aliases": ALIASES.get(pid, "")})
    _write_csv(CORPUS / "speakers.csv", speakers)
    _write_csv(KEY / "turns.csv", key_rows)
    _write_csv(KEY / "human_codes.csv", _human_codes(docs, files))
    _write_csv(KEY / "speaker_shifts.csv", _speaker_shifts(docs, key_rows))


def _speaker_shifts(docs: list[dict], key_rows: list[dict]) -> list[dict]:
    """Intended shift per speaker, with the realised share of each dimension per wave
    (over substantive participant turns)."""
    rows = []
    for pid, (first, last) in sorted(PLANTED.items()):
        role = next(d["role"] for d in docs if d["participant"] == pid)
        row = {"speaker_id": pid, "role": role, "wave_from": 1, "wave_to": 2,
               "planted": "shift" if first != last else "stable", "from_dimension": first, "to_dimension": last}
        for wave in (1, 2):
            dims = [r["dimension"] for r in key_rows
                    if r["speaker_id"] == pid and r["wave"] == wave and r["dimension"] != "none"]
            for dim in ("push", "pull", "exchange"):
                row[f"w{wave}_{dim}"] = round(dims.count(dim) / len(dims), 3)
        rows.append(row)
    return rows


def _human_codes(docs: list[dict], files: dict[str, str]) -> list[dict]:
    """Two coders on a third of the interviews, as whole-turn character spans.

    Offsets come from the pipeline's own reader, so they index the same source_text
    that utterances.parquet uses. Coder A follows the intended concept and takes the
    alternative reading on a quarter of ambiguous turns; coder B takes it on most
    ambiguous turns, sometimes picks a neighbouring concept, and sometimes codes nothing.
    """
    import sys

    sys.path.insert(0, str(HERE.parent))
    from pipeline.io.readers import read_document

    rng = random.Random(7)
    rows = []
    by_id = {d["interview_id"]: d for d in docs}
    known = {"int", "interviewer", "i", "respondent"} | {d["participant"].lower() for d in docs} | {"p05"}
    for iid in DOUBLE_CODED:
        if iid not in by_id:
            continue
        doc, rel = by_id[iid], files[iid]
        parsed = read_document(CORPUS / rel, rel, known, ["cp1252"])
        assert len(parsed.turns) == len(doc["turns"]), (iid, len(parsed.turns), len(doc["turns"]))
        for t, turn in enumerate(doc["turns"]):
            if turn["speaker"] == "INT" or turn["concept"] == "none":
                continue
            span = parsed.turns[t]
            alt = turn.get("alt_concept")
            a = alt if alt and alt != "none" and rng.random() < 0.25 else turn["concept"]
            r = rng.random()
            if alt and alt != "none" and r < 0.6:
                b = alt
            elif r > 0.95:
                b = None
            elif r > 0.90:
                b = rng.choice(sorted(set(CONCEPT_NAMES) - {turn["concept"]}))
            else:
                b = turn["concept"]
            for coder, concept in (("coder_a", a), ("coder_b", b)):
                if concept:
                    rows.append({"source_file": rel, "interview_id": iid, "start_char": span.start,
                                 "end_char": span.end, "code": CONCEPT_NAMES[concept], "coder": coder})
    return rows


def _write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
