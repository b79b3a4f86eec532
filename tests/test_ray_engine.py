"""The Ray engine against the local one on the example study: same tables, resumable embedding,
folder tables in the lineage checks, and one line when Ray is missing.

Runs on a real local Ray cluster (two CPUs); skipped when Ray is not installed (the `test` extra
installs it)."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys

import numpy as np
import pyarrow.compute as pc
import pytest

from pipeline.config import load_config
from pipeline.embed import vectors
from pipeline.errors import InputError
from pipeline.io.rundir import part_files, read_table, write_table

from conftest import EXAMPLE, REPO

requires_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                                  reason="Ray is not installed: pip install 'themeshift[scale]'")
SHARD_ROWS = 500  # the example study's 4,227 utterances in 9 parts


def _ray_cfg():
    return load_config(overrides={"scale": {"engine": "ray", "shard_rows": SHARD_ROWS, "workers": 2}})


@pytest.fixture(scope="module")
def ray_run(tmp_path_factory):
    from pipeline.ray_engine import ray_session
    from pipeline.runner import run_embed, run_segment

    run_dir = tmp_path_factory.mktemp("ray_run")
    cfg = _ray_cfg()
    with ray_session(num_cpus=2):
        run_segment(EXAMPLE, run_dir, cfg)
        run_embed(run_dir, cfg)
        yield run_dir


def _sorted(table):
    return table.take(pc.sort_indices(table, [("utterance_id", "ascending")]))


@requires_ray
def test_ray_engine_gives_the_local_tables(ray_run, example_run):
    assert len(part_files(ray_run / "utterances")) == 9 and not (ray_run / "utterances.parquet").exists()
    assert len(part_files(ray_run / "embeddings")) == 9
    local_u, ray_u = _sorted(read_table(example_run, "utterances")), _sorted(read_table(ray_run, "utterances"))
    assert ray_u.equals(local_u)
    local_e, ray_e = _sorted(read_table(example_run, "embeddings")), _sorted(read_table(ray_run, "embeddings"))
    assert ray_e.column("utterance_id").equals(local_e.column("utterance_id"))
    assert ray_e.schema.equals(local_e.schema)
    # Different batches give the same vectors to within float rounding.
    np.testing.assert_allclose(vectors(ray_e), vectors(local_e), atol=1e-5)
    for name in ("sources", "interviews", "rejected", "speakers"):
        assert read_table(ray_run, name).equals(read_table(example_run, name))


@requires_ray
def test_killed_embedding_resumes_without_duplicates(ray_run, tmp_path):
    from pipeline.ray_engine import ray_session
    from pipeline.runner import run_embed

    run_dir = tmp_path / "run"
    shutil.copytree(ray_run, run_dir)
    before = read_table(run_dir, "embeddings")
    parts = part_files(run_dir / "embeddings")
    kept = {p.name: p.stat().st_mtime_ns for p in parts}
    # A run killed mid-embed: two parts never written, one left as a half-written temporary file.
    for p in (parts[2], parts[6]):
        p.unlink()
        kept.pop(p.name)
    (run_dir / "embeddings" / ".part-00003.parquet.x1.tmp").write_bytes(b"PAR1 half a part")
    with ray_session(num_cpus=2):
        record = run_embed(run_dir, _ray_cfg())
    assert (record["parts_reused"], record["parts_embedded"]) == (7, 2)
    assert {p.name: p.stat().st_mtime_ns for p in part_files(run_dir / "embeddings") if p.name in kept} == kept
    after = read_table(run_dir, "embeddings")
    ids = after.column("utterance_id")
    assert len(pc.unique(ids)) == after.num_rows == before.num_rows
    assert ids.equals(before.column("utterance_id"))
    np.testing.assert_allclose(vectors(after), vectors(before), atol=1e-5)


@requires_ray
def test_a_worker_dying_mid_run_has_its_part_redone(ray_run, tmp_path, monkeypatch):
    from pipeline import ray_engine
    from pipeline.runner import run_embed

    run_dir = tmp_path / "run"
    shutil.copytree(ray_run, run_dir)
    before = read_table(run_dir, "embeddings")
    for p in part_files(run_dir / "embeddings")[:4]:
        p.unlink()
    died = tmp_path / "died"

    class Dying(ray_engine.EmbedWorker):  # defined here: Ray ships it to the workers by value
        def __call__(self, batch):
            out = super().__call__(batch)  # part written, then the worker process dies before answering
            if 1 in out["index"] and not died.exists():
                died.touch()
                os._exit(1)
            return out

    monkeypatch.setattr(ray_engine, "EmbedWorker", Dying)
    with ray_engine.ray_session(num_cpus=2):
        record = run_embed(run_dir, _ray_cfg())
    assert died.exists() and record["parts_reused"] == 5
    after = read_table(run_dir, "embeddings")
    assert len(part_files(run_dir / "embeddings")) == 9
    assert after.column("utterance_id").equals(before.column("utterance_id"))
    assert len(pc.unique(after.column("utterance_id"))) == after.num_rows


@requires_ray
def test_folder_tables_keep_the_lineage_checks(ray_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(ray_run, run_dir)
    # The corpus segmented again into the same run, one file this time: embeddings/ is stale.
    write_table(run_dir, "utterances", read_table(run_dir, "utterances").slice(0, 100))
    assert not (run_dir / "utterances").exists()
    with pytest.raises(InputError, match="stale table: it was made from an earlier utterances.parquet"):
        read_table(run_dir, "embeddings")


@requires_ray
def test_later_stages_read_the_vectors_of_a_folder_of_parts(ray_run):
    from pipeline.io.vectors import StoredEmbeddings

    whole = read_table(ray_run, "embeddings")
    ids = whole.column("utterance_id").to_pylist()
    asked = [ids[-1], ids[0], ids[2000]]  # last part, first part, a middle one
    got, found = StoredEmbeddings(ray_run).gather(asked)
    assert found.all() and np.array_equal(got, vectors(whole)[[len(ids) - 1, 0, 2000]])


@requires_ray
def test_codes_on_a_sample_are_assigned_in_parallel_with_the_local_result(ray_run, tmp_path, encoder):
    from pipeline.runner import run_codes

    tables = {}
    for engine in ("ray", "local"):
        run_dir = tmp_path / engine
        shutil.copytree(ray_run, run_dir)
        cfg = load_config(overrides={"codes": {"fit_sample": 1200},
                                     "scale": {"engine": engine, "shard_rows": SHARD_ROWS}})
        record = run_codes(run_dir, cfg, encoder=encoder)
        assert record["sampled"] and record["fitted_on"] == 1200
        tables[engine] = [read_table(run_dir, name) for name in ("codes", "assignments")]
    assert tables["ray"][1].num_rows == read_table(ray_run, "embeddings").num_rows
    ray_codes, ray_asg = tables["ray"]
    local_codes, local_asg = tables["local"]
    assert ray_codes.equals(local_codes)
    for name in ("utterance_id", "code_id", "reason"):
        assert ray_asg.column(name).equals(local_asg.column(name)), name
    # a one-CPU worker's similarity products round differently from the driver's threaded ones
    np.testing.assert_allclose(ray_asg.column("probability").to_numpy(), local_asg.column("probability").to_numpy(),
                               rtol=0, atol=1e-6)


def test_workers_fit_the_cluster():
    from pipeline.ray_engine import plan_workers

    assert plan_workers({"CPU": 16.0}, 0) == (16, 1, 0)
    assert plan_workers({"CPU": 16.0}, 4) == (4, 4, 0)
    assert plan_workers({"CPU": 2.0}, 8) == (2, 1, 0)  # never more than can be placed
    assert plan_workers({"CPU": 16.0, "GPU": 1.0}, 0) == (1, 16, 1)
    assert plan_workers({"CPU": 32.0, "GPU": 4.0}, 8) == (4, 8, 1)


def test_ray_engine_without_ray_is_one_line(tmp_path):
    # Ray hidden from the import system: what a default install without the [scale] extra sees.
    code = ("import sys; sys.modules['ray'] = None; from pipeline.cli import app; "
            f"app(['run', {str(EXAMPLE)!r}, '--out', {str(tmp_path / 'run')!r}, '--engine', 'ray'])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: --engine ray needs Ray: pip install 'themeshift[scale]'"
    assert not (tmp_path / "run").exists()


def test_address_needs_the_ray_engine(tmp_path):
    from typer.testing import CliRunner

    from pipeline.cli import app

    result = CliRunner().invoke(app, ["segment", str(EXAMPLE), "--out", str(tmp_path / "run"), "--address", "auto"])
    assert result.exit_code == 2 and "--address goes with --engine ray" in result.output
