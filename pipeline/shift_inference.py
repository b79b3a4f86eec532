"""Inference that borrows strength across speakers: the numerics behind group changes,
group contrasts and per-speaker moderated tests.

A speaker's change between two waves is a difference of two ratio means (share of a theme
among the wave's units); its sampling variance comes from the resampling units (interviews,
or blocks of answers within an interview), never from sentences, which hang together.

- `pair_moments`: per speaker and wave pair, the change, the between-unit variance s2 and the
  design factor c (var(change) = s2 * c), with df = units - 2.
- `fit_prior` / `moderate`: limma's empirical-Bayes moderation (Smyth 2004): s2 across speakers
  is modelled as a scaled F distribution; each speaker's variance is pulled towards the common
  prior s0^2 with d0 prior degrees of freedom, giving a moderated t with df + d0 degrees of
  freedom: continuous p-values even with 2 + 2 interviews, no permutation floor.
- `random_effects`: DerSimonian-Laird random-effects meta-analysis of per-speaker changes with
  the Hartung-Knapp-Sidik-Jonkman interval (t with k - 1 df, never narrower than the plain
  random-effects one), tau^2 and I^2: the group's mean change, heterogeneity beside it.
- `contrast`: the difference between two groups' mean changes (Welch-Satterthwaite df).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special, stats

# ---------------------------------------------------------------- one speaker, one wave pair


@dataclass(frozen=True)
class PairMoments:
    change: np.ndarray  # (D,) share_to - share_from
    share_from: np.ndarray
    share_to: np.ndarray
    s2: np.ndarray  # (D,) between-unit variance of unit means (pooled over both waves)
    c: float  # design factor: var(change) = s2 * c (1/J_a + 1/J_b for equal units)
    df: int  # J_a + J_b - 2 (0: no variance estimate of its own)


def pair_moments(SA: np.ndarray, nA: np.ndarray, SB: np.ndarray, nB: np.ndarray) -> PairMoments:
    """Change and its variance from per-unit feature sums (units x D) and sizes of two waves.

    The variance is the cluster-robust (linearised ratio-mean) one, J/(J-1) * sum((S_i - m n_i)^2) / N^2
    per wave, written as s2 * c so that s2 can be moderated across speakers."""
    parts, shares, weights = [], [], 0.0
    for S, n in ((SA, nA), (SB, nB)):
        N, J = n.sum(), len(n)
        m = S.sum(axis=0) / N
        shares.append(m)
        w = n / N
        weights += float((w**2).sum())
        resid = S - np.outer(n, m)
        parts.append((resid**2).sum(axis=0) / N**2 * (J / (J - 1) if J > 1 else 0.0))
    df = len(nA) + len(nB) - 2
    s2 = (parts[0] + parts[1]) / weights if df > 0 else np.full(SA.shape[1], np.nan)
    return PairMoments(shares[1] - shares[0], shares[0], shares[1], s2, weights, df)


# ---------------------------------------------------------------- empirical-Bayes moderation


def trigamma_inverse(x: float) -> float:
    """y with trigamma(y) = x (Newton's method, as limma's trigammaInverse)."""
    if x > 1e7:
        return 1.0 / np.sqrt(x)
    if x < 1e-6:
        return 1.0 / x
    y = 0.5 + 1.0 / x
    for _ in range(50):
        tri = special.polygamma(1, y)
        step = tri * (1 - tri / x) / special.polygamma(2, y)
        y += step
        if -step / y < 1e-8:
            break
    return float(y)


def fit_prior(s2: np.ndarray, df: np.ndarray) -> tuple[float, float]:
    """(d0, s0^2): the scaled-F prior of sample variances s2 with df degrees of freedom (limma's
    fitFDist by moments of log s2). d0 = inf when the variances vary no more than sampling alone
    explains; (0, nan) when fewer than three speakers have a variance of their own."""
    ok = np.isfinite(s2) & (s2 > 0) & (df > 0)
    s2, df = s2[ok], df[ok].astype(np.float64)
    if len(s2) < 3:
        return 0.0, float("nan")
    e = np.log(s2) - special.digamma(df / 2) + np.log(df / 2)
    emean = float(e.mean())
    evar = float(((e - emean) ** 2).sum() / (len(e) - 1) - special.polygamma(1, df / 2).mean())
    if evar <= 0:
        return float("inf"), float(np.exp(emean))
    d0 = 2 * trigamma_inverse(evar)
    return d0, float(np.exp(emean + special.digamma(d0 / 2) - np.log(d0 / 2)))


def moderate(s2: np.ndarray, df: np.ndarray, d0: float, s0sq: float) -> tuple[np.ndarray, np.ndarray]:
    """Posterior variances and their degrees of freedom: (d0 s0^2 + df s2) / (d0 + df)."""
    s2 = np.where(df > 0, np.nan_to_num(s2, nan=0.0), 0.0)
    if not d0 > 0 or not np.isfinite(s0sq):
        return np.where(df > 0, s2, np.nan), df.astype(np.float64)
    if np.isinf(d0):
        return np.full(s2.shape, s0sq), np.full(s2.shape, np.inf)
    return (d0 * s0sq + df * s2) / (d0 + df), d0 + df


def t_interval(estimate: np.ndarray, se: np.ndarray, df: np.ndarray, level: float):
    """(p two-sided, ci_low, ci_high) of estimate / se against t(df) (df = inf: normal)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        t = estimate / se
        p = 2 * stats.t.sf(np.abs(t), df)
        half = stats.t.ppf(0.5 + level / 2, df) * se
    p = np.where(se > 0, p, np.where(estimate == 0, 1.0, np.nan))
    return p, estimate - half, estimate + half


def bonferroni(p: np.ndarray) -> float:
    """One p-value for a whole profile from its themes' p-values: the smallest times the number of
    themes (K - 1 of K shares are free, so two themes are one test); NaN when none is finite."""
    finite = np.asarray(p, dtype=float)
    finite = finite[np.isfinite(finite)]
    if not len(finite):
        return float("nan")
    K = len(p)
    return float(min(1.0, finite.min() * (K if K > 2 else 1)))


# ---------------------------------------------------------------- a group of speakers


@dataclass(frozen=True)
class RandomEffects:
    k: int  # speakers
    estimate: float  # mean change, weighted by 1 / (v + tau^2)
    se: float  # Hartung-Knapp-Sidik-Jonkman standard error (never below the plain one)
    df: float  # k - 1
    ci_low: float
    ci_high: float
    p_value: float
    tau2: float  # between-speaker variance of the true changes (DerSimonian-Laird)
    i2: float  # share of the changes' spread that is between speakers, not sampling
    weights: np.ndarray  # 1 / (v + tau^2), per speaker


EMPTY = RandomEffects(0, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, np.zeros(0))


def random_effects(y: np.ndarray, v: np.ndarray, level: float) -> RandomEffects:
    """DerSimonian-Laird random-effects estimate of the mean of y (within-speaker variances v),
    with the HKSJ interval and test (t, k - 1 df). One speaker: the estimate alone."""
    y, v = np.asarray(y, dtype=np.float64), np.asarray(v, dtype=np.float64)
    k = len(y)
    if k == 0:
        return EMPTY
    if k == 1:
        return RandomEffects(1, float(y[0]), np.nan, 0.0, np.nan, np.nan, np.nan, np.nan, np.nan, np.ones(1))
    w = 1.0 / v
    fixed = (w * y).sum() / w.sum()
    q = float((w * (y - fixed) ** 2).sum())
    scale = w.sum() - (w**2).sum() / w.sum()
    tau2 = max(0.0, (q - (k - 1)) / scale) if scale > 0 else 0.0
    ws = 1.0 / (v + tau2)
    mu = float((ws * y).sum() / ws.sum())
    hk = float((ws * (y - mu) ** 2).sum() / (k - 1))
    se = float(np.sqrt(max(hk, 1.0) / ws.sum()))
    p, lo, hi = t_interval(np.array(mu), np.array(se), np.array(k - 1.0), level)
    i2 = max(0.0, (q - (k - 1)) / q) if q > 0 else 0.0
    return RandomEffects(k, mu, se, k - 1.0, float(lo), float(hi), float(p), tau2, i2, ws)


def contrast(a: RandomEffects, b: RandomEffects, level: float) -> tuple[float, float, float, float, float]:
    """(difference a - b, se, ci_low, ci_high, p) with Welch-Satterthwaite degrees of freedom."""
    if a.k < 2 or b.k < 2:
        return a.estimate - b.estimate, np.nan, np.nan, np.nan, np.nan
    va, vb = a.se**2, b.se**2
    df = (va + vb) ** 2 / (va**2 / a.df + vb**2 / b.df) if va + vb > 0 else np.inf
    diff, se = a.estimate - b.estimate, float(np.sqrt(va + vb))
    p, lo, hi = t_interval(np.array(diff), np.array(se), np.array(df), level)
    return float(diff), se, float(lo), float(hi), float(p)


def shrink(y: np.ndarray, v: np.ndarray, fit: RandomEffects) -> np.ndarray:
    """Empirical-Bayes (posterior mean) changes: each speaker pulled towards the group's mean by
    v / (v + tau^2): far for a noisy speaker, little for a precise one, fully when tau^2 = 0."""
    if fit.k < 2 or not np.isfinite(fit.tau2):
        return np.asarray(y, dtype=np.float64)
    b = fit.tau2 / (fit.tau2 + v)
    return fit.estimate + b * (y - fit.estimate)
