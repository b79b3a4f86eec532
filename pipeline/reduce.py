"""Seeded UMAP for clustering (codes) and for the report's 2-D map, fast on small corpora."""

from __future__ import annotations

import warnings

import numpy as np

from pipeline.numba_cache import enable as enable_numba_cache

EXACT_KNN_MAX = 200_000


def exact_knn(X: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine k nearest neighbours (self first) of unit vectors, by blocked matrix products.

    UMAP's own exact path calls a Python distance function for every pair (about 30 s at
    3,000 utterances) and its approximate path spends about two minutes compiling numba
    code in every new process; blocked BLAS products with top-k take seconds at 60,000.
    """
    import torch

    n = len(X)
    k = min(k, n)
    chunk = max(256, int(5e7 // max(n, 1)))  # about 200 MB of similarities at a time
    T = torch.from_numpy(np.array(X, dtype=np.float32, copy=True))  # torch wants writable memory
    idx = np.empty((n, k), dtype=np.int64)
    dist = np.empty((n, k), dtype=np.float32)
    for start in range(0, n, chunk):
        sims = T[start : start + chunk] @ T.T
        rows = torch.arange(sims.shape[0])
        sims[rows, start + rows] = float("inf")  # a point is its own nearest neighbour, even among duplicates
        top_sims_t, top_t = torch.topk(sims, k, dim=1)
        top, top_sims = top_t.numpy(), top_sims_t.numpy()
        order = np.lexsort((top, -top_sims), axis=1)  # ties broken by index: the same input, the same graph
        top = np.take_along_axis(top, order, axis=1)
        d = 1.0 - np.take_along_axis(top_sims, order, axis=1)
        d[:, 0] = 0.0
        idx[start : start + chunk] = top
        dist[start : start + chunk] = np.maximum(d, 0.0)
    return idx, dist


def make_umap(X: np.ndarray | None, n_components: int, n_neighbors: int, min_dist: float, init: str, seed: int):
    """An unfitted, seeded UMAP (cosine). Up to EXACT_KNN_MAX unit vectors, the neighbour graph
    is computed exactly here and handed to UMAP; above that, UMAP's NN-descent builds it."""
    enable_numba_cache()
    from umap import UMAP

    n = len(X) if X is not None else 0
    neighbours = max(2, min(n_neighbors, n - 1)) if n else n_neighbors
    knn: tuple[np.ndarray | None, np.ndarray | None, None] = (None, None, None)  # UMAP's precomputed_knn
    if X is not None and 2 < n <= EXACT_KNN_MAX:
        knn = (*exact_knn(X, neighbours), None)
    return UMAP(
        n_neighbors=neighbours,
        n_components=n_components,
        min_dist=min_dist,
        metric="cosine",
        init=init,
        random_state=seed,
        precomputed_knn=knn,
    )


def fit_umap(X: np.ndarray, n_components: int, n_neighbors: int, min_dist: float, init: str, seed: int) -> np.ndarray:
    with warnings.catch_warnings():
        # a seeded UMAP runs on one thread; UMAP.transform is never used
        warnings.filterwarnings("ignore", message="n_jobs value")
        warnings.filterwarnings("ignore", message="precomputed_knn")
        return make_umap(X, n_components, n_neighbors, min_dist, init, seed).fit_transform(X)
