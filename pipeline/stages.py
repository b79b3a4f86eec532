"""The stage table: every stage of the pipeline declared once, in pipeline order.

For each stage: its name, the command that runs it, the tables it reads (required, then optional),
the tables it writes (each has its schema in schema.py) and the other files it leaves. The one
runner (runner.execute) resolves and checks the declared reads, records the lineage of what a stage
writes from them, times it and keeps the manifest; the CLI builds each command's help from here;
`themeshift stages` prints the graph. Nothing else lists table names.

Like spaCy's component meta (`requires=`, `assigns=`) and kedro's split of nodes, datasets and
runner: this module is the declaration only (it imports no stage), so the I/O layer can name the
command that remakes a table without importing the stages themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.settings import (
    AnonymiseSettings,
    CodesSettings,
    CompareSettings,
    EmbedSettings,
    LearnSettings,
    MapSettings,
    ReportSettings,
    SegmentSettings,
    ShiftSettings,
)


@dataclass(frozen=True)
class Stage:
    name: str
    command: str  # how to run it, with placeholders (RUN, TRANSCRIPTS, CODES)
    summary: str  # one line: what it does
    settings: type | None = None  # its settings class (pipeline.settings); the runner hands the body one
    reads: tuple[str, ...] = ()  # tables that must exist and be current
    optional: tuple[str, ...] = ()  # tables used when present (and current)
    writes: tuple[str, ...] = ()  # tables it writes (a stage may write a subset, e.g. when reused)
    files: tuple[str, ...] = ()  # other outputs in the run directory
    config: bool = True  # its manifest record carries the configuration the tables were made with
    recorded: bool = True  # it keeps a manifest record (export writes elsewhere and leaves the run untouched)
    refuses_stale: bool = True  # a stale input stops it (the report leaves stale tables out and says so)
    run_stage: bool = True  # one step on a run directory (not a folder copy, not several stages)


SEGMENT = ("utterances", "sources", "interviews", "rejected", "speakers")
SHIFT = (
    "speaker_waves",
    "speaker_codes",
    "shifts",
    "shift_dimensions",
    "group_shifts",
    "group_trajectory",
    "group_changes",
    "group_contrasts",
    "shift_codes_change",
    "source_themes",
)
COMPARE = ("agreement", "confusion", "disagreements", "human_codes")
LEARN = (
    "utterance_dimensions",
    "utterance_dimensions_framework",
    "utterance_dimensions_cv",
    "learned_codes",
    "learn_eval",
)

STAGES: tuple[Stage, ...] = (
    Stage(
        "anonymise",
        "themeshift anonymise TRANSCRIPTS --out FOLDER",
        "pseudonymise a study folder (names, places, numbers) into a copy",
        AnonymiseSettings,
        run_stage=False,
    ),
    Stage(
        "segment",
        "themeshift segment TRANSCRIPTS --out RUN",
        "split transcripts into utterances",
        SegmentSettings,
        writes=SEGMENT,
    ),
    Stage(
        "embed",
        "themeshift embed RUN",
        "embed the coded utterances",
        EmbedSettings,
        reads=("utterances",),
        writes=("embeddings",),
    ),
    Stage(
        "codes",
        "themeshift codes RUN",
        "cluster the utterances into candidate first-order codes",
        CodesSettings,
        reads=("utterances", "embeddings"),
        writes=("codes", "assignments"),
        files=("topic_model/",),
    ),
    Stage(
        "map",
        "themeshift map RUN",
        "map the codes onto the framework's concepts and dimensions",
        MapSettings,
        reads=("utterances", "embeddings", "codes", "assignments"),
        writes=("code_dimensions", "utterance_dimensions", "data_structure"),
        files=("data_structure.md",),
    ),
    Stage(
        "learn",
        "themeshift learn RUN --human CODES",
        "learn from the researchers' coding and code every other utterance",
        LearnSettings,
        reads=("utterances", "sources", "embeddings", "utterance_dimensions"),
        optional=("utterance_dimensions_framework",),
        writes=LEARN,
        files=("learn_model/",),
    ),
    Stage(
        "shift",
        "themeshift shift RUN",
        "score each speaker's and group's shift between waves",
        ShiftSettings,
        reads=("utterances", "utterance_dimensions"),
        optional=("embeddings", "assignments", "codes", "interviews", "speakers"),
        writes=SHIFT,
    ),
    Stage(
        "compare",
        "themeshift compare RUN --human CODES",
        "agreement of the machine with human coders",
        CompareSettings,
        reads=("utterances", "sources", "utterance_dimensions"),
        optional=("assignments", "utterance_dimensions_cv", "learned_codes"),
        writes=COMPARE,
    ),
    Stage(
        "report",
        "themeshift report RUN",
        "one self-contained page of the run's findings",
        ReportSettings,
        optional=(
            "utterances",
            "interviews",
            "rejected",
            "embeddings",
            "codes",
            "assignments",
            "data_structure",
            "code_dimensions",
            "utterance_dimensions",
            "shifts",
            "shift_dimensions",
            "group_shifts",
            "group_trajectory",
            "group_changes",
            "group_contrasts",
            "shift_codes_change",
            "agreement",
            "confusion",
            "disagreements",
            "learn_eval",
            "source_themes",
        ),
        writes=("utterance_map",),
        files=("report.html",),
        config=False,
        refuses_stale=False,
    ),
    Stage(
        "suggest",
        "themeshift suggest RUN",
        "the utterances whose hand-coding would help the model most",
        LearnSettings,
        reads=("utterances", "sources", "embeddings"),
        optional=("learned_codes", "utterance_dimensions"),
        files=("suggestions_<unit>s.csv", "suggestions_<unit>s.qdpx"),
    ),
    Stage(
        "export",
        "themeshift export qdpx RUN OUT.qdpx",
        "the run as a REFI-QDA project for QDA tools",
        CompareSettings,
        reads=("utterances", "sources"),
        optional=(
            "utterance_dimensions",
            "codes",
            "assignments",
            "code_dimensions",
            "shifts",
            "interviews",
            "speakers",
            "human_codes",
        ),
        config=False,
        recorded=False,
    ),
    Stage(
        "transform",
        "themeshift transform RUN TRANSCRIPTS --out NEW_RUN",
        "code new transcripts with an earlier run's codes and learned model",
        SegmentSettings,
        writes=SEGMENT + ("embeddings", "codes", "assignments", "utterance_dimensions", "learned_codes"),
        run_stage=False,
    ),
)
BY_NAME = {s.name: s for s in STAGES}


def stage(name: str) -> Stage:
    return BY_NAME[name]


def writer(table: str) -> Stage | None:
    """The stage that first writes `table` in pipeline order (learn rewrites map's utterance_dimensions;
    map makes it)."""
    return next((s for s in STAGES if s.run_stage and table in s.writes), None)


def remake_command(table: str) -> str:
    """The command that (re)makes a table, for messages: `themeshift map RUN`."""
    s = writer(table)
    return s.command if s else "its stage"


def tables() -> tuple[str, ...]:
    """Every table a run directory can hold, in the order the stages make them."""
    return tuple(dict.fromkeys(t for s in STAGES for t in s.writes))


def downstream(name: str) -> list[str]:
    """The stages that read what `name` writes."""
    made = set(stage(name).writes)
    return [s.name for s in STAGES if s.name != name and made & set(s.reads + s.optional)]


def describe(s: Stage) -> str:
    """What a command reads and writes, for its --help."""
    parts = []
    if s.reads:
        parts.append(
            "Reads " + ", ".join(s.reads) + (f" (and {', '.join(s.optional)} when present)" if s.optional else "") + "."
        )
    elif s.optional:
        parts.append("Reads whatever the run holds of " + ", ".join(s.optional) + ".")
    out = [f"{t}.parquet" for t in s.writes] + list(s.files)
    if out:
        parts.append("Writes " + ", ".join(out) + ".")
    return " ".join(parts)


def graph() -> str:
    """The stage graph as text: each stage, its command, what it reads and writes, and who reads that."""
    lines = []
    for s in STAGES:
        lines.append(f"{s.name}: {s.summary}")
        lines.append(f"    {s.command}")
        if s.reads or s.optional:
            lines.append("    reads:  " + ", ".join(list(s.reads) + [f"({t})" for t in s.optional]))
        if s.writes or s.files:
            lines.append("    writes: " + ", ".join(list(s.writes) + list(s.files)))
        if s.run_stage and (after := downstream(s.name)):
            lines.append("    feeds:  " + ", ".join(after))
    return "\n".join(lines)
