"""Agreement statistics between coders (human or machine), computed from count tables.

Every statistic here is a function of an additive count table: a confusion matrix
(Cohen's kappa), a coincidence matrix (Krippendorff's alpha), true/false positive
counts (precision, recall, F1) or a cluster x class contingency table (ARI, NMI,
homogeneity, completeness, purity, matched kappa). Tables are built per resampling
group (an interview, or one utterance), so a bootstrap sample is just a weighted sum
of group tables: the bootstrap costs one matrix product, not B passes over the data.

Functions that take a table accept extra leading (batch) axes where noted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.optimize import linear_sum_assignment

MISSING = -1  # label index of a missing coding


# ---------------------------------------------------------------- count tables


def confusion_tables(a: np.ndarray, b: np.ndarray, groups: np.ndarray, n_groups: int, k: int) -> np.ndarray:
    """Per-group confusion matrices (G, k, k) of two coders' label indices; units where
    either coder is missing are left out."""
    keep = (a != MISSING) & (b != MISSING)
    out = np.zeros((n_groups, k, k), dtype=np.int64)
    np.add.at(out, (groups[keep], a[keep], b[keep]), 1)
    return out


def coincidence_tables(values: np.ndarray, groups: np.ndarray, n_groups: int, k: int) -> np.ndarray:
    """Per-group Krippendorff coincidence matrices (G, k, k).

    values: (units, coders) label indices, MISSING where a coder gave none. A unit with
    m >= 2 codings adds n_c * n_k / (m - 1) to cell (c, k) for c != k and
    n_c * (n_c - 1) / (m - 1) to (c, c); units with fewer codings are not pairable.
    """
    units = values.shape[0]
    counts = np.zeros((units, k), dtype=np.float64)
    rows, cols = np.nonzero(values != MISSING)
    np.add.at(counts, (rows, values[rows, cols]), 1.0)
    m = counts.sum(axis=1)
    pairable = m >= 2
    c = counts[pairable]
    per_unit = (c[:, :, None] * c[:, None, :] - c[:, :, None] * np.eye(k)[None]) / (m[pairable] - 1)[:, None, None]
    out = np.zeros((n_groups, k, k), dtype=np.float64)
    np.add.at(out, groups[pairable], per_unit)
    return out


def presence_tables(
    machine: np.ndarray, reference: np.ndarray, usable: np.ndarray, groups: np.ndarray, n_groups: int
) -> np.ndarray:
    """Per-group (G, labels, 3) counts of true positives, false positives and false negatives.

    machine, reference, usable: (units, labels) booleans; a unit counts for a label only
    where usable (both sides coded it, and a consensus exists when the reference is one).
    """
    tp = machine & reference & usable
    fp = machine & ~reference & usable
    fn = ~machine & reference & usable
    out = np.zeros((n_groups, machine.shape[1], 3), dtype=np.int64)
    for i, arr in enumerate((tp, fp, fn)):
        np.add.at(out[:, :, i], groups, arr.astype(np.int64))
    return out


def set_tables(a: np.ndarray, b: np.ndarray, usable: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """Per-group (G, 3) sums over units of [same label set, Jaccard of the two sets, units].

    a, b: (units, labels) booleans, every label each rater gave; usable: (units,) both rated
    the unit. Two empty sets agree (Jaccard 1)."""
    inter = (a & b).sum(axis=1)
    union = (a | b).sum(axis=1)
    same = (a == b).all(axis=1)
    jac = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    out = np.zeros((n_groups, 3), dtype=np.float64)
    for i, arr in enumerate((same, jac, np.ones(len(a)))):
        np.add.at(out[:, i], groups[usable], arr[usable].astype(np.float64))
    return out


def label_confusion_tables(
    a: np.ndarray, b: np.ndarray, usable: np.ndarray, groups: np.ndarray, n_groups: int
) -> np.ndarray:
    """Per-group (G, labels, 2, 2) confusion of two raters on whether each label applies
    (index 1 = applies), over the units where usable (units, labels)."""
    out = np.zeros((n_groups, a.shape[1], 2, 2), dtype=np.int64)
    rows, cols = np.nonzero(usable)
    np.add.at(out, (groups[rows], cols, a[rows, cols].astype(np.int64), b[rows, cols].astype(np.int64)), 1)
    return out


def contingency_tables(
    clusters: np.ndarray, classes: np.ndarray, groups: np.ndarray, n_groups: int, n_clusters: int, n_classes: int
) -> np.ndarray:
    """Per-group (G, clusters, classes) contingency tables; missing on either side is left out."""
    keep = (clusters != MISSING) & (classes != MISSING)
    out = np.zeros((n_groups, n_clusters, n_classes), dtype=np.int64)
    np.add.at(out, (groups[keep], clusters[keep], classes[keep]), 1)
    return out


# ---------------------------------------------------------------- statistics


def kappa(confusion: np.ndarray) -> np.ndarray:
    """Cohen's kappa of (..., k, k) confusion matrices; NaN where chance agreement is 1."""
    m = np.asarray(confusion, dtype=np.float64)
    n = m.sum(axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        p_o = np.trace(m, axis1=-2, axis2=-1) / n
        p_e = (m.sum(axis=-1) * m.sum(axis=-2)).sum(axis=-1) / n**2
        return (p_o - p_e) / (1.0 - p_e)


def alpha(coincidence: np.ndarray) -> np.ndarray:
    """Krippendorff's alpha (nominal) of (..., k, k) coincidence matrices.

    alpha = 1 - (n - 1) * sum_{c != k} o_ck / sum_{c != k} n_c n_k, with n_c the
    coincidence marginals and n their total (the pairable values)."""
    o = np.asarray(coincidence, dtype=np.float64)
    n_c = o.sum(axis=-1)
    n = n_c.sum(axis=-1)
    observed = o.sum(axis=(-2, -1)) - np.trace(o, axis1=-2, axis2=-1)
    expected = n**2 - (n_c**2).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return 1.0 - (n - 1.0) * observed / expected


def precision_recall_f1(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and F1 from (..., 3) counts [tp, fp, fn]; NaN where undefined."""
    c = np.asarray(counts, dtype=np.float64)
    tp, fp, fn = c[..., 0], c[..., 1], c[..., 2]
    with np.errstate(invalid="ignore", divide="ignore"):
        p = tp / (tp + fp)
        r = tp / (tp + fn)
        f = 2 * tp / (2 * tp + fp + fn)
    return p, r, f


def _entropy(counts: np.ndarray) -> float:
    n = counts.sum()
    p = counts[counts > 0] / n
    return float(-(p * np.log(p)).sum())


def cluster_scores(contingency: np.ndarray) -> dict[str, float]:
    """Alignment of clusters (rows) with reference classes (columns) of one contingency table.

    ARI, NMI (arithmetic normalisation, as scikit-learn), homogeneity (each cluster
    holds one class), completeness (each class sits in one cluster), purity, and Cohen's
    kappa after matching clusters one-to-one to classes (Hungarian algorithm, maximising
    the units on the diagonal; clusters left without a class count as disagreements).
    """
    t = np.asarray(contingency, dtype=np.float64)
    t = t[t.sum(axis=1) > 0][:, t.sum(axis=0) > 0]
    n = t.sum()
    if n == 0:
        return dict.fromkeys(("ari", "nmi", "homogeneity", "completeness", "purity", "matched_kappa"), np.nan)
    a, b = t.sum(axis=1), t.sum(axis=0)

    def pairs(x):
        return (x * (x - 1) / 2).sum()

    index, sa, sb, total = pairs(t), pairs(a), pairs(b), n * (n - 1) / 2
    expected = sa * sb / total if total else 0.0
    maximum = (sa + sb) / 2
    ari = 1.0 if maximum == expected else (index - expected) / (maximum - expected)

    nz = t > 0
    mi = float((t[nz] / n * np.log(n * t[nz] / np.outer(a, b)[nz])).sum())
    h_cluster, h_class = _entropy(a), _entropy(b)
    homogeneity = 1.0 if h_class == 0 else mi / h_class
    completeness = 1.0 if h_cluster == 0 else mi / h_cluster
    mean_h = (h_cluster + h_class) / 2
    nmi = 1.0 if mean_h == 0 else mi / mean_h
    purity = t.max(axis=1).sum() / n

    rows, cols = linear_sum_assignment(-t)
    k = t.shape[1]
    confusion = np.zeros((k + 1, k))  # predicted class (k = unmatched cluster) x reference class
    matched = np.full(t.shape[0], k)
    matched[rows] = cols
    np.add.at(confusion, matched, t)
    square = np.zeros((k + 1, k + 1))
    square[:, :k] = confusion
    return {
        "ari": float(ari),
        "nmi": nmi,
        "homogeneity": homogeneity,
        "completeness": completeness,
        "purity": float(purity),
        "matched_kappa": float(kappa(square)),
    }


# ---------------------------------------------------------------- bootstrap


@dataclass(frozen=True)
class Bootstrap:
    """Resampling weights shared by every statistic of one comparison (a paired bootstrap).

    weights: (B, G) how often each group is drawn in each resample (multinomial)."""

    weights: np.ndarray
    level: float

    @classmethod
    def draw(cls, n_groups: int, resamples: int, seed: int, level: float) -> "Bootstrap":
        rng = np.random.default_rng(seed)
        if resamples <= 0 or n_groups == 0:
            return cls(np.zeros((0, n_groups)), level)
        w = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=resamples)
        return cls(w.astype(np.float64), level)

    def resample(self, tables: np.ndarray) -> np.ndarray:
        """(G, ...) group tables -> (B, ...) resampled totals."""
        return np.tensordot(self.weights, tables, axes=1)

    def interval(self, samples: np.ndarray, point=None) -> tuple[np.ndarray, np.ndarray]:
        """Bias-corrected percentile interval along axis 0 (plain percentiles without a point
        estimate), ignoring resamples where a statistic is undefined.

        The correction matters for the entropy-based cluster scores: resampled interviews are
        more alike than the corpus, so those resamples sit above the estimate."""
        from scipy.stats import norm

        if samples.shape[0] == 0:
            nan = np.full(samples.shape[1:], np.nan)
            return nan, nan
        tail = (1.0 - self.level) / 2
        probs = np.array([tail, 1 - tail])
        with np.errstate(invalid="ignore"), _quiet_nan():
            if point is None:
                lo, hi = np.nanpercentile(samples, probs * 100, axis=0)
                return lo, hi
            point = np.asarray(point, dtype=np.float64)
            valid = (~np.isnan(samples)).sum(axis=0)
            below = ((samples < point) + 0.5 * (samples == point)).sum(axis=0)
            share = np.clip(below / np.maximum(valid, 1), 1 / (valid + 1), valid / (valid + 1))
            z0 = norm.ppf(share)
            adjusted = norm.cdf(2 * z0 + norm.ppf(probs).reshape((2,) + (1,) * np.ndim(z0)))
            flat = samples.reshape(samples.shape[0], -1)
            adj = adjusted.reshape(2, -1)
            lo = np.array([np.nanpercentile(flat[:, j], adj[0, j] * 100) for j in range(flat.shape[1])])
            hi = np.array([np.nanpercentile(flat[:, j], adj[1, j] * 100) for j in range(flat.shape[1])])
            return lo.reshape(point.shape), hi.reshape(point.shape)

    def estimate(self, tables: np.ndarray, stat: Callable[[np.ndarray], np.ndarray]):
        """(value, ci_low, ci_high) of a batch-aware statistic over (G, ...) group tables."""
        value = stat(tables.sum(axis=0))
        lo, hi = self.interval(stat(self.resample(tables)), value)
        return value, lo, hi


class _quiet_nan:
    """Silences numpy's 'All-NaN slice' warning: an all-NaN column simply has no interval."""

    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


# ---------------------------------------------------------------- comparisons of raters

CONSENSUS = "consensus"


@dataclass
class Ratings:
    """Every rater's labels for the same units at one level (dimension or second-order).

    primary: rater -> (units,) index into categories of the one label used by kappa and
        alpha (MISSING where the rater has no coding for the unit).
    present: rater -> (units, k) booleans, every label the rater gave (multi-label); rows
        of missing units are all False.
    """

    level: str
    categories: list[str]
    primary: dict[str, np.ndarray]
    present: dict[str, np.ndarray]

    def consensus(self, humans: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Consensus of the human coders: (primary, present, usable).

        A unit has a consensus primary label where at least two coders coded it and all
        who did agree; for each label, presence is usable where those coders all agree on
        whether the label applies."""
        prim = np.stack([self.primary[h] for h in humans], axis=1)
        coded = prim != MISSING
        enough = coded.sum(axis=1) >= 2
        first = np.where(coded, prim, np.iinfo(np.int64).max).min(axis=1)
        same = np.all(~coded | (prim == first[:, None]), axis=1)
        primary = np.where(enough & same, first, MISSING)
        pres = np.stack([self.present[h] for h in humans], axis=1)  # units, humans, k
        n_yes = (pres & coded[:, :, None]).sum(axis=1)
        n_coded = coded.sum(axis=1)[:, None]
        usable = enough[:, None] & ((n_yes == 0) | (n_yes == n_coded))
        return primary, n_yes == n_coded, usable


def _row(level, metric, a, b, dimension, value, lo, hi, n):
    def num(x):
        x = float(x)
        return None if np.isnan(x) else x

    return {
        "level": level,
        "metric": metric,
        "coder_a": a,
        "coder_b": b,
        "dimension": dimension,
        "value": num(value),
        "ci_low": num(lo),
        "ci_high": num(hi),
        "n": int(n),
    }


def compare_ratings(
    r: Ratings, humans: list[str], machine: str, groups: np.ndarray, n_groups: int, boot: Bootstrap
) -> tuple[list[dict], list[dict], list[str]]:
    """Kappa per rater pair (and machine vs consensus), alpha with and without the machine,
    agreement on label sets (exact set, Jaccard, per-label kappa; _set_rows), and per-label
    precision / recall / F1 of the machine against each coder and the consensus, with their
    macro (mean over labels) and micro (pooled counts) averages.

    Returns (agreement rows, confusion rows, warnings)."""
    k = len(r.categories)
    rows: list[dict] = []
    confusion: list[dict] = []
    warnings: list[str] = []
    cons_primary, cons_present, cons_usable = r.consensus(humans) if len(humans) >= 2 else (None, None, None)
    primaries = dict(r.primary)
    raters = [*humans, machine]
    pairs = [(a, b) for i, a in enumerate(raters) for b in raters[i + 1 :]]
    if cons_primary is not None:
        primaries[CONSENSUS] = cons_primary
        pairs.append((machine, CONSENSUS))

    for a, b in pairs:
        tables = confusion_tables(primaries[a], primaries[b], groups, n_groups, k)
        total = tables.sum(axis=0)
        n = int(total.sum())
        if n == 0:
            warnings.append(f"{a} and {b} share no coded utterance at the {r.level} level; no kappa for this pair")
            continue
        value, lo, hi = boot.estimate(tables, kappa)
        rows.append(_row(r.level, "cohen_kappa", a, b, None, value, lo, hi, n))
        for i, la in enumerate(r.categories):
            for j, lb in enumerate(r.categories):
                confusion.append(
                    {"level": r.level, "coder_a": a, "coder_b": b, "label_a": la, "label_b": lb, "n": int(total[i, j])}
                )

    sets = [humans, raters] if len(humans) >= 2 else [raters]
    for who in sets:
        values = np.stack([r.primary[x] for x in who], axis=1)
        tables = coincidence_tables(values, groups, n_groups, k)
        n = int(((values != MISSING).sum(axis=1) >= 2).sum())
        if n == 0:
            warnings.append(f"{'+'.join(who)}: no utterance coded by two of them; no alpha")
            continue
        value, lo, hi = boot.estimate(tables, alpha)
        rows.append(_row(r.level, "krippendorff_alpha", "+".join(who), None, None, value, lo, hi, n))

    rows += _set_rows(r, humans, machine, cons_primary, cons_present, cons_usable, groups, n_groups, boot)

    m_present = r.present[machine]
    m_coded = r.primary[machine] != MISSING
    refs = [(h, r.present[h], (r.primary[h] != MISSING)[:, None] & np.ones((1, k), bool)) for h in humans]
    if cons_primary is not None:
        assert cons_present is not None and cons_usable is not None  # consensus() gives all three
        refs.append((CONSENSUS, cons_present, cons_usable))
    real = [i for i, c in enumerate(r.categories) if c != "none"]
    for ref, present, usable in refs:
        usable = usable & m_coded[:, None]
        tables = presence_tables(m_present, present, usable, groups, n_groups)
        n_units = usable.sum(axis=0)
        for metric, pos in (("precision", 0), ("recall", 1), ("f1", 2)):

            def stat(t, pos=pos):
                return precision_recall_f1(t)[pos]

            value, lo, hi = boot.estimate(tables, stat)
            for i, label in enumerate(r.categories):
                if tables[:, i].sum() == 0:
                    continue  # neither side ever used the label
                rows.append(_row(r.level, metric, machine, ref, label, value[i], lo[i], hi[i], n_units[i]))

            def macro(t, pos=pos):
                with _quiet_nan():
                    return np.nanmean(precision_recall_f1(t[..., real, :])[pos], axis=-1)

            value, lo, hi = boot.estimate(tables, macro)
            rows.append(
                _row(r.level, metric, machine, ref, "macro", value, lo, hi, int(usable[:, real].all(axis=1).sum()))
            )

            def micro(t, pos=pos):  # every (unit, label) decision counts once: frequent labels weigh more
                return precision_recall_f1(t[..., real, :].sum(axis=-2))[pos]

            value, lo, hi = boot.estimate(tables, micro)
            rows.append(
                _row(r.level, metric, machine, ref, "micro", value, lo, hi, int(usable[:, real].all(axis=1).sum()))
            )
    return rows, confusion, warnings


def _set_rows(
    r: Ratings,
    humans: list[str],
    machine: str,
    cons_primary,
    cons_present,
    cons_usable,
    groups: np.ndarray,
    n_groups: int,
    boot: Bootstrap,
) -> list[dict]:
    """Agreement on label sets, for passages that carry several codes: per rater pair (coders with
    each other, the machine with each coder and the consensus) the share of units with exactly the
    same set of labels, the mean Jaccard overlap of the sets, and per label Cohen's kappa on
    whether the label applies (label_kappa; 'macro' = its mean over the labels either rater used)."""
    present, coded = dict(r.present), {x: r.primary[x] != MISSING for x in r.primary}
    raters = [*humans, machine]
    pairs = [(a, b) for i, a in enumerate(raters) for b in raters[i + 1 :]]
    if cons_primary is not None:
        present[CONSENSUS] = cons_present
        coded[CONSENSUS] = cons_usable.all(axis=1)  # the coders agree on the whole set
        pairs.append((machine, CONSENSUS))
    real = np.array([c != "none" for c in r.categories])
    rows = []
    for a, b in pairs:
        usable = coded[a] & coded[b]
        n = int(usable.sum())
        if n == 0:
            continue
        tables = set_tables(present[a], present[b], usable, groups, n_groups)
        for metric, col in (("exact_set", 0), ("jaccard", 1)):

            def share(t, col=col):
                with np.errstate(invalid="ignore", divide="ignore"):
                    return t[..., col] / t[..., 2]

            value, lo, hi = boot.estimate(tables, share)
            rows.append(_row(r.level, metric, a, b, None, value, lo, hi, n))
        conf = label_confusion_tables(present[a], present[b], usable[:, None] & real[None, :], groups, n_groups)
        used = conf[..., 1, :].sum(axis=(0, 2)) + conf[..., :, 1].sum(axis=(0, 2)) > 0
        if not used.any():
            continue
        value, lo, hi = boot.estimate(conf, kappa)
        for i in np.flatnonzero(used):
            rows.append(_row(r.level, "label_kappa", a, b, r.categories[i], value[i], lo[i], hi[i], n))

        def mean_kappa(t, used=used):
            with _quiet_nan():
                return np.nanmean(kappa(t[..., used, :, :]), axis=-1)

        value, lo, hi = boot.estimate(conf, mean_kappa)
        rows.append(_row(r.level, "label_kappa", a, b, "macro", value, lo, hi, n))
    return rows


def compare_clusters(
    clusters: np.ndarray,
    n_clusters: int,
    references: dict[str, np.ndarray],
    n_classes: int,
    machine: str,
    groups: np.ndarray,
    n_groups: int,
    boot: Bootstrap,
    level: str = "code",
) -> list[dict]:
    """Cluster-vs-human-code alignment of the machine's first-order codes with each reference.

    Intervals: jackknife over groups (value +- z * SE, leaving out one group at a time). A
    bootstrap does not fit these scores: resamples repeat whole interviews, which makes the
    contingency table sparser and inflates the entropy-based scores (NMI, homogeneity,
    completeness) above the estimate in nearly every resample."""
    from scipy.stats import norm

    rows = []
    z = norm.ppf(0.5 + boot.level / 2)
    for ref, classes in references.items():
        tables = contingency_tables(clusters, classes, groups, n_groups, n_clusters, n_classes)
        n = int(tables.sum())
        if n == 0:
            continue
        total = tables.sum(axis=0)
        point = cluster_scores(total)
        used = [g for g in range(n_groups) if tables[g].any()]
        leave_out = [cluster_scores(total - tables[g]) for g in used] if boot.weights.shape[0] and len(used) > 2 else []
        for metric, value in point.items():
            lo = hi = np.nan
            if leave_out:
                v = np.array([s[metric] for s in leave_out])
                se = np.sqrt((len(v) - 1) / len(v) * ((v - v.mean()) ** 2).sum())
                lo, hi = value - z * se, value + z * se
            rows.append(_row(level, metric, machine, ref, None, value, lo, hi, n))
    return rows
