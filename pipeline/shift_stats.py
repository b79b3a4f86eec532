"""Numerics of the shift stage: distances between profiles and the resampling engine.

Every resample is a weight matrix over a speaker's utterances (bootstrap counts,
permuted wave labels, split halves); resampled profiles are one matrix product
with the utterance features, so B or P replicates cost one BLAS call per speaker
and wave pair, never a Python loop per replicate.
"""

from __future__ import annotations

import hashlib

import numpy as np


def rng_for(seed: int, *keys: object) -> np.random.Generator:
    """A generator fixed by the run seed and the keys (speaker, waves, purpose): a speaker's
    intervals and p-values do not change when other speakers join the study."""
    digest = hashlib.blake2b("\x1f".join(map(str, keys)).encode("utf-8"), digest_size=8).digest()
    return np.random.default_rng([seed, int.from_bytes(digest, "little")])


def js_distance(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen-Shannon distance (base 2, in [0, 1]) between the rows of p and q.

    Rows are normalised first; a row summing to zero (no evidence) gives NaN."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = p / p.sum(axis=-1, keepdims=True)
        q = q / q.sum(axis=-1, keepdims=True)
        m = 0.5 * (p + q)
        kl_p = np.where(p > 0, p * np.log2(p / m), 0.0).sum(axis=-1)
        kl_q = np.where(q > 0, q * np.log2(q / m), 0.0).sum(axis=-1)
    js = np.clip(0.5 * (kl_p + kl_q), 0.0, 1.0)
    bad = ~(np.isfinite(p).all(axis=-1) & np.isfinite(q).all(axis=-1))
    return np.where(bad, np.nan, np.sqrt(js))


def cosine_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """1 - cosine similarity between the rows of a and b (mean embeddings are not unit length)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    norms = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return 1.0 - (a * b).sum(axis=-1) / norms


def bootstrap_counts(rng: np.random.Generator, n: int, reps: int) -> np.ndarray:
    """(reps, n) float32 multiplicities of a with-replacement resample of n items per row."""
    draws = rng.integers(0, n, size=(reps, n)) + (np.arange(reps) * n)[:, None]
    return np.bincount(draws.ravel(), minlength=reps * n).reshape(reps, n).astype(np.float32)


def label_masks(rng: np.random.Generator, n_first: int, n: int, reps: int) -> np.ndarray:
    """(reps, n) bool masks with exactly n_first True per row, in random positions: permuted
    wave labels (n_first = size of the first wave) or random halves (n_first = n // 2)."""
    base = np.zeros((reps, n), dtype=bool)
    base[:, :n_first] = True
    return rng.permuted(base, axis=1)


def split_means(masks: np.ndarray, sums: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean feature rows of the masked and the unmasked clusters, one pair per mask row.

    sums: (m, d) feature sums per cluster (an answer's sentences, or one utterance);
    sizes: (m,) utterances per cluster. Means are per utterance, as in the observed profile."""
    w = masks.astype(sums.dtype)
    inside, n_in = w @ sums, w @ sizes.astype(sums.dtype)
    outside = sums.sum(axis=0)[None, :] - inside
    n_out = sizes.sum() - n_in
    return inside / n_in[:, None], outside / n_out[:, None]


def resampled_means(counts: np.ndarray, sums: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Per-utterance mean feature rows of bootstrap resamples given cluster multiplicities."""
    c = counts.astype(sums.dtype)
    return (c @ sums) / (c @ sizes.astype(sums.dtype))[:, None]


def percentile_interval(values: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over the last axis, ignoring NaN replicates."""
    tail = 50.0 * (1.0 - level)
    if values.shape[-1] == 0 or np.isnan(values).all():
        nan = np.full(values.shape[:-1], np.nan)
        return nan, nan
    lo, hi = np.nanpercentile(values, [tail, 100.0 - tail], axis=-1)
    return lo, hi


def distance_interval(
    values: np.ndarray, estimate: float, level: float
) -> tuple[float | np.ndarray, float | np.ndarray]:
    """Percentile interval of a bootstrapped distance, shifted by the bootstrap's estimate of its bias
    and floored at 0. Resampling adds noise, and noise only ever moves two profiles apart, so the
    plain percentile interval of a distance sits above the estimate (on the example study it
    excluded it for most code-profile and semantic distances)."""
    lo, hi = percentile_interval(values, level)
    if not np.isfinite(estimate) or np.isnan(values).all():
        return lo, hi  # as percentile_interval gives them: numpy scalars or 0-d arrays
    bias = float(np.nanmean(values)) - estimate
    return max(float(lo) - bias, 0.0), max(float(hi) - bias, 0.0)


def permutation_p(observed: float, null: np.ndarray) -> float:
    """One-sided permutation p-value (1 + #null >= observed) / (1 + #null); the observed
    labelling counts as one permutation, so p is never 0."""
    if not np.isfinite(observed):
        return float("nan")
    null = null[np.isfinite(null)]
    # A relative tolerance keeps ties (e.g. a permutation that reproduces the observed split) ties.
    hits = np.count_nonzero(null >= observed - 1e-9 * max(1.0, abs(observed)))
    return float((1 + hits) / (1 + null.size))


def labelling_count(n_first: int, n: int) -> int:
    """Distinct ways to give n_first of n units the first wave's label."""
    from math import comb

    return comb(n, n_first)


def all_label_masks(n_first: int, n: int) -> np.ndarray:
    """(C(n, n_first), n) bool masks: every labelling once, for an exact permutation test when
    there are no more labellings than permutations asked for (whole interviews, few blocks)."""
    from itertools import combinations

    combos = np.asarray(list(combinations(range(n), n_first)), dtype=np.int64).reshape(-1, n_first)
    masks = np.zeros((len(combos), n), dtype=bool)
    masks[np.arange(len(combos))[:, None], combos] = True
    return masks


def exact_p(observed: float, null: np.ndarray) -> float:
    """p-value of an exact permutation test: the null holds every labelling, the observed one
    included, so p = #(null >= observed) / #null (never below 1 / #null)."""
    if not np.isfinite(observed):
        return float("nan")
    null = null[np.isfinite(null)]
    if null.size == 0:
        return float("nan")
    hits = np.count_nonzero(null >= observed - 1e-9 * max(1.0, abs(observed)))
    return float(max(int(hits), 1) / null.size)


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg q-values (false discovery rate) for the finite entries of p; NaN stays NaN."""
    p = np.asarray(p, dtype=np.float64)
    q = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if ok.size == 0:
        return q
    order = ok[np.argsort(p[ok], kind="stable")]
    ranked = p[order] * ok.size / np.arange(1, ok.size + 1)
    q[order] = np.minimum(np.minimum.accumulate(ranked[::-1])[::-1], 1.0)
    return q
