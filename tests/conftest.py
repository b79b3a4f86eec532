"""Shared fixtures. Heavy models load once per session (see the model fixtures)."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from pathlib import Path

import pytest

from pipeline.config import load_config

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "kt_study"
ANSWER_KEY = REPO / "examples" / "answer_key"


@pytest.fixture
def cfg():
    return load_config()


@pytest.fixture
def write(tmp_path):
    """write('name.txt', text_or_bytes) -> path inside a fresh corpus folder."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()

    def _write(name: str, content: str | bytes) -> Path:
        path = corpus / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return path

    _write.dir = corpus
    return _write
