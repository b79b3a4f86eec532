"""map: candidate codes + a framework -> concept and dimension probabilities.

The framework's names, descriptions and exemplars are embedded once. A mapper (two
kinds, same contract: ``fit(framework_vectors)`` then ``predict_proba(X)`` -> one
probability per second-order concept) scores any embedded text:

- SimilarityMapper: a concept's score is the mean cosine similarity of its k most
  similar framework texts; a softmax with a temperature fitted leave-one-out on the
  framework's own texts turns scores into calibrated probabilities.
- ClassifierMapper: a logistic regression trained on the framework's texts.

A code's evidence is its centroid plus its exemplar utterances; a code whose best
concept is weak or ambiguous stays unmapped. An utterance's probabilities blend its
own evidence, its speaker turn's and its code's (code -1: no code part). Dimension
probabilities are sums over each dimension's concepts. An utterance whose closest framework
text is less similar than min_similarity stays unmapped: it talks about something else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import schema
from pipeline.data_structure import data_structure_markdown, data_structure_table
from pipeline.embed import Encoder, vectors
from pipeline.errors import ConfigError
from pipeline.framework import Framework
from pipeline.io.vectors import StoredEmbeddings
from pipeline.settings import MapSettings

SOURCE = {"similarity": "framework-similarity", "classifier": "learned"}
HUMAN = "human"
CHUNK_ROWS = 100_000  # utterances mapped at a time, cut between speaker turns: memory for a chunk, not the corpus
_DEFAULT_TEMPERATURE = 0.05
TEMPERATURE_GRID = np.geomspace(0.002, 1.0, 200)  # searched by SimilarityMapper when temperature = 0


@dataclass
class FrameworkVectors:
    """The framework's texts embedded, each labelled with its concept's index."""

    framework: Framework
    vectors: np.ndarray  # (n_texts, dim), unit length
    labels: np.ndarray  # (n_texts,) concept index into framework.concepts
    texts: tuple[str, ...] = ()  # the texts themselves, in the same order


def embed_framework(framework: Framework, encoder: Encoder) -> FrameworkVectors:
    texts, labels = [], []
    for j, concept in enumerate(framework.concepts):
        texts += concept.texts
        labels += [j] * len(concept.texts)
    return FrameworkVectors(framework, encoder.encode(texts), np.asarray(labels, dtype=np.int64), tuple(texts))


def softmax_rows(scores: np.ndarray) -> np.ndarray:
    z = scores - scores.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def pooled_similarity(sims: np.ndarray, labels: np.ndarray, n_concepts: int, k: int) -> np.ndarray:
    """(n, n_concepts): mean of the k largest finite similarities to each concept's texts."""
    out = np.full((sims.shape[0], n_concepts), -np.inf)
    for j in range(n_concepts):
        block = -np.sort(-sims[:, labels == j], axis=1)[:, :k]  # descending, -inf (left out) last
        finite = np.isfinite(block)
        counts = finite.sum(axis=1)
        total = np.where(finite, block, 0.0).sum(axis=1)
        out[:, j] = np.where(counts > 0, total / np.maximum(counts, 1), -np.inf)
    return out


class SimilarityMapper:
    """Prototype similarity with a temperature-scaled softmax (temperature 0 = fit it)."""

    source = SOURCE["similarity"]

    def __init__(self, top_k: int = 3, temperature: float = 0.0):
        self.top_k = top_k
        self.temperature = temperature

    def fit(self, fv: FrameworkVectors) -> "SimilarityMapper":
        self.vectors_ = fv.vectors.astype(np.float64)
        self.labels_ = fv.labels
        self.n_concepts_ = int(fv.labels.max()) + 1
        self.temperature_ = self.temperature if self.temperature > 0 else self._fit_temperature()
        return self

    def _fit_temperature(self) -> float:
        """Minimise the leave-one-out negative log-likelihood of each framework text's own concept."""
        sims = self.vectors_ @ self.vectors_.T
        np.fill_diagonal(sims, -np.inf)
        scores = pooled_similarity(sims, self.labels_, self.n_concepts_, self.top_k)
        usable = np.isfinite(scores[np.arange(len(scores)), self.labels_])  # concept has another text
        if usable.sum() < 2:
            return _DEFAULT_TEMPERATURE
        scores, truth = scores[usable], self.labels_[usable]
        scores = np.where(np.isfinite(scores), scores, -1.0)
        nll = [-np.log(softmax_rows(scores / t)[np.arange(len(truth)), truth] + 1e-12).mean() for t in TEMPERATURE_GRID]
        return float(TEMPERATURE_GRID[int(np.argmin(nll))])

    def scores(self, x: np.ndarray) -> np.ndarray:
        return pooled_similarity(
            np.asarray(x, np.float64) @ self.vectors_.T, self.labels_, self.n_concepts_, self.top_k
        )

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        if len(x) == 0:
            return np.zeros((0, self.n_concepts_))
        return softmax_rows(self.scores(x) / self.temperature_)


class ClassifierMapper:
    """Multinomial logistic regression trained on the framework's embedded texts."""

    source = SOURCE["classifier"]

    def __init__(self, c: float = 10.0, seed: int = 0):
        self.c = c
        self.seed = seed

    def fit(self, fv: FrameworkVectors) -> "ClassifierMapper":
        from sklearn.linear_model import LogisticRegression

        self.n_concepts_ = len(fv.framework.concepts)
        self.model_ = LogisticRegression(C=self.c, max_iter=5000, random_state=self.seed)
        self.model_.fit(fv.vectors.astype(np.float64), fv.labels)
        self.vectors_ = fv.vectors.astype(np.float64)  # kept for closest_text_similarity
        self.labels_ = fv.labels
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        if len(x) == 0:
            return np.zeros((0, self.n_concepts_))
        return self.model_.predict_proba(np.asarray(x, np.float64))


def description_similarity(
    x: np.ndarray, vectors: np.ndarray, labels: np.ndarray, n_concepts: int, allowed: np.ndarray | None = None
) -> np.ndarray:
    """(n, concepts): each row's cosine similarity to each concept's closest framework text (its name,
    description or exemplars: embed_framework's vectors and labels), -inf for concepts outside
    `allowed`. Its argmax is the naive nearest-description coder the zero-shot benches compare the map with."""
    near = pooled_similarity(np.asarray(x, np.float64) @ np.asarray(vectors, np.float64).T, labels, n_concepts, 1)
    return near if allowed is None else np.where(allowed, near, -np.inf)


def closest_text_similarity(x: np.ndarray, mapper, allowed: np.ndarray | None = None) -> np.ndarray:
    """(n,): each row's cosine similarity to the framework text closest to it (a concept's name,
    description or exemplar; only the concepts `allowed` for that row when given). Talk this far
    from everything in the framework is about something else: on TalkMoves, games_as_art and the
    example study such units are the ones coders most often left uncoded (bench/zero_shot.py)."""
    if len(x) == 0:
        return np.zeros(0)
    near = description_similarity(x, mapper.vectors_, mapper.labels_, mapper.n_concepts_, allowed)
    return cast(np.ndarray, near.max(axis=1))


def make_mapper(m: MapSettings, method: str | None = None):
    """The mapper [map] method names (or `method`). config.py has checked the method and that each
    weight is >= 0; that own + context is not 0 is checked here."""
    if m.own_weight + m.context_weight <= 0:
        raise ConfigError("map.own_weight + map.context_weight must be > 0")
    mappers = {
        "similarity": lambda: SimilarityMapper(m.similarity_top_k, m.temperature),
        "classifier": lambda: ClassifierMapper(m.classifier_c, m.seed),
    }
    return mappers[method or m.method]()


def dimension_matrix(framework: Framework) -> np.ndarray:
    """(n_concepts, n_dimensions) 0/1 matrix: concept probabilities @ it = dimension probabilities."""
    dims = framework.dimension_ids
    out = np.zeros((len(framework.concepts), len(dims)))
    for j, c in enumerate(framework.concepts):
        out[j, dims.index(c.dimension)] = 1.0
    return out


def best_two(p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """argmax, best value and margin over the runner-up, per row."""
    order = np.argsort(-p, axis=1, kind="stable")
    rows = np.arange(len(p))
    best = p[rows, order[:, 0]]
    second = p[rows, order[:, 1]] if p.shape[1] > 1 else np.zeros(len(p))
    return order[:, 0], best, best - second


# --- codes ---------------------------------------------------------------------------------------


@dataclass
class CodeMapping:
    probabilities: np.ndarray  # (n_codes, n_concepts), the mapper's evidence
    assigned: np.ndarray  # (n_codes,) concept index, -1 = unmapped
    margin: np.ndarray  # (n_codes,) best minus second-best concept probability
    source: list[str]  # per code: the mapper's source name, or "human" when overridden
    overridden: np.ndarray  # (n_codes,) bool


def code_probabilities(codes: pa.Table, emb_ids: dict[str, int], emb: np.ndarray, mapper, m: MapSettings) -> np.ndarray:
    """Blend each code's centroid with the mean of its first `code_exemplars` exemplar utterances."""
    n = codes.num_rows
    k = mapper.n_concepts_
    if n == 0:
        return np.zeros((0, k))
    p_centroid = mapper.predict_proba(vectors(codes.select(["centroid"]).rename_columns(["vector"])))
    rows, owner = [], []
    for i, ids in enumerate(codes.column("exemplar_ids").to_pylist()):
        picked = [emb_ids[u] for u in (ids or []) if u in emb_ids][: m.code_exemplars]
        rows += picked
        owner += [i] * len(picked)
    p_exemplars = np.zeros((n, k))
    counts = np.bincount(np.asarray(owner, dtype=np.int64), minlength=n).astype(np.float64)
    if rows:
        np.add.at(p_exemplars, np.asarray(owner), mapper.predict_proba(emb[np.asarray(rows)]))
    has = counts > 0
    p_exemplars[has] /= counts[has, None]
    w = np.where(has, m.centroid_weight, 1.0)[:, None]  # no exemplars: the centroid alone
    return w * p_centroid + (1 - w) * p_exemplars


def decide_codes(
    probabilities: np.ndarray, fingerprints: list[str], overrides: dict[str, int | None], source: str, m: MapSettings
) -> CodeMapping:
    """Threshold + margin decide each code; a researcher's override (fingerprint -> concept index or None) wins."""
    n = len(probabilities)
    if n == 0:
        return CodeMapping(probabilities, np.zeros(0, np.int64), np.zeros(0), [], np.zeros(0, bool))
    best, top, margin = best_two(probabilities)
    assigned = np.where((top >= m.code_threshold) & (margin >= m.code_margin), best, -1)
    overridden = np.array([fp in overrides for fp in fingerprints], dtype=bool)
    for i in np.flatnonzero(overridden):
        target = overrides[fingerprints[i]]
        assigned[i] = -1 if target is None else target
    sources = [HUMAN if o else source for o in overridden]
    return CodeMapping(probabilities, assigned, margin, sources, overridden)


def code_dimensions_table(codes: pa.Table, mapping: CodeMapping, framework: Framework) -> pa.Table:
    """Tidy: one row per code x second-order concept."""
    n, k = mapping.probabilities.shape if mapping.probabilities.size else (codes.num_rows, len(framework.concepts))
    p = mapping.probabilities.reshape(n, k)
    dim_p = p @ dimension_matrix(framework)
    dim_index = [framework.dimension_ids.index(c.dimension) for c in framework.concepts]
    ranks = np.argsort(np.argsort(-p, axis=1, kind="stable"), axis=1) + 1
    rep = lambda col: np.repeat(np.asarray(col, dtype=object), k)  # noqa: E731
    tile = lambda vals: np.tile(np.asarray(vals, dtype=object), n)  # noqa: E731
    assigned = mapping.assigned
    return pa.table(
        {
            "code_id": pa.array(np.repeat(codes.column("code_id").to_numpy(), k), pa.int32()),
            "fingerprint": pa.array(rep(codes.column("fingerprint").to_pylist()), pa.string()),
            "label": pa.array(rep(codes.column("label").to_pylist()), pa.string()),
            "size": pa.array(np.repeat(codes.column("size").to_numpy(), k), pa.int32()),
            "dimension": pa.array(tile([c.dimension for c in framework.concepts]), pa.string()),
            "concept_id": pa.array(tile([c.id for c in framework.concepts]), pa.string()),
            "second_order": pa.array(tile([c.name for c in framework.concepts]), pa.string()),
            "probability": pa.array(p.reshape(-1), pa.float64()),
            "dimension_probability": pa.array(dim_p[:, dim_index].reshape(-1), pa.float64()),
            "rank": pa.array(ranks.reshape(-1), pa.int32()),
            "assigned": pa.array((assigned[:, None] == np.arange(k)[None, :]).reshape(-1), pa.bool_()),
            "status": pa.array(rep(np.where(assigned >= 0, "mapped", "unmapped")), pa.string()),
            "margin": pa.array(np.repeat(mapping.margin, k), pa.float64()),
            "source": pa.array(rep(mapping.source), pa.string()),
        },
        schema=schema.CODE_DIMENSIONS,
    )


# --- utterances ----------------------------------------------------------------------------------


@dataclass
class UtteranceMapping:
    utterance_ids: list[str]
    concepts: np.ndarray  # (n, n_concepts) blended probabilities
    dimensions: np.ndarray  # (n, n_dimensions)
    mapped: np.ndarray  # (n,) bool
    source: list[str]
    extra: dict = field(default_factory=dict)


def turn_context(utterances: pa.Table, emb_ids: list[str], emb: np.ndarray) -> np.ndarray:
    """Each utterance's speaker-turn vector: the unit-length mean of the turn's embedded units."""
    meta = utterances.select(["utterance_id", "interview_id", "turn_index"]).to_pydict()
    turn_of = {u: (i, t) for u, i, t in zip(meta["utterance_id"], meta["interview_id"], meta["turn_index"])}
    keys: dict[tuple, int] = {}
    group = np.array([keys.setdefault(turn_of.get(u, (u, -1)), len(keys)) for u in emb_ids], dtype=np.int64)
    sums = np.zeros((len(keys), emb.shape[1]), dtype=np.float64)
    np.add.at(sums, group, emb)
    sums /= np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    return sums[group]


def map_utterances(
    utterances: pa.Table,
    embeddings: pa.Table,
    assignments: pa.Table | None,
    codes: pa.Table | None,
    mapping: CodeMapping | None,
    mapper,
    framework: Framework,
    m: MapSettings,
) -> UtteranceMapping:
    ids = embeddings.column("utterance_id").to_pylist()
    emb = vectors(embeddings)
    k = len(framework.concepts)
    own = mapper.predict_proba(emb)
    ctx = mapper.predict_proba(turn_context(utterances, ids, emb)) if m.context_weight > 0 else np.zeros_like(own)

    # The code part: the code's evidence, or one-hot on a researcher's chosen concept.
    code_p = np.zeros_like(own)
    has_code = np.zeros(len(ids), dtype=bool)
    blocked = np.zeros(len(ids), dtype=bool)  # in a code a researcher marked unmapped
    source = np.full(len(ids), mapper.source, dtype=object)
    if assignments is not None and codes is not None and mapping is not None and codes.num_rows:
        row_of_code = {c: i for i, c in enumerate(codes.column("code_id").to_pylist())}
        code_of = dict(zip(assignments.column("utterance_id").to_pylist(), assignments.column("code_id").to_pylist()))
        crow = np.array([row_of_code.get(code_of.get(u, -1), -1) for u in ids], dtype=np.int64)
        per_code = mapping.probabilities.copy()
        human = mapping.overridden & (mapping.assigned >= 0)
        per_code[human] = np.eye(k)[mapping.assigned[human]]
        has_code = crow >= 0
        code_p[has_code] = per_code[crow[has_code]]
        over = np.zeros(len(ids), dtype=bool)
        over[has_code] = mapping.overridden[crow[has_code]]
        blocked[has_code] = over[has_code] & (mapping.assigned[crow[has_code]] < 0)
        source[over] = HUMAN
        has_code &= ~blocked

    w_own, w_ctx, w_code = m.own_weight, m.context_weight, m.code_weight
    weight_code = np.where(has_code, w_code, 0.0)[:, None]
    blended = (w_own * own + w_ctx * ctx + weight_code * code_p) / (w_own + w_ctx + weight_code)
    roles = speaker_roles(utterances, ids)
    allowed = framework.allowed_concepts(roles) if framework.has_roles else None  # built once, used twice
    blended, no_concept = restrict_to_roles(blended, framework, roles, allowed)
    dims = blended @ dimension_matrix(framework)
    _, dim = best_concept(blended, framework)
    top, margin = dimension_lead(dims, dim)
    closest = closest_text_similarity(emb, mapper, allowed)
    related = closest >= m.min_similarity
    mapped = (top >= m.utterance_threshold) & (margin >= m.utterance_margin) & related & ~blocked & ~no_concept
    return UtteranceMapping(
        ids,
        blended,
        dims,
        mapped,
        source.tolist(),
        {"own": own, "context": ctx, "has_code": has_code, "no_concept": no_concept, "closest": closest},
    )


def best_concept(concepts: np.ndarray, framework: Framework) -> tuple[np.ndarray, np.ndarray]:
    """Each row's most probable concept and that concept's dimension. The label is chosen at the
    concept level, not as the best concept inside the most probable dimension: summing similarity
    probabilities favours dimensions with more concepts (on TalkMoves a student's sentence went to
    the dimension holding two of the four student moves; concept first: kappa 0.075 / 0.068 for
    teacher / student against 0.040 / -0.004, and on the example study 0.490 against 0.471)."""
    if len(concepts) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    concept = concepts.argmax(axis=1)
    return concept, dimension_matrix(framework).argmax(axis=1)[concept]


def dimension_lead(dims: np.ndarray, dim: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The probability of each row's chosen dimension and its lead over the best other dimension
    (negative when another dimension is more probable: such a unit is never mapped)."""
    rows = np.arange(len(dims))
    top = dims[rows, dim]
    others = dims.copy()
    others[rows, dim] = -np.inf
    runner = others.max(axis=1) if dims.shape[1] > 1 else np.zeros(len(dims))
    return top, top - runner


def speaker_roles(utterances: pa.Table, ids: list[str]) -> list:
    """The speaker role of each of the given utterances (None where speakers.csv gave none)."""
    role_of = dict(zip(utterances.column("utterance_id").to_pylist(), utterances.column("speaker_role").to_pylist()))
    return [role_of.get(u) for u in ids]


def restrict_to_roles(
    p: np.ndarray, framework: Framework, roles: list, allowed: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Concept probabilities with every concept outside the unit's speaker role set to 0 and the
    rest renormalised. Units whose role has no concept at all get uniform probabilities and are
    flagged (second return): they stay unmapped. Frameworks without roles pass through.
    allowed: framework.allowed_concepts(roles), where the caller has it already."""
    if not framework.has_roles or len(p) == 0:
        return p, np.zeros(len(p), dtype=bool)
    if allowed is None:
        allowed = framework.allowed_concepts(roles)
    none = ~allowed.any(axis=1)
    out = renormalise_within(p, allowed)
    out[none] = 1.0 / p.shape[1]
    return out, cast(np.ndarray, none)  # numpy's stubs: .any(axis=) may be a scalar


def renormalise_within(p: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Rows of p with the columns outside `allowed` set to 0 and the rest renormalised (a row whose
    allowed columns all hold 0: uniform over them)."""
    kept = np.where(allowed, p, 0.0)
    total = kept.sum(axis=1, keepdims=True)
    uniform = allowed / np.maximum(allowed.sum(axis=1, keepdims=True), 1)
    return np.where(total > 0, kept / np.where(total > 0, total, 1.0), uniform)


def utterance_dimensions_table(um: UtteranceMapping, framework: Framework) -> pa.Table:
    """Tidy: one row per utterance x dimension, utterances in embedding order."""
    n, d = um.dimensions.shape
    concept, argmax = best_concept(um.concepts, framework)  # is_argmax marks the best concept's dimension
    names = np.array([c.name for c in framework.concepts] + [None], dtype=object)
    no_concept = um.extra.get("no_concept")
    if no_concept is not None and n:
        concept = np.where(no_concept, len(framework.concepts), concept)  # no concept for this role: null
    return pa.table(
        {
            "utterance_id": pa.array(np.repeat(np.asarray(um.utterance_ids, dtype=object), d), pa.string()),
            "dimension": pa.array(np.tile(np.asarray(framework.dimension_ids, dtype=object), n), pa.string()),
            "probability": pa.array(um.dimensions.reshape(-1), pa.float64()),
            "is_argmax": pa.array((argmax[:, None] == np.arange(d)[None, :]).reshape(-1), pa.bool_()),
            "mapped": pa.array(np.repeat(um.mapped, d), pa.bool_()),
            "second_order": pa.array(np.repeat(names[concept] if n else names[:0], d), pa.string()),
            "source": pa.array(np.repeat(np.asarray(um.source, dtype=object), d), pa.string()),
        },
        schema=schema.UTTERANCE_DIMENSIONS,
    )


# --- the stage -----------------------------------------------------------------------------------


@dataclass
class MapResult:
    code_dimensions: pa.Table
    utterance_dimensions: pa.Table
    data_structure: pa.Table
    markdown: str
    code_mapping: CodeMapping
    utterance_mapping: UtteranceMapping
    mapper: SimilarityMapper | ClassifierMapper


def mapping_warnings(unmapped_share: float, temperature: float | None, fitted: bool) -> list[str]:
    """What a researcher must know before reading shifts off this mapping."""
    out = []
    if unmapped_share > 0.5:
        out.append(
            f"{unmapped_share:.0%} of the utterances stay unmapped: the framework does not describe most of "
            "this talk, so dimension shares and shifts rest on little evidence (shift marks such speakers "
            "no_evidence); consider `themeshift learn` with some hand-coded interviews"
        )
    if fitted and temperature is not None and temperature in (TEMPERATURE_GRID[0], TEMPERATURE_GRID[-1]):
        out.append(
            f"the fitted temperature {temperature:g} sits at the edge of its grid "
            f"[{TEMPERATURE_GRID[0]:g}, {TEMPERATURE_GRID[-1]:g}]: the framework's own texts do not separate "
            "its concepts, so probabilities are "
            + ("near uniform" if temperature == TEMPERATURE_GRID[-1] else "overconfident")
            + "; set map.temperature or add exemplars"
        )
    return out


def map_stage(
    utterances: pa.Table,
    embeddings,
    codes: pa.Table,
    assignments: pa.Table,
    framework: Framework,
    encoder: Encoder,
    m: MapSettings,
    overrides: dict[str, str | None] | None = None,
) -> MapResult:
    """embeddings: a table, or io.vectors.StoredEmbeddings (read CHUNK_ROWS utterances at a time).
    overrides: fingerprint -> concept id (None = unmapped), already checked against the codes."""

    mapper = make_mapper(m).fit(embed_framework(framework, encoder))
    source = StoredEmbeddings.of(embeddings)
    index = {c.id: j for j, c in enumerate(framework.concepts)}
    by_index = {fp: (None if cid is None else index[cid]) for fp, cid in (overrides or {}).items()}
    exemplars = sorted({u for ids in codes.column("exemplar_ids").to_pylist() for u in (ids or [])})
    ex_vectors, found = source.gather(exemplars)
    present = [u for u, ok in zip(exemplars, found) if ok]
    probs = code_probabilities(codes, {u: i for i, u in enumerate(present)}, ex_vectors[found], mapper, m)
    mapping = decide_codes(probs, codes.column("fingerprint").to_pylist(), by_index, mapper.source, m)
    um = _map_in_chunks(utterances, source, assignments, codes, mapping, mapper, framework, m)
    quoted = utterances.filter(pc.is_in(utterances.column("utterance_id"), value_set=pa.array(exemplars, pa.string())))
    texts = dict(zip(quoted.column("utterance_id").to_pylist(), quoted.column("text").to_pylist()))
    ds = data_structure_table(codes, mapping, framework, texts, m.quotes)
    return MapResult(
        code_dimensions_table(codes, mapping, framework),
        utterance_dimensions_table(um, framework),
        ds,
        data_structure_markdown(ds, framework),
        mapping,
        um,
        mapper,
    )


def turn_cuts(interview: pa.Array, turn: pa.Array, size: int) -> list[int]:
    """Row positions that cut rows (in embedding order) into chunks of about `size`, each cut at the
    start of a speaker turn, so a turn's context is always whole within its chunk."""
    n = len(interview)
    if n <= size:
        return [0, n]
    new_turn = pc.or_(pc.not_equal(interview[1:], interview[:-1]), pc.not_equal(turn[1:], turn[:-1]))
    starts = np.flatnonzero(new_turn.fill_null(True).to_numpy(zero_copy_only=False)) + 1
    cuts = [0]
    while cuts[-1] + size < n:
        i = np.searchsorted(starts, cuts[-1] + size)
        if i == len(starts):
            break
        cuts.append(int(starts[i]))
    return cuts + [n]


def _map_in_chunks(
    utterances: pa.Table,
    source,
    assignments: pa.Table | None,
    codes: pa.Table,
    mapping: CodeMapping,
    mapper,
    framework: Framework,
    m: MapSettings,
) -> UtteranceMapping:
    """map_utterances over chunks of whole speaker turns, read a chunk at a time; every row is
    mapped independently of the others but for its turn, so the result is the one-chunk result."""
    emb_ids = source.ids.combine_chunks()
    at = pc.index_in(emb_ids, value_set=utterances.column("utterance_id").combine_chunks())
    at_code = (
        None
        if assignments is None
        else pc.index_in(emb_ids, value_set=assignments.column("utterance_id").combine_chunks())
    )
    cuts = turn_cuts(utterances.column("interview_id").take(at), utterances.column("turn_index").take(at), CHUNK_ROWS)
    if len(emb_ids) == 0:
        chunks = [
            source.table
            if source.table is not None
            else pa.Table.from_pylist([], schema=schema.embeddings_schema(source.dim))
        ]
        cuts = [0, 0]
    else:
        chunks = source.chunks(cuts)
    pieces = []
    for lo, hi, chunk in zip(cuts[:-1], cuts[1:], chunks):
        own_utterances = utterances.take(at.slice(lo, hi - lo).drop_null())
        own_codes = (
            None if at_code is None or assignments is None else assignments.take(at_code.slice(lo, hi - lo).drop_null())
        )  # at_code is None just when assignments is
        pieces.append(map_utterances(own_utterances, chunk, own_codes, codes, mapping, mapper, framework, m))
    if len(pieces) == 1:
        return pieces[0]
    return UtteranceMapping(
        [u for p in pieces for u in p.utterance_ids],
        np.concatenate([p.concepts for p in pieces]),
        np.concatenate([p.dimensions for p in pieces]),
        np.concatenate([p.mapped for p in pieces]),
        [s for p in pieces for s in p.source],
        {k: np.concatenate([p.extra[k] for p in pieces]) for k in pieces[0].extra},
    )
