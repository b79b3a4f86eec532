"""learn: the researchers' own coding teaches a model to code the rest of the corpus.

Targets. Human codes are read, named and aligned to utterances exactly as the compare
stage does (pipeline.io.human_codes, [compare] min_overlap / uncoded / unknown_codes). The
units are the coded utterances of the interviews a coder coded; an utterance a coder left
uncoded there is the label "none" (outside the framework), so the model learns to leave
such talk uncoded too. Each coder's label is a training row weighted 1 / (coders who labelled
the utterance): where coders agree this is the consensus with weight 1, where they disagree
a soft label split between them, so no utterance is dropped and none counts twice.

Weak examples. The framework's names, descriptions and exemplars join the training data
with sample weight [learn] framework_weight, labelled with their concept (or its dimension).

Model. A seeded multinomial logistic regression (scikit-learn, lbfgs) on a feature set from
pipeline.learn_features. With [learn] balance_classes each class's rows are weighted by the
inverse of its frequency, so the concept coders use most does not swallow its neighbours;
with [learn] turn_pooling, an utterance takes the normalised geometric mean of its speaker
turn's probabilities. Each candidate feature set is
cross-validated grouped by interview and the one with the best mean machine-vs-coder kappa
is kept (the small selection among a few sets is the only step that sees all folds).

Code sets. Where coders put several codes on one unit (MULTI_CODE_SHARE of their units or more),
every class is its own one-vs-rest model and a unit's set is every class at or above its
threshold (best F1 out of fold) plus its most probable class, which stays its label.

Encoder. [learn] encoder may fine-tune the sentence model on the coded units
(pipeline.learn_finetune); choose_encoder measures it against the frozen one on held-out coded
interviews and keeps the better; kept, the encoder is tuned again on every coded unit (one code
per unit only) and the final model reads its features.

Evaluation. Grouped cross-validation (no interview in both training and test) gives a
prediction for every human-coded utterance from a model that never saw its interview;
these are compared with each coder (kappa, alpha, precision/recall/F1 with the [compare]
bootstrap) side by side with the coders' own agreement on the same utterances, and with
the framework-similarity mapping. A learning curve repeats the fit on 1, 2, ... coded
interviews (random draws) and scores the interviews left out.

Output. utterance_dimensions: human codes where they exist (source "human", the coders'
votes as probabilities; a researcher's code override from the map stage also stays
human), else the model (source "learned"). The framework-similarity table is kept as
utterance_dimensions_framework; the cross-validated predictions for the human-coded
utterances are utterance_dimensions_cv, which the compare stage uses for those utterances
so a model is never scored on its own training data.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.agreement import MISSING, Bootstrap, Ratings, compare_ratings
from pipeline.compare import human_ratings, machine_labels, machine_ratings
from pipeline.embed import embed_utterances
from pipeline.errors import ConfigError, InputError
from pipeline.io.human_codes import align, resolve_codes
from pipeline.learn_features import (
    FEATURE_SETS,
    FeatureBlocks,
    Projection,
    build_blocks,
    framework_block,
    vstack,
    weak_matrix,
)
from pipeline.learn_finetune import TunedEncoder, TuneReport, has_gpu, tune_encoder
from pipeline.map import (
    embed_framework,
    make_mapper,
    pooled_similarity,
    renormalise_within,
    restrict_to_roles,
    softmax_rows,
    speaker_roles,
)
from pipeline.schema import (
    LEARN_EVAL,
    LEARNED_CODES,
    UTTERANCE_DIMENSIONS,
)
from pipeline.settings import CompareSettings, LearnSettings, MapSettings

NONE = "none"
MACHINE = "machine"
LEVELS = {"dimension": "dimension", "second_order": "second-order", "code": "code"}  # option -> compare's name
SOURCE_HUMAN, SOURCE_LEARNED, SOURCE_FRAMEWORK = "human", "learned", "framework-similarity"


# ---------------------------------------------------------------- targets from human codes


@dataclass
class Targets:
    """Human labels of the units (coded utterances of human-coded interviews)."""

    units: pd.DataFrame  # utterance_id, interview_id, ... in utterance order
    coders: list[str]
    level: str  # compare's level name of the model's classes
    classes: list[str]  # model classes (index = label id), "none" last
    class_dimension: list[str | None]
    class_concept: list[str | None]
    primary: dict[str, np.ndarray]  # coder -> (units,) class index or MISSING, at the model level
    eval_levels: dict[str, tuple[list[str], dict, dict]]  # level -> (categories, primary, present) of the coders
    warnings: list[str] = field(default_factory=list)
    multi_code: bool = False  # coders put several codes on one unit: one-vs-rest models, label sets
    unlearned: list[str] = field(default_factory=list)  # multi-code classes with too few examples to model

    @property
    def present(self) -> dict[str, np.ndarray]:
        """coder -> (units, classes) every label the coder gave, at the model level."""
        return self.eval_levels[self.level][2]

    def truth_sets(self) -> tuple[np.ndarray, np.ndarray]:
        """(units, classes) labels any coder gave, and (units,) whether any coder labelled the unit."""
        labelled = np.stack([self.primary[c] != MISSING for c in self.coders], axis=1).any(axis=1)
        given = np.stack([self.present[c] for c in self.coders], axis=0).any(axis=0)
        return cast(np.ndarray, given), cast(np.ndarray, labelled)  # numpy's stubs: .any(axis=) may be a scalar


def _level_categories(level: str, framework, aligned: pd.DataFrame) -> list[str]:
    if level == "dimension":
        return [*framework.dimension_ids, NONE]
    if level == "second-order":
        return [*framework.concept_ids, NONE]
    return [*sorted(c for c in aligned["code"].unique() if c != NONE), NONE]


def human_targets(
    utterances: pa.Table, sources: pa.Table, human, framework, mapping, level: str, compare: CompareSettings
) -> Targets:

    if level not in LEVELS:
        raise ConfigError(f"learn.level must be dimension, second_order or code, got {level!r}")
    human = drop_suggestion_markers(human, (compare.suggest_user, compare.qdpx_user))  # themeshift's own
    resolved, warnings = resolve_codes(human, framework, mapping, compare.unknown_codes)
    aligned = align(human, resolved, utterances, sources, compare.min_overlap).to_pandas()
    if aligned.empty:
        raise InputError(
            "no human code falls on an utterance of this run; is it the run the codes were made on?", human.path
        )
    coders = sorted(aligned["coder"].unique())
    utt = utterances.select(["utterance_id", "interview_id", "turn_index", "coded", "text"]).to_pandas()
    units = utt[utt["coded"] & utt["interview_id"].isin(set(aligned["interview_id"]))].reset_index(drop=True)
    uncoded_is_none = compare.uncoded == "none"
    name = LEVELS[level]
    framed = aligned.assign(dimension=aligned["dimension"].fillna("outside"))  # every code counts at code level
    eval_levels = {}
    for lv in dict.fromkeys([name, "dimension", "second-order"]):
        cats = _level_categories(lv, framework, aligned)
        column = {"dimension": "dimension", "second-order": "second_order", "code": "code"}[lv]
        primary, present = human_ratings(
            framed if lv == "code" else aligned, units, coders, column, cats, uncoded_is_none
        )
        eval_levels[lv] = (cats, primary, present)
    classes = eval_levels[name][0]
    class_dim: list[str | None]
    class_concept: list[str | None]
    if name == "dimension":
        class_dim, class_concept = [*framework.dimension_ids, None], [None] * len(classes)
    elif name == "second-order":
        class_dim = [*(framework.dimension_of(cid) for cid in framework.concept_ids), None]
        class_concept = [*framework.concept_ids, None]
    else:
        first = aligned.drop_duplicates("code").set_index("code")
        class_dim = [
            None if cl == NONE or pd.isna(first.at[cl, "dimension"]) else first.at[cl, "dimension"] for cl in classes
        ]
        class_concept = [
            None if cl == NONE or pd.isna(first.at[cl, "second_order"]) else first.at[cl, "second_order"]
            for cl in classes
        ]
    t = Targets(
        units, coders, name, classes, class_dim, class_concept, eval_levels[name][1], eval_levels, list(warnings)
    )
    t.multi_code = multi_code_share(t) >= MULTI_CODE_SHARE
    return t


MULTI_CODE_SHARE = 0.05  # labelled units with two or more labels from one coder above which learn models code sets;
# talk moves (one move per sentence) have none, games_as_art 89% of its coded passages


def multi_code_share(t: Targets) -> float:
    """Share of the units a coder labelled that carry two or more of that coder's labels."""
    multi, labelled = 0, 0
    for c in t.coders:
        ok = t.primary[c] != MISSING
        multi += int((t.present[c][ok].sum(axis=1) >= 2).sum())
        labelled += int(ok.sum())
    return multi / labelled if labelled else 0.0


def drop_suggestion_markers(human, users: str | Iterable[str]):
    """Codings by themeshift's own users are nobody's coding: the suggest command's markers
    (learn.suggest_user) and, in a project `themeshift export qdpx` wrote, the machine's codings and
    low-confidence markers (compare.qdpx_user). A file holding nothing else is refused."""
    users = {users} if isinstance(users, str) else set(users)
    frame = human.frame
    keep = ~frame["coder"].isin(users)
    if keep.all():
        return human
    if not keep.any():
        raise InputError(
            f"the file holds only codings by themeshift's own users ({', '.join(sorted(set(frame['coder'])))}): "
            "the machine's coding and suggest's markers, no human coding; code it in a QDA tool under your "
            "own user name",
            human.path,
        )
    from dataclasses import replace

    return replace(human, frame=frame[keep].reset_index(drop=True))


def check_enough(t: Targets, s: LearnSettings, path) -> dict[str, int]:
    """Refuse to learn from too little: a clear message with how many more are needed."""
    none = t.classes.index(NONE)
    coded = np.stack([(t.primary[c] != MISSING) & (t.primary[c] != none) for c in t.coders], axis=1).any(axis=1)
    n = int(coded.sum())  # utterances with a real code: "none" (left uncoded) alone teaches nothing
    keep = "; the framework-similarity mapping stays in place"
    if n < s.min_utterances:
        raise InputError(
            f"only {n} human-coded utterances at the {t.level} level; learning needs at least "
            f"{s.min_utterances}: code {s.min_utterances - n} more{keep}",
            path,
        )
    interviews = t.units.loc[coded, "interview_id"].nunique()
    if interviews < 2:
        raise InputError(
            "human codes come from one interview; cross-validation by interview needs at least 2: "
            f"code 1 more interview{keep}",
            path,
        )
    counts = {}
    sets, _ = t.truth_sets()
    for k, cl in enumerate(t.classes):
        counts[cl] = (
            int(sets[:, k].sum())
            if t.multi_code
            else int(np.stack([t.primary[c] == k for c in t.coders], axis=1).any(axis=1).sum())
        )
    short = {cl: m for cl, m in counts.items() if 0 < m < s.min_per_class}
    if short and t.multi_code:
        # one-vs-rest: each code is its own model, so a rare code is simply not learned (it stays the coders')
        t.unlearned = sorted(short)
        t.warnings.append(
            f"{len(short)} {t.level} label(s) have fewer than {s.min_per_class} coded units and "
            "are not learned (the machine never assigns them; code more to include them): "
            + ", ".join(f"{cl!r} ({m})" for cl, m in short.items())
        )
    elif short:
        need = ", ".join(f"{cl!r} has {m} (code {s.min_per_class - m} more)" for cl, m in short.items())
        coarser = "" if t.level == "dimension" else " (or learn dimensions only: --level dimension)"
        raise InputError(
            f"too few examples to learn from: every {t.level} label needs at least "
            f"{s.min_per_class} coded utterances; {need}{coarser}{keep}",
            path,
        )
    return counts


def training_rows(t: Targets, subset: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(unit index, class, weight) rows: every coder's label, weight 1 / coders labelling the unit."""
    labels = np.stack([t.primary[c][subset] for c in t.coders], axis=1)
    has = labels != MISSING
    n_coders = has.sum(axis=1)
    rows, cols = np.nonzero(has)
    return subset[rows], labels[rows, cols], 1.0 / n_coders[rows]


def training_sets(t: Targets, subset: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(unit index, (rows, classes) label set, weight) rows for one-vs-rest: each coder's set of labels,
    weight 1 / coders labelling the unit."""
    units, _, w = training_rows(t, subset)
    coders = np.stack([t.primary[c][subset] != MISSING for c in t.coders], axis=1)
    rows, cols = np.nonzero(coders)
    sets = np.stack([t.present[c] for c in t.coders], axis=0)[cols, subset[rows]]
    return units, sets, w


def weak_examples(t: Targets, fv) -> tuple[np.ndarray, np.ndarray]:
    """(framework text index, class) of the framework texts whose concept has a class."""
    concepts = fv.framework.concepts
    if t.level == "dimension":
        target = {j: t.classes.index(c.dimension) for j, c in enumerate(concepts)}
    else:
        owners: dict[str, list[int]] = {}
        for k, cid in enumerate(t.class_concept):
            if cid is not None:
                owners.setdefault(cid, []).append(k)
        target = {j: owners[c.id][0] for j, c in enumerate(concepts) if len(owners.get(c.id, [])) == 1}
    idx = np.array([i for i, j in enumerate(fv.labels) if int(j) in target], dtype=np.int64)
    return idx, np.array([target[int(fv.labels[i])] for i in idx], dtype=np.int64)


# ---------------------------------------------------------------- the model


class TurnPooledLogit:
    """Logistic regression over a feature set, one per group of units, optionally pooling
    probabilities within speaker turns.

    Groups are the speaker roles whose codes differ (a role-aware framework): a teacher's moves and
    a student's are separate models, each a softmax over its own role's codes. On TalkMoves (20% of
    lessons coded) one model per role adds 0.03 kappa for teachers and 0.04 for students over one
    model for both with the other role's codes masked afterwards (bench/validity.py).

    scikit-learn contract: parameters in the constructor, fit() learns, state ends in '_'.

    With multi_code, y is a (rows, classes) label set and every class is its own binary logistic
    regression (one-vs-rest): probabilities are each label's own and do not sum to 1, and a unit's
    set is every label at or above its threshold (thresholds_, set by learn) plus the most probable.
    """

    models_: dict[int, Any]  # group -> LogisticRegression, its one label (int) or one-vs-rest list
    n_features_in_: int
    # set by learn_stage on the final model and saved with it (pipeline.learn_model)
    words_: Any  # the words block's TfidfVectorizer, or None
    unit_words_: Any  # the unit_words block's TfidfVectorizer, or None
    projection_: Projection | None
    group_patterns_: np.ndarray | None
    thresholds_: np.ndarray

    def __init__(
        self,
        n_classes: int,
        c: float = 0.5,
        turn_pooling: bool = True,
        seed: int = 0,
        balance_classes: bool = False,
        multi_code: bool = False,
        skip: tuple[int, ...] = (),
    ):
        self.n_classes = n_classes
        self.c = c
        self.turn_pooling = turn_pooling
        self.seed = seed
        self.balance_classes = balance_classes
        self.multi_code = multi_code
        self.skip = skip  # one-vs-rest classes never modelled (too few examples)

    def _binary(self, x, y: np.ndarray, w: np.ndarray):
        """One class's model, or its constant answer when the rows hold one value only."""
        from sklearn.linear_model import LogisticRegression

        if y.all() or not y.any():
            return float(y[0])
        return LogisticRegression(
            C=self.c,
            max_iter=5000,
            tol=FIT_TOLERANCE,
            random_state=self.seed,
            class_weight="balanced" if self.balance_classes else None,
        ).fit(x, y.astype(np.int64), sample_weight=w)

    def fit(self, x, y: np.ndarray, sample_weight: np.ndarray, groups: np.ndarray | None = None) -> "TurnPooledLogit":
        from sklearn.linear_model import LogisticRegression

        groups = np.zeros(len(y), dtype=np.int64) if groups is None else groups
        self.models_ = {}
        for g in np.unique(groups).tolist():
            m = groups == g
            if self.multi_code:
                self.models_[g] = [
                    0.0 if k in self.skip else self._binary(x[m], y[m, k], sample_weight[m])
                    for k in range(self.n_classes)
                ]
                continue
            if len(np.unique(y[m])) < 2:  # one label only: that label, with certainty
                self.models_[g] = int(y[m][0])
                continue
            self.models_[g] = LogisticRegression(
                C=self.c,
                max_iter=5000,
                tol=FIT_TOLERANCE,
                random_state=self.seed,
                class_weight="balanced" if self.balance_classes else None,
            ).fit(x[m], y[m], sample_weight=sample_weight[m])
        self.n_features_in_ = int(x.shape[1])
        return self

    def predict_proba(self, x, turns: np.ndarray | None = None, groups: np.ndarray | None = None) -> np.ndarray:
        """Class probabilities; a unit of a group without coded units goes to the last class ('none')."""
        n = x.shape[0]
        groups = np.zeros(n, dtype=np.int64) if groups is None else groups
        p = np.zeros((n, self.n_classes))
        p[:, -1] = 1.0
        for g, model in self.models_.items():
            rows = np.flatnonzero(groups == g)
            if not len(rows):
                continue
            p[rows] = 0.0
            if isinstance(model, list):  # one-vs-rest
                xr = x[rows]
                for k, mk in enumerate(model):
                    p[rows, k] = mk if isinstance(mk, float) else mk.predict_proba(xr)[:, 1]
                continue
            if isinstance(model, int):
                p[rows, model] = 1.0
            else:
                p[np.ix_(rows, model.classes_)] = model.predict_proba(x[rows])
        if self.turn_pooling and turns is not None and n and not self.multi_code:
            p = pool_turns(p, turns)
        return p


def fit_thresholds(p: np.ndarray, truth: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Per class, the probability threshold with the best F1 over the given rows (one-vs-rest
    probabilities against the coders' label sets); 1.0 (never beyond the most probable) for a class
    with no positive there."""
    grid = np.round(np.arange(0.05, 0.96, 0.05), 2)
    out = np.ones(p.shape[1])
    for k in range(p.shape[1]):
        y = truth[rows, k]
        if not y.any():
            continue
        pred = p[rows, k][:, None] >= grid[None, :]
        tp = (pred & y[:, None]).sum(axis=0)
        f1 = 2 * tp / (pred.sum(axis=0) + y.sum())
        out[k] = grid[int(np.argmax(f1))]  # ties: the lowest threshold
    return out


def label_sets(p: np.ndarray, thresholds: np.ndarray | None) -> np.ndarray:
    """(n, classes) the labels at or above their threshold, and always the most probable one (only the
    most probable one without thresholds: a single-label model)."""
    out = p >= thresholds[None, :] if thresholds is not None else np.zeros(p.shape, dtype=bool)
    if len(p):
        out[np.arange(len(p)), p.argmax(axis=1)] = True
    return out


FIT_TOLERANCE = 1e-3  # lbfgs stopping tolerance: on TalkMoves 1e-4 takes twice the iterations for the same agreement


def pool_turns(p: np.ndarray, turns: np.ndarray) -> np.ndarray:
    """Normalised geometric mean of the probabilities over each turn's utterances (classes a
    model never saw keep probability 0)."""
    _, group = np.unique(turns, return_inverse=True)
    logp = np.log(np.clip(p, 1e-12, None))
    sums = np.zeros((group.max() + 1, p.shape[1]))
    np.add.at(sums, group, logp)
    mean = sums[group] / np.bincount(group)[group][:, None]
    out = np.exp(mean - mean.max(axis=1, keepdims=True)) * (p.sum(axis=0, keepdims=True) > 0)
    return out / out.sum(axis=1, keepdims=True)


@dataclass
class Data:
    """Everything a fit needs, indexed by unit (human-coded utterance)."""

    targets: Targets
    x_units: dict[str, np.ndarray]  # feature set -> (units, features)
    turns: np.ndarray  # (units,) turn group ids
    x_weak: dict[str, np.ndarray]  # feature set -> (weak examples, features)
    y_weak: np.ndarray
    weak_weight: float
    allowed: np.ndarray | None = None  # (units, classes) bool: classes the unit's speaker role may get
    turn_pooling: bool = True  # learn.turn_pooling, unless the coders code sentence by sentence
    groups: np.ndarray | None = None  # (units,) the unit's model group (role_groups); None: one model
    weak_groups: np.ndarray | None = None  # (groups, weak examples) bool: the groups a weak example trains

    def restrict(self, p: np.ndarray, rows: np.ndarray) -> np.ndarray:

        return p if self.allowed is None else renormalise_within(p, self.allowed[rows])


def class_roles_mask(t: "Targets | Classes", framework, roles: list) -> np.ndarray | None:
    """(n, classes) bool: a class naming a concept is allowed where the concept applies to the unit's
    speaker role, one naming a dimension where any of its concepts does; 'outside the framework'
    always. None for frameworks without roles."""
    if not framework.has_roles:
        return None
    concepts = framework.allowed_concepts(roles)
    index = {c: i for i, c in enumerate(framework.concept_ids)}
    cols = []
    for d, c in zip(t.class_dimension, t.class_concept):
        if c is not None:
            cols.append(concepts[:, index[c]])
        elif d is not None:
            cols.append(concepts[:, [framework.dimension_of(x) == d for x in framework.concept_ids]].any(axis=1))
        else:
            cols.append(np.ones(len(roles), dtype=bool))
    return np.stack(cols, axis=1)


MIXED_TURN_SHARE = 0.2  # coded turns with several labels above which pooling a turn's units is wrong


def mixed_turn_share(t: "Targets") -> float:
    """Share of the coded turns with two or more labelled units whose units carry different labels:
    near 0 when coders code whole answers, high when they code sentence by sentence (talk moves)."""
    turn = t.units["interview_id"].astype(str) + "\x1f" + t.units["turn_index"].astype(str)
    mixed, total = 0, 0
    for coder in t.coders:
        labels = pd.Series(t.primary[coder])
        ok = labels.to_numpy() != MISSING
        per_turn = labels[ok].groupby(turn[ok].to_numpy()).agg(["size", "nunique"])
        per_turn = per_turn[per_turn["size"] >= 2]
        mixed += int((per_turn["nunique"] > 1).sum())
        total += len(per_turn)
    return mixed / total if total else 0.0


def role_groups(allowed: np.ndarray | None, n: int) -> tuple[np.ndarray, np.ndarray | None]:
    """(n,) model group of every utterance (one per distinct set of classes its role may get) and
    the groups' class masks; one group and None for frameworks without roles."""
    if allowed is None:
        return np.zeros(n, dtype=np.int64), None
    patterns, group = np.unique(allowed, axis=0, return_inverse=True)
    return group.reshape(-1).astype(np.int64), patterns


def fit_model(d: Data, feature_set: str, train: np.ndarray, s: LearnSettings) -> TurnPooledLogit:
    t = d.targets
    rows, y, w = training_sets(t, train) if t.multi_code else training_rows(t, train)
    x = d.x_units[feature_set][rows]
    g = d.groups[rows] if d.groups is not None else np.zeros(len(rows), dtype=np.int64)
    if d.weak_weight > 0 and len(d.y_weak):
        # a framework text trains every group whose role may get its class
        member = d.weak_groups if d.weak_groups is not None else np.ones((1, len(d.y_weak)), dtype=bool)
        for k, m in enumerate(member):
            idx = np.flatnonzero(m)
            x = vstack([x, d.x_weak[feature_set][idx]])
            weak_y = np.eye(len(t.classes), dtype=bool)[d.y_weak[idx]] if t.multi_code else d.y_weak[idx]
            y = np.concatenate([y, weak_y])
            w = np.concatenate([w, np.full(len(idx), d.weak_weight)])
            g = np.concatenate([g, np.full(len(idx), k, dtype=np.int64)])
    skip = tuple(t.classes.index(cl) for cl in t.unlearned)
    return TurnPooledLogit(
        len(t.classes),
        s.c_multi_code if t.multi_code else s.c,
        d.turn_pooling,
        s.seed,
        s.balance_classes,
        t.multi_code,
        skip,
    ).fit(x, y, w, g)


def fit_predict(d: Data, feature_set: str, train: np.ndarray, test: np.ndarray, s: LearnSettings) -> np.ndarray:
    """Fit on the train units, return the test units' probabilities within their roles."""
    model = fit_model(d, feature_set, train, s)
    groups = None if d.groups is None else d.groups[test]
    return d.restrict(model.predict_proba(d.x_units[feature_set][test], d.turns[test], groups), test)


def predict_all(model: TurnPooledLogit, blocks, feature_set: str, groups: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """Probabilities for every utterance, built a chunk of whole turns at a time so a large
    corpus never holds its full feature matrix (rows of a turn are contiguous)."""
    n = len(blocks.utterance_ids)
    order = np.argsort(blocks.turns, kind="stable")
    out = np.zeros((n, model.n_classes))
    start = 0
    while start < n:
        stop = min(n, start + chunk)
        while stop < n and blocks.turns[order[stop]] == blocks.turns[order[stop - 1]]:
            stop += 1  # keep a turn in one chunk: pooling needs all of it
        rows = order[start:stop]
        out[rows] = model.predict_proba(blocks.matrix(feature_set, rows), blocks.turns[rows], groups[rows])
        start = stop
    return out


def interview_codes(t: Targets) -> tuple[list[str], np.ndarray]:
    names = sorted(t.units["interview_id"].unique())
    return names, t.units["interview_id"].map({g: i for i, g in enumerate(names)}).to_numpy(np.int64)


def cross_validate(d: Data, feature_set: str, s: LearnSettings) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold probabilities (units, classes) and each unit's fold, grouped by interview."""
    from sklearn.model_selection import GroupKFold

    names, groups = interview_codes(d.targets)
    folds = min(s.cv_folds, len(names))
    probs = np.zeros((len(groups), len(d.targets.classes)))
    fold_of = np.zeros(len(groups), dtype=np.int32)
    x = d.x_units[feature_set]
    for f, (train, test) in enumerate(GroupKFold(n_splits=folds).split(x, groups=groups)):
        probs[test] = fit_predict(d, feature_set, train, test, s)
        fold_of[test] = f
    return probs, fold_of


def cross_validated_sets(probs: np.ndarray, fold_of: np.ndarray, t: Targets) -> np.ndarray:
    """Out-of-fold label sets: each fold's thresholds are fitted on the other folds' out-of-fold
    probabilities, so no unit's own codes set the threshold it is judged by."""
    truth, labelled = t.truth_sets()
    out = np.zeros(probs.shape, dtype=bool)
    for f in np.unique(fold_of):
        test = fold_of == f
        out[test] = label_sets(probs[test], fit_thresholds(probs, truth, np.flatnonzero(~test & labelled)))
    return out


# ---------------------------------------------------------------- labels from class probabilities


@dataclass
class Derived:
    """Dimension-level view of class probabilities."""

    dimensions: np.ndarray  # (n, d) probabilities over the framework dimensions (sum 1)
    mapped: np.ndarray  # (n,) the most probable class lies inside the framework
    concept: np.ndarray  # (n,) concept index (framework order); its dimension is the unit's label


def derive(p: np.ndarray, t: Targets | Classes, framework, concept_fallback: np.ndarray) -> Derived:
    """Class probabilities -> dimension probabilities, mapped flag and second-order concept.

    The label is the most probable class (as the coders would give one): a unit is mapped when
    that class lies inside the framework; its concept is the class's concept, or, for a
    dimension-level class, the framework-similarity concept inside that dimension. Not the best
    dimension first: summing classes favours dimensions that hold more of them (on TalkMoves a
    student's sentence went to the dimension holding two of the four student moves)."""
    dims, concepts = framework.dimension_ids, framework.concept_ids
    to_dim = np.zeros((len(t.classes), len(dims)))
    to_concept = np.zeros((len(t.classes), len(concepts)))
    for k, (d, c) in enumerate(zip(t.class_dimension, t.class_concept)):
        if d is not None:
            to_dim[k, dims.index(d)] = 1.0
        if c is not None:
            to_concept[k, concepts.index(c)] = 1.0
    dim_p = p @ to_dim
    total = dim_p.sum(axis=1, keepdims=True)
    dim_p = np.where(total > 0, dim_p / np.where(total > 0, total, 1), 1.0 / len(dims))
    top = p.argmax(axis=1)
    mapped = to_dim[top].sum(axis=1) > 0
    # the chosen dimension: the top class's, or for an unmapped unit the most probable one
    best = np.where(mapped, to_dim[top].argmax(axis=1), dim_p.argmax(axis=1))
    in_dim = np.array([[framework.dimension_of(c) == dims[b] for c in concepts] for b in range(len(dims))])[best]
    concept_p = np.where(to_concept[top].sum(axis=1, keepdims=True) > 0, to_concept[top], p @ to_concept)
    evidence = np.where(concept_p.sum(axis=1, keepdims=True) > 0, concept_p, concept_fallback)
    concept = np.where(in_dim, evidence + 1e-9, -1.0).argmax(axis=1)
    return Derived(dim_p, mapped, concept)


def chosen_dimension(dv: Derived, framework) -> np.ndarray:
    """Each unit's chosen dimension (index): the dimension of its concept."""
    of = {c: i for i, c in enumerate(framework.dimension_ids)}
    return np.array([of[framework.dimension_of(c)] for c in framework.concept_ids], dtype=np.int64)[dv.concept]


def machine_primary(p: np.ndarray, t: Targets, framework, fallback: np.ndarray) -> dict[str, np.ndarray]:
    """The machine's one label per unit at every evaluation level (index into its categories)."""
    dv = derive(p, t, framework, fallback)
    out = {}
    for lv, (cats, _, _) in t.eval_levels.items():
        if lv == "dimension":
            label = np.where(dv.mapped, chosen_dimension(dv, framework), cats.index(NONE))
        elif lv == "second-order":
            label = np.where(dv.mapped, dv.concept, cats.index(NONE))
        else:
            label = p.argmax(axis=1)
        out[lv] = label.astype(np.int64)
    return out


def machine_sets(assigned: np.ndarray, t: Targets, machine: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The machine's label set at every evaluation level, from its set of model classes: a class's
    concept (or dimension) at the coarser levels, 'none' for a class outside the framework; the
    unit's one label (machine) is always in its set."""
    out = {}
    for lv, (cats, _, _) in t.eval_levels.items():
        if lv == t.level:
            out[lv] = assigned.copy()
            continue
        names = t.class_dimension if lv == "dimension" else t.class_concept
        to = np.zeros((len(t.classes), len(cats)), dtype=bool)
        for k, name in enumerate(names):
            to[k, cats.index(name) if name is not None else cats.index(NONE)] = True
        sets = (assigned.astype(np.int64) @ to.astype(np.int64)) > 0
        m = machine[lv]
        sets[np.flatnonzero(m != MISSING), m[m != MISSING]] = True
        out[lv] = sets
    return out


def _ratings(
    t: Targets, level: str, machine: np.ndarray, rows: np.ndarray | None = None, sets: np.ndarray | None = None
) -> Ratings:
    cats, primary, present = t.eval_levels[level]
    sel = slice(None) if rows is None else rows
    pri = {c: primary[c][sel] for c in t.coders}
    pre = {c: present[c][sel] for c in t.coders}
    m = machine[sel]
    pri[MACHINE] = m
    one = np.eye(len(cats), dtype=bool)[np.where(m == MISSING, 0, m)] & (m != MISSING)[:, None]
    pre[MACHINE] = one if sets is None else sets[sel] & (m != MISSING)[:, None]
    return Ratings(level, cats, pri, pre)


EVAL_METRICS = ("cohen_kappa", "krippendorff_alpha", "f1", "exact_set", "jaccard", "label_kappa")


def agreement_rows(
    t: Targets,
    machine: dict[str, np.ndarray],
    boot: Bootstrap,
    groups: np.ndarray,
    rows: np.ndarray | None = None,
    metrics=EVAL_METRICS,
    sets: dict[str, np.ndarray] | None = None,
) -> list[dict]:
    """Machine and coder agreement per evaluation level; per-label rows are kept only as averages
    (macro, micro): the per-label detail is the compare stage's."""
    out = []
    g = groups if rows is None else groups[rows]
    for level in t.eval_levels:
        r = _ratings(t, level, machine[level], rows, None if sets is None else sets[level])
        got, _, _ = compare_ratings(r, t.coders, MACHINE, g, int(groups.max()) + 1, boot)
        out += [
            x
            for x in got
            if x["metric"] in metrics
            and (x["metric"] not in ("f1", "label_kappa") or x["dimension"] in ("macro", "micro"))
        ]
    return out


def selection_score(rows: list[dict], t: Targets) -> float:
    """What the feature-set choice maximises: the mean machine-coder kappa, or for label sets
    (multi-code) the micro-F1 of the machine's sets against each coder."""
    if not t.multi_code:
        return mean_machine_kappa(rows, t.level, t.coders)
    vals = [
        r["value"]
        for r in rows
        if r["level"] == t.level
        and r["metric"] == "f1"
        and r["dimension"] == "micro"
        and r["coder_a"] == MACHINE
        and r["coder_b"] in t.coders
        and r["value"] is not None
    ]
    return float(np.mean(vals)) if vals else float("-inf")


def mean_machine_kappa(rows: list[dict], level: str, coders: list[str]) -> float:
    vals = [
        r["value"]
        for r in rows
        if r["level"] == level
        and r["metric"] == "cohen_kappa"
        and MACHINE in (r["coder_a"], r["coder_b"])
        and {r["coder_a"], r["coder_b"]} & set(coders)
    ]
    vals = [v for v in vals if v is not None]
    return float(np.mean(vals)) if vals else float("-inf")


def _eval_rows(
    rows: list[dict],
    evaluation: str,
    feature_set: str | None,
    selected: bool,
    train_interviews: int | None,
    draw: int | None,
) -> list[dict]:
    return [
        {
            "evaluation": evaluation,
            "feature_set": feature_set,
            "selected": selected,
            "train_interviews": train_interviews,
            "draw": draw,
            **r,
        }
        for r in rows
    ]


def learning_curve(d: Data, feature_set: str, s: LearnSettings, fallback: np.ndarray, framework) -> list[dict]:
    """Agreement on the interviews left out when training on 1, 2, ... of the coded interviews
    ([learn] learning_curve_points sizes, spaced geometrically up to all but one)."""
    t = d.targets
    names, groups = interview_codes(t)
    draws = s.learning_curve_draws
    rng = np.random.default_rng(s.seed)
    no_ci = Bootstrap.draw(len(names), 0, 0, s.compare.ci_level)
    out = []
    sizes = np.unique(np.round(np.geomspace(1, len(names) - 1, s.learning_curve_points)).astype(int))
    for n in sizes.tolist():
        for draw in range(draws):
            train_groups = np.sort(rng.choice(len(names), size=n, replace=False))
            train = np.flatnonzero(np.isin(groups, train_groups))
            test = np.flatnonzero(~np.isin(groups, train_groups))
            if len(np.unique(training_rows(t, train)[1])) < 2 and not len(d.y_weak):
                continue  # one class only: nothing to learn from this draw
            p = np.zeros((len(groups), len(t.classes)))
            p[test] = fit_predict(d, feature_set, train, test, s)
            machine = machine_primary(p, t, framework, fallback)
            rows = agreement_rows(t, machine, no_ci, groups, test, ("cohen_kappa",))
            out += _eval_rows(rows, "learning-curve", feature_set, True, n, draw)
    return out


# ---------------------------------------------------------------- output tables


def _votes(t: Targets, level: str, k: int) -> np.ndarray:
    """(units, k) share of the coders who gave each label (rows of unlabelled units are 0)."""
    _, primary, _ = t.eval_levels[level]
    votes = np.zeros((len(t.units), k))
    for c in t.coders:
        p = primary[c]
        ok = p != MISSING
        votes[np.flatnonzero(ok), p[ok]] += 1
    n = votes.sum(axis=1, keepdims=True)
    return np.divide(votes, n, out=np.zeros_like(votes), where=n > 0)


def dimensions_table(ids: list[str], dv: Derived, source: list[str], framework) -> pa.Table:
    n, d = dv.dimensions.shape
    argmax = chosen_dimension(dv, framework)
    names = np.array([c.name for c in framework.concepts], dtype=object)
    return pa.table(
        {
            "utterance_id": pa.array(np.repeat(np.asarray(ids, dtype=object), d), pa.string()),
            "dimension": pa.array(np.tile(np.asarray(framework.dimension_ids, dtype=object), n), pa.string()),
            "probability": pa.array(dv.dimensions.reshape(-1), pa.float64()),
            "is_argmax": pa.array((argmax[:, None] == np.arange(d)[None, :]).reshape(-1), pa.bool_()),
            "mapped": pa.array(np.repeat(dv.mapped, d), pa.bool_()),
            "second_order": pa.array(np.repeat(names[dv.concept] if n else names[:0], d), pa.string()),
            "source": pa.array(np.repeat(np.asarray(source, dtype=object), d), pa.string()),
        },
        schema=UTTERANCE_DIMENSIONS,
    )


def human_derived(t: Targets, model_dv: Derived, framework) -> tuple[Derived, np.ndarray]:
    """The coders' votes as a Derived view for the units (ties broken by the cross-validated model);
    returns it and the mask of units at least one coder labelled."""
    dims = framework.dimension_ids
    d_cats = t.eval_levels["dimension"][0]
    v = _votes(t, "dimension", len(d_cats))
    labelled = v.sum(axis=1) > 0
    dim_votes = v[:, : len(dims)]
    tie = 1e-6 * model_dv.dimensions
    mapped = np.where(labelled, (dim_votes + tie).max(axis=1) > v[:, d_cats.index(NONE)], model_dv.mapped)
    has_dim = dim_votes.sum(axis=1) > 0
    probs = np.where(
        has_dim[:, None], dim_votes / np.maximum(dim_votes.sum(axis=1, keepdims=True), 1e-12), model_dv.dimensions
    )
    best = (probs + tie).argmax(axis=1)
    c_cats = t.eval_levels["second-order"][0]
    cv = _votes(t, "second-order", len(c_cats))[:, : len(framework.concepts)]
    in_dim = np.array(
        [[framework.dimension_of(c) == dims[b] for c in framework.concept_ids] for b in range(len(dims))]
    )[best]
    model_pick = np.eye(len(framework.concepts))[model_dv.concept]
    concept = np.where(in_dim, cv + 1e-6 * model_pick, -1.0).argmax(axis=1)
    # probs for the argmax must agree with `best`: add the tie-break to the stored probabilities' argmax
    probs = probs + 1e-12 * np.eye(len(dims))[best]
    probs /= probs.sum(axis=1, keepdims=True)
    return Derived(probs, np.asarray(mapped, bool), concept), labelled


def learned_codes_table(
    ids: list[str], p: np.ndarray, t: Targets | Classes, cross_validated: np.ndarray, assigned: np.ndarray
) -> pa.Table:
    n, k = p.shape
    argmax = p.argmax(axis=1) if n else np.zeros(0, np.int64)
    return pa.table(
        {
            "utterance_id": pa.array(np.repeat(np.asarray(ids, dtype=object), k), pa.string()),
            "label": pa.array(np.tile(np.asarray(t.classes, dtype=object), n), pa.string()),
            "dimension": pa.array(np.tile(np.asarray(t.class_dimension, dtype=object), n), pa.string()),
            "second_order": pa.array(np.tile(np.asarray(t.class_concept, dtype=object), n), pa.string()),
            "probability": pa.array(p.reshape(-1), pa.float64()),
            "is_argmax": pa.array((argmax[:, None] == np.arange(k)[None, :]).reshape(-1), pa.bool_()),
            "assigned": pa.array(assigned.reshape(-1), pa.bool_()),
            "cross_validated": pa.array(np.repeat(cross_validated, k), pa.bool_()),
        },
        schema=LEARNED_CODES,
    )


# ---------------------------------------------------------------- the stage


@dataclass
class LearnResult:
    utterance_dimensions: pa.Table
    utterance_dimensions_cv: pa.Table
    learned_codes: pa.Table
    learn_eval: pa.Table
    model: TurnPooledLogit
    feature_set: str
    targets: Targets
    counts: dict
    scores: dict
    warnings: list[str]
    encoder_choice: "EncoderChoice | None" = None


def framework_concepts(blocks, framework, fv, m: MapSettings):
    """Framework-similarity concept probabilities (the map stage's prototype similarity): the blend of
    the utterance's and its turn's (map's weights, no code part; the second-order concept of a
    dimension-level model), the two parts, and the framework texts' own (leave-one-out)."""

    mapper = make_mapper(m, "similarity").fit(fv)
    own, ctx = mapper.predict_proba(blocks.blocks["own"]), mapper.predict_proba(blocks.blocks["turn"])
    blend = (m.own_weight * own + m.context_weight * ctx) / (m.own_weight + m.context_weight)
    sims = fv.vectors.astype(np.float64) @ fv.vectors.astype(np.float64).T
    np.fill_diagonal(sims, -np.inf)  # a framework text must not vote for itself

    scores = pooled_similarity(sims, fv.labels, mapper.n_concepts_, mapper.top_k)
    weak = softmax_rows(np.where(np.isfinite(scores), scores, -1.0) / mapper.temperature_)
    return blend, own, ctx, weak


@dataclass
class Prepared:
    """Features of every embedded utterance and the Data of the human-coded units, for one encoder."""

    blocks: FeatureBlocks | None  # None once learn_stage is done with the frozen features
    pos: dict[str, int]
    ui: np.ndarray
    d: Data
    fallback_all: np.ndarray
    allowed_all: np.ndarray | None
    groups_all: np.ndarray
    group_patterns: np.ndarray | None  # (groups, classes) the classes each model group may give


def feature_blocks(
    utterances: pa.Table,
    embeddings: pa.Table,
    framework,
    encoder,
    s: LearnSettings,
    words_vectorizer=False,
    unit_words_vectorizer=False,
):
    """Every feature block of the embedded utterances, the framework block included. Returns (blocks,
    framework vectors, speaker roles, role-restricted framework-similarity concept probabilities, the
    framework texts' own). A saved model's vectorizers are passed through to build_blocks."""

    blocks = build_blocks(utterances, embeddings, encoder, s, words_vectorizer, unit_words_vectorizer)
    fv = embed_framework(framework, encoder)
    roles = speaker_roles(utterances, blocks.utterance_ids)
    fallback, own_p, turn_p, weak_p = framework_concepts(blocks, framework, fv, s.map)
    fallback, _ = restrict_to_roles(fallback, framework, roles)
    blocks.blocks["framework"] = framework_block(own_p, turn_p)
    return blocks, fv, roles, fallback, weak_p


def prepare(
    utterances: pa.Table,
    embeddings: pa.Table,
    t: Targets,
    framework,
    encoder,
    s: LearnSettings,
    feature_sets: list[str],
    path,
) -> Prepared:

    blocks, fv, roles_all, fallback_all, weak_p = feature_blocks(utterances, embeddings, framework, encoder, s)
    pos = {u: i for i, u in enumerate(blocks.utterance_ids)}
    missing = [u for u in t.units["utterance_id"] if u not in pos]
    if missing:
        raise InputError(
            f"{len(missing)} coded utterances have no embedding (e.g. {missing[0]}); run `themeshift embed` again", path
        )
    ui = t.units["utterance_id"].map(pos).to_numpy(np.int64)
    weak_idx, weak_y = weak_examples(t, fv)
    blocks.project(feature_sets, s.components, s.seed)
    weak_words = blocks.words.transform([fv.texts[i] for i in weak_idx])
    allowed_all = class_roles_mask(t, framework, roles_all)
    groups_all, patterns = role_groups(allowed_all, len(pos))
    d = Data(
        t,
        {fs: blocks.matrix(fs, ui) for fs in feature_sets},
        blocks.turns[ui],
        {
            fs: weak_matrix(
                fv.vectors[weak_idx],
                weak_p[weak_idx],
                weak_words,
                fs,
                [fv.texts[i] for i in weak_idx],
                blocks.unit_words,
                blocks.projections[fs],
            )
            for fs in feature_sets
        },
        weak_y,
        s.framework_weight,
        None if allowed_all is None else allowed_all[ui],
        groups=groups_all[ui],
        weak_groups=None if patterns is None else patterns[:, weak_y],
    )
    d.turn_pooling = bool(s.turn_pooling) and mixed_turn_share(t) <= MIXED_TURN_SHARE
    return Prepared(blocks, pos, ui, d, fallback_all, allowed_all, groups_all, patterns)


def tuning_targets(t: Targets) -> np.ndarray:
    """(units, classes) what the encoder is tuned towards: the coders' code sets (multi-code) or
    their votes as soft labels; rows of units no coder labelled are 0."""
    if t.multi_code:
        return t.truth_sets()[0].astype(np.float64)
    return _votes(t, t.level, len(t.classes))


@dataclass
class EncoderChoice:
    kept: str  # "frozen" or "finetune"
    reason: str
    tuned: TunedEncoder | None = None  # kept: the encoder the final model reads (see final); else the comparison's
    report: TuneReport | None = None  # the comparison's tuning (on the coded interviews not held out)
    rows: list[dict] = field(default_factory=list)  # learn_eval rows of the held-out comparison
    final: TuneReport | None = None  # the kept encoder's tuning on every coded unit


def choose_encoder(
    utterances: pa.Table,
    t: Targets,
    framework,
    encoder,
    s: LearnSettings,
    feature_set: str,
    frozen: Prepared,
    boot: Bootstrap,
    boot_groups: np.ndarray,
    path,
    progress=None,
) -> EncoderChoice:
    """[learn] encoder: tune the sentence model on part of the coded interviews and score learn's model
    on the held-out rest with tuned and with frozen features (pipeline.learn_finetune)."""

    mode = s.encoder
    if mode == "frozen":
        return EncoderChoice("frozen", 'learn.encoder is "frozen"')
    if encoder.spec.backend == "model2vec":
        return EncoderChoice(
            "frozen", f"the embedding model {encoder.model_id} is a static model2vec model: nothing to fine-tune"
        )
    gpu = has_gpu() and encoder.device != "cpu"
    targets = tuning_targets(t)
    n_coded = int(targets.any(axis=1).sum())
    if mode == "auto" and not gpu and n_coded > s.finetune_max_units:
        return EncoderChoice(
            "frozen",
            f"{n_coded} coded units is more than learn.finetune_max_units "
            f'({s.finetune_max_units}) for a fine-tune on CPU; set learn.encoder = "finetune" '
            "to tune anyway",
        )
    names, groups = interview_codes(t)
    if len(names) < 3:
        return EncoderChoice("frozen", "fewer than 3 coded interviews: none to hold out for the comparison")
    rng = np.random.default_rng(s.seed)
    held = rng.choice(len(names), size=max(1, int(round(s.finetune_holdout * len(names)))), replace=False)
    test = np.flatnonzero(np.isin(groups, held))
    train = np.flatnonzero(~np.isin(groups, held))
    fit_rows = train[targets[train].any(axis=1)]
    allowed = frozen.d.allowed
    tuned, report = _tune(encoder, t, targets, fit_rows, allowed, s, progress)
    # learn's model on the coded interviews only, with the tuned encoder's features
    coded_interviews = pa.array(sorted(t.units["interview_id"].unique()), pa.string())
    sub = utterances.filter(pc.is_in(utterances["interview_id"], coded_interviews))
    sub_embeddings = embed_utterances(sub, tuned, s.embed)[0]
    tuned_prep = prepare(sub, sub_embeddings, t, framework, tuned, s, [feature_set], path)
    tuned_prep.d.turn_pooling = frozen.d.turn_pooling
    scores, rows = {}, []
    fallback = frozen.fallback_all[frozen.ui]
    truth, labelled = t.truth_sets()
    for name, prep in (("frozen", frozen), ("finetune", tuned_prep)):
        p = np.zeros((len(t.units), len(t.classes)))
        p[test] = fit_predict(prep.d, feature_set, train, test, s)
        primary = machine_primary(p, t, framework, fallback)
        sets = None
        if t.multi_code:
            p_train = np.zeros_like(p)
            for fold_train, fold_test in _inner_folds(groups, train, s.cv_folds):
                p_train[fold_test] = fit_predict(prep.d, feature_set, fold_train, fold_test, s)
            thresholds = fit_thresholds(p_train, truth, train[labelled[train]])
            sets = machine_sets(label_sets(p, thresholds), t, primary)
        got = agreement_rows(t, primary, boot, boot_groups, test, sets=sets)
        scores[name] = selection_score(got, t)
        rows += _eval_rows(got, f"held-out-{name}", feature_set, False, len(np.unique(groups[train])), None)
    metric = "micro-F1 of code sets" if t.multi_code else "machine-coder kappa"
    verdict = (
        f"on {len(held)} held-out coded interviews, {metric} {scores['finetune']:.3f} with the fine-tuned "
        f"encoder against {scores['frozen']:.3f} frozen (tuned on {report.units} units, {report.draws} draws, "
        f"{report.seconds:.0f} s on {report.device})"
    )
    kept = "finetune" if mode == "finetune" or scores["finetune"] > scores["frozen"] else "frozen"
    for r in rows:
        r["selected"] = r["evaluation"] == f"held-out-{kept}"
    why = (
        'learn.encoder is "finetune"'
        if mode == "finetune"
        else "it scores higher"
        if kept == "finetune"
        else "fine-tuning did not score higher"
    )
    if kept == "frozen" or t.multi_code:
        # code sets keep the comparison's encoder: their thresholds are fitted on out-of-fold
        # probabilities, which an encoder tuned on every unit's own codes could not give
        return EncoderChoice(kept, f"{verdict}; kept {kept}: {why}", tuned, report, rows)
    # Kept, the encoder is tuned again on every coded unit, held-out ones included (as a model is
    # refitted on all the data after cross-validation). TalkMoves, 20% of lessons coded, lessons not
    # coded: +0.006 teacher kappa and +0.002 macro-F1, -0.005 student kappa (bench/validity.py).
    del tuned, tuned_prep, prep, sub_embeddings  # the comparison's model and features: not held twice
    final_tuned, final = _tune(encoder, t, targets, np.flatnonzero(targets.any(axis=1)), allowed, s, progress)
    again = f"; tuned again on all {final.units} coded units ({final.draws} draws, {final.seconds:.0f} s)"
    return EncoderChoice(kept, f"{verdict}; kept {kept}: {why}{again}", final_tuned, report, rows, final)


def _tune(encoder, t: Targets, targets: np.ndarray, rows: np.ndarray, allowed, s: LearnSettings, progress):
    """Fine-tune the sentence model on these coded units (learn_finetune.tune_encoder)."""
    return tune_encoder(
        encoder,
        t.units["text"].to_numpy()[rows].tolist(),
        targets[rows],
        t.multi_code,
        None if allowed is None else allowed[rows],
        min(s.finetune_samples, max(len(rows), MIN_TUNE_DRAWS)),
        s.finetune_batch_size,
        s.finetune_learning_rate,
        s.seed,
        progress,
    )


MIN_TUNE_DRAWS = 1000  # a small coded set is drawn more than once: the fresh head needs this many examples


def _inner_folds(groups: np.ndarray, train: np.ndarray, cv_folds: int):
    """Grouped folds inside the training interviews (for thresholds that never see the held-out ones)."""
    from sklearn.model_selection import GroupKFold

    k = min(cv_folds, len(np.unique(groups[train])))
    for a, b in GroupKFold(n_splits=k).split(train, groups=groups[train]):
        yield train[a], train[b]


def learn_stage(
    utterances: pa.Table,
    sources: pa.Table,
    embeddings: pa.Table,
    framework_dims: pa.Table,
    human,
    framework,
    mapping,
    encoder,
    s: LearnSettings,
    level: str,
    progress=None,
) -> LearnResult:

    c = s.compare
    if not s.feature_sets:
        raise ConfigError("learn.feature_sets is empty: name at least one feature set")
    t = human_targets(utterances, sources, human, framework, mapping, level, c)
    class_counts = check_enough(t, s, human.path)
    sets = list(dict.fromkeys(s.feature_sets))
    frozen = prepare(utterances, embeddings, t, framework, encoder, s, sets, human.path)
    blocks, pos, ui, d = frozen.blocks, frozen.pos, frozen.ui, frozen.d
    fallback_all, allowed_all, groups_all = frozen.fallback_all, frozen.allowed_all, frozen.groups_all
    fallback = fallback_all[ui]
    mixed = mixed_turn_share(t)
    if s.turn_pooling and not d.turn_pooling:
        t.warnings.append(
            f"the coders labelled units of one turn differently in {mixed:.0%} of the coded turns: "
            "units are coded one by one, not pooled by turn (learn.turn_pooling)"
        )

    names, groups = interview_codes(t)
    boot_groups = groups if c.bootstrap_unit == "interview" else np.arange(len(groups), dtype=np.int64)
    boot = Bootstrap.draw(int(boot_groups.max()) + 1, c.bootstrap, s.seed, c.ci_level)
    per_fold = len(names) - int(np.ceil(len(names) / min(s.cv_folds, len(names))))

    # progress: one step per candidate's cross-validation, the learning curve, the final model
    steps, step = len(sets) + 2, 0

    def advance(what: str) -> None:
        nonlocal step
        step += 1
        if progress:
            progress(f"learn {what}", step, steps)

    if progress:
        progress("learn features", 0, steps)
    candidates = {}
    for fs in sets:
        probs, folds = cross_validate(d, fs, s)
        advance(f"cross-validated {fs}")
        primary = machine_primary(probs, t, framework, fallback)
        label_set = cross_validated_sets(probs, folds, t) if t.multi_code else None
        rows = agreement_rows(
            t, primary, boot, boot_groups, sets=None if label_set is None else machine_sets(label_set, t, primary)
        )
        candidates[fs] = (probs, folds, rows, selection_score(rows, t), label_set)
    best = max(sets, key=lambda fs: (candidates[fs][3], -sets.index(fs)))
    eval_rows = []
    for fs in sets:
        eval_rows += _eval_rows(candidates[fs][2], "feature-set", fs, fs == best, per_fold, None)
    cv_probs, cv_folds, cv_rows, _, cv_sets = candidates[best]
    eval_rows += _eval_rows(cv_rows, "cross-validation", best, True, per_fold, None)

    # The framework-similarity mapping on the same utterances (what learning improves on).
    m_labels = machine_labels(framework_dims, framework)
    base = {}
    for lv in ("dimension", "second-order"):
        if lv in t.eval_levels:
            base[lv], _ = machine_ratings(t.units, m_labels, lv, t.eval_levels[lv][0])
    for lv in base:
        r = _ratings(t, lv, base[lv])
        got, _, _ = compare_ratings(r, t.coders, MACHINE, boot_groups, int(boot_groups.max()) + 1, boot)
        eval_rows += _eval_rows(
            [
                x
                for x in got
                if x["metric"] in EVAL_METRICS
                and (x["metric"] not in ("f1", "label_kappa") or x["dimension"] in ("macro", "micro"))
            ],
            "framework-similarity",
            None,
            False,
            None,
            None,
        )
    if s.learning_curve_draws > 0:
        eval_rows += learning_curve(d, best, s, fallback, framework)
    advance("learning curve")

    choice = choose_encoder(utterances, t, framework, encoder, s, best, frozen, boot, boot_groups, human.path, progress)
    eval_rows += choice.rows
    final_prep, thresholds_from = frozen, cv_probs
    if choice.kept == "finetune":
        # the final model reads the tuned encoder's features; the human-coded utterances keep the frozen
        # model's cross-validated predictions, the only ones no encoder tuned on their own codes made
        assert choice.tuned is not None  # choose_encoder keeps "finetune" only with its encoder
        tuned_embeddings = embed_utterances(utterances, choice.tuned, s.embed, progress)[0]
        assert blocks is not None  # prepare() builds them
        ids = blocks.utterance_ids
        blocks = frozen.blocks = None  # the frozen features are done with: never hold both corpora's blocks
        final_prep = prepare(utterances, tuned_embeddings, t, framework, choice.tuned, s, [best], human.path)
        final_prep.d.turn_pooling = d.turn_pooling
        assert final_prep.blocks is not None
        if final_prep.blocks.utterance_ids != ids:
            raise RuntimeError("tuned embeddings are not in the order of the run's embeddings")
        if t.multi_code:
            thresholds_from = cross_validate(final_prep.d, best, s)[0]
    blocks, groups_all = final_prep.blocks, final_prep.groups_all
    assert blocks is not None  # frozen's untouched, or the tuned encoder's

    # The final model: every human-coded unit plus the weak examples; it codes every utterance.
    model = fit_model(final_prep.d, best, np.arange(len(ui)), s)
    model.words_ = blocks.words.vectorizer if "words" in FEATURE_SETS[best] else None  # saved with the model
    model.unit_words_ = (
        blocks.unit_words.vectorizer if blocks.unit_words is not None and "unit_words" in FEATURE_SETS[best] else None
    )
    model.projection_ = blocks.projections[best]
    model.group_patterns_ = final_prep.group_patterns  # transform maps a new corpus's roles onto these groups
    if t.multi_code:  # thresholds for new utterances: fitted on every coded unit's out-of-fold probability
        truth, labelled_any = t.truth_sets()
        model.thresholds_ = fit_thresholds(thresholds_from, truth, np.flatnonzero(labelled_any))
    all_probs = predict_all(model, blocks, best, groups_all)
    advance("coded every utterance")
    if allowed_all is not None:
        all_probs = renormalise_within(all_probs, allowed_all)
    cross_validated = np.zeros(len(pos), dtype=bool)
    cross_validated[ui] = True
    all_probs[ui] = cv_probs  # human-coded utterances: the honest, out-of-interview prediction
    assigned_all = label_sets(all_probs, model.thresholds_ if t.multi_code else None)
    if t.multi_code:
        assigned_all[ui] = cv_sets
    dv_all = derive(all_probs, t, framework, fallback_all)
    dv_cv = derive(cv_probs, t, framework, fallback)
    dv_h, labelled = human_derived(t, dv_cv, framework)

    fw = framework_dims.to_pandas()
    fw_top = fw[fw["is_argmax"]].drop_duplicates("utterance_id")
    human_ids = set(t.units["utterance_id"][labelled])
    final = dimensions_table(blocks.utterance_ids, dv_all, [SOURCE_LEARNED] * len(pos), framework)
    # A researcher's code override (map stage) is a human decision: it stays unless coders coded the utterance.
    overridden = sorted(set(fw_top.loc[fw_top["source"] == SOURCE_HUMAN, "utterance_id"]) - human_ids)
    kept = pc.is_in(framework_dims["utterance_id"], pa.array(overridden, pa.string()))
    final = _replace_rows(final, framework_dims.filter(kept))
    human_table = dimensions_table(
        t.units["utterance_id"][labelled].tolist(),
        Derived(dv_h.dimensions[labelled], dv_h.mapped[labelled], dv_h.concept[labelled]),
        [SOURCE_HUMAN] * int(labelled.sum()),
        framework,
    )
    final = _replace_rows(final, human_table)
    cv_table = dimensions_table(t.units["utterance_id"].tolist(), dv_cv, [SOURCE_LEARNED] * len(ui), framework)

    sources_count = pd.Series(final.column("source").to_pylist()).value_counts() / len(framework.dimension_ids)
    scores = {fs: round(candidates[fs][3], 4) for fs in sets}
    counts = {
        "units": len(t.units),
        "interviews": len(names),
        "coders": t.coders,
        "classes": class_counts,
        "labelled_units": int(labelled.sum()),
        "weak_examples": int(len(d.y_weak)),
        "training_rows": int(len(training_rows(t, np.arange(len(ui)))[0])),
        "utterances_by_source": {k: int(v) for k, v in sources_count.sort_index().items()},
        "cv_score_by_feature_set": scores,
        "mixed_turn_share": round(mixed, 4),
        "turn_pooling": d.turn_pooling,
        "multi_code_share": round(multi_code_share(t), 4),
        "multi_code": t.multi_code,
        "unlearned": t.unlearned,
        "selection_metric": "micro-F1 of code sets" if t.multi_code else "machine-coder kappa",
        "encoder": choice.kept,
        "encoder_reason": choice.reason,
        "finetune": None if choice.report is None else asdict(choice.report),
        "finetune_final": None if choice.final is None else asdict(choice.final),
    }
    return LearnResult(
        final,
        cv_table,
        learned_codes_table(blocks.utterance_ids, all_probs, t, cross_validated, assigned_all),
        pa.Table.from_pylist(eval_rows, schema=LEARN_EVAL),
        model,
        best,
        t,
        counts,
        scores,
        t.warnings,
        choice,
    )


@dataclass(frozen=True)
class Classes:
    """A saved model's classes and what each names in the framework (model.json)."""

    classes: list[str]
    class_dimension: list[str | None]
    class_concept: list[str | None]


def groups_for(allowed: np.ndarray, patterns: np.ndarray | None, path) -> np.ndarray:
    """Each utterance's model group: the saved group whose class pattern its speaker role has."""
    index = {} if patterns is None else {row.tobytes(): g for g, row in enumerate(np.asarray(patterns, dtype=bool))}
    distinct, which = np.unique(np.asarray(allowed, dtype=bool), axis=0, return_inverse=True)
    if any(row.tobytes() not in index for row in distinct):
        raise InputError(
            "a speaker role of these transcripts has a set of codes the learned model never saw "
            "(speakers.csv roles must be those of the run learn was trained on)",
            path,
        )
    return np.array([index[row.tobytes()] for row in distinct], dtype=np.int64)[which.reshape(-1)]


def apply_model(
    utterances: pa.Table,
    embeddings: pa.Table,
    model: TurnPooledLogit,
    meta: dict,
    framework,
    encoder,
    s: LearnSettings,
    path,
) -> tuple[pa.Table, pa.Table]:
    """A saved learned model (learn_model/) codes other transcripts: the same feature set, vocabularies,
    principal components, role groups and thresholds it was trained with. Returns
    (utterance_dimensions with source 'learned', learned_codes)."""

    fs = meta["feature_set"]
    blocks, _, roles, fallback_all, _ = feature_blocks(
        utterances, embeddings, framework, encoder, s, model.words_, model.unit_words_
    )
    blocks.projections[fs] = model.projection_
    info = Classes(meta["classes"], meta["class_dimension"], meta["class_concept"])
    allowed = class_roles_mask(info, framework, roles)
    n = len(blocks.utterance_ids)
    groups = (
        groups_for(allowed, getattr(model, "group_patterns_", None), path)
        if allowed is not None
        else np.zeros(n, dtype=np.int64)
    )
    p = predict_all(model, blocks, fs, groups)
    if allowed is not None:
        p = renormalise_within(p, allowed)
    assigned = label_sets(p, model.thresholds_ if model.multi_code else None)
    dv = derive(p, info, framework, fallback_all)
    return (
        dimensions_table(blocks.utterance_ids, dv, [SOURCE_LEARNED] * n, framework),
        learned_codes_table(blocks.utterance_ids, p, info, np.zeros(n, dtype=bool), assigned),
    )


def _replace_rows(table: pa.Table, rows: pa.Table) -> pa.Table:
    """table with the utterances in rows replaced by rows' versions, order kept."""
    if rows.num_rows == 0:
        return table
    df = table.to_pandas()
    new = rows.to_pandas()
    kept = df[~df["utterance_id"].isin(set(new["utterance_id"]))]
    order = {u: i for i, u in enumerate(dict.fromkeys(df["utterance_id"]))}
    out = pd.concat([kept, new], ignore_index=True)
    out["_o"] = out["utterance_id"].map(order)
    out["_d"] = out.groupby("utterance_id").cumcount()
    out = out.sort_values(["_o", "_d"], kind="stable").drop(columns=["_o", "_d"])
    return pa.Table.from_pandas(out, schema=UTTERANCE_DIMENSIONS, preserve_index=False)


# ---------------------------------------------------------------- compare after learn


def learned_sets(learned_codes: pa.Table | None, rec: dict | None) -> dict[str, pd.Series] | None:
    """After a multi-code learn (rec: the current learn record, runner.current_learn_record): per compare
    level, utterance_id -> the concepts (or dimensions) of the codes in its learned set (out-of-fold for
    hand-coded utterances)."""
    if rec is None or not rec.get("counts", {}).get("multi_code") or learned_codes is None:
        return None
    lc = learned_codes.select(["utterance_id", "second_order", "dimension", "assigned"]).to_pandas()
    lc = lc[lc["assigned"]]
    return {
        "second-order": lc.dropna(subset=["second_order"]).groupby("utterance_id")["second_order"].agg(frozenset),
        "dimension": lc.dropna(subset=["dimension"]).groupby("utterance_id")["dimension"].agg(frozenset),
    }


def dimensions_for_compare(dims: pa.Table, cv: pa.Table | None, rec: dict | None) -> tuple[pa.Table, dict | None]:
    """When the run's utterance_dimensions is learn's output (rec: the current learn record), the
    human-coded utterances take their cross-validated predictions (cv: utterance_dimensions_cv), so
    compare never scores the model on its own training data (or the coders against their own codes).
    Returns (table, note for the manifest; None when not applied)."""
    if rec is None or cv is None:
        return dims, None  # no learn, or map ran again since: the table is not learn's
    note = {
        "cross_validated_utterances": len(set(cv.column("utterance_id").to_pylist())),
        "note": "machine labels of the human-coded (training) utterances are cross-validated predictions "
        "(grouped by interview); the other utterances use the learned model",
    }
    return _replace_rows(dims, cv), note
