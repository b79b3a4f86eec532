"""embed: coded utterances -> L2-normalised float32 vectors.

Each distinct text is embedded once: duplicates within a corpus ("Yes, exactly.")
share a vector, and a persistent cache keyed by (model id, text hash) means a
re-run embeds nothing and a run after adding an interview embeds only its new text.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import schema
from pipeline.embed_cache import EmbeddingCache
from pipeline.models import ModelSpec, cache_root, resolve
from pipeline.settings import EmbedSettings

Progress = Callable[[str, int, int], None]


CACHE_LAYOUT = "@unpadded"  # cache entries made by unpadded, same-length batches (see _encode_transformer)


def compute_threads() -> int:
    """Threads every embedding in this process runs with (vectors differ in their last bits by count)."""
    return max(1, os.cpu_count() or 1)


def text_hash(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def _device(requested: str) -> str:
    if requested != "auto":
        return requested
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class Encoder:
    """An embedding model: encode(texts) -> (n, dim) float32, unit length.

    The model itself loads on first use, so a run whose texts are all cached never
    pays for loading it. With a cache attached, encode_cached() embeds each distinct
    text at most once across runs.
    """

    def __init__(self, spec: ModelSpec, device: str = "auto", cache: EmbeddingCache | None = None):
        self.spec, self.device = spec, device
        self.model_id = spec.model_id
        self.dim = spec.dim
        self._model = None
        self.cache = cache

    @property
    def model(self):
        if self._model is None:
            self._model = _load_model(self.spec, self.device)
        return self._model

    def with_cache(self, embed: EmbedSettings) -> "Encoder":
        """Attach the persistent cache the embed settings name (or none when use_cache is off)."""
        self.cache = None
        if embed.use_cache:  # vectors from padded batches (before) live under the bare model id
            # the thread count changes a vector's last bits too: vectors made with another count (a Ray
            # worker, another machine) are never mixed with this process's
            threads = f"-t{compute_threads()}" if self.spec.backend != "model2vec" else ""
            self.cache = EmbeddingCache(
                cache_root(embed.cache_dir) / "embeddings",
                f"{self.model_id}{CACHE_LAYOUT}{threads}",
                self.dim,
            )
        return self

    def encode(
        self, texts: list[str], batch_size: int = 64, progress: Progress | None = None, batch_tokens: int = 2048
    ) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self.spec.backend == "model2vec":
            vectors = self.model.encode(texts, batch_size=max(batch_size, 1024))
        else:
            vectors = self._encode_transformer(texts, batch_size, batch_tokens, progress)
        vectors = np.asarray(vectors, dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-12)

    def _encode_transformer(
        self, texts: list[str], batch_size: int, batch_tokens: int, progress: Progress | None
    ) -> np.ndarray:
        """Batches of texts of one token length, cut by token count rather than sentence count.

        A text padded to a longer neighbour's length gets a vector that differs in the
        last bits (up to 1e-7), and clustering can turn that into other codes: so a batch
        never pads. Texts of equal length give bit-identical vectors in any batch, of any
        size, so a vector no longer depends on which other texts were embedded with it,
        and a run gives the same tables whatever the embedding cache already held.
        Conversation is mostly short turns with a long tail: sorted by token length, each
        forward pass is filled up to batch_tokens (and at most batch_size rows).
        """
        import torch

        model = self.model
        torch.set_num_threads(compute_threads())  # whatever else changed it since: the count the cache assumes
        lengths = np.fromiter(
            (len(ids) for ids in model.tokenizer(texts, truncation=True, max_length=model.max_seq_length)["input_ids"]),
            dtype=np.int64,
            count=len(texts),
        )
        order = np.argsort(lengths, kind="stable")
        vectors = np.empty((len(texts), self.dim), dtype=np.float32)
        done, start = 0, 0
        while start < len(order):
            stop = start + 1
            while (
                stop < len(order)
                and stop - start < batch_size
                and lengths[order[stop]] == lengths[order[start]]
                and (stop - start + 1) * lengths[order[stop]] <= batch_tokens
            ):
                stop += 1
            rows = order[start:stop]
            vectors[rows] = model.encode(
                [texts[i] for i in rows], batch_size=len(rows), convert_to_numpy=True, show_progress_bar=False
            )
            start = stop
            if progress and (start - done >= 1024 or start == len(order)):
                done = start
                progress("embed", start, len(texts))
        return vectors

    def encode_cached(
        self, texts: list[str], batch_size: int = 64, progress: Progress | None = None, batch_tokens: int = 2048
    ) -> tuple[np.ndarray, "EmbedStats"]:
        """Like encode, but each distinct text is looked up in the cache before it is embedded."""
        import time

        hashes = [text_hash(t) for t in texts]
        unique: dict[str, str] = dict(zip(hashes, texts))
        known = self.cache.get(list(unique)) if self.cache else {}
        missing = [h for h in unique if h not in known]
        started = time.perf_counter()
        fresh = self.encode([unique[h] for h in missing], batch_size, progress, batch_tokens)
        seconds = time.perf_counter() - started
        if self.cache and missing:
            self.cache.put(missing, fresh)
        lookup = {**known, **dict(zip(missing, fresh))}
        matrix = np.stack([lookup[h] for h in hashes]) if hashes else np.zeros((0, self.dim), np.float32)
        stats = EmbedStats(len(texts), len(unique), len(unique) - len(missing), len(missing), round(seconds, 3))
        return matrix, stats


def _load_model(spec: ModelSpec, device: str):
    if spec.backend == "model2vec":
        from model2vec import StaticModel

        return StaticModel.from_pretrained(str(spec.path), force_download=False)
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(compute_threads())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SentenceTransformer(str(spec.path), device=_device(device), local_files_only=True)


def load_encoder(name_or_path: str, device: str = "auto") -> Encoder:
    return Encoder(resolve(name_or_path), device)


@dataclass
class EmbedStats:
    coded: int
    distinct_texts: int
    cache_hits: int
    embedded: int
    seconds_encoding: float


def embed_utterances(
    utterances: pa.Table, encoder: Encoder, embed: EmbedSettings, progress: Progress | None = None
) -> tuple[pa.Table, EmbedStats]:
    """Vectors for the coded utterances, in utterance order."""
    coded = utterances.filter(pc.field("coded"))
    encoder.with_cache(embed)
    matrix, stats = encoder.encode_cached(
        coded.column("text").to_pylist(), embed.batch_size, progress, embed.batch_tokens
    )
    table = pa.table(
        {
            "utterance_id": coded.column("utterance_id"),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1), pa.float32()), encoder.dim),
        },
        schema=schema.embeddings_schema(encoder.dim),
    )
    return table, stats


def vectors(table: pa.Table) -> np.ndarray:
    """The (n, dim) float32 matrix of an embeddings table, without copying row by row."""
    col = table.column("vector").combine_chunks()
    dim = col.type.list_size
    return col.values.to_numpy(zero_copy_only=False).reshape(-1, dim)
