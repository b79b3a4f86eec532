"""shift inference: clustered resampling units, exact permutations, false-discovery q-values,
no verdict without evidence, and the question-matched shift.

Speakers here are built so the right answer is known: talk that drifts in topic blocks within
each interview (no change between waves) must not read as a shift, and whole interviews are the
unit when a wave has several.
"""
from __future__ import annotations

from math import comb

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from pipeline import schema
from pipeline.config import load_config
from pipeline.errors import ConfigError
from pipeline.map import TEMPERATURE_GRID, mapping_warnings
from pipeline.settings import ShiftSettings, settings_for
from pipeline.shift import compute_shifts
from pipeline.shift_stats import all_label_masks, benjamini_hochberg, exact_p

DIMS = ["push", "pull", "exchange"]


def _tables(frame: pd.DataFrame, P: np.ndarray, mapped: np.ndarray | None = None):
    n = len(frame)
    ids = [f"u{i:06d}" for i in range(n)]
    utterances = pa.table({
        "utterance_id": ids, "interview_id": frame["interview_id"].to_numpy(),
        "turn_index": pa.array(frame["turn"].to_numpy(), pa.int32()), "speaker_id": frame["speaker_id"].to_numpy(),
        "speaker_role": ["R"] * n, "wave": pa.array(frame["wave"].to_numpy(), pa.int32()),
        "is_interviewer": np.zeros(n, bool), "coded": np.ones(n, bool)})
    mapped = np.ones(n, bool) if mapped is None else mapped
    dims = pa.table({"utterance_id": np.repeat(ids, 3), "dimension": DIMS * n, "probability": P.ravel(),
                     "mapped": np.repeat(mapped, 3)})
    return utterances, dims


def _topic_drift_speakers(n_speakers: int, seed: int = 3, shift: float = 0.0):
    """Each wave is one interview of 120 units in 24 answers of 5; the interview moves through
    6 topics of 20 units, each with its own strongly skewed dimension mix drawn from the same
    distribution in both waves (shift > 0 moves wave 2's mix towards 'exchange')."""
    rng = np.random.default_rng(seed)
    rows, probs = [], []
    for s in range(n_speakers):
        for wave in (1, 2):
            for topic in range(6):
                mix = rng.dirichlet([0.6, 0.6, 0.6])
                if wave == 2 and shift:
                    mix = (1 - shift) * mix + shift * np.array([0, 0, 1.0])
                for turn in range(4):
                    for _ in range(5):
                        probs.append(rng.dirichlet(20 * mix + 0.5))
                        rows.append((f"S{s:03d}", wave, f"S{s:03d}-W{wave}", topic * 4 + turn))
    frame = pd.DataFrame(rows, columns=["speaker_id", "wave", "interview_id", "turn"])
    return _tables(frame, np.asarray(probs))


def _settings(**shift):
    return settings_for(ShiftSettings, load_config(overrides={"shift": {"bootstrap": 0, **shift}}))


def test_topic_drift_within_interviews_is_not_a_shift_under_blocks_but_is_under_turns():
    utterances, dims = _topic_drift_speakers(150)
    blocks = compute_shifts(utterances, dims, _settings(speaker_test="permutation")).shifts.to_pandas()
    turns = compute_shifts(utterances, dims, _settings(resample_unit="turn")).shifts.to_pandas()
    assert (blocks["resample_unit"] == "block").all()
    assert (blocks["n_units_from"] == 4).all() and (blocks["n_units_to"] == 4).all()
    assert np.allclose(blocks["p_min"], 1 / comb(8, 4))  # 70 labellings <= 1000: all enumerated
    fpr_blocks, fpr_turns = (blocks["p_value"] < 0.05).mean(), (turns["p_value"] < 0.05).mean()
    assert fpr_blocks <= 0.08, fpr_blocks
    assert fpr_turns >= 0.2, fpr_turns  # answers treated as independent: topic reads as change


def test_a_real_shift_is_still_found_under_blocks():
    utterances, dims = _topic_drift_speakers(60, seed=5, shift=0.8)
    s = compute_shifts(utterances, dims, _settings()).shifts.to_pandas()
    assert (s["p_value"] < 0.05).mean() >= 0.8
    assert (s["to_dimension"] == "exchange").mean() >= 0.95


def test_blocks_are_runs_of_whole_answers_of_about_equal_size():
    # one speaker, one interview per wave: 7 answers of sizes 3,9,1,12,4,8,6 (43 units) in wave 1
    sizes = [3, 9, 1, 12, 4, 8, 6]
    turn = np.repeat(np.arange(len(sizes)), sizes)
    frame = pd.DataFrame({"speaker_id": "A", "wave": 1, "interview_id": "A-1", "turn": turn})
    frame = pd.concat([frame, frame.assign(wave=2, interview_id="A-2")], ignore_index=True)
    utterances, dims = _tables(frame, np.tile([0.6, 0.2, 0.2], (len(frame), 1)))
    s = compute_shifts(utterances, dims, _settings(blocks_per_interview=4, min_utterances_per_wave=1)).shifts.to_pandas()
    # an answer joins the block where it starts: starts 0,3,12,13,25,29,37 -> blocks 0,0,1,1,2,2,3
    # (start * 4 // 43), so 4 units of 12, 13, 12 and 6 units
    assert s.loc[0, "n_units_from"] == 4 and s.loc[0, "n_units_to"] == 4
    assert s.loc[0, "resample_unit"] == "block"
    assert s.loc[0, "p_min"] == pytest.approx(1 / comb(8, 4))


def test_whole_interviews_are_the_unit_when_a_wave_has_several():
    rng = np.random.default_rng(0)
    rows = [("A", w, f"A-{w}-{i}", t) for w, n_int in ((1, 3), (2, 2)) for i in range(n_int) for t in range(30)]
    frame = pd.DataFrame(rows, columns=["speaker_id", "wave", "interview_id", "turn"])
    utterances, dims = _tables(frame, rng.dirichlet([1, 1, 1], len(frame)))
    s = compute_shifts(utterances, dims, _settings(permutations=1000, speaker_test="permutation")).shifts.to_pandas().iloc[0]
    assert s["resample_unit"] == "interview" and (s["n_units_from"], s["n_units_to"]) == (3, 2)
    assert s["p_min"] == pytest.approx(1 / comb(5, 3))  # 10 labellings, all enumerated
    assert s["status"] == "too_few_units" and "p cannot fall below 0.100" in s["reason"]
    assert not s["significant"]


def test_exact_permutation_enumerates_every_labelling_once():
    masks = all_label_masks(3, 6)
    assert masks.shape == (20, 6) and (masks.sum(axis=1) == 3).all()
    assert len({m.tobytes() for m in masks}) == 20
    null = np.arange(20, dtype=float)
    assert exact_p(19.0, null) == pytest.approx(1 / 20)  # only the observed labelling reaches it
    assert exact_p(10.0, null) == pytest.approx(10 / 20)


def test_q_values_match_a_hand_computation_and_scipy():
    from scipy.stats import false_discovery_control

    p = np.array([0.01, 0.04, 0.03, np.nan, 0.20])
    # ranks of the four finite p: 0.01 (1), 0.03 (2), 0.04 (3), 0.20 (4); q = min over later ranks of p * 4 / rank
    expected = [0.04, 0.0533333, 0.0533333, np.nan, 0.20]
    q = benjamini_hochberg(p)
    assert q == pytest.approx(expected, nan_ok=True, abs=1e-6)
    finite = np.isfinite(p)
    assert q[finite] == pytest.approx(false_discovery_control(p[finite], method="bh"))


def test_shifts_carry_q_values_over_the_scored_pairs():
    utterances, dims = _topic_drift_speakers(40, seed=11, shift=0.3)
    s = compute_shifts(utterances, dims, _settings()).shifts.to_pandas()
    ok = s["status"] == "ok"
    assert ok.all()
    assert s["q_value"].to_numpy() == pytest.approx(benjamini_hochberg(s["p_value"].to_numpy()))
    assert (s["q_value"] >= s["p_value"] - 1e-12).all()


def test_no_verdict_when_most_units_are_unmapped_or_profiles_near_uniform():
    utterances, dims = _topic_drift_speakers(3, seed=2, shift=0.6)
    n = utterances.num_rows
    speaker = np.asarray(utterances["speaker_id"].to_pylist())
    mapped = speaker != "S000"  # S000: the map placed none of its units
    P = dims["probability"].to_numpy().reshape(n, 3).copy()
    P[speaker == "S001"] = 0.9 * (1 / 3) + 0.1 * P[speaker == "S001"]  # S001: nearly uniform probabilities
    _, dims = _tables(pd.DataFrame({"interview_id": utterances["interview_id"].to_pylist(),
                                    "turn": utterances["turn_index"].to_pylist(), "speaker_id": speaker,
                                    "wave": utterances["wave"].to_pylist()}), P, mapped)
    s = compute_shifts(utterances, dims, _settings()).shifts.to_pandas().set_index("speaker_id")
    assert s.loc["S000", "status"] == "no_evidence" and "100% of the units are unmapped" in s.loc["S000", "reason"]
    assert s.loc["S001", "status"] == "no_evidence" and "near uniform" in s.loc["S001", "reason"]
    for sid in ("S000", "S001"):
        assert pd.isna(s.loc[sid, "p_value"]) and pd.isna(s.loc[sid, "q_value"]) and pd.isna(s.loc[sid, "significant"])
        assert s.loc[sid, "jsd"] >= 0  # the distance is still shown, as a description
    assert s.loc["S002", "status"] == "ok" and s.loc["S002", "significant"]
    assert s.loc["S000", "unmapped_share"] == 1.0 and s.loc["S002", "unmapped_share"] == 0.0
    assert s.loc["S001", "evidence"] < 0.1 < s.loc["S002", "evidence"]


def test_question_matched_shift_keeps_answers_to_questions_asked_in_both_waves():
    """Wave 2 swaps half of the guide: answers to the 3 new questions are about 'exchange', answers
    to the 3 kept ones are unchanged. The raw shift is large; the matched one is not."""
    rng = np.random.default_rng(4)
    basis = np.linalg.qr(rng.normal(size=(16, 9)))[0].T  # 9 orthonormal question vectors
    rows, probs, q_rows = [], [], []
    for wave in (1, 2):
        questions = [0, 1, 2, 3, 4, 5] if wave == 1 else [0, 1, 2, 6, 7, 8]
        for j, q in enumerate(questions):
            for rep in range(4):  # each question asked of 4 answers of 10 units (e.g. follow-ups)
                turn = 2 * (j * 4 + rep) + 1
                q_rows.append(("A-%d" % wave, turn, turn - 1, basis[q]))
                mix = [0.8, 0.1, 0.1] if q < 6 else [0.1, 0.1, 0.8]
                for _ in range(10):
                    probs.append(rng.dirichlet(30 * np.array(mix)))
                    rows.append(("A", wave, f"A-{wave}", turn))
    frame = pd.DataFrame(rows, columns=["speaker_id", "wave", "interview_id", "turn"])
    utterances, dims = _tables(frame, np.asarray(probs))
    Q = np.stack([r[3] for r in q_rows]).astype(np.float32)
    questions = pa.table({"interview_id": [r[0] for r in q_rows], "turn_index": pa.array([r[1] for r in q_rows], pa.int32()),
                          "question_turn": pa.array([r[2] for r in q_rows], pa.int32()),
                          "vector": pa.FixedSizeListArray.from_arrays(pa.array(Q.ravel(), pa.float32()), Q.shape[1])})
    # six blocks per interview: enough labellings for p to fall well below 0.05 on this one speaker
    s = compute_shifts(utterances, dims, _settings(blocks_per_interview=6), questions=questions).shifts.to_pandas().iloc[0]
    assert (s["n_matched_from"], s["n_matched_to"]) == (120, 120)  # 3 shared questions x 4 answers x 10 units
    assert s["jsd"] > 0.3 and s["p_value"] < 0.05
    assert s["jsd_matched"] < 0.1 and s["p_matched"] > 0.05
    assert set(schema.SHIFTS.names) >= {"jsd_matched", "p_matched", "n_matched_from", "n_matched_to"}


def test_shift_config_values_are_checked():
    utterances, dims = _topic_drift_speakers(1)
    for bad, message in (({"resample_unit": "lesson"}, "shift.resample_unit must be one of auto, interview"),
                         ({"blocks_per_interview": 1}, "shift.blocks_per_interview must be from 2 to 50"),
                         ({"max_unmapped_share": 1.5}, "shift.max_unmapped_share must be from 0 to 1")):
        with pytest.raises(ConfigError, match=message):
            compute_shifts(utterances, dims, _settings(**bad))


def test_map_warns_on_mostly_unmapped_talk_and_a_temperature_at_the_grid_edge():
    assert mapping_warnings(0.2, 0.05, fitted=True) == []
    [unmapped] = mapping_warnings(0.995, 0.05, fitted=True)
    assert unmapped.startswith("100% of the utterances stay unmapped")
    [edge] = mapping_warnings(0.1, float(TEMPERATURE_GRID[-1]), fitted=True)
    assert "edge of its grid" in edge and "near uniform" in edge
    assert mapping_warnings(0.1, float(TEMPERATURE_GRID[-1]), fitted=False) == []  # a temperature the user set
