"""codes: BERTopic clusters on the real example study, reproducibility, small corpora."""
from __future__ import annotations

import collections
import json
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from conftest import EXAMPLE, gold_labels

from pipeline.codes import cluster_sizes, fit_codes, max_cluster_size
from pipeline.config import load_config
from pipeline.embed import embed_utterances, vectors
from pipeline.settings import CodesSettings, EmbedSettings, settings_for


@pytest.fixture(scope="module")
def tables(example_run):
    return {name: pq.read_table(example_run / f"{name}.parquet")
            for name in ("utterances", "embeddings", "codes", "assignments")}


def test_every_coded_utterance_has_one_assignment(tables):
    utt, asg, codes = tables["utterances"], tables["assignments"], tables["codes"]
    coded = set(utt.filter(pc.field("coded")).column("utterance_id").to_pylist())
    assert asg.column("utterance_id").to_pylist() == tables["embeddings"].column("utterance_id").to_pylist()
    assert set(asg.column("utterance_id").to_pylist()) == coded and asg.num_rows == len(coded)
    ids = asg.column("code_id").to_numpy()
    assert sorted(set(ids) - {-1}) == codes.column("code_id").to_pylist()
    assert codes.column("size").to_pylist() == [int((ids == c).sum()) for c in codes.column("code_id").to_pylist()]
    reasons = asg.column("reason").to_pylist()
    assert all((r == "outlier") == (c == -1) for r, c in zip(reasons, ids))
    assert 10 <= codes.num_rows <= 60 and (ids == -1).mean() < 0.35


def test_exemplars_are_members_ranked_by_similarity_to_centroid(tables):
    asg = tables["assignments"].to_pandas()
    X = dict(zip(tables["embeddings"].column("utterance_id").to_pylist(), vectors(tables["embeddings"])))
    for code in tables["codes"].to_pylist():
        centroid = np.asarray(code["centroid"])
        assert abs(np.linalg.norm(centroid) - 1) < 1e-5 and code["label"] and len(code["keywords"]) >= 3
        members = set(asg.utterance_id[asg.code_id == code["code_id"]])
        assert set(code["exemplar_ids"]) <= members and len(code["exemplar_ids"]) == min(10, len(members))
        sims = [float(X[u] @ centroid) for u in code["exemplar_ids"]]
        assert sims == sorted(sims, reverse=True)
        assert not {"yeah", "um", "know", "mean", "kind"} & set(code["keywords"])


def test_codes_follow_the_studys_concepts_better_than_chance(tables):
    gold = gold_labels(tables["utterances"], "concept")
    asg = tables["assignments"].to_pandas()
    asg = asg[asg.utterance_id.isin(gold) & (asg.code_id >= 0)]
    labels, codes = [gold[u] for u in asg.utterance_id], asg.code_id.to_numpy()

    def purity(c):
        return sum(collections.Counter(l for l, k in zip(labels, c) if k == code).most_common(1)[0][1]
                   for code in set(c)) / len(c)

    shuffled = np.random.default_rng(0).permutation(codes)
    assert purity(codes) > 1.5 * purity(shuffled)


def test_manifest_records_codes_and_topic_model_is_saved(example_run):
    manifest = json.loads((example_run / "manifest.json").read_text())
    rec = manifest["stages"]["codes"]
    s = settings_for(CodesSettings, load_config())
    assert rec["method"] == "umap+hdbscan" and rec["min_cluster_size"] == cluster_sizes(3378, s)[0]
    assert (example_run / "topic_model" / "topics.json").is_file()


def test_cluster_size_rule():
    cfg = load_config()
    s = settings_for(CodesSettings, cfg)
    assert [cluster_sizes(n, s)[0] for n in (20, 300, 3400, 20000, 100000, 10**7)] == [5, 9, 29, 71, 158, 500]
    assert [max_cluster_size(n, cluster_sizes(n, s)[0], s) for n in (300, 3400, 100000)] == [30, 340, 10000]
    cfg["codes"]["max_cluster_share"] = 0.0
    assert max_cluster_size(3400, 29, settings_for(CodesSettings, cfg)) == 0


def test_no_code_swallows_the_corpus(example_run, encoder):
    """The embeddings of this study once tipped HDBSCAN into keeping 2 codes, one of 3,259 utterances,
    when they differed from another run's in the 7th decimal: the cap keeps the sub-codes."""
    utt, emb = (pq.read_table(example_run / f"{t}.parquet") for t in ("utterances", "embeddings"))
    X = vectors(emb)
    for seed in (1, 2):
        noisy = X + np.random.default_rng(seed).normal(0, 3e-7, X.shape).astype(np.float32)
        noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
        table = emb.set_column(1, "vector", pa.FixedSizeListArray.from_arrays(pa.array(noisy.ravel()), X.shape[1]))
        s = settings_for(CodesSettings, load_config())
        sizes = fit_codes(utt, table, encoder, s).codes.column("size").to_pylist()
        assert len(sizes) >= 10 and max(sizes) < 0.2 * len(X), sizes


def _subset(example_run, encoder, interviews):
    utt = pq.read_table(example_run / "utterances.parquet")
    utt = utt.filter(pc.is_in(utt.column("interview_id"), value_set=__import__("pyarrow").array(interviews)))
    cfg = load_config()
    emb, _ = embed_utterances(utt, encoder, settings_for(EmbedSettings, cfg))
    return utt, emb, cfg


def test_same_input_and_seed_give_identical_tables(example_run, encoder):
    utt, emb, cfg = _subset(example_run, encoder, ["C01-W1", "C02-W1", "P01-W1", "P04-W2"])
    first = fit_codes(utt, emb, encoder, settings_for(CodesSettings, cfg))
    second = fit_codes(utt, emb, encoder, settings_for(CodesSettings, cfg))
    assert emb.num_rows > cfg["codes"]["min_utterances_umap"]
    assert first.codes.equals(second.codes) and first.assignments.equals(second.assignments)
    assert first.codes.num_rows >= 2


def test_tiny_corpus_falls_back_with_a_message(example_run, encoder):
    utt, emb, cfg = _subset(example_run, encoder, ["C01-W1"])
    emb = emb.slice(0, 20)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fit_codes(utt, emb, encoder, settings_for(CodesSettings, cfg))
    assert any("agglomerative fallback" in str(w.message) for w in caught)
    assert result.method == "agglomerative" and result.assignments.num_rows == 20
    assert result.codes.num_rows >= 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        two = fit_codes(utt, emb.slice(0, 2), encoder, settings_for(CodesSettings, cfg))
    assert two.codes.num_rows == 0 and set(two.assignments.column("reason").to_pylist()) == {"too few utterances"}


def test_transform_assigns_existing_codes_to_new_transcripts(example_run, tmp_path, cfg):
    import shutil

    from pipeline.runner import run_transform

    new = tmp_path / "new"
    new.mkdir()
    for name in ("core/C01_wave1.docx", "project/P04_wave2.txt"):  # re-submitted transcripts
        shutil.copyfile(EXAMPLE / name, new / name.split("/")[1])
    rec = run_transform(example_run, new, tmp_path / "out", cfg)
    fitted = pq.read_table(example_run / "assignments.parquet").to_pandas().set_index("utterance_id")
    fresh = pq.read_table(tmp_path / "out" / "assignments.parquet").to_pandas()
    # file names differ from the study's interview ids: align on text instead
    text = dict(zip(*(pq.read_table(example_run / "utterances.parquet").column(c).to_pylist()
                      for c in ("text", "utterance_id"))))
    new_text = dict(zip(*(pq.read_table(tmp_path / "out" / "utterances.parquet").column(c).to_pylist()
                          for c in ("utterance_id", "text"))))
    pairs = [(fitted.code_id[text[new_text[u]]], c) for u, c in zip(fresh.utterance_id, fresh.code_id)
             if fitted.code_id[text[new_text[u]]] >= 0]
    agree = sum(a == b for a, b in pairs) / len(pairs)
    assert rec["counts"]["assigned"] > 0 and agree > 0.7
    assert (tmp_path / "out" / "codes.parquet").read_bytes() == (example_run / "codes.parquet").read_bytes()


def test_codes_are_reused_when_embeddings_and_config_are_unchanged(example_run, encoder, cfg):
    from pipeline.runner import run_codes

    before = pq.read_table(example_run / "codes.parquet")
    rec = run_codes(example_run, cfg, encoder=encoder)
    assert rec["reused"] and pq.read_table(example_run / "codes.parquet").equals(before)
    cfg["codes"]["top_keywords"] = 8  # any [codes] change refits
    changed = settings_for(CodesSettings, dict(cfg, codes=dict(cfg["codes"])))
    assert json.loads((example_run / "manifest.json").read_text())["stages"]["codes"]["key"] != \
        __import__("pipeline.runner", fromlist=["codes_key"]).codes_key(example_run, changed, encoder.model_id)


def test_identical_tables_across_processes_with_different_hash_seeds(example_run, tmp_path):
    """Set iteration order changes between processes; the codes must not."""
    import os
    import shutil
    import subprocess
    import sys

    for seed in ("1", "2"):
        run = tmp_path / seed
        run.mkdir()
        for name in ("utterances.parquet", "embeddings.parquet"):
            shutil.copyfile(example_run / name, run / name)
        env = {**os.environ, "PYTHONHASHSEED": seed}
        subprocess.run([sys.executable, "-m", "pipeline.cli", "codes", str(run), "--quiet"], check=True, env=env)
    for table in ("codes", "assignments"):
        assert pq.read_table(tmp_path / "1" / f"{table}.parquet").equals(pq.read_table(tmp_path / "2" / f"{table}.parquet"))


def test_a_repetitive_pilot_gives_codes_or_one_clear_line(encoder):
    """63 near-identical answers (the agglomerative fallback): two content words still give a code and its
    keywords; one word is too little to describe any code, and says so in one line (no c-TF-IDF crash)."""
    from pipeline.errors import InputError

    cfg = load_config()

    def pilot(answers: list[str]):
        texts = [answers[i % len(answers)] for i in range(63)]
        ids = [f"p-t{i}-u0" for i in range(63)]
        utt = pa.table({"utterance_id": ids, "text": texts})
        X = encoder.encode(texts)
        emb = pa.table({"utterance_id": ids, "vector": pa.FixedSizeListArray.from_arrays(
            pa.array(np.asarray(X, np.float32).ravel()), X.shape[1])})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fit_codes(utt, emb, encoder, settings_for(CodesSettings, cfg))

    two = pilot(["The ward was busy.", "The ward was busy again.", "Busy ward, busy ward."])
    assert two.method == "agglomerative" and two.codes.num_rows >= 1
    assert {"busy", "ward"} & set(two.codes.column("keywords").to_pylist()[0])
    with pytest.raises(InputError, match="63 coded utterances hold fewer than two distinct content words"):
        pilot(["Busy.", "Busy!", "Busy, busy."])
