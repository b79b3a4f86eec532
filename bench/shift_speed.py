"""Shift stage: speed at 50k utterances / 200 speakers, and detection power and false-positive
rate on synthetic speakers made of real example-study answers.

Usage: python bench/shift_speed.py [RUN_DIR]   (RUN_DIR: segment + embed of examples/kt_study,
default runs/demo). Prints a summary and writes bench/results/shift_speed.json.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the realistic-input builders live with the tests

from test_shift import DIMS, _synthetic, answer_key_assignments, answer_key_dimensions  # noqa: E402

from pipeline.config import load_config  # noqa: E402
from pipeline.settings import ShiftSettings, settings_for  # noqa: E402
from pipeline.embed import vectors  # noqa: E402
from pipeline.shift import compute_shifts  # noqa: E402


def load_study(run_dir: Path) -> dict:
    utt = pq.read_table(run_dir / "utterances.parquet")
    return {"utterances": utt, "embeddings": pq.read_table(run_dir / "embeddings.parquet"),
            "dims": answer_key_dimensions(utt), "assignments": answer_key_assignments(utt)}


def large_corpus(study: dict, n_speakers: int = 200, n_utterances: int = 50_000, seed: int = 1):
    """n_speakers x 2 waves built from real answers (turns) drawn with replacement; talkative
    and terse speakers (wave sizes vary about fourfold), ~n_utterances coded utterances in all."""
    rng = np.random.default_rng(seed)
    utt = study["utterances"].to_pandas()
    utt = utt[utt.coded].reset_index(drop=True)
    turn_rows = list(utt.groupby(utt["interview_id"] + "#" + utt["turn_index"].astype(str)).indices.values())
    mean_turn = np.mean([len(r) for r in turn_rows])
    weights = rng.uniform(0.4, 1.6, size=(n_speakers, 2))
    turns_per_wave = np.maximum(2, np.round(weights / weights.sum() * n_utterances / mean_turn)).astype(int)
    src, spk, wave, tix = [], [], [], []
    for s in range(n_speakers):
        for w in range(2):
            for j, t in enumerate(rng.integers(0, len(turn_rows), turns_per_wave[s, w])):
                rows = turn_rows[t]
                src.append(rows)
                spk += [f"S{s:03d}"] * len(rows)
                wave += [w + 1] * len(rows)
                tix += [j] * len(rows)
    src = np.concatenate(src)
    new = pd.DataFrame({"speaker_id": spk, "wave": wave, "turn_index": tix})
    new["interview_id"] = new["speaker_id"] + "-W" + new["wave"].astype(str)
    new["utterance_id"] = [f"u{i}" for i in range(len(new))]
    new["speaker_role"] = np.where(new["speaker_id"].str[-1].astype(int) % 2 == 0, "CORE", "PROJECT")
    new["is_interviewer"], new["coded"] = False, True
    wide = study["dims"].to_pandas().pivot(index="utterance_id", columns="dimension", values="probability")[DIMS]
    p = wide.loc[utt["utterance_id"].to_numpy()[src]].to_numpy()
    n = len(new)
    dims = pa.table({"utterance_id": np.repeat(new["utterance_id"], 3), "dimension": DIMS * n, "probability": p.ravel()})
    pos = pd.Series(np.arange(study["embeddings"].num_rows), index=study["embeddings"]["utterance_id"].to_pylist())
    X = vectors(study["embeddings"])[pos[utt["utterance_id"].to_numpy()[src]].to_numpy()]
    emb = pa.table({"utterance_id": new["utterance_id"],
                    "vector": pa.FixedSizeListArray.from_arrays(pa.array(X.ravel(), pa.float32()), X.shape[1])})
    asg = study["assignments"].to_pandas().set_index("utterance_id")["code_id"]
    codes = pa.table({"utterance_id": new["utterance_id"],
                      "code_id": pa.array(asg.loc[utt["utterance_id"].to_numpy()[src]].to_numpy(), pa.int32())})
    return pa.Table.from_pandas(new, preserve_index=False), dims, emb, codes


def speed(study: dict) -> dict:
    utterances, dims, emb, codes = large_corpus(study)
    out = {"utterances": utterances.num_rows, "speakers": 200, "waves": 2}
    for unit in ("auto", "turn"):
        s = settings_for(ShiftSettings, load_config(overrides={"shift": {"resample_unit": unit}}))
        started = time.perf_counter()
        result = compute_shifts(utterances, dims, s, emb, codes)
        total = time.perf_counter() - started
        out[unit] = {"seconds_total": round(total, 2), **{f"seconds_{k}": v for k, v in result.seconds.items()},
                     "bootstrap": s.bootstrap, "permutations": s.permutations,
                     "pairs": int((result.shifts["status"].to_numpy(zero_copy_only=False) == "ok").sum())}
    return out


def detection(study: dict, n_controls: int = 1000) -> dict:
    out = {}
    # answers split between waves at random: answers are exchangeable, so shuffling them is valid here
    settings = settings_for(ShiftSettings, load_config(overrides={"shift": {"bootstrap": 100,
                                                                             "resample_unit": "turn"}}))
    for replaced in (1.0, 0.5, 0.3):
        utterances, dims, emb, plan = _synthetic(study, n_controls=n_controls if replaced == 1.0 else 0,
                                                 replaced=replaced)
        s = compute_shifts(utterances, dims, settings, emb).shifts.to_pandas().set_index("speaker_id")
        planted = s[s.speaker_role == "PLANTED"]
        target = pd.Series({k: v[1][1] for k, v in plan.items() if v[0] == "planted"})[planted.index]
        source = pd.Series({k: v[1][0] for k, v in plan.items() if v[0] == "planted"})[planted.index]
        key = f"planted_{int(replaced * 100)}pct"
        out[key] = {
            "speakers": len(planted),
            "utterances_per_wave_median": float(np.median(np.r_[planted.n_from, planted.n_to])),
            "detection_rate": round(float(((planted.p_value < 0.05) & (planted.to_dimension == target)).mean()), 4),
            "to_dimension_right": round(float((planted.to_dimension == target).mean()), 4),
            "from_dimension_right": round(float((planted.from_dimension == source).mean()), 4),
            "semantic_detection_rate": round(float((planted.p_semantic < 0.05).mean()), 4),
            "median_jsd": round(float(planted.jsd.median()), 4),
            "median_semantic_ratio": round(float(planted.semantic_ratio.median()), 3),
        }
        controls = s[s.speaker_role == "CONTROL"]
        if len(controls):
            fp = (controls.p_value < 0.05).mean()
            out["controls"] = {
                "speakers": len(controls),
                "false_positive_rate": round(float(fp), 4),
                "false_positive_rate_se": round(float(np.sqrt(0.05 * 0.95 / len(controls))), 4),
                "semantic_false_positive_rate": round(float((controls.p_semantic < 0.05).mean()), 4),
                "median_jsd": round(float(controls.jsd.median()), 4),
                "median_semantic_ratio": round(float(controls.semantic_ratio.median()), 3),
                "p_value_deciles": [round(float(q), 3) for q in np.quantile(controls.p_value, np.linspace(.1, .9, 9))],
            }
    return out


def main() -> None:
    run_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "runs" / "demo"
    study = load_study(run_dir)
    results = {"speed_50k_200_speakers": speed(study), "planted_shift_detection": detection(study)}
    out = REPO / "bench" / "results" / "shift_speed.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
