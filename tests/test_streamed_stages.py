"""map, shift and report read the embeddings a chunk at a time (pipeline.io.vectors): the tables
are the ones a whole-table read gives, with chunks and batches far smaller than the example study."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import pipeline.io.vectors as vectors_module
import pipeline.map as map_module
from pipeline.config import load_config
from pipeline.embed import vectors
from pipeline.framework import load_framework
from pipeline.io.rundir import read_rows
from pipeline.io.vectors import StoredEmbeddings
from pipeline.map import map_stage, turn_cuts
from pipeline.settings import MapSettings, ShiftSettings, settings_for
from pipeline.shift import compute_shifts


def _tables(run_dir):
    return {name: pq.read_table(run_dir / f"{name}.parquet")
            for name in ("utterances", "embeddings", "codes", "assignments")}


@pytest.fixture(scope="module")
def whole(example_run, encoder):
    t = _tables(example_run)
    result = map_stage(t["utterances"], t["embeddings"], t["codes"], t["assignments"], load_framework(), encoder,
                       settings_for(MapSettings, load_config()))
    return t, result


def test_turn_cuts_never_split_a_turn():
    interview = pa.array(["a"] * 7 + ["b"] * 5)
    turn = pa.array([0, 0, 1, 1, 1, 2, 3, 0, 0, 0, 1, 1])
    cuts = turn_cuts(interview, turn, 3)
    assert cuts == [0, 5, 10, 12]  # 3 falls inside turn 1 (rows 2-4): the cut waits for row 5
    assert turn_cuts(interview, turn, 20) == [0, 12]


def test_map_in_chunks_gives_the_whole_table_result(whole, example_run, encoder, monkeypatch):
    t, expected = whole
    monkeypatch.setattr(map_module, "CHUNK_ROWS", 500)  # 3,378 utterances in 7 chunks
    monkeypatch.setattr(vectors_module, "BATCH_ROWS", 333)  # batches that cut across chunks and turns
    streamed = map_stage(t["utterances"], StoredEmbeddings(example_run), t["codes"], t["assignments"],
                         load_framework(), encoder, settings_for(MapSettings, load_config()))
    for name in ("code_dimensions", "data_structure"):
        assert getattr(streamed, name).equals(getattr(expected, name)), name
    got, want = streamed.utterance_dimensions, expected.utterance_dimensions
    assert got.num_rows == want.num_rows == 3378 * 3
    # Matrix products over chunks of another shape round differently in the last bit: nothing more.
    np.testing.assert_allclose(got.column("probability").to_numpy(), want.column("probability").to_numpy(),
                               rtol=0, atol=1e-12)
    assert got.drop_columns(["probability"]).equals(want.drop_columns(["probability"]))


def test_shift_gathers_only_the_rows_it_analyses_even_from_a_spilled_file(whole, example_run, monkeypatch):
    t, mapped = whole
    s = settings_for(ShiftSettings, load_config(overrides={"shift": {"bootstrap": 100, "permutations": 200}}))
    expected = compute_shifts(t["utterances"], mapped.utterance_dimensions, s, t["embeddings"], t["assignments"])
    monkeypatch.setattr(vectors_module, "BATCH_ROWS", 333)
    monkeypatch.setattr(vectors_module, "SPILL_BYTES", 0)  # the memory-mapped path
    streamed = compute_shifts(t["utterances"], mapped.utterance_dimensions, s, StoredEmbeddings(example_run),
                              t["assignments"])
    assert expected.shifts.column("semantic_drift").null_count < expected.shifts.num_rows
    for name in ("shifts", "shift_dimensions", "speaker_waves", "speaker_codes"):
        assert getattr(streamed, name).equals(getattr(expected, name)), name


def test_gather_and_read_rows_return_the_rows_asked_for(example_run, monkeypatch):
    monkeypatch.setattr(vectors_module, "BATCH_ROWS", 250)
    emb = pq.read_table(example_run / "embeddings.parquet")
    ids = emb.column("utterance_id").to_pylist()
    asked = [ids[3000], "no-such-utterance", ids[5], ids[1234], ids[5]]
    got, found = StoredEmbeddings(example_run).gather(asked)
    assert found.tolist() == [True, False, True, True, True]
    X = vectors(emb)
    assert np.array_equal(got[[0, 2, 3, 4]], X[[3000, 5, 1234, 5]]) and not got[1].any()
    rows = read_rows(example_run, "embeddings", [0, 249, 250, 3377], batch_rows=250)
    assert rows.column("utterance_id").to_pylist() == [ids[0], ids[249], ids[250], ids[3377]]
    assert read_rows(example_run, "embeddings", []).num_rows == 0
