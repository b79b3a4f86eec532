"""Codes past what one clustering can hold: fit on a stratified sample, assign every unit.

UMAP + HDBSCAN on tens of millions of points is neither feasible nor needed. Above
[codes] fit_sample embedded utterances, codes.fit_codes runs on a seeded sample drawn
in proportion from every (interview, wave) stratum, and every other utterance joins the
code whose centroid (the one codes.parquet holds) is nearest, when the cosine similarity
reaches [codes] outlier_threshold: the rule a saved topic model applies to new text
(codes.assign_new) and the rule fit_codes uses for outliers. The embeddings are read a
batch at a time, so the whole matrix is never in memory; with the Ray engine the batches
are assigned in parallel, one task per part file.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import schema
from pipeline.embed import vectors
from pipeline.io.rundir import iter_table, table_num_rows

ASSIGN_BATCH = 200_000  # embeddings per similarity product: ~300 MB of MiniLM vectors


def stratified_sample(strata, size: int, seed: int) -> np.ndarray:
    """Sorted row positions of a seeded sample of `size` rows, allocated to the strata in
    proportion to their sizes (largest remainders), drawn at random within each.
    strata: each row's stratum, as labels or as integer codes (0..k-1)."""
    n = len(strata)
    if size >= n:
        return np.arange(n)
    stratum = np.asarray(strata)
    if stratum.dtype.kind not in "iu":
        _, stratum = np.unique(stratum.astype(str), return_inverse=True)
    counts = np.bincount(stratum)
    exact = counts * (size / n)
    quota = np.floor(exact).astype(np.int64)
    short = size - int(quota.sum())
    # ties in the remainder go to the earlier stratum: the same input, the same allocation
    order = np.lexsort((np.arange(len(counts)), -(exact - quota)))
    quota[order[:short]] += 1
    rng = np.random.default_rng(seed)
    rank = np.empty(n, dtype=np.int64)
    keys = rng.random(n)
    by_stratum = np.lexsort((keys, stratum))  # rows grouped by stratum, in random order within each
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank[by_stratum] = np.arange(n) - np.repeat(starts, counts)
    return np.flatnonzero(rank < quota[stratum])


def nearest_codes(
    X: np.ndarray, centroids: np.ndarray, code_ids: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """(code_id, similarity) of each row's most similar centroid; -1 and 0 below threshold."""
    if len(centroids) == 0 or len(X) == 0:
        return np.full(len(X), -1, np.int32), np.zeros(len(X), np.float32)
    sims = X @ centroids.T
    best = sims.argmax(axis=1)
    sim = sims[np.arange(len(X)), best]
    keep = sim >= threshold
    return np.where(keep, code_ids[best], -1).astype(np.int32), np.where(keep, sim, 0.0).astype(np.float32)


def assign_batch(embeddings: pa.Table, centroids: np.ndarray, code_ids: np.ndarray, threshold: float) -> pa.Table:
    code, sim = nearest_codes(vectors(embeddings), centroids, code_ids, threshold)
    return pa.table(
        {
            "utterance_id": embeddings.column("utterance_id"),
            "code_id": code,
            "probability": np.clip(sim, 0, 1),
            "reason": pa.array([None if c >= 0 else "outlier" for c in code.tolist()], pa.string()),
        },
        schema=schema.ASSIGNMENTS,
    )


def centroid_matrix(codes: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    ids = np.asarray(codes.column("code_id").to_pylist(), dtype=np.int32)
    if not len(ids):
        return np.zeros((0, 0), np.float32), ids
    return np.asarray(codes.column("centroid").to_pylist(), dtype=np.float32), ids


def merge_fitted(all_rows: pa.Table, fitted: pa.Table) -> pa.Table:
    """The nearest-centroid assignments, with the sampled utterances' rows replaced by the fit's own."""
    pos = pc.index_in(all_rows.column("utterance_id"), value_set=fitted.column("utterance_id"))
    in_fit = pc.is_valid(pos)
    columns = {
        name: pc.if_else(in_fit, fitted.column(name).take(pos), all_rows.column(name))
        for name in ("code_id", "probability", "reason")
    }
    return pa.table({"utterance_id": all_rows.column("utterance_id"), **columns}, schema=schema.ASSIGNMENTS)


def recount_codes(codes: pa.Table, assignments: pa.Table) -> pa.Table:
    """codes.parquet with size and fingerprint over every assigned utterance, not the sample only.
    Keywords, exemplars and centroids stay those of the fit."""
    if not codes.num_rows:
        return codes
    pairs = pa.table({"code_id": assignments.column("code_id"), "utterance_id": assignments.column("utterance_id")})
    pairs = pairs.filter(pc.greater_equal(pairs.column("code_id"), 0)).sort_by(
        [("code_id", "ascending"), ("utterance_id", "ascending")]
    )
    code_col = pairs.column("code_id").to_numpy()
    ids = pairs.column("utterance_id")
    size, fingerprint = {}, {}
    bounds = np.flatnonzero(np.diff(code_col)) + 1
    for start, stop in zip(np.concatenate([[0], bounds]), np.concatenate([bounds, [len(code_col)]])):
        if stop > start:
            c = int(code_col[start])
            members = ids.slice(int(start), int(stop - start)).to_pylist()
            size[c] = int(stop - start)
            fingerprint[c] = hashlib.sha1("\n".join(members).encode()).hexdigest()[:12]
    code_ids = codes.column("code_id").to_pylist()
    codes = codes.set_column(
        codes.schema.get_field_index("size"),
        codes.schema.field("size"),
        pa.array([size.get(c, 0) for c in code_ids], codes.schema.field("size").type),
    )
    return codes.set_column(
        codes.schema.get_field_index("fingerprint"),
        codes.schema.field("fingerprint"),
        pa.array([fingerprint.get(c, "") for c in code_ids], pa.string()),
    )


def assign_all(
    run_dir: Path, codes: pa.Table, threshold: float, progress: Callable[[str, int, int], None] | None = None
) -> pa.Table:
    """Every embedded utterance's nearest code, one batch at a time (the Ray engine: ray_engine.assign_all_parts)."""
    centroids, code_ids = centroid_matrix(codes)
    total = table_num_rows(run_dir, "embeddings")
    pieces, done = [], 0
    for batch in iter_table(run_dir, "embeddings", batch_rows=ASSIGN_BATCH):
        pieces.append(assign_batch(batch, centroids, code_ids, threshold))
        done += batch.num_rows
        if progress:
            progress("codes (assigning)", done, total)
    return pa.concat_tables(pieces) if pieces else pa.Table.from_pylist([], schema=schema.ASSIGNMENTS)
