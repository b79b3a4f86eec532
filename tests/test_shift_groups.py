"""Group-level shift inference and per-speaker tests that borrow strength.

Random effects are checked against the textbook DerSimonian-Laird analysis of the BCG vaccine
trials (Colditz et al. 1994; metafor's dat.bcg: estimate -0.7141, tau^2 0.3088, I^2 92.12%,
SE 0.1787); the moderated statistic on a planted case; calibration on a null with few units;
and the group contrast on the example study's planted CORE / PROJECT effects.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.config import load_config
from pipeline.errors import ConfigError
from pipeline.settings import ShiftSettings, settings_for
from pipeline.shift import compute_shifts
from pipeline.shift_inference import contrast, fit_prior, moderate, pair_moments, random_effects

from conftest import EXAMPLE
from test_shift_inference import _tables

BCG = np.array([[4, 119, 11, 128], [6, 300, 29, 274], [3, 228, 11, 209], [62, 13536, 248, 12619],
                [33, 5036, 47, 5761], [180, 1361, 372, 1079], [8, 2537, 10, 619], [505, 87886, 499, 87892],
                [29, 7470, 45, 7232], [17, 1699, 65, 1600], [186, 50448, 141, 27197], [5, 2493, 3, 2338],
                [27, 16886, 29, 17825]], dtype=float)


def test_random_effects_match_the_textbook_bcg_analysis():
    a, b, c, d = BCG.T
    y = np.log((a / (a + b)) / (c / (c + d)))
    v = 1 / a - 1 / (a + b) + 1 / c - 1 / (c + d)
    fit = random_effects(y, v, 0.95)
    assert fit.estimate == pytest.approx(-0.7141, abs=5e-4)
    assert fit.tau2 == pytest.approx(0.3088, abs=5e-4)
    assert fit.i2 == pytest.approx(0.9212, abs=5e-4)
    plain_se = np.sqrt(1 / fit.weights.sum())
    assert plain_se == pytest.approx(0.1787, abs=5e-4)
    # HKSJ: se * sqrt(max(1, q)) with q the weighted residual variance; t with k - 1 = 12 df
    q = (fit.weights * (y - fit.estimate) ** 2).sum() / 12
    assert fit.se == pytest.approx(plain_se * np.sqrt(max(1.0, q)), rel=1e-9)
    assert fit.ci_low < fit.estimate < fit.ci_high < 0 and fit.p_value < 0.01


def test_contrast_is_a_welch_difference_of_two_fits():
    a = random_effects(np.array([0.3, 0.25, 0.35, 0.2]), np.full(4, 0.01), 0.95)
    b = random_effects(np.array([0.0, 0.05, -0.05, 0.02, -0.01]), np.full(5, 0.01), 0.95)
    diff, se, lo, hi, p = contrast(a, b, 0.95)
    assert diff == pytest.approx(a.estimate - b.estimate)
    assert se == pytest.approx(np.hypot(a.se, b.se))
    assert lo < diff < hi and p < 0.05


def test_pair_moments_are_the_cluster_robust_variance():
    """Two waves of two interviews each: the change and var = s2 * c computed by hand."""
    SA, nA = np.array([[6.0, 4.0], [3.0, 7.0]]), np.array([10.0, 10.0])
    SB, nB = np.array([[8.0, 2.0], [7.0, 3.0]]), np.array([10.0, 10.0])
    m = pair_moments(SA, nA, SB, nB)
    assert m.change == pytest.approx([0.75 - 0.45, 0.25 - 0.55])
    # wave A: residuals 6 - 4.5 = 1.5, 3 - 4.5 = -1.5 -> 2 * 2.25 / 400 * 2 = 0.0225; wave B: 0.5^2 * 2 / 400 * 2
    var = 0.0225 + 0.0025
    assert m.c == pytest.approx(0.5 + 0.5) and m.df == 2
    assert m.s2 * m.c == pytest.approx([var, var])


def test_moderation_recovers_a_planted_prior_and_pulls_variances_towards_it():
    rng = np.random.default_rng(1)
    s0sq, d0 = 0.04, 8.0
    true = s0sq * d0 / rng.chisquare(d0, 4000)
    s2 = true * rng.chisquare(4, 4000) / 4
    est_d0, est_s0sq = fit_prior(s2, np.full(4000, 4))
    assert est_d0 == pytest.approx(d0, rel=0.25) and est_s0sq == pytest.approx(s0sq, rel=0.1)
    post, df = moderate(np.array([0.0, 1.0]), np.array([4, 4]), est_d0, est_s0sq)
    assert 0 < post[0] < est_s0sq < post[1] < 1.0 and (df == est_d0 + 4).all()


def _interview_speakers(n: int, per_wave: int, shift: float, seed: int):
    """Speakers with `per_wave` interviews of 40 units a wave; each interview has its own dimension
    mix around the speaker's (interviews differ, as real ones do); shift moves wave 2 to exchange."""
    rng = np.random.default_rng(seed)
    rows, probs = [], []
    for s in range(n):
        base = rng.dirichlet([4, 4, 4])
        for wave in (1, 2):
            for i in range(per_wave):
                mix = rng.dirichlet(30 * base)
                if wave == 2 and shift:
                    mix = (1 - shift) * mix + shift * np.array([0, 0, 1.0])
                for t in range(40):
                    probs.append(rng.dirichlet(10 * mix + 0.3))
                    rows.append((f"S{s:03d}", wave, f"S{s:03d}-W{wave}-{i}", t))
    return _tables(pd.DataFrame(rows, columns=["speaker_id", "wave", "interview_id", "turn"]), np.asarray(probs))


def _settings(**shift):
    return settings_for(ShiftSettings, load_config(overrides={"shift": {"bootstrap": 0, "permutations": 200, **shift}}))


def test_two_interviews_a_wave_get_a_calibrated_continuous_p_value():
    """2 + 2 interviews allow 6 labellings (p >= 1/6): the permutation can never flag anyone. The
    moderated t flags about alpha of unchanged speakers and most speakers with a planted change."""
    null = compute_shifts(*_interview_speakers(150, 2, 0.0, seed=5), _settings()).shifts.to_pandas()
    assert (null["p_method"] == "moderated_t").all() and (null["resample_unit"] == "interview").all()
    assert np.allclose(null["p_min"], 1 / 6)
    fpr = (null["p_value"] < 0.05).mean()
    assert 0.005 <= fpr <= 0.08, fpr
    assert len(np.unique(null.loc[null["p_value"] < 1, "p_value"].round(6))) > 50  # continuous, no floor
    planted = compute_shifts(*_interview_speakers(40, 2, 0.3, seed=6), _settings()).shifts.to_pandas()
    assert (planted["p_value"] < 0.05).mean() >= 0.7
    perm = compute_shifts(*_interview_speakers(40, 2, 0.3, seed=6), _settings(speaker_test="permutation")).shifts
    assert set(perm.column("status").to_pylist()) == {"too_few_units"}


def test_group_test_is_calibrated_and_finds_a_planted_mean_change():
    rng_null = [compute_shifts(*_interview_speakers(8, 1, 0.0, seed=s), _settings()).group_changes.to_pandas()
                for s in range(40)]
    p = np.array([g[(g["level"] == "dimension") & (g["theme"] == "exchange")]["p_value"].iloc[0] for g in rng_null])
    assert (p < 0.05).mean() <= 0.1
    g = compute_shifts(*_interview_speakers(8, 1, 0.2, seed=99), _settings()).group_changes.to_pandas()
    row = g[(g["group"] == "all") & (g["level"] == "dimension") & (g["theme"] == "exchange")].iloc[0]
    assert row["n_speakers"] == 8 and row["is_first_last"] and row["ci_low"] > 0 and row["p_value"] < 0.05
    assert row["change"] == pytest.approx(0.2 * (1 - row["share_from"]), abs=0.05)


def test_example_study_groups_contrast_core_and_project(example_shift):
    """The answer key plants CORE's move away from push (3 of 4 speakers) and PROJECT moves in several
    directions: CORE's push falls with an interval below zero, more than PROJECT's."""
    g = example_shift.group_changes.to_pandas()
    core = g[(g["group"] == "CORE") & (g["level"] == "dimension") & (g["theme"] == "push")].iloc[0]
    assert core["n_speakers"] == 4 and core["ci_high"] < 0 and core["p_value"] < 0.05
    assert (core["n_rising"], core["n_falling"]) == (0, 4) or core["n_falling"] >= 3
    c = example_shift.group_contrasts.to_pandas()
    push = c[(c["level"] == "dimension") & (c["theme"] == "push")].iloc[0]
    assert (push["group_a"], push["group_b"], push["n_a"], push["n_b"]) == ("CORE", "PROJECT", 4, 10)
    assert push["difference"] == pytest.approx(push["change_a"] - push["change_b"]) and push["difference"] < 0
    assert set(g["level"]) == {"profile", "dimension", "code"}  # the answer key names no concepts
    moved = example_shift.shift_codes_change.to_pandas()
    assert set(moved["level"]) == {"code"}
    assert np.allclose(moved["share_to"] - moved["share_from"], moved["change"])
    dims = example_shift.shift_dimensions.to_pandas()
    assert dims["p_value"].between(0, 1).all() and dims["change_shrunk"].notna().all()


@pytest.fixture(scope="module")
def example_shift(study):
    return compute_shifts(study["utterances"], study["dims"], settings_for(ShiftSettings, load_config()),
                          study["embeddings"], study["assignments"])


@pytest.fixture(scope="module")
def study(tmp_path_factory, encoder):
    from test_shift import study as make_study

    return make_study.__wrapped__(tmp_path_factory, encoder)


def test_group_by_names_a_manifest_column_or_fails_naming_the_key(example_segmented):
    import pyarrow.parquet as pq

    from test_shift import answer_key_dimensions

    utt = pq.read_table(example_segmented / "utterances.parquet")
    interviews = pq.read_table(example_segmented / "interviews.parquet")
    dims = answer_key_dimensions(utt)
    r = compute_shifts(utt, dims, _settings(group_by="profession"), interviews=interviews)
    groups = set(r.group_changes.column("group").to_pylist())
    assert "all" in groups and "statistician" in groups
    professions = pd.read_csv(EXAMPLE / "manifest.csv").groupby("profession")["speaker_id"].nunique()
    alone = sorted(professions[professions == 1].index)
    assert alone  # the example study has professions held by one speaker: one warning line each, no p-value
    for name in alone:
        assert any(w.startswith(f"[shift] group_by: group {name!r} has one speaker") for w in r.warnings), name
        row = r.group_changes.to_pandas().query("group == @name and level == 'dimension'").iloc[0]
        assert row["n_speakers"] == 1 and pd.isna(row["p_value"]) and pd.isna(row["ci_low"])
    with pytest.raises(ConfigError, match="shift.group_by: no column 'site'"):
        compute_shifts(utt, dims, _settings(group_by="site"), interviews=interviews)


def test_group_by_names_a_speakers_csv_column_and_names_stay_out_of_the_tables(tmp_path):
    """speakers.csv's own columns (here a site) become the speakers table and groups for shift; the
    'name' column, which holds real names, never reaches a table."""
    import shutil

    import pyarrow.parquet as pq

    from pipeline.runner import run_segment
    from test_shift import answer_key_dimensions

    corpus = tmp_path / "corpus"
    shutil.copytree(EXAMPLE, corpus)
    rows = (corpus / "speakers.csv").read_text(encoding="utf-8").splitlines()
    sites = ["North" if i % 2 else "South" for i in range(len(rows) - 1)]
    (corpus / "speakers.csv").write_text("\n".join([rows[0] + ",site,name"] + [
        f"{r},{s},Real Person {i}" for i, (r, s) in enumerate(zip(rows[1:], sites))]) + "\n", encoding="utf-8")
    run = tmp_path / "run"
    run_segment(corpus, run, load_config())
    speakers = pq.read_table(run / "speakers.parquet")
    assert speakers.column_names == ["speaker_id", "speaker_role", "is_interviewer", "site"]
    assert speakers.num_rows == len(rows) - 1
    utt = pq.read_table(run / "utterances.parquet")
    r = compute_shifts(utt, answer_key_dimensions(utt), _settings(group_by="site"), speakers=speakers)
    groups = set(r.group_changes.column("group").to_pylist())
    assert groups == {"all", "North", "South"}
    contrast = r.group_contrasts.to_pandas()
    assert set(zip(contrast["group_a"], contrast["group_b"])) == {("North", "South")}
