"""Real corpora as shift-stage inputs, for the placebo and power benchmarks.

TalkMoves (../shared/corpora/talkmoves): every coded teacher sentence with its lesson, turn (the
transcript line) and human talk move, grouped into the codebook's accountability groups. A
"series" is a run of lessons by one teacher (`hillary-lewis-wolfsen-pt-1` .. `-pt-6`), read
from the lesson ids. AMI (../shared/corpora/ami): segmented and embedded by themeshift itself.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("THEMESHIFT_SHARED", REPO.parent / "shared"))
TALKMOVES = SHARED / "corpora" / "talkmoves"
AMI = SHARED / "corpora" / "ami"
sys.path.insert(0, str(REPO))

# Teacher talk moves by the codebook's accountability groups; `none` and the retired `marking` are no move.
TEACHER_GROUPS = {"none": "none", "marking": "none", "keeping_everyone_together": "community",
                  "getting_students_to_relate": "community", "restating": "community",
                  "revoicing": "rigor", "pressing_for_reasoning": "rigor", "pressing_for_accuracy": "content"}
GROUPS = ["none", "community", "content", "rigor"]


def talkmoves_teacher_sentences() -> pd.DataFrame:
    """interview_id (lesson), series, lesson_number, turn (0-based line), start_char, text, code, group."""
    hc = pd.read_csv(TALKMOVES / "human_codes.csv")
    hc = hc[hc["role"] == "teacher"]
    parts = []
    for source, g in hc.groupby("source_file", sort=True):
        text = (TALKMOVES / source).read_text(encoding="utf-8")
        line_starts = np.r_[0, np.cumsum([len(line) + 1 for line in text.split("\n")])]
        g = g.sort_values("start_char").copy()
        g["turn"] = np.searchsorted(line_starts, g["start_char"].to_numpy(), side="right") - 1
        g["text"] = [text[a:b] for a, b in zip(g["start_char"], g["end_char"])]
        parts.append(g)
    df = pd.concat(parts, ignore_index=True)
    df["group"] = df["code"].map(TEACHER_GROUPS)
    pattern = r"(?:-pt)?-(\d+)(?:-grade-\d+|-first-grade)?$"
    df["series"] = df["interview_id"].str.replace(pattern, "", regex=True)
    df["lesson_number"] = pd.to_numeric(df["interview_id"].str.extract(pattern)[0], errors="coerce")
    return df[["interview_id", "series", "lesson_number", "turn", "start_char", "text", "code", "group"]]


def one_hot(labels: pd.Series, names: list[str]) -> np.ndarray:
    return (labels.to_numpy()[:, None] == np.asarray(names)[None, :]).astype(np.float64)


def shift_tables(frame: pd.DataFrame, P: np.ndarray, dims: list[str]) -> tuple[pa.Table, pa.Table]:
    """utterances and utterance_dimensions tables as the shift stage reads them, from a frame with
    speaker_id, wave, interview_id, turn (rows in transcript order within each interview)."""
    n = len(frame)
    ids = [f"u{i}" for i in range(n)]
    utterances = pa.table({
        "utterance_id": ids, "interview_id": frame["interview_id"].astype(str).to_numpy(),
        "turn_index": pa.array(frame["turn"].to_numpy(), pa.int32()),
        "speaker_id": frame["speaker_id"].astype(str).to_numpy(),
        "speaker_role": frame.get("speaker_role", pd.Series(["SPEAKER"] * n)).astype(str).to_numpy(),
        "wave": pa.array(frame["wave"].to_numpy(), pa.int32()),
        "is_interviewer": np.zeros(n, dtype=bool), "coded": np.ones(n, dtype=bool),
    })
    K = len(dims)
    dimensions = pa.table({"utterance_id": np.repeat(ids, K), "dimension": dims * n,
                           "probability": np.asarray(P, dtype=np.float64).ravel(),
                           "mapped": np.ones(n * K, dtype=bool)})
    return utterances, dimensions


def embedding_table(X: np.ndarray) -> pa.Table:
    X = np.asarray(X, dtype=np.float32)
    return pa.table({"utterance_id": [f"u{i}" for i in range(len(X))],
                     "vector": pa.FixedSizeListArray.from_arrays(pa.array(X.ravel(), pa.float32()), X.shape[1])})


def encode(texts: list[str], model: str = "minilm") -> np.ndarray:
    """Sentence embeddings through themeshift's encoder and its embedding cache (reruns are instant)."""
    from pipeline.config import load_config
    from pipeline.embed import load_encoder
    from pipeline.settings import EmbedSettings, settings_for

    cfg = load_config()
    encoder = load_encoder(model, cfg["embed"]["device"]).with_cache(settings_for(EmbedSettings, cfg))
    X, _ = encoder.encode_cached(texts, cfg["embed"]["batch_size"], batch_tokens=cfg["embed"]["batch_tokens"])
    return np.asarray(X, dtype=np.float32)


def ami_sentences(n_series: int, model: str = "minilm") -> tuple[pd.DataFrame, np.ndarray]:
    """The first n_series complete AMI series segmented by themeshift (sentences) and embedded.
    A person is series + role label ("ES2002/Project Manager"); the wave is the meeting (a-d)."""
    import tempfile

    import pyarrow.parquet as pq

    from pipeline.config import load_config
    from pipeline.runner import run_segment

    manifest = pd.read_csv(AMI / "manifest.csv")
    complete = sorted(s for s, g in manifest.groupby("series") if set(g["wave"]) == {1, 2, 3, 4})[:n_series]
    chosen = manifest[manifest["series"].isin(complete)]
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        (corpus / "transcripts").mkdir(parents=True)
        for f in chosen["file"]:
            (corpus / f).write_bytes((AMI / f).read_bytes())
        chosen.rename(columns={"meeting": "interview_id"})[["file", "interview_id", "wave"]].to_csv(
            corpus / "manifest.csv", index=False)
        cfg = load_config(overrides={"speakers": {"interviewer_labels": []}})
        run_segment(corpus, Path(tmp) / "run", cfg)
        utt = pq.read_table(Path(tmp) / "run" / "utterances.parquet").to_pandas()
    utt = utt[utt["coded"]].reset_index(drop=True)
    series = utt["interview_id"].str[:-1]
    utt["speaker_id"] = series + "/" + utt["speaker_label"].astype(str)
    utt["turn"] = utt["turn_index"]
    return utt, encode(utt["text"].tolist(), model)
