"""Group-level shift: what a group's speakers have in common, between which waves, with what
certainty, and how groups differ; plus per-speaker tests that borrow strength from the others.

Input is one `PairEstimate` per speaker and wave pair (the shift stage builds them): the
speaker's change per theme at three levels (dimension probabilities, second-order concept
labels, first-order codes) with its between-unit variance (shift_inference.pair_moments).
Output are the tables group_changes, group_contrasts and shift_codes_change, and per-speaker
moderated p-values, intervals and shrunken changes for shifts and shift_dimensions.

Which speakers form a group: `[shift] group_by` (speaker_role by default, or any manifest
column), plus 'all'. Rows per wave pair (every speaker seen in both waves), and one row per
group for each speaker's own first -> last wave when speakers were seen in different waves
(wave_from and wave_to are then null); a pair row that already is every speaker's first ->
last is marked is_first_last instead of repeated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import pandas as pd

from pipeline.settings import ShiftSettings
from pipeline.shift_inference import (
    PairMoments,
    RandomEffects,
    bonferroni,
    contrast,
    fit_prior,
    moderate,
    random_effects,
    shrink,
    t_interval,
)
from pipeline.shift_stats import benjamini_hochberg

LEVELS = ("dimension", "concept", "code")
CONTRAST_LEVELS = ("dimension", "concept")
MIN_GROUP = 2  # speakers a group needs for an interval and a p-value
MIN_SHRINK_GROUP = 3  # speakers a group needs to be the target of a speaker's shrunken change
VARIANCE_FLOOR = 1e-6  # a speaker's variance of a change is never taken as exactly 0
CHI2_MEDIAN = 0.454936  # median of chi-square with 1 df


@dataclass
class PairEstimate:
    speaker_id: str
    group: str | None
    wave_from: int
    wave_to: int
    is_first_last: bool
    unit: str  # interview or block (the resampling unit)
    moments: dict[str, PairMoments] = field(default_factory=dict)
    # filled by moderate_all: per level, moderated variance of the change and its degrees of freedom
    var: dict[str, np.ndarray] = field(default_factory=dict)
    df: dict[str, np.ndarray] = field(default_factory=dict)


# ---------------------------------------------------------------- per speaker: moderation


def moderate_all(pairs: list[PairEstimate]) -> None:
    """Moderated variances for every pair and level, from priors (d0, s0^2) per level, unit and theme.

    The prior is fitted separately for interview and block units (their variances differ in kind);
    a unit kind with fewer than three speakers borrows the prior fitted on all pairs."""
    for level in LEVELS:
        have = [p for p in pairs if level in p.moments]
        if not have:
            continue
        S2 = np.vstack([p.moments[level].s2 for p in have])
        DF = np.array([p.moments[level].df for p in have], dtype=np.float64)
        units = np.array([p.unit for p in have])
        out_var, out_df = np.full(S2.shape, np.nan), np.full(S2.shape, np.nan)
        everyone = [fit_prior(S2[:, j], DF) for j in range(S2.shape[1])]
        for unit in sorted(set(units)):
            rows = units == unit
            fits = [fit_prior(S2[rows, j], DF[rows]) for j in range(S2.shape[1])]
            fits = [f if f[0] > 0 else everyone[j] for j, f in enumerate(fits)]
            for j, (d0, s0sq) in enumerate(fits):
                out_var[rows, j], out_df[rows, j] = moderate(S2[rows, j], DF[rows], d0, s0sq)
        for i, p in enumerate(have):
            c = p.moments[level].c
            p.var[level] = np.maximum(out_var[i] * c, VARIANCE_FLOOR)
            p.df[level] = out_df[i]


def interview_excess(pairs: list[PairEstimate], level: str, fits_by: dict, sizes: dict) -> dict[tuple, np.ndarray]:
    """Per wave pair and theme, the variance between two interviews of one person that blocks of a
    single interview cannot show, borrowed from the other speakers with one interview per wave.

    An empirical null (Efron): each speaker's deviation from their group's mean change, over its
    standard error inflated by the excess e, should look like a standard normal for most speakers;
    e is the smallest value that brings the median of the squared ratios down to chi-square(1)'s
    median (0.455). The median lets up to half the speakers have changed in their own way."""
    out = {}
    by_pair: dict[tuple, list[PairEstimate]] = {}
    for p in pairs:
        if p.unit == "block" and level in p.var:
            by_pair.setdefault((p.wave_from, p.wave_to), []).append(p)
    for key, ps in by_pair.items():
        if len(ps) < MIN_SHRINK_GROUP:
            continue
        deviations = []
        for p in ps:
            fits = shrink_target(fits_by, p, level, sizes)
            centre = np.array([f.estimate for f in fits]) if fits is not None else 0.0
            deviations.append(p.moments[level].change - centre)
        R, V = np.vstack(deviations), np.vstack([p.var[level] for p in ps])
        excess = np.zeros(R.shape[1])
        for j in range(R.shape[1]):

            def median_ratio(e: float, r2: np.ndarray = R[:, j] ** 2, v: np.ndarray = V[:, j]) -> float:
                return float(np.median(r2 / (v + e)))

            if median_ratio(0.0) <= CHI2_MEDIAN:
                continue
            lo, hi = 0.0, float(np.max(R[:, j] ** 2)) + 1e-12
            for _ in range(60):  # the median ratio falls as e grows: bisect
                mid = (lo + hi) / 2
                lo, hi = (mid, hi) if median_ratio(mid) > CHI2_MEDIAN else (lo, mid)
            excess[j] = hi
        out[key] = excess
    return out


def speaker_test(p: PairEstimate, level: str, ci_level: float, excess: np.ndarray | None = None) -> dict:
    """Moderated t per theme: p-values, intervals; and the profile's p (Bonferroni over themes:
    K - 1 of K shares are free, so two themes are one test). With one interview in each wave the
    between-interview variance the blocks miss (interview_excess) is added."""
    m = p.moments[level]
    extra = excess if (p.unit == "block" and excess is not None) else 0.0
    se = np.sqrt(p.var[level] + extra)
    pv, lo, hi = t_interval(m.change, se, p.df[level], ci_level)
    return {"se": se, "p": pv, "ci_low": lo, "ci_high": hi, "df": p.df[level], "p_profile": bonferroni(pv)}


def speaker_tests(
    pairs: list[PairEstimate], level: str, fits_by: dict, s: ShiftSettings
) -> dict[tuple, tuple[dict, np.ndarray]]:
    """(speaker_test, shrunken change) of every pair holding `level`, keyed by (speaker, wave_from,
    wave_to): the between-interview variance borrowed where shift.interview_variance says so, and
    each change shrunk towards its group's."""
    sizes = group_sizes(pairs)
    excess = interview_excess(pairs, level, fits_by, sizes) if s.interview_variance == "borrow" else {}
    out = {}
    for p in pairs:
        if level in p.moments:
            test = speaker_test(p, level, s.ci_level, excess.get((p.wave_from, p.wave_to)))
            shrunk = shrunken(p, level, shrink_target(fits_by, p, level, sizes))
            out[(p.speaker_id, p.wave_from, p.wave_to)] = (test, shrunk)
    return out


# ---------------------------------------------------------------- groups


def group_sets(pairs: list[PairEstimate]) -> list[tuple[str, int | None, int | None, bool, list[PairEstimate]]]:
    """(group, wave_from, wave_to, is_first_last, pairs) for 'all' and each group: one set per wave
    pair, and one for each speaker's first -> last unless a pair set already is exactly that."""
    groups = ["all"] + sorted({p.group for p in pairs if p.group is not None})
    out: list[tuple[str, int | None, int | None, bool, list[PairEstimate]]] = []
    for g in groups:
        members = [p for p in pairs if g == "all" or p.group == g]
        firsts = [p for p in members if p.is_first_last]
        first_pairs = {(p.wave_from, p.wave_to) for p in firsts}
        by_pair: dict[tuple[int, int], list[PairEstimate]] = {}
        for p in members:
            by_pair.setdefault((p.wave_from, p.wave_to), []).append(p)
        for (wf, wt), ps in sorted(by_pair.items()):
            is_fl = first_pairs == {(wf, wt)} and len(ps) == len(firsts)
            out.append((g, wf, wt, is_fl, ps))
        if len(first_pairs) > 1:
            out.append((g, None, None, True, firsts))
    return out


def _fits(ps: list[PairEstimate], level: str, ci_level: float) -> list[RandomEffects]:
    Y = np.vstack([p.moments[level].change for p in ps])
    V = np.vstack([p.var[level] for p in ps])
    return [random_effects(Y[:, j], V[:, j], ci_level) for j in range(Y.shape[1])]


def group_tables(
    pairs: list[PairEstimate], themes: dict[str, list[str]], s: ShiftSettings, warnings: list[str]
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """group_changes and group_contrasts (as frames), and the fits by (group, wf, wt, level)
    that shrink each speaker's change."""
    level_ci = s.ci_level
    rows, fits_by = [], {}
    for g, wf, wt, is_fl, ps in group_sets(pairs):
        if g != "all" and len({p.speaker_id for p in ps}) < MIN_GROUP:
            warnings.append(
                f"[shift] group_by: group {g!r} has one speaker in waves "
                f"{'first -> last' if wf is None else f'{wf} -> {wt}'}; no interval or p-value for it"
            )
        base = {"group": g, "wave_from": wf, "wave_to": wt, "is_first_last": is_fl, "n_speakers": len(ps)}
        for level in LEVELS:
            if not all(level in p.moments for p in ps):
                continue
            fits = _fits(ps, level, level_ci)
            fits_by[(g, wf, wt, level)] = fits
            SF = np.vstack([p.moments[level].share_from for p in ps])
            ST = np.vstack([p.moments[level].share_to for p in ps])
            Y = ST - SF
            for j, fit in enumerate(fits):
                if level != "dimension" and not (SF[:, j].any() or ST[:, j].any()):
                    continue  # a concept or code none of the group's speakers used in these waves
                w = fit.weights / fit.weights.sum()
                rows.append(
                    {
                        **base,
                        "level": level,
                        "theme": themes[level][j],
                        "share_from": float(w @ SF[:, j]),
                        "share_to": float(w @ ST[:, j]),
                        "change": fit.estimate,
                        "ci_low": fit.ci_low,
                        "ci_high": fit.ci_high,
                        "se": fit.se,
                        "p_value": fit.p_value,
                        "method": "random_effects_hksj" if fit.k > 1 else None,
                        "tau2": fit.tau2,
                        "i2": fit.i2,
                        "n_rising": int((Y[:, j] > 0).sum()),
                        "n_falling": int((Y[:, j] < 0).sum()),
                    }
                )
            if level == "dimension":
                rows.append({**base, **_profile_row(fits, len(ps))})
    changes = pd.DataFrame(rows)
    if len(changes):
        for _, idx in changes.groupby("level").groups.items():
            changes.loc[idx, "q_value"] = benjamini_hochberg(changes.loc[idx, "p_value"].to_numpy(dtype=float))
    contrasts = _contrasts(fits_by, themes, level_ci)
    return changes, contrasts, fits_by


def _profile_row(fits: list[RandomEffects], n_speakers: int) -> dict:
    """The whole dimension profile: total-variation distance between the group's mean profiles
    (half the summed absolute mean changes; its interval: half the summed interval ends' absolute
    values is no interval, so none is given) and the Bonferroni p-value over the dimensions'
    tests (K - 1 of K shares are free, so two dimensions make one test)."""
    estimate = 0.5 * float(np.abs([f.estimate for f in fits]).sum())
    out = {"level": "profile", "theme": None, "change": estimate, "n_rising": None, "n_falling": None}
    p = np.array([f.p_value for f in fits], dtype=float)
    if n_speakers >= MIN_GROUP and np.isfinite(p).any():
        out.update(p_value=bonferroni(p), method="random_effects_bonferroni")
    return out


def _contrasts(fits_by: dict, themes: dict[str, list[str]], level_ci: float) -> pd.DataFrame:
    rows = []
    keys = sorted(
        {(wf, wt, level) for (g, wf, wt, level) in fits_by if g != "all"},
        key=lambda k: (k[0] is None, k[0] or 0, k[1] or 0, k[2]),
    )
    for wf, wt, level in keys:
        if level not in CONTRAST_LEVELS:
            continue
        groups = sorted(g for (g, f, t, lv) in fits_by if g != "all" and (f, t, lv) == (wf, wt, level))
        for ga, gb in combinations(groups, 2):
            fa, fb = fits_by[(ga, wf, wt, level)], fits_by[(gb, wf, wt, level)]
            for j, (a, b) in enumerate(zip(fa, fb)):
                diff, se, lo, hi, p = contrast(a, b, level_ci)
                rows.append(
                    {
                        "group_a": ga,
                        "group_b": gb,
                        "wave_from": wf,
                        "wave_to": wt,
                        "is_first_last": wf is None,
                        "level": level,
                        "theme": themes[level][j],
                        "n_a": a.k,
                        "n_b": b.k,
                        "change_a": a.estimate,
                        "change_b": b.estimate,
                        "difference": diff,
                        "ci_low": lo,
                        "ci_high": hi,
                        "se": se,
                        "p_value": p,
                        "method": "random_effects_welch" if np.isfinite(p) else None,
                    }
                )
    out = pd.DataFrame(rows)
    if len(out):
        for _, idx in out.groupby("level").groups.items():
            out.loc[idx, "q_value"] = benjamini_hochberg(out.loc[idx, "p_value"].to_numpy(dtype=float))
    return out


def shrink_target(fits_by: dict, p: PairEstimate, level: str, group_sizes: dict) -> list[RandomEffects] | None:
    """The fits a speaker's change is shrunk towards: its own group's, or 'all' when the group is
    too small (or the speaker has none)."""
    for g in (p.group, "all"):
        if g is not None and group_sizes.get((g, p.wave_from, p.wave_to), 0) >= MIN_SHRINK_GROUP:
            return fits_by.get((g, p.wave_from, p.wave_to, level))
    return None


def shrunken(p: PairEstimate, level: str, fits: list[RandomEffects] | None) -> np.ndarray:
    y = p.moments[level].change
    if fits is None:
        return np.full(len(y), np.nan)
    return np.array([float(shrink(np.array([y[j]]), np.array([p.var[level][j]]), f)[0]) for j, f in enumerate(fits)])


def group_sizes(pairs: list[PairEstimate]) -> dict:
    sizes: dict = {}
    for p in pairs:
        for g in ("all", p.group):
            if g is not None:
                key = (g, p.wave_from, p.wave_to)
                sizes[key] = sizes.get(key, 0) + 1
    return sizes


# ---------------------------------------------------------------- what a researcher reads first


def _pts(x: float) -> str:
    return f"{100 * x:+.1f}"


def detectable(se: float, df: float, alpha: float) -> float:
    """The change a test with this standard error detects with 80% power at alpha (two-sided)."""
    from scipy import stats

    df = df if np.isfinite(df) and df > 0 else np.inf
    return float((stats.t.ppf(1 - alpha / 2, df) + stats.t.ppf(0.8, df)) * se)


def headline(changes: pd.DataFrame, dims: pd.DataFrame, alpha: float) -> list[str]:
    """Findings, estimation first: per group and wave pair the dimensions that moved most, with
    their interval and p (random effects), then how many speakers changed and what change one
    speaker would need to show for this design to detect it."""
    lines = []
    if changes.empty:
        return ["no speaker has two waves with enough coded utterances: no shift to estimate"]
    d = changes[(changes["level"] == "dimension") & changes["p_value"].notna()]
    order = sorted(d["group"].unique(), key=lambda g: (g == "all", g))
    for g in order:
        rows = d[d["group"] == g]
        for (wf, wt), r in rows.groupby([rows["wave_from"].fillna(-1), rows["wave_to"].fillna(-1)], sort=True):
            r = r.reindex(r["change"].abs().sort_values(ascending=False).index)
            waves = "first -> last wave" if wf < 0 else f"wave {int(wf)} -> {int(wt)}"
            parts = [
                f"{x.theme} {_pts(x.change)} points [{_pts(x.ci_low)}, {_pts(x.ci_high)}], p {x.p_value:.3f}"
                for x in r.head(2).itertuples()
            ]
            mde = detectable(float(r["se"].median()), float(r["n_speakers"].iloc[0]) - 1, alpha)
            lines.append(
                f"{g} ({int(r['n_speakers'].iloc[0])} speakers), {waves}: "
                + "; ".join(parts)
                + f" (random effects; a mean change of about {100 * mde:.0f} points is detectable)"
            )
    if len(dims) and "p_value" in dims:
        ok = dims[dims["p_value"].notna()]
        if len(ok):
            pairs = ok.groupby(["speaker_id", "wave_from", "wave_to"])
            flagged = pairs["q_value"].min().lt(alpha).sum()
            mde = detectable(float(ok["change_se"].median()), float(ok["df"].median()), alpha)
            lines.append(
                f"speakers: {flagged} of {pairs.ngroups} wave pairs changed in a dimension at q < {alpha} "
                f"(moderated t); in this design one speaker's change must be about {100 * mde:.0f} points "
                "to be detectable"
            )
    return lines
