"""The interviewer question each answer follows: found once here, embedded through the cache.

Used by learn (the question as context for a turn) and by shift (answers matched across waves
by the question they answer, so a changed interview guide is not read as a changed mind).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline import schema
from pipeline.settings import EmbedSettings


def turns_with_questions(utterances: pa.Table) -> pd.DataFrame:
    """One row per (interview, turn) in order: text, interviewer flag, units, and question_row, the
    row of the interviewer turn before it (NaN when none came before)."""
    u = utterances.select(["utterance_id", "interview_id", "turn_index", "is_interviewer", "text"]).to_pandas()
    turns = (
        u.groupby(["interview_id", "turn_index"], sort=True)
        .agg(text=("text", " ".join), interviewer=("is_interviewer", "any"), units=("text", "size"))
        .reset_index()
    )
    # The interviewer turn before each turn: forward-fill the last interviewer turn's row, shifted by one.
    turns["row"] = np.arange(len(turns))
    q_row = turns["row"].where(turns["interviewer"])
    turns["question_row"] = q_row.groupby(turns["interview_id"]).transform(lambda s: s.shift(1).ffill())
    return turns


def embed_questions(turns: pd.DataFrame, encoder, embed: EmbedSettings) -> np.ndarray:
    """Embeddings of the interviewer turns (turns[turns.interviewer]), through the embedding cache."""
    q_turns = turns[turns["interviewer"]]
    encoder.with_cache(embed)
    q_vec, _ = encoder.encode_cached(q_turns["text"].tolist(), embed.batch_size, batch_tokens=embed.batch_tokens)
    q_vec = np.asarray(q_vec, dtype=np.float32)
    return q_vec.reshape(len(q_turns), -1) if len(q_turns) else q_vec


def question_table(utterances: pa.Table, encoder, embed: EmbedSettings) -> pa.Table | None:
    """schema.QUESTIONS: every answer turn that follows an interviewer turn, with that question's
    embedding; None when the corpus has no interviewer turns."""
    turns = turns_with_questions(utterances)
    if not turns["interviewer"].any():
        return None
    q_vec = embed_questions(turns, encoder, embed)
    lookup = pd.Series(np.arange(int(turns["interviewer"].sum())), index=turns.loc[turns["interviewer"], "row"])
    answers = turns[~turns["interviewer"] & turns["question_row"].notna()]
    X = q_vec[lookup.loc[answers["question_row"].astype(np.int64)].to_numpy()]
    question_turn = turns["turn_index"].to_numpy()[answers["question_row"].astype(np.int64).to_numpy()]
    return pa.table(
        {
            "interview_id": answers["interview_id"].astype(str).to_numpy(),
            "turn_index": pa.array(answers["turn_index"].to_numpy(), pa.int32()),
            "question_turn": pa.array(question_turn, pa.int32()),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(X.ravel(), pa.float32()), X.shape[1]),
        }
    ).cast(
        pa.schema(
            [
                f if f.name != "vector" else pa.field("vector", pa.list_(pa.float32(), X.shape[1]), metadata=f.metadata)
                for f in schema.QUESTIONS
            ]
        )
    )
