"""Configuration: configs/default.toml (package data) is the single source of defaults and types.

A user file overrides any subset of keys. Unknown sections or keys and values whose
type differs from the default's are errors naming the file and key.
"""

from __future__ import annotations

import copy
import json
import math
import tomllib
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError
from pipeline.pii import KINDS
from pipeline.resources import data_dir

DEFAULT_CONFIG_PATH = data_dir("configs") / "default.toml"

Config = dict[str, dict[str, Any]]
COMMAND_LINE = Path("<command line>")


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError("config file not found", path) from None
    except IsADirectoryError:
        raise ConfigError("is a folder; give a TOML file", path) from None
    except UnicodeDecodeError:
        raise ConfigError("not UTF-8 text; give a TOML file", path) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", path) from None


def _type_name(value: Any) -> str:
    return {bool: "true/false", int: "integer", float: "number", str: "string", list: "list"}.get(
        type(value), type(value).__name__
    )


def _check_value(key: str, default: Any, value: Any, path: Path) -> Any:
    # bool is an int subclass in Python: compare exact types, but let an int stand for a float.
    if isinstance(default, float) and type(value) is int:
        return float(value)
    if type(value) is not type(default):
        raise ConfigError(f"{key} must be a {_type_name(default)}, got {value!r}", path)
    if isinstance(value, float) and not math.isfinite(value):  # TOML allows nan and inf; no setting means them
        raise ConfigError(f"{key} must be a finite number, got {value!r}", path)
    if isinstance(default, list) and default:
        item_type = type(default[0])
        for item in value:
            if type(item) is not item_type and not (item_type is float and type(item) is int):
                raise ConfigError(f"{key} items must be {_type_name(default[0])}s, got {item!r}", path)
            if isinstance(item, float) and not math.isfinite(item):
                raise ConfigError(f"{key} items must be finite numbers, got {item!r}", path)
    return value


def load_config(path: str | Path | None = None, overrides: dict[str, dict[str, Any]] | None = None) -> Config:
    """Defaults, then the user's file, then programmatic overrides (e.g. from CLI flags)."""
    return load_config_with_origins(path, overrides)[0]


def load_config_with_origins(
    path: str | Path | None = None, overrides: dict[str, dict[str, Any]] | None = None
) -> tuple[Config, dict[str, str]]:
    """The validated configuration and, per "section.key", where its value came from: "default",
    "file PATH" or "option" (a command-line option)."""
    config = _read_toml(DEFAULT_CONFIG_PATH)
    origins = {f"{section}.{key}": "default" for section, values in config.items() for key in values}
    layers: list[tuple[dict[str, Any], Path]] = []
    if path is not None:
        layers.append((_read_toml(Path(path)), Path(path)))
    if overrides:
        layers.append((overrides, COMMAND_LINE))
    for layer, source in layers:
        for section, values in layer.items():
            if section not in config:
                raise ConfigError(f"unknown section [{section}] (known: {', '.join(config)})", source)
            if not isinstance(values, dict):
                raise ConfigError(f"[{section}] must be a table", source)
            for key, value in values.items():
                if key not in config[section]:
                    known = ", ".join(config[section])
                    raise ConfigError(f"unknown key {section}.{key} (known: {known})", source)
                config[section][key] = _check_value(f"{section}.{key}", config[section][key], value, source)
                origins[f"{section}.{key}"] = "option" if source == COMMAND_LINE else f"file {source}"
    try:
        _validate(config)
    except ConfigError as exc:  # name the file that set the value: the last layer that touched the key
        section, _, name = exc.message.split(" ", 1)[0].rstrip(":").partition(".")
        setter = next((src for layer, src in reversed(layers) if name in layer.get(section, {})), None)
        if exc.path is None and setter is not None:
            raise ConfigError(exc.message, setter) from None
        raise
    return copy.deepcopy(config), origins


def settings_text(config: Config, origins: dict[str, str]) -> str:
    """The resolved settings as TOML that loads back as a --config file, each value with where it came from."""
    lines = []
    for section, values in config.items():
        lines.append(f"[{section}]")
        width = max((len(k) for k in values), default=0)
        for key, value in values.items():
            lines.append(f"{key:<{width}} = {json.dumps(value)}  # {origins.get(f'{section}.{key}', 'default')}")
        lines.append("")
    return "\n".join(lines)


# Allowed values beyond the type: choices, and (low, high) ranges, None = open. Checked at load, so a
# bad value is one line naming the key before any stage starts, not an exception an hour in.
_CHOICES = {
    "segment.unit": ("turn", "sentence", "window"),
    "codes.umap_init": ("pca", "random", "spectral"),
    "codes.representation": ("keybert", "mmr", "ctfidf"),
    "codes.device": ("auto", "cpu", "cuda"),
    "map.method": ("similarity", "classifier"),
    "shift.resample_unit": ("auto", "interview", "block", "turn", "utterance"),
    "shift.speaker_test": ("auto", "permutation", "moderated_t"),
    "shift.interview_variance": ("borrow", "blocks"),
    "compare.uncoded": ("none", "missing"),
    "compare.unknown_codes": ("error", "ignore"),
    "compare.bootstrap_unit": ("interview", "utterance"),
    "report.projection": ("umap", "pca"),
    "learn.level": ("dimension", "second_order", "code"),
    "learn.encoder": ("auto", "frozen", "finetune"),
    "scale.engine": ("local", "ray"),
}
_RANGES = {
    "run.seed": (0, 2**32 - 1),
    "segment.window_size": (1, None),
    "segment.backchannel_max_words": (0, None),
    "embed.batch_size": (1, None),
    "embed.batch_tokens": (1, None),
    "codes.size_factor": (0, None),
    "codes.min_samples_ratio": (0, None),
    "codes.max_cluster_share": (0, 1),
    "codes.umap_neighbors": (2, None),
    "codes.umap_components": (1, None),
    "codes.min_utterances_umap": (0, None),
    "codes.agglomerative_distance": (0, 2),
    "codes.outlier_threshold": (0, 1),
    "codes.top_keywords": (1, None),
    "codes.exemplars": (1, None),
    "codes.ngram_max": (1, 5),
    "codes.min_df": (1, None),
    "codes.fit_sample": (0, None),
    "map.similarity_top_k": (1, None),
    "map.temperature": (0, None),
    "map.classifier_c": (1e-12, None),
    "map.code_exemplars": (0, None),
    "map.centroid_weight": (0, 1),
    "map.code_threshold": (0, 1),
    "map.code_margin": (0, 1),
    "map.own_weight": (0, None),
    "map.context_weight": (0, None),
    "map.code_weight": (0, None),
    "map.min_similarity": (-1, 1),
    "map.utterance_threshold": (0, 1),
    "map.utterance_margin": (-1, 1),
    "map.quotes": (0, None),
    "shift.min_utterances_per_wave": (0, None),
    "shift.bootstrap": (0, 1_000_000),
    "shift.permutations": (100, 1_000_000),
    "shift.blocks_per_interview": (2, 50),
    "shift.min_labellings": (1, None),
    "shift.max_unmapped_share": (0, 1),
    "shift.min_evidence": (0, 1),
    "shift.question_match_similarity": (-1, 1),
    "shift.ci_level": (1e-9, 1 - 1e-9),
    "shift.alpha": (1e-9, 1 - 1e-9),
    "compare.min_overlap": (1e-9, 1),
    "compare.bootstrap": (0, 1_000_000),
    "compare.ci_level": (1e-9, 1 - 1e-9),
    "compare.qdpx_max_members": (1, None),
    "compare.qdpx_max_bytes": (1, None),
    "report.map_neighbors": (2, None),
    "report.map_max_points": (1, None),
    "report.quotes": (0, None),
    "report.quote_chars": (10, None),
    "report.disagreements": (0, None),
    "learn.words_min_df": (1, None),
    "learn.words_max_features": (1, None),
    "learn.char_features": (0, None),
    "learn.c": (1e-12, None),
    "learn.c_multi_code": (1e-12, None),
    "learn.finetune_holdout": (0.01, 0.9),
    "learn.finetune_samples": (1, None),
    "learn.finetune_batch_size": (1, 4096),
    "learn.finetune_learning_rate": (1e-12, 1.0),
    "learn.finetune_max_units": (0, None),
    "learn.components": (0, None),
    "learn.framework_weight": (0, None),
    "learn.cv_folds": (2, None),
    "learn.min_utterances": (1, None),
    "learn.min_per_class": (1, None),
    "learn.learning_curve_draws": (0, 1000),
    "learn.learning_curve_points": (1, 1000),
    "learn.suggest_n": (1, None),
    "learn.suggest_diversity": (0, 1),
    "scale.shard_rows": (1, None),
    "scale.workers": (0, None),
    "scale.connect_timeout": (0.1, 3600),
    "anonymise.score_threshold": (0, 1),
    "anonymise.context_chars": (0, 1000),
    "anonymise.batch_size": (1, None),
}


def _validate(config: Config) -> None:
    """Checks beyond types: allowed choices, ranges, devices and encodings."""
    import codecs
    import re

    for key, choices in _CHOICES.items():
        section, name = key.split(".")
        if config[section][name] not in choices:
            raise ConfigError(f"{key} must be one of {', '.join(choices)}, got {config[section][name]!r}")
    for key, (low, high) in _RANGES.items():
        section, name = key.split(".")
        value = config[section][name]
        if (low is not None and value < low) or (high is not None and value > high):
            span = f"at least {low}" if high is None else f"from {low} to {high}"
            raise ConfigError(f"{key} must be {span}, got {value!r}")
    for key in ("shift.bootstrap", "compare.bootstrap"):  # 0 turns intervals off; a few replicates give noise
        section, name = key.split(".")
        if 0 < config[section][name] < 100:
            raise ConfigError(f"{key} must be 0 (no intervals) or at least 100, got {config[section][name]!r}")
    device = config["embed"]["device"]
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", device):
        raise ConfigError(f"embed.device must be auto, cpu, mps, cuda or cuda:N, got {device!r}")
    for name in config["input"]["fallback_encodings"]:
        try:
            codecs.lookup(name)
        except LookupError:
            raise ConfigError(f"input.fallback_encodings: unknown encoding {name!r}") from None

    unknown = [e for e in config["anonymise"]["entities"] if e not in KINDS]
    if unknown:
        raise ConfigError(f"anonymise.entities: unknown entity {unknown[0]!r} (known: {', '.join(KINDS)})")
    for key in ("extensions", "ignore", "fieldnote_folders", "document_folders"):
        if not all(isinstance(x, str) for x in config["input"][key]):
            raise ConfigError(f"input.{key} must be a list of text")
    if not config["shift"]["group_by"].strip():
        raise ConfigError(
            "shift.group_by must name a column (speaker_role, or a speakers.csv or manifest.csv column), got ''"
        )
    bad = [x for x in config["shift"]["source_types"] if x not in ("interview", "fieldnote", "document")]
    if bad or not config["shift"]["source_types"]:
        raise ConfigError(
            f"shift.source_types: each must be interview, fieldnote or document, got {(bad or ['(empty list)'])[0]!r}"
        )
    if not all(isinstance(x, str) for x in config["anonymise"]["keep_labels"]):
        raise ConfigError("anonymise.keep_labels must be a list of text")
