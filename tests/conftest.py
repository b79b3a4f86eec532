"""Shared fixtures. Heavy models load once per session (see the model fixtures)."""
from __future__ import annotations

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


@pytest.fixture(scope="session")
def encoder():
    """The default embedding model, loaded once for the whole test session."""
    from pipeline.embed import load_encoder

    return load_encoder("minilm", "cpu")


@pytest.fixture(scope="session")
def example_run(tmp_path_factory, encoder):
    """segment -> embed -> codes on the bundled example study, once per session.

    Returns the run directory; stages that build on codes read their inputs from it.
    """
    from pipeline.runner import run_codes, run_embed, run_segment

    run_dir = tmp_path_factory.mktemp("example_run")
    cfg = load_config()
    run_segment(EXAMPLE, run_dir, cfg)
    run_embed(run_dir, cfg, encoder=encoder)
    run_codes(run_dir, cfg, encoder=encoder)
    return run_dir


def gold_labels(utterances, column: str = "dimension") -> dict[str, str]:
    """Answer-key label (dimension or concept) of each participant utterance of the example study."""
    import csv

    with open(ANSWER_KEY / "turns.csv", encoding="utf-8") as fh:
        key = {(r["interview_id"], int(r["turn_index"])): r[column] for r in csv.DictReader(fh)}
    return {u: key[(i, t)] for u, i, t in zip(utterances.column("utterance_id").to_pylist(),
                                               utterances.column("interview_id").to_pylist(),
                                               utterances.column("turn_index").to_pylist()) if (i, t) in key}


@pytest.fixture(scope="session")
def example_segmented(tmp_path_factory):
    """The bundled example study segmented (no models), once per session; returns the run directory."""
    from pipeline.runner import run_segment

    run_dir = tmp_path_factory.mktemp("example_segmented")
    run_segment(EXAMPLE, run_dir, load_config())
    return run_dir
