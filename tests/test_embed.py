"""Embedding: the real offline model, the persistent cache, and model resolution."""
from __future__ import annotations

import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import EXAMPLE

from pipeline.embed import CACHE_LAYOUT, compute_threads, embed_utterances, text_hash, vectors
from pipeline.embed_cache import EmbeddingCache
from pipeline.errors import InputError
from pipeline.ingest import segment_corpus
from pipeline.models import resolve
from pipeline.settings import EmbedSettings, SegmentSettings, settings_for


def _layout(encoder) -> str:
    """The cache folder of this model, batching layout and thread count."""
    return f"{encoder.model_id}{CACHE_LAYOUT}-t{compute_threads()}"


def test_reference_embedding_offline(encoder):
    v = encoder.encode(["This is an example sentence"])[0]
    assert encoder.dim == 384 and v.dtype == np.float32
    assert np.allclose(v[:5], [0.0677, 0.0635, 0.0487, 0.0793, 0.0374], atol=2e-4)
    assert abs(np.linalg.norm(v) - 1) < 1e-5


def test_token_budget_batches_match_plain_encode_and_keep_input_order(encoder, example_segmented):
    utt = pq.read_table(example_segmented / "utterances.parquet")
    texts = utt.filter(utt.column("coded")).column("text").to_pylist()[:300]
    texts.append(" ".join(texts[:40]))  # one turn far longer than the token budget: a batch of its own
    plain = encoder.model.encode(texts, batch_size=16, normalize_embeddings=True)
    for batch_size, batch_tokens in ((64, 2048), (7, 50), (1, 1)):
        ours = encoder.encode(texts, batch_size=batch_size, batch_tokens=batch_tokens)
        assert ours.shape == (301, 384)
        assert np.abs(ours - plain).max() < 1e-5, (batch_size, batch_tokens)


@pytest.fixture
def two_interviews(write, cfg):
    write("a.txt", "Interviewer: How did the start go?\nP1: We mapped every step of the discharge. "
                   "That was the hard part. The run charts showed the delays.\nInterviewer: And the team?\n"
                   "P1: That was the hard part. The nurses led it themselves.\n")
    return write


def _embed(folder, cfg, encoder, cache_dir):
    cfg["embed"]["cache_dir"] = str(cache_dir)
    utt = segment_corpus(folder, settings_for(SegmentSettings, cfg)).utterances
    return embed_utterances(utt, encoder, settings_for(EmbedSettings, cfg))


def test_cache_second_run_embeds_nothing_and_new_interview_only_its_text(two_interviews, cfg, encoder, tmp_path):
    cache = tmp_path / "cache"
    table, stats = _embed(two_interviews.dir, cfg, encoder, cache)
    # 5 coded sentences, one said twice -> 4 distinct texts embedded
    assert (stats.coded, stats.distinct_texts, stats.embedded, stats.cache_hits) == (5, 4, 4, 0)
    again, stats2 = _embed(two_interviews.dir, cfg, encoder, cache)
    assert (stats2.embedded, stats2.cache_hits) == (0, 4)
    assert again.equals(table)
    two_interviews("b.txt", "Interviewer: Anything else?\nP2: That was the hard part. We shared the leadership.\n")
    _, stats3 = _embed(two_interviews.dir, cfg, encoder, cache)
    assert (stats3.coded, stats3.embedded, stats3.cache_hits) == (7, 1, 4)
    fresh = encoder.encode(["We shared the leadership."])[0]
    cached = EmbeddingCache(cache / "embeddings", _layout(encoder), 384).get([text_hash("We shared the leadership.")])
    assert np.allclose(list(cached.values())[0], fresh, atol=1e-6)


def test_corrupted_cache_shard_is_detected_and_rebuilt(two_interviews, cfg, encoder, tmp_path):
    cache = tmp_path / "cache"
    table, _ = _embed(two_interviews.dir, cfg, encoder, cache)
    shard = next((cache / "embeddings" / _layout(encoder)).glob("shard-*.parquet"))
    shard.write_bytes(shard.read_bytes()[:200])  # a crash of some other tool mid-copy
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rebuilt, stats = _embed(two_interviews.dir, cfg, encoder, cache)
    assert any("corrupted" in str(w.message) for w in caught)
    assert stats.embedded == 4 and np.allclose(vectors(rebuilt), vectors(table), atol=1e-6)


def test_a_poisoned_cache_shard_is_caught_by_its_checksum_and_re_embedded(two_interviews, cfg, encoder, tmp_path):
    """Valid unit vectors, but each moved to another text: the shard's checksum no longer matches, so it is
    removed with a warning and the texts are embedded again (whole rows reordered are still fine)."""
    cache = tmp_path / "cache"
    table, _ = _embed(two_interviews.dir, cfg, encoder, cache)
    shard = next((cache / "embeddings" / _layout(encoder)).glob("shard-*.parquet"))
    stored = pq.read_table(shard)
    reordered = stored.take(pa.array(list(range(stored.num_rows))[::-1]))
    pq.write_table(reordered, shard)  # whole rows, metadata kept: still trusted
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, stats = _embed(two_interviews.dir, cfg, encoder, cache)
    assert stats.embedded == 0 and not any("checksum" in str(w.message) for w in caught)
    shuffled = pa.table({"text_hash": stored.column("text_hash"),
                         "vector": stored.column("vector").take(pa.array(list(range(stored.num_rows))[::-1]))},
                        schema=stored.schema)
    pq.write_table(shuffled, shard)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rebuilt, stats = _embed(two_interviews.dir, cfg, encoder, cache)
    assert any("do not match its checksum" in str(w.message) for w in caught)
    assert stats.embedded == 4 and np.array_equal(vectors(rebuilt), vectors(table))


def test_concurrent_shards_and_compaction(tmp_path):
    rng = np.random.default_rng(0)
    cache = EmbeddingCache(tmp_path, "m", 4)
    v = rng.normal(size=(40, 4)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    hashes = [f"h{i}" for i in range(40)]
    for start in range(0, 40, 2):  # 20 writers, overlapping texts
        cache.put(hashes[start:start + 4], v[start:start + 4])
    shards = list((tmp_path / "m").glob("shard-*.parquet"))
    assert len(shards) <= 16 and not list((tmp_path / "m").glob("*.tmp"))
    got = cache.get(hashes)
    assert len(got) == 40 and all(np.array_equal(got[h], v[i]) for i, h in enumerate(hashes))


def test_model_resolution_errors_and_local_folder(encoder):
    with pytest.raises(InputError, match="unknown embedding model 'nope'"):
        resolve("nope")
    spec = resolve(str(encoder.spec.path))
    assert spec.backend == "sentence-transformers" and spec.path == encoder.spec.path


def test_embeddings_table_is_fixed_size_float32(two_interviews, cfg, encoder, tmp_path):
    table, _ = _embed(two_interviews.dir, cfg, encoder, tmp_path / "c")
    assert table.schema.field("vector").type == pa.list_(pa.float32(), 384)
    assert table.column("utterance_id").to_pylist()[0] == "a-t001-u00"


def test_tables_do_not_depend_on_what_the_cache_already_holds(example_segmented, encoder, tmp_path):
    """The same corpus embedded with an empty cache, and with a cache filled first by the whole example
    study (its texts embedded in other batches, beside other texts): identical vectors, so identical codes."""
    import shutil

    from pipeline.config import load_config
    from pipeline.embed import Encoder
    from pipeline.runner import run_codes, run_embed, run_segment

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in ("speakers.csv",):
        shutil.copy(EXAMPLE / name, corpus / name)
    picked = ["core/C01_wave1.docx", "core/C01_wave2.txt", "project/P03_wave1.json", "project/P03_wave2.txt"]
    rows = [line for line in (EXAMPLE / "manifest.csv").read_text(encoding="utf-8").splitlines()
            if line.split(",")[0] in picked or line.startswith("file,")]
    (corpus / "manifest.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    for rel in picked:
        (corpus / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(EXAMPLE / rel, corpus / rel)
    tables = {}
    for which in ("empty", "filled"):
        cfg = load_config(overrides={"embed": {"cache_dir": str(tmp_path / f"cache-{which}")}})
        fresh = Encoder(encoder.spec, "cpu")
        fresh._model = encoder.model  # one model load for the whole suite
        if which == "filled":  # another corpus first: every text of the example study, in another order
            texts = pq.read_table(example_segmented / "utterances.parquet").column("text").to_pylist()
            fresh.with_cache(settings_for(EmbedSettings, cfg)).encode_cached(texts[::-1], 64)
        run = tmp_path / f"run-{which}"
        run_segment(corpus, run, cfg)
        run_embed(run, cfg, encoder=fresh)
        run_codes(run, cfg, encoder=fresh)
        tables[which] = {n: pq.read_table(run / f"{n}.parquet") for n in ("embeddings", "codes", "assignments")}
    for name in ("embeddings", "codes", "assignments"):
        assert tables["empty"][name].equals(tables["filled"][name]), name
    assert tables["empty"]["codes"].num_rows >= 2


def test_a_cache_that_cannot_be_written_or_holds_a_folder_never_stops_the_run(tmp_path):
    """The cache only saves time: a cache folder that cannot be made (here a file stands in its way, as a
    full or read-only disk would fail it) is one warning and the vectors are still returned; a folder named
    like a shard is reported and left alone, never 'removed'."""
    blocked = tmp_path / "blocked"
    blocked.write_text("not a folder", encoding="utf-8")
    cache = EmbeddingCache(blocked, "m", 4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cache.put(["h1"], np.eye(4, dtype=np.float32)[:1])
    assert any("cannot be written" in str(w.message) and "going on without caching" in str(w.message)
               for w in caught)
    assert cache.get(["h1"]) == {}
    ok = EmbeddingCache(tmp_path / "cache", "m", 4)
    ok.put(["h1"], np.eye(4, dtype=np.float32)[:1])
    (ok.dir / "shard-odd.parquet").mkdir()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = ok.get(["h1"])
    assert list(found) == ["h1"] and (ok.dir / "shard-odd.parquet").is_dir()
    assert any("is a folder, not a cache shard" in str(w.message) for w in caught)
