"""Features for the learned coder: an utterance's embedding plus its conversational context.

Blocks (each row aligned with embeddings.parquet):
- own:      the utterance's embedding.
- turn:     its speaker turn's unit-length mean embedding (the whole answer; coders code answers).
- question: the embedding of the interviewer turn right before its turn (zeros when none): what
            was asked frames what is said.
- position: where the turn sits in the interview (relative position, first / last answer, utterances) and
            how long the answer is (log words, and a flag for a short answer such as "Yes, that's
            right."): coders leave short answers uncoded whatever the question was.
- framework: the framework-similarity concept probabilities of the utterance and of its turn
            (the map stage's prototype similarity), a prior the model can lean on while
            hand-coded examples are few.
- qa:       the elementwise product of the question's and the turn's embeddings. A linear model
            cannot multiply blocks by itself; this lets it weigh what is said by what was asked
            (the same story answers "what got in the way?" and "what helped?" differently).
- words:    TF-IDF of the turn's content lemmas and lemma pairs (the codes stage's keyword text:
            no stop words or spoken fillers), sparse. Coders often decide on a few words ("we
            asked them for", "co-designed"); a sentence embedding blurs them. The vocabulary is
            fitted on all the run's answers, never on the labels.

- neighbours: the embeddings of the turns before and after (any speaker: a teacher revoices what a
            student just said, a student answers the teacher's question).
- dialogue: the unit's similarity to those turns and to its own turn, whether it opens its turn,
            turn-taking (whether the turns before and after are by a speaker of the same role, or
            the same speaker where roles are not given, and whether there is one: a student who
            follows a student relates to another's idea; the role itself stays out), and lexical
            cues: how much of the unit repeats the previous turn word for word, a
            question mark, an opening question word, reasoning words ("why", "because", "how do
            you know"), its length. Codes given sentence by sentence (talk moves) turn on these
            more than on the topic an embedding carries.
- unit_words: TF-IDF of the unit's own words and word pairs, stop words kept ("why", "how",
            "agree" are the cues), and of its character 2-5-grams within words (word forms and
            spellings a transcript varies: "agree", "agreed", "disagree"), fitted on all the run's
            units, never on the labels.

Feature sets are named lists of blocks; FEATURE_SETS documents each. Framework descriptions
and exemplars (the weak examples) have no conversation: their own vector stands in for the
turn, the question (and so qa) is zeros and the position neutral.

The embedding-sized blocks of a feature set (VECTOR_BLOCKS) are reduced together to their leading
principal components ([learn] components), fitted on the run's utterances without labels: on
TalkMoves 128 components keep the held-out agreement (teacher kappa 0.706 against 0.709 with all
1,536 columns) and make a fit about five times faster. The small blocks (cues, position, prior)
stay as they are: a projection would drown them in the embeddings' variance.

Wave and speaker role are deliberately not features: the shift stage compares waves and
roles, and a model that knew them would write the expected difference into the codes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp

from pipeline.embed import vectors
from pipeline.errors import ConfigError
from pipeline.keywords import TOKEN_PATTERN, keyword_texts, vocabulary_min_df
from pipeline.map import turn_context
from pipeline.questions import embed_questions, turns_with_questions
from pipeline.settings import LearnSettings

FEATURE_SETS: dict[str, tuple[str, ...]] = {
    "utterance": ("own",),
    "turn": ("own", "turn"),
    "context": ("own", "turn", "question", "position"),
    "context_prior": ("own", "turn", "question", "position", "framework"),
    "context_words": ("own", "turn", "question", "position", "framework", "words"),
    "context_qa": ("own", "turn", "question", "position", "framework", "words", "qa"),
    "dialogue": ("own", "turn", "neighbours", "dialogue", "unit_words"),
}
VECTOR_BLOCKS = ("own", "turn", "question", "qa", "neighbours")  # projected onto principal components
PROJECTION_SAMPLE = 20_000  # the principal components are fitted on at most this many utterances (seeded)
DIALOGUE_SIM_SCALE = 5.0  # cosine similarities and cue flags scaled so the L2 penalty leaves them a say
DIALOGUE_CUE_SCALE = 2.0  # (measured on TalkMoves, 20% of lessons coded: bench/validity.py)
_OPENERS = re.compile(
    r"\s*(why|how|what|when|where|who|which|can|could|would|will|do|does|did|is|are|was|were)\b", re.I
)
_REASONING = re.compile(r"\b(why|because|how do you know|how did you|explain|convince|prove|reason|so that)\b", re.I)
_TOKENS = re.compile(r"[a-z0-9']+")
POSITION_DIM = 6
SHORT_ANSWER_WORDS = 8  # an answer of at most this many words is flagged short
LENGTH_SCALE = 2.0  # the length columns scaled so the L2 penalty leaves them a say (measured: bench/learn_eval.py)
WEAK_ANSWER_WORDS = 20  # framework texts stand in as a substantive answer of this many words
# products of two unit vectors' entries are ~1e-3: scaled to the embeddings' size (measured: bench/learn_eval.py)
QA_SCALE = 20.0
# probabilities live in [0, 1], embeddings' entries near +-0.1: scaled so the L2 penalty does not mute them
PRIOR_SCALE = 3.0


@dataclass
class FeatureBlocks:
    """Every block for the embedded utterances, plus each utterance's turn key (for pooling)."""

    utterance_ids: list[str]
    blocks: dict[str, np.ndarray | sp.csr_matrix]
    turns: np.ndarray  # (n,) int turn group id: utterances of one speaker turn share it
    question_model: str
    words: "WordFeatures"
    unit_words: "UnitWords | None" = None
    projections: dict = field(default_factory=dict)  # feature set -> Projection (or None: not reduced)

    def project(self, feature_sets: list[str], components: int, seed: int) -> None:
        """Fit each feature set's projection of its embedding-sized blocks (no labels involved)."""
        for fs in feature_sets:
            vec = [b for b in _blocks(fs) if b in VECTOR_BLOCKS]
            self.projections[fs] = (
                Projection.fit(np.hstack([self.blocks[b] for b in vec]), components, seed) if vec else None
            )

    def matrix(self, feature_set: str, rows: np.ndarray | slice = slice(None)):
        """The feature set's matrix for some rows: dense, or sparse CSR when it has a words block."""
        return assemble(
            {b: self.blocks[b][rows] for b in _blocks(feature_set)}, feature_set, self.projections.get(feature_set)
        )


@dataclass
class Projection:
    """Principal components of a feature set's embedding-sized blocks, side by side."""

    pca: Any  # sklearn PCA, or None when the blocks are already narrower than the components

    @classmethod
    def fit(cls, x: np.ndarray, components: int, seed: int) -> "Projection":
        from sklearn.decomposition import PCA

        if components <= 0 or x.shape[1] <= components or len(x) <= components:
            return cls(None)
        rng = np.random.default_rng(seed)
        sample = x if len(x) <= PROJECTION_SAMPLE else x[np.sort(rng.choice(len(x), PROJECTION_SAMPLE, replace=False))]
        return cls(PCA(components, svd_solver="randomized", random_state=seed).fit(sample))

    def transform(self, x: np.ndarray) -> np.ndarray:
        return x if self.pca is None else self.pca.transform(x)


def assemble(blocks: dict, feature_set: str, projection: "Projection | None"):
    """One feature set's matrix from its blocks: the embedding-sized blocks (projected when a
    projection is given), then the small dense blocks, then the sparse ones."""
    names = _blocks(feature_set)
    vec = [np.asarray(blocks[b]) for b in names if b in VECTOR_BLOCKS]
    parts = []
    if vec:
        v = np.hstack(vec)
        parts.append(projection.transform(v) if projection is not None else v)
    parts += [blocks[b] for b in names if b not in VECTOR_BLOCKS]
    return hstack(parts)


def hstack(parts: list):
    if any(sp.issparse(p) for p in parts):
        return sp.hstack([sp.csr_matrix(p) for p in parts], format="csr")
    return np.hstack(parts)


def vstack(parts: list):
    if any(sp.issparse(p) for p in parts):
        return sp.vstack([sp.csr_matrix(p) for p in parts], format="csr")
    return np.vstack(parts)


@dataclass
class WordFeatures:
    """The words block's vectorizer: keyword text (pipeline.keywords) -> L2-normalised TF-IDF."""

    vectorizer: Any  # sklearn TfidfVectorizer, or None: no word survived min_df
    fillers: list[str]
    lemmatizer: str
    cache_dir: str

    @classmethod
    def fit(cls, answers: list[str], s: LearnSettings) -> "WordFeatures":
        from sklearn.feature_extraction.text import TfidfVectorizer

        words = cls(None, list(s.fillers), s.lemmatizer, s.embed.cache_dir)
        docs = words._keywords(answers)
        vectorizer = TfidfVectorizer(
            ngram_range=(1, 2),
            min_df=vocabulary_min_df(s.words_min_df, len(docs)),
            max_features=s.words_max_features,
            token_pattern=TOKEN_PATTERN,
            sublinear_tf=True,
            dtype=np.float64,
        )
        try:
            words.vectorizer = vectorizer.fit(docs)
        except ValueError:  # no word survives min_df: an empty block
            pass
        return words

    def transform(self, texts: list[str]) -> sp.csr_matrix:
        if self.vectorizer is None:
            return sp.csr_matrix((len(texts), 0))
        return self.vectorizer.transform(self._keywords(texts)).tocsr()

    def _keywords(self, texts: list[str]) -> list[str]:
        return keyword_texts(list(texts), self.fillers, self.lemmatizer, self.cache_dir)


def _blocks(feature_set: str) -> tuple[str, ...]:

    if feature_set not in FEATURE_SETS:
        raise ConfigError(f"learn.feature_sets: unknown feature set {feature_set!r} (known: {', '.join(FEATURE_SETS)})")
    return FEATURE_SETS[feature_set]


def build_blocks(
    utterances: pa.Table,
    embeddings: pa.Table,
    encoder,
    s: LearnSettings,
    words_vectorizer=False,
    unit_words_vectorizer=False,
) -> FeatureBlocks:
    """All blocks for the embedded utterances; the interviewer's turns are embedded here
    (through the embedding cache) because the embed stage skips them. The two TF-IDF vocabularies
    are fitted on these utterances, unless a saved model's vectorizers are given (None: none)."""

    ids = embeddings.column("utterance_id").to_pylist()
    own = vectors(embeddings).astype(np.float64)
    turn = turn_context(utterances, ids, own.astype(np.float32)).astype(np.float64)

    u = utterances.select(
        ["utterance_id", "interview_id", "turn_index", "sentence_index", "text", "speaker_id", "speaker_role"]
    ).to_pandas()
    turns = turns_with_questions(utterances)
    q_turns = turns[turns["interviewer"]]
    q_vec = embed_questions(turns, encoder, s.embed)
    q_lookup = np.zeros((len(turns) + 1, own.shape[1]))  # last row: zeros for "no question"
    q_lookup[q_turns["row"].to_numpy()] = q_vec
    turns["question_row"] = turns["question_row"].fillna(len(turns)).astype(np.int64)

    answers = turns[~turns["interviewer"]]
    first = answers.groupby("interview_id")["turn_index"].transform("min")
    last = answers.groupby("interview_id")["turn_index"].transform("max")
    span = turns.groupby("interview_id")["turn_index"].transform("max").loc[answers.index].clip(lower=1)
    position = np.zeros((len(turns), POSITION_DIM))
    position[answers.index, 0] = answers["turn_index"] / span
    position[answers.index, 1] = answers["turn_index"] == first
    position[answers.index, 2] = answers["turn_index"] == last
    position[:, 3] = np.log1p(turns["units"]) / 3
    position[:, 4:] = answer_length(turns["text"].str.split().str.len().to_numpy())

    key = pd.MultiIndex.from_frame(turns[["interview_id", "turn_index"]])
    meta = u.set_index("utterance_id").loc[ids]
    row = key.get_indexer(pd.MultiIndex.from_arrays([meta["interview_id"], meta["turn_index"]]))
    words = (
        WordFeatures.fit(answers["text"].tolist(), s)
        if words_vectorizer is False
        else WordFeatures(words_vectorizer, list(s.fillers), s.lemmatizer, s.embed.cache_dir)
    )
    question = q_lookup[turns["question_row"].to_numpy()[row]]
    unit_words = (
        UnitWords.fit(meta["text"].tolist(), s) if unit_words_vectorizer is False else UnitWords(unit_words_vectorizer)
    )
    blocks = {
        "own": own,
        "turn": turn,
        "question": question,
        "qa": qa_block(question, turn),
        "position": position[row],
        "words": words.transform(turns["text"].tolist())[row],
        "unit_words": unit_words.transform(meta["text"].tolist()),
    }
    # the side of each turn: its speaker's role, or the speaker where no role is given
    side = u["speaker_role"].fillna("\0" + u["speaker_id"].astype(str))
    turns["side"] = side.groupby([u["interview_id"], u["turn_index"]]).first().reindex(key).to_numpy()
    blocks["neighbours"], blocks["dialogue"] = _dialogue(own, turn, turns, row, own.shape[1], q_turns, q_vec, meta)
    return FeatureBlocks(ids, blocks, row.astype(np.int64), encoder.model_id, words, unit_words)


def _dialogue(
    own: np.ndarray,
    turn: np.ndarray,
    turns: pd.DataFrame,
    row: np.ndarray,
    dim: int,
    q_turns: pd.DataFrame,
    q_vec: np.ndarray,
    meta: pd.DataFrame,
) -> tuple[np.ndarray, np.ndarray]:
    """The neighbours block (the turns before and after: a turn's mean unit embedding, an
    interviewer turn's question embedding) and the dialogue block (similarities, turn-taking, lexical cues)."""
    vec = np.zeros((len(turns), dim))
    vec[row] = turn  # the turn block is already each turn's unit-length mean embedding
    if len(q_turns):
        vec[q_turns["row"].to_numpy()] = q_vec
    vec /= np.maximum(np.linalg.norm(vec, axis=1, keepdims=True), 1e-12)
    same_before = np.r_[False, turns["interview_id"].to_numpy()[1:] == turns["interview_id"].to_numpy()[:-1]]
    prev = np.where(same_before[:, None], np.roll(vec, 1, axis=0), 0.0)
    nxt = np.where(np.r_[same_before[1:], False][:, None], np.roll(vec, -1, axis=0), 0.0)
    prev_text = np.where(same_before, np.roll(turns["text"].to_numpy(dtype=object), 1), "")
    p, q = prev[row], nxt[row]
    sims = np.column_stack([(own * p).sum(1), (own * q).sum(1), (own * turn).sum(1)]) * DIALOGUE_SIM_SCALE
    first = (meta["sentence_index"].to_numpy() == 0).astype(np.float64)[:, None] * DIALOGUE_CUE_SCALE
    cues = lexical_cues(meta["text"].tolist(), prev_text[row].tolist())
    return np.hstack([p, q]), np.hstack([sims, first, turn_taking(turns, same_before)[row], cues])


TURN_TAKING_FLAGS = 4  # turn_taking's columns


def turn_taking(turns: pd.DataFrame, same_before: np.ndarray) -> np.ndarray:
    """Per turn (scaled flags): the turn before is by the same side (turns["side"]: role, or speaker),
    there is none, the turn after is by the same side, there is none. On TalkMoves (20% of lessons
    coded, held-out lessons) these four add 0.009 teacher kappa and 0.063 student kappa."""
    side = turns["side"].to_numpy(dtype=object)
    same_after = np.r_[same_before[1:], False]
    prev_same = same_before & (np.roll(side, 1) == side)
    next_same = same_after & (np.roll(side, -1) == side)
    flags = np.column_stack([prev_same, ~same_before, next_same, ~same_after])
    assert flags.shape[1] == TURN_TAKING_FLAGS
    return flags.astype(np.float64) * DIALOGUE_CUE_SCALE


def lexical_cues(texts: list[str], previous: list[str]) -> np.ndarray:
    """Per unit: share of its words found in the previous turn, whether it repeats it verbatim, a
    question mark, an opening question word, reasoning words and log length (scaled)."""
    out = np.zeros((len(texts), 6))
    for i, (text, before) in enumerate(zip(texts, previous)):
        words, prior = set(_TOKENS.findall(text.lower())), set(_TOKENS.findall(before.lower()))
        core = text.lower().strip(" .?!,")
        out[i] = [
            len(words & prior) / max(1, len(words)),
            bool(core) and core in before.lower(),
            text.rstrip().endswith("?"),
            bool(_OPENERS.match(text)),
            bool(_REASONING.search(text)),
            np.log1p(len(text.split())) / 3,
        ]
    return out * DIALOGUE_CUE_SCALE


@dataclass
class UnitWords:
    """The unit_words block's vectorizer: TF-IDF of the unit's own words (stop words kept) and, unless
    [learn] char_features is 0, of its character 2-5-grams within words, side by side."""

    vectorizer: Any  # sklearn TfidfVectorizer or FeatureUnion of two, or None

    @classmethod
    def fit(cls, texts: list[str], s: LearnSettings) -> "UnitWords":
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.pipeline import FeatureUnion

        min_df = vocabulary_min_df(s.words_min_df, len(texts))
        vectorizer = TfidfVectorizer(
            ngram_range=(1, 2),
            min_df=min_df,
            max_features=s.words_max_features,
            sublinear_tf=True,
            dtype=np.float64,
            token_pattern=r"(?u)\b\w+\b",
        )
        if s.char_features > 0:
            chars = TfidfVectorizer(
                analyzer="char_wb",
                ngram_range=(2, 5),
                min_df=min_df,
                max_features=s.char_features,
                sublinear_tf=True,
                dtype=np.float64,
            )
            vectorizer = FeatureUnion([("words", vectorizer), ("chars", chars)])
        try:
            return cls(vectorizer.fit(texts))
        except ValueError:  # nothing survives min_df
            return cls(None)

    def transform(self, texts: list[str]) -> sp.csr_matrix:
        if self.vectorizer is None:
            return sp.csr_matrix((len(texts), 0))
        return sp.csr_matrix(self.vectorizer.transform(texts))


def answer_length(words: np.ndarray) -> np.ndarray:
    """The position block's length columns for answers of so many words."""
    words = np.asarray(words, dtype=np.float64)
    return np.column_stack([np.log1p(words) / np.log(200), words <= SHORT_ANSWER_WORDS]) * LENGTH_SCALE


def qa_block(question: np.ndarray, turn: np.ndarray) -> np.ndarray:
    """The qa block: question and answer embeddings multiplied entry by entry."""
    return question * turn * QA_SCALE


def framework_block(own_p: np.ndarray, turn_p: np.ndarray) -> np.ndarray:
    """The prior block from framework-similarity concept probabilities of the unit and its turn."""
    return np.hstack([own_p, turn_p]) * PRIOR_SCALE


def weak_blocks(
    framework_vectors: np.ndarray,
    framework_p: np.ndarray,
    words: sp.csr_matrix,
    texts: list[str] | None = None,
    unit_words: "UnitWords | None" = None,
) -> dict:
    """Blocks for framework texts (no conversation around them; the text is its own turn)."""
    v = np.asarray(framework_vectors, dtype=np.float64)
    texts = list(texts) if texts is not None else [""] * len(v)
    dialogue = np.hstack(
        [
            # _dialogue's columns: similarity to the turns before and after (none) and to its own turn
            # (itself), opens its turn, then turn_taking's flags, left at zero: these texts were never
            # spoken, so neither "same side" nor "no turn before/after" describes them
            np.tile([0.0, 0.0, DIALOGUE_SIM_SCALE, DIALOGUE_CUE_SCALE, *[0.0] * TURN_TAKING_FLAGS], (len(v), 1)),
            lexical_cues(texts, [""] * len(v)),
        ]
    )
    position = np.tile([0.5, 0.0, 0.0, np.log1p(1) / 3, *answer_length(np.array([WEAK_ANSWER_WORDS]))[0]], (len(v), 1))
    question = np.zeros_like(v)
    return {
        "own": v,
        "turn": v,
        "question": question,
        "qa": qa_block(question, v),
        "position": position,
        "framework": framework_block(framework_p, framework_p),
        "words": words,
        "dialogue": dialogue,
        "neighbours": np.zeros((len(v), 2 * v.shape[1])),
        "unit_words": unit_words.transform(texts) if unit_words is not None else sp.csr_matrix((len(v), 0)),
    }


def weak_matrix(
    framework_vectors: np.ndarray,
    framework_p: np.ndarray,
    words: sp.csr_matrix,
    feature_set: str,
    texts: list[str] | None = None,
    unit_words: "UnitWords | None" = None,
    projection: "Projection | None" = None,
):
    blocks = weak_blocks(framework_vectors, framework_p, words, texts, unit_words)
    return assemble({b: blocks[b] for b in _blocks(feature_set)}, feature_set, projection)
