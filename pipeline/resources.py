"""Where the data shipped with themeshift lives: the default configuration, the frameworks and the
model registry.

An installed wheel holds them as package data (pipeline/configs, pipeline/models, read through
importlib.resources); a source checkout holds them in its top-level configs/ and models/ folders,
which the wheel is built from (pyproject.toml maps them into the package).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parent.parent


def data_dir(name: str) -> Path:
    """The folder of shipped data `name` ("configs" or "models")."""
    packaged = resources.files("pipeline") / name
    if packaged.is_dir():
        return Path(str(packaged))
    return SOURCE_ROOT / name


def is_source_checkout() -> bool:
    """True when running from a source tree (data in top-level folders), False from an installed wheel."""
    return data_dir("configs") == SOURCE_ROOT / "configs"
