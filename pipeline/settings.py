"""Typed, frozen settings: one class per stage, built once from the validated configuration.

configs/default.toml stays the single source of defaults and their comments; config.py reads and
validates it. Here are only the types: each class mirrors one TOML section field for field (a test
keeps them equal), and what a stage needs from another section is an explicit field whose metadata
names its source (`from_("run.seed")`, or a whole section as a nested settings object), so no stage
looks into another's section. Lists become tuples: a frozen object holds no mutable values.

`settings_for(cls, cfg)` builds any of them from the configuration dict; `runner.execute` hands each
stage body the settings its Stage declares.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


def from_(source: str) -> Any:
    """A field taken from another section: "section.key" (one value) or "section" (its settings)."""
    return field(metadata={"from": source})


@dataclass(frozen=True)
class InputSettings:
    """[input]: which files of a study folder are read, and how."""

    extensions: tuple[str, ...]
    manifest_file: str
    fieldnote_folders: tuple[str, ...]
    document_folders: tuple[str, ...]
    case_column: str
    speakers_file: str
    filename_template: str
    ignore: tuple[str, ...]
    fallback_encodings: tuple[str, ...]
    speaker_scope_column: str


@dataclass(frozen=True)
class SpeakersSettings:
    """[speakers]: which labels are interviewers and participants."""

    interviewer_labels: tuple[str, ...]
    participant_labels: tuple[str, ...]
    code_interviewer: bool


@dataclass(frozen=True)
class ScaleSettings:
    """[scale]: the engine that runs segment, embed and code assignment."""

    engine: str
    address: str
    connect_timeout: float
    shard_rows: int
    workers: int


@dataclass(frozen=True)
class AnonymiseSettings:
    """[anonymise], and the input and speaker settings that say what a study folder holds."""

    entities: tuple[str, ...]
    spacy_model: str
    score_threshold: float
    phone_regions: tuple[str, ...]
    names_file: str
    study: str
    propagate: bool
    keep_labels: tuple[str, ...]
    acronyms: bool
    context_chars: int
    batch_size: int
    never: tuple[str, ...]
    input: InputSettings = from_("input")
    speakers: SpeakersSettings = from_("speakers")
    skip_bad: bool = from_("run.skip_bad")


@dataclass(frozen=True)
class SegmentSettings:
    """[segment]: how transcripts become utterances; with the files to read and who is speaking."""

    unit: str
    window_size: int
    sentence_splitter: str
    backchannel_max_words: int
    backchannel_words: tuple[str, ...]
    code_backchannels: bool
    input: InputSettings = from_("input")
    speakers: SpeakersSettings = from_("speakers")
    skip_bad: bool = from_("run.skip_bad")
    scale: ScaleSettings = from_("scale")


@dataclass(frozen=True)
class EmbedSettings:
    """[embed]: the sentence model and how it is run. Every stage that embeds text carries these."""

    model: str
    batch_size: int
    batch_tokens: int
    device: str
    cache_dir: str
    use_cache: bool
    scale: ScaleSettings = from_("scale")


@dataclass(frozen=True)
class CodesSettings:
    """[codes]: clustering utterances into first-order codes."""

    size_factor: float
    min_samples_ratio: float
    max_cluster_share: float
    umap_neighbors: int
    umap_components: int
    umap_init: str
    min_utterances_umap: int
    agglomerative_distance: float
    outlier_threshold: float
    fit_sample: int
    device: str
    representation: str
    top_keywords: int
    exemplars: int
    ngram_max: int
    min_df: int
    lemmatizer: str
    fillers: tuple[str, ...]
    seed: int = from_("run.seed")
    backchannel_words: tuple[str, ...] = from_("segment.backchannel_words")  # never keywords either
    embed: EmbedSettings = from_("embed")


@dataclass(frozen=True)
class MapSettings:
    """[map]: mapping codes and utterances onto the framework."""

    framework: str
    overrides: str
    method: str
    similarity_top_k: int
    temperature: float
    classifier_c: float
    code_exemplars: int
    centroid_weight: float
    code_threshold: float
    code_margin: float
    own_weight: float
    context_weight: float
    code_weight: float
    min_similarity: float
    utterance_threshold: float
    utterance_margin: float
    quotes: int
    seed: int = from_("run.seed")
    embed: EmbedSettings = from_("embed")


@dataclass(frozen=True)
class ShiftSettings:
    """[shift]: each speaker's and group's change between waves."""

    min_utterances_per_wave: int
    bootstrap: int
    permutations: int
    resample_unit: str
    blocks_per_interview: int
    speaker_test: str
    interview_variance: str
    min_labellings: int
    group_by: str
    max_unmapped_share: float
    min_evidence: float
    question_match_similarity: float
    ci_level: float
    alpha: float
    include_unmapped: bool
    source_types: tuple[str, ...]
    seed: int = from_("run.seed")
    framework: str = from_("map.framework")
    embed: EmbedSettings = from_("embed")  # interviewer questions are embedded for question matching


@dataclass(frozen=True)
class CompareSettings:
    """[compare]: agreement between the machine and human coders."""

    min_overlap: float
    uncoded: str
    unknown_codes: str
    machine_name: str
    bootstrap: int
    bootstrap_unit: str
    ci_level: float
    qdpx_max_members: int
    qdpx_max_bytes: int
    qdpx_user: str
    seed: int = from_("run.seed")
    framework: str = from_("map.framework")
    suggest_user: str = from_("learn.suggest_user")  # suggest's markers are nobody's coding


@dataclass(frozen=True)
class ReportSettings:
    """[report], and the shift and compare settings the report's wording states (its shift method
    paragraph states how shifts were tested)."""

    projection: str
    map_neighbors: int
    map_max_points: int
    quotes: int
    quote_chars: int
    disagreements: int
    seed: int = from_("run.seed")
    machine_name: str = from_("compare.machine_name")
    shift: ShiftSettings = from_("shift")


@dataclass(frozen=True)
class LearnSettings:
    """[learn]: a model of the human coders' codes. Human codes are read as compare reads them; the
    framework fallback is the map's; word features use the codes' fillers and lemmatiser."""

    level: str
    feature_sets: tuple[str, ...]
    words_min_df: int
    words_max_features: int
    char_features: int
    c: float
    c_multi_code: float
    components: int
    framework_weight: float
    balance_classes: bool
    turn_pooling: bool
    encoder: str
    finetune_holdout: float
    finetune_samples: int
    finetune_batch_size: int
    finetune_learning_rate: float
    finetune_max_units: int
    cv_folds: int
    min_utterances: int
    min_per_class: int
    learning_curve_draws: int
    learning_curve_points: int
    suggest_n: int
    suggest_diversity: float
    suggest_user: str
    seed: int = from_("run.seed")
    fillers: tuple[str, ...] = from_("codes.fillers")
    lemmatizer: str = from_("codes.lemmatizer")
    embed: EmbedSettings = from_("embed")
    map: MapSettings = from_("map")
    compare: CompareSettings = from_("compare")


# The section each class mirrors (its own fields are exactly that section's keys).
SECTIONS: dict[type, str] = {
    InputSettings: "input",
    SpeakersSettings: "speakers",
    ScaleSettings: "scale",
    AnonymiseSettings: "anonymise",
    SegmentSettings: "segment",
    EmbedSettings: "embed",
    CodesSettings: "codes",
    MapSettings: "map",
    ShiftSettings: "shift",
    CompareSettings: "compare",
    ReportSettings: "report",
    LearnSettings: "learn",
}
CLASSES: dict[str, type] = {section: cls for cls, section in SECTIONS.items()}


def own_fields(cls: type) -> list[str]:
    """The fields that mirror the class's own TOML section."""
    return [f.name for f in dataclasses.fields(cls) if "from" not in f.metadata]


def settings_for(cls: type[T], cfg: dict[str, dict[str, Any]]) -> T:
    """The settings object of class cls, built from the (validated) configuration dict."""
    hints = typing.get_type_hints(cls)
    section = cfg[SECTIONS[cls]]
    values = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        source = f.metadata.get("from")
        if source is None:
            value = section[f.name]
        elif "." in source:
            name, key = source.split(".")
            value = cfg[name][key]
        else:
            value = settings_for(hints[f.name], cfg)
        values[f.name] = tuple(value) if isinstance(value, list) else value
    return cls(**values)


def section_values(obj: Any) -> dict[str, Any]:
    """The object's own section as the configuration has it (tuples as lists): for manifest records
    and cache keys, which stay the same as when they were made from the configuration dict."""
    return {
        name: list(v) if isinstance(v, tuple) else v for name in own_fields(type(obj)) for v in [getattr(obj, name)]
    }
