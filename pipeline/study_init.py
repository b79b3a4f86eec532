"""init: look at a folder of transcripts and draft its manifest.csv and speakers.csv.

A researcher's folder rarely says in so many words which interview is which wave and who is
speaking; the file names, folders and speaker labels usually do. This reads every transcript's
speaker labels (through the same format readers as segment) and infers, for each file:
- the wave: from --waves (a file-name pattern such as '{speaker}_time{wave}'), else a wave folder
  (wave1/, T2/, time_3/), else a wave token in the file name (C01_wave1, sarah_time2, P03_T1), else
  dates in the names (each participant's interviews in date order);
- the participant: the pattern's {speaker}, else the one speaker label that is neither an
  interviewer nor a generic 'Respondent', else the file name without its wave token;
- the role: the first folder that is not a wave folder (core/, project/);
and, for the study, which labels are interviewers (the configured interviewer labels, else a label
that asks questions in most files). Every guess that needs a human check is said so. Nothing is
overwritten without force.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import InputError
from pipeline.ingest import discover, source_type_of
from pipeline.io.formats import FORMATS, format_for
from pipeline.io.metadata import FileMeta, template_regex
from pipeline.io.turns import NO_LABELS, label_key
from pipeline.settings import InputSettings, SpeakersSettings

# A wave named in a folder or file name: wave1, W2, T3, time_1, round 2, phase-1, visit2, FU1.
_WAVE_WORD = r"(?:wave|w|t|time|round|phase|visit|fu|follow[ _-]?up)"
WAVE_FOLDER = re.compile(rf"^{_WAVE_WORD}[ _-]?(\d{{1,3}})$", re.IGNORECASE)
WAVE_TOKEN = re.compile(rf"(?:^|(?<=[_\-\s.]))({_WAVE_WORD}[ _-]?(\d{{1,3}}))(?=$|[_\-\s.])", re.IGNORECASE)
DATE_TOKEN = re.compile(r"(?<!\d)((?:19|20)\d\d)[-_.]?(0[1-9]|1[0-2])[-_.]?(0[1-9]|[12]\d|3[01])(?!\d)")
QUESTION_SHARE = 0.3  # an unknown label is guessed to be the interviewer when this share of its turns end in '?'


@dataclass
class DraftFile:
    file: str  # relative POSIX path
    interview_id: str
    wave: int | None
    wave_from: str  # "pattern", "folder", "file name", "date order" or "" (none found)
    date: str
    speaker_id: str
    role: str
    source_type: str
    labels: Counter = field(default_factory=Counter)  # speaker label -> turns
    questions: Counter = field(default_factory=Counter)  # speaker label -> turns that end in '?'
    bare: str = ""  # the file name without its wave token and date
    error: str = ""  # the file could not be read


@dataclass
class Draft:
    folder: Path
    files: list[DraftFile]
    interviewers: dict[str, list[str]]  # speaker_id -> its labels as written (first is the id)
    interviewer_turns: dict[str, int]
    checks: list[str]  # what the researcher must check
    generic_keys: set[str] = field(default_factory=set)  # 'Respondent', 'P': never one person's alias
    skipped: list[str] = field(default_factory=list)  # not transcripts: code, spreadsheets, a PDF paper


def draft_study(folder: Path, inp: InputSettings, speakers: SpeakersSettings, waves: str | None = None) -> Draft:
    """What the folder's names and labels say about its interviews, waves and speakers."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("not a folder of transcripts", folder)
    pattern = template_regex(waves) if waves else None
    source_folders = {f.casefold() for f in (*inp.document_folders, *inp.fieldnote_folders)}
    interviewer_keys = {label_key(x) for x in speakers.interviewer_labels}
    generic_keys = {label_key(x) for x in speakers.participant_labels}
    checks: list[str] = []
    files = []
    skipped = []
    for rel in discover(folder, inp):
        path = folder / rel
        if path.suffix.lower() not in FORMATS:
            skipped.append(rel)
            continue
        source_type = source_type_of(rel, FileMeta(""), inp)  # the folder convention, as segment reads it
        f = DraftFile(rel, "", None, "", "", "", "", source_type)
        _infer_names(f, Path(rel), pattern, source_folders)
        if source_type == "interview":
            try:
                known = interviewer_keys | generic_keys
                doc = format_for(path, rel).read_turns(path, rel, known, list(inp.fallback_encodings))
                f.labels = Counter(t.label for t in doc.turns)
                text = doc.source_text
                f.questions = Counter(t.label for t in doc.turns if text[t.start : t.end].rstrip().endswith("?"))
            except InputError as exc:
                if path.suffix.lower() == ".pdf" and NO_LABELS in exc.message:  # a paper, as segment reads it
                    skipped.append(rel)
                    continue
                f.error = exc.message
        files.append(f)
    if not files:
        raise InputError(f"no transcripts found (formats read: {', '.join(FORMATS)})", folder)
    interviews = [f for f in files if f.source_type == "interview" and not f.error]
    interviewer_label_keys = _interviewers(interviews, interviewer_keys, checks)
    for f in interviews:
        _infer_participant(f, interviewer_label_keys, generic_keys)
    _one_spelling(interviews)
    _waves_from_dates(files, checks)
    _unique_ids(files)
    interviewers, turns = _interviewer_labels(interviews, interviewer_label_keys)
    _note_gaps(files, pattern is not None, checks)
    return Draft(folder, files, interviewers, turns, checks, generic_keys, skipped)


def _interviewer_labels(interviews: list[DraftFile], keys: set[str]) -> tuple[dict[str, list[str]], dict[str, int]]:
    """The interviewer labels as one speaker (the most used spelling, the others its aliases): the
    configured labels are roles, not people, so 'Interviewer', 'INT' and 'I' are not told apart."""
    turns: Counter = Counter()
    for f in interviews:
        for label, n in f.labels.items():
            if label_key(label) in keys:
                turns[label] += n
    if not turns:
        return {}, {}
    labels = [label for label, _ in turns.most_common()]
    return {labels[0]: labels}, {labels[0]: sum(turns.values())}


def _infer_names(f: DraftFile, rel: Path, pattern: re.Pattern | None, source_folders: set[str]) -> None:
    stem = rel.stem
    if pattern is not None:
        m = pattern.match(stem)
        if m:
            groups = m.groupdict()
            if groups.get("wave"):
                f.wave, f.wave_from = int(groups["wave"]), "pattern"
            f.speaker_id = groups.get("speaker") or ""
            f.interview_id = groups.get("interview_id") or ""
    folders = rel.parts[:-1]
    if f.wave is None:
        for part in folders:
            if m := WAVE_FOLDER.match(part):
                f.wave, f.wave_from = int(m.group(1)), "folder"
    if f.wave is None and (m := WAVE_TOKEN.search(stem)):
        f.wave, f.wave_from = int(m.group(2)), "file name"
    if d := DATE_TOKEN.search(stem):
        f.date = f"{d.group(1)}-{d.group(2)}-{d.group(3)}"
    others = [p for p in folders if not WAVE_FOLDER.match(p) and p.casefold() not in source_folders]
    f.role = others[0] if others else ""
    f.interview_id = f.interview_id or stem
    f.bare = _bare_stem(stem)


def _bare_stem(stem: str) -> str:
    """The file name without its wave token and date: 'sarah_time1' -> 'sarah', 'C01_wave2' -> 'C01'."""
    bare = DATE_TOKEN.sub("", WAVE_TOKEN.sub("", stem))
    return re.sub(r"[_\-\s.]+", "_", bare).strip("_")


def _interviewers(interviews: list[DraftFile], configured: set[str], checks: list[str]) -> set[str]:
    """Label keys of the interviewers: the configured labels that occur, else a label that asks questions
    in most files (a guess, said so)."""
    found = {label_key(label) for f in interviews for label in f.labels} & configured
    if found:
        return found
    asked: Counter = Counter()
    spoken: Counter = Counter()
    files_with: Counter = Counter()
    for f in interviews:
        for label, n in f.labels.items():
            spoken[label_key(label)] += n
            files_with[label_key(label)] += 1
            asked[label_key(label)] += f.questions.get(label, 0)
    share = {k: asked[k] / spoken[k] for k in spoken if spoken[k]}
    common = [k for k in share if files_with[k] >= max(2, len(interviews) // 2) or len(interviews) == 1]
    best = max(common, key=lambda k: (share[k], spoken[k]), default=None)
    if best is not None and share[best] >= QUESTION_SHARE:
        checks.append(
            f"no configured interviewer label was found; guessed {best!r} as the interviewer "
            f"({share[best]:.0%} of its turns are questions): check is_interviewer in speakers.csv"
        )
        return {best}
    checks.append(
        "no interviewer label was found: mark the interviewer's label with is_interviewer = true in speakers.csv "
        "(or list it in speakers.interviewer_labels), or every turn is coded as a participant's"
    )
    return set()


def _infer_participant(f: DraftFile, interviewer_keys: set[str], generic_keys: set[str]) -> None:
    if f.speaker_id:
        return
    named = [label for label in f.labels if label_key(label) not in interviewer_keys | generic_keys]
    if len(named) == 1:  # the file name's spelling when it names the same person ('P05' for 'P-05')
        f.speaker_id = f.bare if label_key(f.bare) == label_key(named[0]) else named[0]
    elif not named:  # only 'Respondent' and the interviewer: the file name says who it is
        f.speaker_id = f.bare or f.interview_id
    # several named speakers (a group interview): each label is its own speaker; no one participant


def _one_spelling(interviews: list[DraftFile]) -> None:
    """One id per person however the files spell it ('P-05' and 'P05', 'Sarah' and the file's 'sarah'):
    the spelling used most, a label counting over a file name, then a capitalised one ("Sarah", not "sarah")."""
    votes: dict[str, Counter] = defaultdict(Counter)
    for f in interviews:
        if f.speaker_id:
            votes[label_key(f.speaker_id)][f.speaker_id] += 1
            votes[label_key(f.speaker_id)][f.bare] += 1
            for label in f.labels:
                votes[label_key(f.speaker_id)][label] += 2
    for f in interviews:
        if f.speaker_id:
            spellings = votes[label_key(f.speaker_id)]
            f.speaker_id = max(
                (s for s in spellings if label_key(s) == label_key(f.speaker_id)),
                key=lambda s: (spellings[s], s != s.lower(), s),
            )


def _waves_from_dates(files: list[DraftFile], checks: list[str]) -> None:
    """Files with no wave but a date in their name: each participant's interviews numbered in date order."""
    dated = [f for f in files if f.wave is None and f.date and f.source_type == "interview"]
    by_speaker: dict[str, list[DraftFile]] = defaultdict(list)
    for f in dated:
        by_speaker[f.speaker_id or f.interview_id].append(f)
    for group in by_speaker.values():
        for rank, date in enumerate(sorted({f.date for f in group}), start=1):
            for f in group:
                if f.date == date:
                    f.wave, f.wave_from = rank, "date order"
    if dated:
        checks.append(
            f"{len(dated)} file(s) have a wave only by the order of the dates in their names: "
            "check that each participant's first interview is wave 1 of the study"
        )


def _unique_ids(files: list[DraftFile]) -> None:
    seen = Counter(f.interview_id for f in files)
    for f in files:
        if seen[f.interview_id] > 1:
            f.interview_id = Path(f.file).with_suffix("").as_posix().replace("/", "_")


def _note_gaps(files: list[DraftFile], patterned: bool, checks: list[str]) -> None:
    interviews = [f for f in files if f.source_type == "interview"]
    unreadable = [f for f in files if f.error]
    if unreadable:
        checks.append(
            f"{len(unreadable)} file(s) could not be read and are left out of the draft: "
            + "; ".join(f"{f.file}: {f.error}" for f in unreadable[:3])
        )
        for f in unreadable:
            files.remove(f)
    no_wave = [f.file for f in interviews if f.wave is None and not f.error]
    if no_wave:
        hint = "check the pattern" if patterned else "name the pattern with --waves '{speaker}_time{wave}'"
        checks.append(f"{len(no_wave)} interview(s) have no wave ({_few(no_wave)}): fill the wave column, or {hint}")
    group = [f.file for f in interviews if not f.speaker_id and not f.error]
    if group:
        checks.append(
            f"{len(group)} interview(s) have several named speakers and no one participant ({_few(group)}): "
            "each label is its own speaker; give speaker_id only if one of them is the interviewee"
        )
    waves: dict[str, set[int]] = defaultdict(set)
    for f in interviews:
        if f.wave is not None and f.speaker_id:
            waves[f.speaker_id].add(f.wave)
    if interviews and not any(len(w) >= 2 for w in waves.values()):
        checks.append(
            "no participant has interviews in two waves, so no shift between waves can be scored: "
            "check speaker_id and wave"
        )
    if any(f.role for f in interviews):
        checks.append("roles were taken from folder names: check the role column of speakers.csv")
    else:
        checks.append("no roles found: fill speakers.csv's role column (e.g. CORE, PROJECT) to compare groups")


def _few(names: list[str], n: int = 3) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def manifest_csv(draft: Draft) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["file", "interview_id", "wave", "date", "speaker_id", "source_type"])
    for f in draft.files:
        w.writerow([f.file, f.interview_id, "" if f.wave is None else f.wave, f.date, f.speaker_id, f.source_type])
    return out.getvalue()


def speakers_csv(draft: Draft) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["speaker_id", "role", "is_interviewer", "aliases"])
    for speaker_id, labels in draft.interviewers.items():
        w.writerow([speaker_id, "interviewer", "true", ";".join(labels[1:])])
    interviewer_keys = {label_key(x) for labels in draft.interviewers.values() for x in labels}
    participants: dict[str, tuple[str, list[str]]] = {}
    for f in draft.files:
        if f.source_type != "interview" or not f.speaker_id:
            continue
        role, aliases = participants.setdefault(f.speaker_id, (f.role, []))
        # the file's one other label is its participant under another name, unless it is a generic one
        others = [x for x in f.labels if label_key(x) not in interviewer_keys]
        if len(others) == 1 and label_key(others[0]) not in draft.generic_keys | {label_key(f.speaker_id)}:
            if others[0] not in aliases:
                aliases.append(others[0])
    for speaker_id, (role, aliases) in sorted(participants.items()):
        w.writerow([speaker_id, role, "false", ";".join(aliases)])
    return out.getvalue()


def summary(draft: Draft) -> list[str]:
    """What was inferred, in a few lines, for the terminal."""
    files = draft.files
    interviews = [f for f in files if f.source_type == "interview"]
    lines = [f"{len(files)} file(s): {len(interviews)} interview(s)" + _others(files)]
    if draft.skipped:
        lines.append(f"not transcripts, left out: {_few(draft.skipped)}")
    how = Counter(f.wave_from or "none" for f in interviews)
    per_wave = Counter(f.wave for f in interviews if f.wave is not None)
    if per_wave:
        lines.append(
            "waves: "
            + ", ".join(f"wave {w}: {n}" for w, n in sorted(per_wave.items()))
            + " (from "
            + ", ".join(f"{what} {n}" for what, n in how.most_common())
            + ")"
        )
    people = sorted({f.speaker_id for f in interviews if f.speaker_id})
    roles = Counter(f.role for f in interviews if f.role)
    lines.append(
        f"participants: {len(people)}"
        + (f" ({_few(people, 6)})" if people else "")
        + (f"; roles from folders: {', '.join(f'{r} {n} files' for r, n in roles.items())}" if roles else "")
    )
    if draft.interviewers:
        lines.append(
            "interviewer: "
            + "; ".join(
                f"{sid} ({'also ' + ', '.join(labels[1:]) + '; ' if len(labels) > 1 else ''}"
                f"{draft.interviewer_turns[sid]} turns)"
                for sid, labels in draft.interviewers.items()
            )
        )
    return lines


def _others(files: list[DraftFile]) -> str:
    kinds = Counter(f.source_type for f in files if f.source_type != "interview")
    return "".join(f", {n} {kind}(s)" for kind, n in kinds.items())


def refuse_overwrite(paths: list[Path], force: bool) -> None:
    """An existing manifest or speakers file is the researcher's work: kept unless force."""
    existing = [p for p in paths if p.exists()]
    if existing and not force:
        raise InputError(f"{existing[0].name} already exists; give --force to overwrite it", existing[0])


def write_draft(draft: Draft, manifest_name: str, speakers_name: str, force: bool = False) -> list[Path]:
    """Write the drafts beside the transcripts; an existing file is kept unless force."""
    targets = [(draft.folder / manifest_name, manifest_csv(draft)), (draft.folder / speakers_name, speakers_csv(draft))]
    refuse_overwrite([p for p, _ in targets], force)
    for path, text in targets:
        path.write_text(text, encoding="utf-8")
    return [p for p, _ in targets]
