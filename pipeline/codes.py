"""codes: embeddings -> candidate first-order codes (clusters of similar utterances).

BERTopic with every component injected and configured here: UMAP (seeded, PCA
init so runs are bit-identical), HDBSCAN, a CountVectorizer over lemmatised content
words (pipeline.keywords), c-TF-IDF, and a KeyBERT-style or MMR representation for
readable keywords. Outliers close enough to a code join it; the rest keep code -1
with the reason. Corpora too small for UMAP use agglomerative clustering instead.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import warnings
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import schema
from pipeline.embed import Encoder, vectors
from pipeline.errors import ConfigError, InputError
from pipeline.keywords import TOKEN_PATTERN, keyword_texts, vocabulary_min_df
from pipeline.numba_cache import enable as enable_numba_cache
from pipeline.reduce import make_umap
from pipeline.settings import CodesSettings

enable_numba_cache()  # before bertopic/umap/hdbscan are imported anywhere below


def import_bertopic() -> None:
    """Import bertopic with the warning filters saved and restored: its import adds a global "ignore every
    UserWarning" filter (bertopic/_bertopic.py), which silenced every later stage's warnings in a run."""
    with warnings.catch_warnings():
        import bertopic  # noqa: F401


def cluster_sizes(n: int, s: CodesSettings) -> tuple[int, int]:
    """(min_cluster_size, min_samples) for n utterances: grows with sqrt(n)."""
    size = int(min(500, max(5, round(s.size_factor * math.sqrt(max(n, 1))))))
    return size, max(2, int(round(s.min_samples_ratio * size)))


def sample_cluster_sizes(n: int, population: int, s: CodesSettings) -> tuple[int, int]:
    """(min_cluster_size, min_samples) for a sample of n of `population` utterances: the whole
    corpus's sizes scaled by the sample's share, so the sample is cut as finely as the corpus would
    be (sizes from the sample's own n gave 51 codes instead of 121 on AMI; bench/codes_sample.py)."""
    size, samples = cluster_sizes(population, s)
    share = n / max(population, 1)
    return max(5, int(round(size * share))), max(2, int(round(samples * share)))


def max_cluster_size(n: int, min_size: int, s: CodesSettings) -> int:
    """HDBSCAN's cap on a selected cluster (0 = none). Excess-of-mass selection sometimes prefers
    one cluster holding nearly the whole corpus to its many sub-clusters, and which way it goes
    can turn on float rounding in the embeddings; a cap keeps the sub-clusters."""
    share = s.max_cluster_share
    return 0 if share <= 0 else max(2 * min_size, int(share * n))


def _encoder_backend(encoder: Encoder):
    import_bertopic()
    from bertopic.backend import BaseEmbedder

    class EncoderBackend(BaseEmbedder):
        """Lets BERTopic's representation step embed keywords with our offline encoder."""

        def embed(self, documents, verbose=False):
            return encoder.encode_cached(list(documents))[0]  # keywords recur across runs: cache them

    return EncoderBackend()


@dataclass
class CodesResult:
    codes: pa.Table
    assignments: pa.Table
    topic_model: object
    method: str
    min_cluster_size: int


def representation_model(s: CodesSettings):
    import_bertopic()
    from bertopic.representation import KeyBERTInspired, MaximalMarginalRelevance
    from sklearn.metrics.pairwise import cosine_similarity

    class OrderedKeyBERT(KeyBERTInspired):
        """KeyBERTInspired with its candidate vocabulary in sorted order: upstream builds it from a
        set, whose order changes between processes and breaks similarity ties differently."""

        def _extract_embeddings(self, topic_model, topics, representative_docs, repr_doc_indices, repr_embeddings=None):
            if repr_embeddings is None:
                repr_embeddings = topic_model._extract_embeddings(representative_docs, method="document", verbose=False)
            topic_embeddings = [np.mean(repr_embeddings[i[0] : i[-1] + 1], axis=0) for i in repr_doc_indices]
            vocab = sorted({word for words in topics.values() for word in words})
            word_embeddings = topic_model._extract_embeddings(vocab, method="document", verbose=False)
            return cosine_similarity(topic_embeddings, word_embeddings), vocab

    return {
        "keybert": lambda: OrderedKeyBERT(top_n_words=s.top_keywords, random_state=s.seed),
        "mmr": lambda: MaximalMarginalRelevance(diversity=0.3, top_n_words=s.top_keywords),
        "ctfidf": lambda: None,
    }[s.representation]()


def use_cuml(device: str) -> bool:
    """cuML's UMAP and HDBSCAN (pip install cuml-cu12) when [codes] device allows and a GPU is there."""

    if device == "cpu":
        return False
    try:
        import cuml  # noqa: F401
        import torch

        ready = torch.cuda.is_available()
    except ImportError:
        ready = False
    if device == "cuda" and not ready:
        raise ConfigError(
            'codes.device = "cuda" needs cuML and a CUDA GPU (pip install cuml-cu12); use "auto" or "cpu"'
        )
    return ready


def build_topic_model(
    n: int, encoder: Encoder, s: CodesSettings, X: np.ndarray | None = None, population: int | None = None
):
    """population: the corpus size when the n utterances are a sample of it (see sample_cluster_sizes)."""
    import_bertopic()
    from bertopic import BERTopic
    from bertopic.dimensionality import BaseDimensionalityReduction
    from bertopic.vectorizers import ClassTfidfTransformer
    from sklearn.cluster import AgglomerativeClustering
    from sklearn.feature_extraction.text import CountVectorizer

    seed = s.seed
    size, samples = cluster_sizes(n, s) if not population else sample_cluster_sizes(n, population, s)
    # the same HDBSCAN on the GPU (cuML) and the CPU (hdbscan)
    hdbscan_args = dict(
        min_cluster_size=size,
        min_samples=samples,
        metric="euclidean",
        cluster_selection_method="eom",
        max_cluster_size=max_cluster_size(n, size, s),
        prediction_data=True,
    )
    if n < s.min_utterances_umap:
        reducer = BaseDimensionalityReduction()
        clusterer = AgglomerativeClustering(
            n_clusters=None, metric="cosine", linkage="average", distance_threshold=s.agglomerative_distance
        )
        method = "agglomerative"
    elif use_cuml(s.device):
        from cuml.cluster import HDBSCAN
        from cuml.manifold import UMAP

        reducer = UMAP(
            n_neighbors=s.umap_neighbors,
            n_components=s.umap_components,
            min_dist=0.0,
            metric="cosine",
            init="random" if s.umap_init == "random" else "spectral",
            random_state=seed,
        )
        clusterer = HDBSCAN(**hdbscan_args)
        method = "umap+hdbscan (cuML, GPU)"
    else:
        from hdbscan import HDBSCAN

        reducer = make_umap(X, s.umap_components, s.umap_neighbors, 0.0, s.umap_init, seed)
        clusterer = HDBSCAN(**hdbscan_args)
        method = "umap+hdbscan"
    # c-TF-IDF counts a word's documents per code: with the handful of codes a small corpus gives, any
    # min_df above 1 can leave no word at all
    min_df = 1 if method == "agglomerative" else vocabulary_min_df(s.min_df, n)
    vectorizer = CountVectorizer(ngram_range=(1, s.ngram_max), min_df=min_df, token_pattern=TOKEN_PATTERN)
    model = BERTopic(
        embedding_model=_encoder_backend(encoder),
        umap_model=reducer,
        hdbscan_model=clusterer,
        vectorizer_model=vectorizer,
        ctfidf_model=ClassTfidfTransformer(reduce_frequent_words=True),
        representation_model=None,  # applied once, after outliers are reassigned (see fit_codes)
        top_n_words=s.top_keywords,
        calculate_probabilities=False,
        verbose=False,
    )
    return model, method, size


def _normalise(m: np.ndarray) -> np.ndarray:
    return m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)


def fit_codes(
    utterances: pa.Table, embeddings: pa.Table, encoder: Encoder, s: CodesSettings, population: int | None = None
) -> CodesResult:
    """Cluster the embedded utterances into codes; every embedded utterance gets one assignment row.
    population: the corpus size when these utterances are a sample of it (codes_scale)."""
    seed = s.seed
    ids = embeddings.column("utterance_id").to_pylist()
    text_by_id = dict(zip(utterances.column("utterance_id").to_pylist(), utterances.column("text").to_pylist()))
    texts = [text_by_id[i] for i in ids]
    X = vectors(embeddings)
    n = len(ids)
    dim = X.shape[1] if X.ndim == 2 else encoder.dim
    if n < 3:
        warnings.warn(f"only {n} coded utterances: too few to form codes; all are left unassigned", stacklevel=2)
        assignments = pa.table(
            {"utterance_id": ids, "code_id": [-1] * n, "probability": [0.0] * n, "reason": ["too few utterances"] * n},
            schema=schema.ASSIGNMENTS,
        )
        return CodesResult(pa.Table.from_pylist([], schema=schema.codes_schema(dim)), assignments, None, "none", 0)
    if n < s.min_utterances_umap:
        warnings.warn(
            f"only {n} coded utterances (< codes.min_utterances_umap = {s.min_utterances_umap}): "
            "UMAP + HDBSCAN need more; clustering with the agglomerative fallback",
            stacklevel=2,
        )
    encoder.with_cache(s.embed)  # keyword and exemplar embeddings recur across runs
    docs = keyword_texts(texts, list(s.fillers + s.backchannel_words), s.lemmatizer, s.embed.cache_dir)
    docs = [d if d else "_" for d in docs]  # an utterance of stop words only still needs a token
    _check_vocabulary(docs, texts)
    random.seed(seed)
    np.random.seed(seed)
    model, method, size = build_topic_model(n, encoder, s, X, population)
    _quiet_bertopic()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="n_jobs value")  # a seeded UMAP runs on one thread
        warnings.filterwarnings("ignore", message="precomputed_knn")  # UMAP.transform is never used
        topics, probs = model.fit_transform(docs, embeddings=X)
    topics = np.asarray(topics)
    probs = np.ones(n) if probs is None else np.asarray(probs, dtype=float)
    reason = np.where(topics == -1, "outlier", None).astype(object)  # type: ignore[call-overload]  # stubs refuse None
    reassigned = 0
    # Outliers close to a code's centroid join it; the similarity becomes their probability.
    if (topics == -1).any() and (topics >= 0).any() and s.outlier_threshold < 1.0:
        labels = sorted(set(topics[topics >= 0].tolist()))
        cents = _normalise(np.stack([X[topics == t].mean(axis=0) for t in labels]))
        out = np.flatnonzero(topics == -1)
        sims = X[out] @ cents.T
        best, best_sim = sims.argmax(axis=1), sims.max(axis=1)
        join = best_sim >= s.outlier_threshold
        topics[out[join]] = np.asarray(labels)[best[join]]
        probs[out[join]] = best_sim[join]
        probs[out[~join]] = 0.0
        reason[out[join]] = None
        reassigned = int(join.sum())
    # Readable keywords, computed once on the final assignments.
    representation = representation_model(s)
    if representation is not None or reassigned:
        model.update_topics(
            docs,
            topics=topics.tolist(),
            top_n_words=s.top_keywords,
            vectorizer_model=model.vectorizer_model,
            representation_model=representation,
        )
    codes = _codes_table(model, topics, ids, X, s.exemplars, texts)
    _use_centroids_for_transform(model, codes, topics, X)
    assignments = pa.table(
        {
            "utterance_id": ids,
            "code_id": topics.astype(np.int32),
            "probability": np.clip(probs, 0, 1).astype(np.float32),
            "reason": pa.array(reason.tolist(), pa.string()),
        },
        schema=schema.ASSIGNMENTS,
    )
    return CodesResult(codes, assignments, model, method, size)


def _check_vocabulary(docs: list[str], texts: list[str]) -> None:
    """Codes are described by their words: utterances that share fewer than two content words between
    them (a pilot of near-identical answers) give no codes, and one clear line says why."""
    from sklearn.feature_extraction.text import CountVectorizer

    try:
        words = CountVectorizer(token_pattern=TOKEN_PATTERN).fit(docs).vocabulary_
    except ValueError:
        words = {}
    if len(words) < 2:
        seen = ", ".join(repr(w) for w in sorted(words)) or "none"
        raise InputError(
            f"the {len(texts)} coded utterances hold fewer than two distinct content words (found: "
            f"{seen}): too repetitive to form codes; add transcripts or code these by hand"
        )


def _codes_table(
    model, topics: np.ndarray, ids: list[str], X: np.ndarray, n_exemplars: int, texts: list[str]
) -> pa.Table:
    rows = []
    dim = X.shape[1]
    for t in sorted(set(topics.tolist()) - {-1}):
        members = np.flatnonzero(topics == t)
        centroid = _normalise(X[members].mean(axis=0, keepdims=True))[0]
        order = members[np.argsort(-(X[members] @ centroid), kind="stable")]
        # a bigram of one word twice ("method method") says nothing the word does not
        words = [w for w, _ in (model.get_topic(t) or []) if w and len(set(w.split())) == len(w.split())]
        member_ids = sorted(ids[i] for i in members)
        rows.append(
            {
                "code_id": int(t),
                # no content word survives (a code of "There we go."): its most typical utterance says what it is
                "label": " / ".join(words[:3]) if words else _quoted(texts[order[0]]),
                "keywords": words,
                "size": int(len(members)),
                "exemplar_ids": [ids[i] for i in order[:n_exemplars]],
                "centroid": centroid.astype(np.float32).tolist(),
                "fingerprint": hashlib.sha1("\n".join(member_ids).encode()).hexdigest()[:12],
            }
        )
    return pa.Table.from_pylist(rows, schema=schema.codes_schema(dim))


def _quoted(text: str, limit: int = 40) -> str:
    text = " ".join(text.split())
    return f'"{text if len(text) <= limit else text[: limit - 1].rstrip() + "…"}"'


def _quiet_bertopic() -> None:
    # BERTopic resets its logger's level whenever a model is built; a filter outlasts that. Its
    # warnings concern choices made here on purpose (custom topics, no saved embedding model).
    logger = logging.getLogger("BERTopic")
    if not any(isinstance(f, _ErrorsOnly) for f in logger.filters):
        logger.addFilter(_ErrorsOnly())


class _ErrorsOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


def _use_centroids_for_transform(model, codes: pa.Table, topics: np.ndarray, X: np.ndarray) -> None:
    """Make the saved model assign new text by cosine similarity to the same centroids that
    codes.parquet holds (BERTopic would otherwise use c-TF-IDF-weighted topic vectors)."""
    rows = [np.asarray(c, dtype=np.float32) for c in codes.column("centroid").to_pylist()]
    if getattr(model, "_outliers", 0):
        rows.insert(0, np.zeros(X.shape[1], np.float32))  # the outlier "topic": left to the threshold
    model.topic_embeddings_ = np.stack(rows)


def assign_new(model_dir, embeddings: pa.Table, encoder: Encoder, s: CodesSettings) -> pa.Table:
    """Assign existing codes to new utterances with a saved topic model: nearest code
    centroid, kept when its cosine similarity reaches codes.outlier_threshold."""
    import_bertopic()
    from bertopic import BERTopic

    model = BERTopic.load(str(model_dir), embedding_model=_encoder_backend(encoder))
    _quiet_bertopic()
    X = vectors(embeddings)
    ids = embeddings.column("utterance_id").to_pylist()
    if not ids:
        return pa.Table.from_pylist([], schema=schema.ASSIGNMENTS)
    topics, probs = model.transform(["_"] * len(ids), embeddings=X)
    topics, probs = np.asarray(topics), np.asarray(probs, dtype=float).reshape(len(ids), -1).max(axis=1)
    weak = probs < s.outlier_threshold
    topics[weak] = -1
    return pa.table(
        {
            "utterance_id": ids,
            "code_id": topics.astype(np.int32),
            "probability": np.clip(np.where(weak, 0, probs), 0, 1).astype(np.float32),
            "reason": pa.array([("outlier" if t == -1 else None) for t in topics], pa.string()),
        },
        schema=schema.ASSIGNMENTS,
    )


def save_topic_model(model, path) -> None:
    """The fitted model, without the embedding model (which is resolved offline at load time)."""
    model.save(str(path), serialization="safetensors", save_ctfidf=True, save_embedding_model=False)


def unassigned_count(assignments: pa.Table) -> int:
    return int(pc.sum(pc.equal(assignments.column("code_id"), -1)).as_py() or 0)
