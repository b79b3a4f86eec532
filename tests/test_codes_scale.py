"""Codes fitted on a stratified sample, every other utterance assigned to its nearest code
(pipeline.codes_scale), on the example study with [codes] fit_sample below its size."""
from __future__ import annotations

import hashlib
import importlib.util
import shutil
from collections import Counter

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pipeline.codes import sample_cluster_sizes
from pipeline.codes_scale import nearest_codes, stratified_sample
from pipeline.config import load_config
from pipeline.embed import vectors
from pipeline.settings import CodesSettings, settings_for

SAMPLE = 1200  # of the example study's 3,378 coded utterances


def test_sample_is_proportional_to_strata_and_seeded():
    strata = ["a"] * 50 + ["b"] * 30 + ["c"] * 20
    keep = stratified_sample(strata, 10, seed=1)
    assert Counter(strata[i] for i in keep) == {"a": 5, "b": 3, "c": 2}
    assert list(keep) == sorted(keep)
    assert np.array_equal(keep, stratified_sample(strata, 10, seed=1))
    assert not np.array_equal(keep, stratified_sample(strata, 10, seed=2))
    # 7 of 100: exact shares 3.5, 2.1, 1.4 -> 3, 2, 1 and the largest remainder (a's 0.5) gets the last
    assert Counter(strata[i] for i in stratified_sample(strata, 7, seed=0)) == {"a": 4, "b": 2, "c": 1}
    assert np.array_equal(stratified_sample(strata, 500, seed=0), np.arange(100))
    codes = np.array([{"a": 0, "b": 1, "c": 2}[s] for s in strata])  # integer codes: the same sample
    assert np.array_equal(stratified_sample(codes, 10, seed=1), keep)


def test_a_sample_is_clustered_as_finely_as_its_corpus():
    s = settings_for(CodesSettings, load_config())
    # AMI: 64,211 utterances give min_cluster_size 127 and min_samples 32; an 8,000 sample an eighth of each
    assert sample_cluster_sizes(8000, 64211, s) == (16, 4)
    assert sample_cluster_sizes(100, 10**7, s) == (5, 2)


def test_gpu_clustering_is_asked_for_or_taken_when_there():
    from pipeline.codes import use_cuml
    from pipeline.errors import ConfigError

    assert use_cuml("cpu") is False
    if importlib.util.find_spec("cuml") is None:  # the CPU machines this suite runs on
        assert use_cuml("auto") is False
        with pytest.raises(ConfigError, match="needs cuML and a CUDA GPU"):
            use_cuml("cuda")


def test_nearest_code_keeps_the_threshold():
    X = np.array([[1, 0], [0.6, 0.8], [0, 1], [-1, 0]], dtype=np.float32)
    cents = np.array([[1, 0], [0, 1]], dtype=np.float32)
    code, sim = nearest_codes(X, cents, np.array([7, 9], np.int32), threshold=0.7)
    assert code.tolist() == [7, 9, 9, -1]
    np.testing.assert_allclose(sim, [1.0, 0.8, 1.0, 0.0])


def _codes_on_sample(source, dest, encoder):
    from pipeline.runner import run_codes

    dest.mkdir()
    for name in ("utterances", "embeddings"):
        shutil.copyfile(source / f"{name}.parquet", dest / f"{name}.parquet")
    cfg = load_config(overrides={"codes": {"fit_sample": SAMPLE}})
    events = []
    record = run_codes(dest, cfg, progress=lambda *e: events.append(e), encoder=encoder)
    assert ("codes (assigning)", 3378, 3378) in events  # a progress bar for the long part at scale
    return record, cfg


@pytest.fixture(scope="module")
def sampled(example_run, encoder, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("codes_sample") / "run"
    record, cfg = _codes_on_sample(example_run, run_dir, encoder)
    return run_dir, record, cfg


def test_codes_fitted_on_a_sample_assign_every_utterance(sampled):
    run_dir, record, cfg = sampled
    emb = pq.read_table(run_dir / "embeddings.parquet")
    asg = pq.read_table(run_dir / "assignments.parquet")
    codes = pq.read_table(run_dir / "codes.parquet")
    assert record["sampled"] and record["fitted_on"] == SAMPLE
    assert record["min_cluster_size"] == 10  # the corpus's 29, scaled by 1,200 / 3,378
    assert asg.num_rows == emb.num_rows == 3378
    assert asg.column("utterance_id").equals(emb.column("utterance_id"))
    # Sizes are recounted over every utterance, and the fingerprints over every member.
    code_col = np.asarray(asg.column("code_id"))
    assert sum(codes.column("size").to_pylist()) == int((code_col >= 0).sum()) == record["counts"]["assigned"]
    ids = np.asarray(asg.column("utterance_id").to_pylist(), dtype=object)
    for row in codes.to_pylist():
        members = sorted(ids[code_col == row["code_id"]])
        assert row["size"] == len(members)
        assert row["fingerprint"] == hashlib.sha1("\n".join(members).encode()).hexdigest()[:12]
    assert set(asg.filter(pc.equal(asg.column("code_id"), -1)).column("reason").to_pylist()) == {"outlier"}


def test_utterances_outside_the_sample_join_the_nearest_centroid(sampled, example_run):
    run_dir, _, cfg = sampled
    from pipeline.runner import fit_sample

    fitted_ids = set(fit_sample(run_dir, pq.read_table(run_dir / "embeddings.parquet").column("utterance_id"),
                                 settings_for(CodesSettings, cfg))[1].column("utterance_id").to_pylist())
    assert len(fitted_ids) == SAMPLE
    emb = pq.read_table(run_dir / "embeddings.parquet")
    asg = pq.read_table(run_dir / "assignments.parquet").to_pandas()
    codes = pq.read_table(run_dir / "codes.parquet")
    cents = np.asarray(codes.column("centroid").to_pylist(), dtype=np.float32)
    sims = vectors(emb) @ cents.T
    best = np.asarray(codes.column("code_id").to_pylist())[sims.argmax(axis=1)]
    expected = np.where(sims.max(axis=1) >= cfg["codes"]["outlier_threshold"], best, -1)
    outside = ~asg["utterance_id"].isin(fitted_ids).to_numpy()
    assert outside.sum() == 3378 - SAMPLE
    assert np.array_equal(asg["code_id"].to_numpy()[outside], expected[outside])
    np.testing.assert_allclose(asg["probability"].to_numpy()[outside & (expected >= 0)],
                               sims.max(axis=1)[outside & (expected >= 0)], atol=1e-6)
    # Every (interview, wave) stratum is in the sample, in proportion to its size.
    utt = pq.read_table(run_dir / "utterances.parquet", columns=["utterance_id", "interview_id"]).to_pandas()
    interview = utt.set_index("utterance_id")["interview_id"]
    share = interview[list(fitted_ids)].value_counts() / interview[asg["utterance_id"]].value_counts()
    assert share.index.nunique() == interview[asg["utterance_id"]].nunique()
    assert share.between(SAMPLE / 3378 - 0.02, SAMPLE / 3378 + 0.02).all()


def test_sampled_codes_are_reproducible(sampled, example_run, encoder, tmp_path):
    run_dir, _, _ = sampled
    _codes_on_sample(example_run, tmp_path / "again", encoder)
    for name in ("codes", "assignments"):
        assert pq.read_table(tmp_path / "again" / f"{name}.parquet").equals(pq.read_table(run_dir / f"{name}.parquet"))
