"""Configuration: configs/default.toml is the single source of defaults and types.

A user file overrides any subset of keys. Unknown sections or keys and values whose
type differs from the default's are errors naming the file and key.
"""
from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent.parent / "configs" / "default.toml"

Config = dict[str, dict[str, Any]]


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError("config file not found", path) from None
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
    if isinstance(default, list) and default:
        item_type = type(default[0])
        for item in value:
            if type(item) is not item_type and not (item_type is float and type(item) is int):
                raise ConfigError(f"{key} items must be {_type_name(default[0])}s, got {item!r}", path)
    return value


def load_config(path: str | Path | None = None, overrides: dict[str, dict[str, Any]] | None = None) -> Config:
    """Defaults, then the user's file, then programmatic overrides (e.g. from CLI flags)."""
    config = _read_toml(DEFAULT_CONFIG_PATH)
    layers: list[tuple[dict[str, Any], Path]] = []
    if path is not None:
        layers.append((_read_toml(Path(path)), Path(path)))
    if overrides:
        layers.append((overrides, Path("<command line>")))
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
    _validate(config)
    return copy.deepcopy(config)


def _validate(config: Config) -> None:
    """Checks beyond types: allowed choices and ranges."""
    seg = config["segment"]
    if seg["unit"] not in ("turn", "sentence", "window"):
        raise ConfigError(f"segment.unit must be turn, sentence or window, got {seg['unit']!r}")
    if seg["window_size"] < 1:
        raise ConfigError("segment.window_size must be at least 1")
