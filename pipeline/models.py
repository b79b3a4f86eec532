"""The model registry (models/registry.toml): which embedding models exist and how
each resolves to files on this machine. Nothing is ever fetched from a hub."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import InputError
from pipeline.resources import data_dir, is_source_checkout

REGISTRY_PATH = data_dir("models") / "registry.toml"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    path: Path
    backend: str  # "sentence-transformers" or "model2vec"

    @property
    def dim(self) -> int:
        """Embedding size, read from the model's files without loading it."""
        pooling = self.path / "1_Pooling" / "config.json"
        if pooling.is_file():
            return int(json.loads(pooling.read_text())["word_embedding_dimension"])
        config = json.loads((self.path / "config.json").read_text())
        for key in ("hidden_dim", "hidden_size", "dim"):
            if key in config:
                return int(config[key])
        raise InputError(f"cannot tell the embedding size of the model in {self.path}")

    @property
    def model_id(self) -> str:
        """Name plus a digest of the model's files (names, sizes, config contents): the cache key."""
        digest = hashlib.sha256()
        for f in sorted(self.path.rglob("*")):
            if f.is_file() and "__pycache__" not in f.parts:
                digest.update(f"{f.relative_to(self.path)}:{f.stat().st_size}".encode())
                if f.suffix in (".json", ".txt") and f.stat().st_size < 1_000_000:
                    digest.update(f.read_bytes())
        return f"{self.name}-{digest.hexdigest()[:16]}"


def registry() -> dict[str, dict]:
    with open(REGISTRY_PATH, "rb") as fh:
        return tomllib.load(fh)


def resolve(name_or_path: str) -> ModelSpec:
    """A registry name or a local folder -> ModelSpec; a clear error when absent."""
    entries = registry()
    if name_or_path in entries:
        entry = entries[name_or_path]
        if entry["kind"] == "package":
            spec = importlib.util.find_spec(entry["package"])
            if spec is None or not spec.submodule_search_locations:
                raise InputError(f"embedding model {name_or_path!r} is not installed; run: {entry['install']}")
            path = Path(list(spec.submodule_search_locations)[0]) / entry.get("subdir", "")
        else:
            path = local_models_dir() / entry["path"]
        if not path.is_dir():
            raise InputError(f"embedding model {name_or_path!r} is not available at {path}; run: {entry['install']}")
        return ModelSpec(name_or_path, path, entry["backend"])
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return ModelSpec(path.name, path.resolve(), _local_backend(path))
    known = ", ".join(entries)
    raise InputError(f"unknown embedding model {name_or_path!r}: use one of {known} or a local model folder")


def _local_backend(path: Path) -> str:
    """A model2vec folder says so in its config.json; anything else is sentence-transformers."""
    config = path / "config.json"
    if not (path / "modules.json").is_file() and config.is_file():
        if json.loads(config.read_text(encoding="utf-8")).get("model_type") == "model2vec":
            return "model2vec"
    return "sentence-transformers"


def local_models_dir() -> Path:
    """Where models built on this machine live ("local" registry entries): models/ in a source checkout,
    else the user's cache (an installed package's folder is no place to write)."""
    return data_dir("models") if is_source_checkout() else cache_root() / "models"


def cache_root(configured: str = "") -> Path:
    root = configured or os.environ.get("THEMESHIFT_CACHE") or str(Path.home() / ".cache" / "themeshift")
    return Path(root).expanduser()


def build_fast(source: str = "minilm", out: Path | None = None) -> Path:
    """Distil a static model2vec model from `source` into models/artifacts (about a minute on 2 cores)."""
    import shutil

    from model2vec.distill import distill

    spec = resolve(source)
    out = Path(out) if out else local_models_dir() / registry()["fast"]["path"]
    model = distill(model_name=str(spec.path), pca_dims=256)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    # The saved config points at the absolute source path; keep only the registry name.
    config_path = tmp / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["base_model_name"] = config["tokenizer_name"] = source
    config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    (tmp / "README.md").write_text(
        "---\nlicense: apache-2.0\nlibrary_name: model2vec\n---\n"
        f"Static embeddings distilled with model2vec from the local '{source}' model "
        "(all-MiniLM-L6-v2, Apache-2.0). Built by `themeshift models build fast`; not redistributed.\n",
        encoding="utf-8",
    )
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out
