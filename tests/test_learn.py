"""learn and suggest on the example study's double-coded interviews (real embeddings, real model)."""
from __future__ import annotations

import csv
import hashlib
import json
import shutil

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pipeline.agreement import MISSING
from pipeline.config import load_config
from pipeline.errors import InputError
from pipeline.learn import pool_turns, training_rows
from pipeline.settings import LearnSettings, settings_for

from conftest import ANSWER_KEY, EXAMPLE

HUMAN = ANSWER_KEY / "human_codes.csv"
SMALL = {"learn": {"feature_sets": ["utterance", "context_prior"], "encoder": "frozen", "cv_folds": 3, "learning_curve_draws": 1,
                   "learning_curve_points": 3},
         "compare": {"bootstrap": 200}}


def _cfg(**learn):
    cfg = load_config(None, {"learn": {**SMALL["learn"], **learn}, "compare": SMALL["compare"]})
    return cfg


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _copy_files(src, dst):
    """A run directory's files (not its model folder), for a learn run that must not touch src."""
    for p in src.iterdir():
        if p.is_file():
            shutil.copy(p, dst)
    return dst


@pytest.fixture(scope="module")
def mapped(example_run, encoder, tmp_path_factory):
    """A copy of the example run, mapped (framework similarity)."""
    from pipeline.runner import run_map

    run_dir = tmp_path_factory.mktemp("learn_mapped")
    for name in ("utterances", "sources", "interviews", "embeddings", "codes", "assignments"):
        shutil.copy(example_run / f"{name}.parquet", run_dir)
    shutil.copy(example_run / "manifest.json", run_dir)
    run_map(run_dir, load_config(), encoder=encoder)
    return run_dir


@pytest.fixture(scope="module")
def learned(mapped, encoder, tmp_path_factory):
    from pipeline.runner import run_learn

    run_dir = tmp_path_factory.mktemp("learned")
    _copy_files(mapped, run_dir)
    framework_sha = _sha(run_dir / "utterance_dimensions.parquet")
    record = run_learn(run_dir, HUMAN, _cfg(), encoder=encoder)
    return run_dir, record, framework_sha


# ---------------------------------------------------------------- hand-computed pieces

def test_training_rows_weight_each_coders_label_by_the_coders_who_labelled():
    class T:
        coders = ["a", "b"]
        primary = {"a": np.array([0, 1, MISSING]), "b": np.array([0, 2, 1])}

    rows, y, w = training_rows(T, np.arange(3))
    got = sorted(zip(rows.tolist(), y.tolist(), w.tolist()))
    assert got == [(0, 0, 0.5), (0, 0, 0.5), (1, 1, 0.5), (1, 2, 0.5), (2, 1, 1.0)]


def test_pool_turns_is_the_normalised_geometric_mean_within_a_turn():
    p = np.array([[0.9, 0.1], [0.5, 0.5], [0.2, 0.8]])
    out = pool_turns(p, np.array([7, 7, 3]))
    # turn 7: sqrt(.45) : sqrt(.05) = 3 : 1
    np.testing.assert_allclose(out[:2], [[0.75, 0.25], [0.75, 0.25]])
    np.testing.assert_allclose(out[2], [0.2, 0.8])


# ---------------------------------------------------------------- the stage

def test_learn_writes_human_and_learned_rows_and_keeps_the_framework_table(learned):
    run_dir, record, framework_sha = learned
    ud = pq.read_table(run_dir / "utterance_dimensions.parquet").to_pandas()
    n_embedded = pq.read_metadata(run_dir / "embeddings.parquet").num_rows
    assert len(ud) == 3 * n_embedded and ud["utterance_id"].nunique() == n_embedded
    np.testing.assert_allclose(ud.groupby("utterance_id")["probability"].sum(), 1.0)
    per_source = ud.drop_duplicates("utterance_id")["source"].value_counts().to_dict()
    # 1224 coded utterances in the 10 double-coded interviews are human; the other 2154 learned
    assert per_source == {"human": 1224, "learned": n_embedded - 1224}
    assert record["counts"]["utterances_by_source"] == per_source
    top = ud[ud["is_argmax"]].set_index("utterance_id")
    # both coders coded this answer top-down push; the role introduction both left uncoded
    assert top.loc["C01-W1-t003-u01", "dimension"] == "push" and top.loc["C01-W1-t003-u01", "source"] == "human"
    assert not top.loc["C01-W1-t001-u01", "mapped"]
    assert _sha(run_dir / "utterance_dimensions_framework.parquet") == framework_sha
    assert (run_dir / "learn_model" / "model.joblib").is_file()
    lc = pq.read_table(run_dir / "learned_codes.parquet").to_pandas()
    assert lc.drop_duplicates("utterance_id")["cross_validated"].sum() == 1224
    # the default model learns second-order concepts; each class carries its dimension
    assert set(lc["label"]) == {"technical_infrastructure", "top_down_push", "resistance", "leadership_capability",
                                "iterative_learning", "ambiguity_roles", "reengineering_relations", "none"}
    dims = lc.drop_duplicates("label").set_index("label")["dimension"]
    assert dims["top_down_push"] == "push" and dims["resistance"] == "pull" and pd.isna(dims["none"])


def test_learn_eval_puts_machine_and_coders_side_by_side(learned):
    run_dir, record, _ = learned
    e = pq.read_table(run_dir / "learn_eval.parquet").to_pandas()
    k = e[(e["metric"] == "cohen_kappa") & (e["level"] == "dimension")]
    cv = k[k["evaluation"] == "cross-validation"].set_index(["coder_a", "coder_b"])
    fw = k[k["evaluation"] == "framework-similarity"].set_index(["coder_a", "coder_b"])
    # the coders' own agreement on the same 1224 utterances (the compare stage's figure)
    assert cv.loc[("coder_a", "coder_b"), "value"] == pytest.approx(0.79435, abs=1e-4)
    assert cv.loc[("coder_a", "coder_b"), "n"] == 1224
    for pair in (("coder_a", "machine"), ("coder_b", "machine"), ("machine", "consensus")):
        m = cv.loc[pair]
        assert m["ci_low"] <= m["value"] <= m["ci_high"]
        assert m["value"] > fw.loc[pair, "value"] + 0.1  # learning beats framework similarity alone
    alpha = e[(e["evaluation"] == "cross-validation") & (e["metric"] == "krippendorff_alpha")
              & (e["level"] == "dimension")]
    assert set(alpha["coder_a"]) == {"coder_a+coder_b", "coder_a+coder_b+machine"}
    fs = e[e["evaluation"] == "feature-set"].drop_duplicates("feature_set")
    assert set(fs["feature_set"]) == {"utterance", "context_prior"}
    assert fs.loc[fs["selected"], "feature_set"].tolist() == [record["feature_set"]] == ["context_prior"]
    curve = e[e["evaluation"] == "learning-curve"]
    assert sorted(curve["train_interviews"].unique()) == [1, 3, 9]  # 3 points from 1 to 10 - 1, geometric
    assert curve["ci_low"].isna().all()


def test_report_shows_the_learned_coder_against_the_coders(learned):
    # runs before the rerun test below replaces learn_eval with one that has no learning curve
    import lxml.html

    from pipeline.runner import run_report

    run_dir, record, _ = learned
    rec = run_report(run_dir, _cfg())
    section = lxml.html.parse(rec["path"]).getroot().get_element_by_id("agreement")
    assert "The learned coder" in section.text_content()
    tables = section.xpath(".//h3[text()='The learned coder']/following-sibling::div//table")
    cells = [[td.text_content() for td in tr] for tr in tables[0].xpath(".//tbody/tr")]
    e = pq.read_table(run_dir / "learn_eval.parquet").to_pandas()
    cv = e[(e["evaluation"] == "cross-validation") & (e["metric"] == "cohen_kappa") & (e["level"] == "dimension")]
    want = cv.set_index(["coder_a", "coder_b"])["value"]
    assert ["dimension", "(the coders)", "coder_a vs coder_b", f"{want[('coder_a', 'coder_b')]:.3f}"] == cells[0][:4]
    assert ["dimension", "learned model", "coder_a vs machine", f"{want[('coder_a', 'machine')]:.3f}"] == cells[1][:4]
    # 2 levels x (the coders' figure + 3 learned + 3 framework-similarity rows)
    assert len(cells) == 14 and sum(c[1] == "framework similarity alone" for c in cells) == 6
    curve = [[td.text_content() for td in tr] for tr in tables[1].xpath(".//tbody/tr")]
    assert [c[0] for c in curve] == ["1", "3", "9"]


def test_compare_after_learn_scores_cross_validated_predictions(learned):
    from pipeline.runner import run_compare, run_shift

    run_dir, _, _ = learned
    record = run_compare(run_dir, HUMAN, _cfg())
    assert record["learned"]["cross_validated_utterances"] == 1224
    a = pq.read_table(run_dir / "agreement.parquet").to_pandas()
    e = pq.read_table(run_dir / "learn_eval.parquet").to_pandas()

    def kappa(df, a_, b_):
        row = df[(df["metric"] == "cohen_kappa") & (df["level"] == "dimension") & (df["coder_a"] == a_)
                 & (df["coder_b"] == b_)]
        return float(row["value"].iloc[0])

    cv = e[e["evaluation"] == "cross-validation"]
    # not the human labels the utterance_dimensions table now carries (kappa would be ~1): the held-out ones
    assert kappa(a, "coder_a", "machine") == pytest.approx(kappa(cv, "coder_a", "machine"), abs=1e-12)
    assert kappa(a, "machine", "consensus") < 0.9
    shift = run_shift(run_dir, _cfg())
    assert shift["counts"]["speaker_waves"] > 0


def test_rerun_gives_identical_tables_and_a_loadable_model(learned, encoder):
    from pipeline.learn_model import load_model
    from pipeline.runner import run_learn

    run_dir, record, _ = learned
    before = {n: _sha(run_dir / f"{n}.parquet") for n in ("utterance_dimensions", "learned_codes",
                                                          "utterance_dimensions_cv")}
    # same kept feature set and parameters, no comparison of candidates: the same model and codes
    run_learn(run_dir, HUMAN, _cfg(feature_sets=[record["feature_set"]], learning_curve_draws=0), encoder=encoder)
    assert {n: _sha(run_dir / f"{n}.parquet") for n in before} == before
    model, meta = load_model(run_dir / "learn_model")
    assert meta["feature_set"] == "context_prior" and meta["classes"][-1] == "none" and len(meta["classes"]) == 8
    # the unit, its turn and the question (3 x 384 columns) reduced to 128 principal components,
    # then the position (6) and the framework prior (2 x 7 concepts)
    assert model.n_features_in_ == meta["n_features"] == 128 + 6 + 2 * 7 and meta["components"] == 128
    assert model.projection_.pca.components_.shape == (128, 3 * 384) and list(model.models_) == [0]


def test_code_level_model_with_words_learns_the_coders_own_codes(mapped, encoder, tmp_path):
    import json

    from pipeline.learn_model import load_model
    from pipeline.runner import run_learn
    from spacy.lang.en.stop_words import STOP_WORDS

    _copy_files(mapped, tmp_path)
    record = run_learn(tmp_path, HUMAN, _cfg(feature_sets=["context_words"], learning_curve_draws=0),
                       level="code", encoder=encoder)
    assert record["level"] == "code" and record["feature_set"] == "context_words"
    codes = sorted({r["code"] for r in csv.DictReader(open(HUMAN, encoding="utf-8"))})
    assert len(codes) == 7
    model, meta = load_model(tmp_path / "learn_model")
    assert meta["classes"] == [*codes, "none"]
    # the words block: a vocabulary of content lemmas saved with the model, no stop words or fillers
    vocab = set(model.words_.vocabulary_)
    assert meta["words_vocabulary"] == len(vocab) and 500 < len(vocab) <= 3000
    unigrams = {w for w in vocab if " " not in w}
    assert not unigrams & (set(STOP_WORDS) | {"yeah", "um", "er", "okay"}), unigrams & set(STOP_WORDS)
    assert meta["n_features"] == 128 + 6 + 2 * 7 + len(vocab)
    lc = pq.read_table(tmp_path / "learned_codes.parquet").to_pandas()
    top = lc[lc["is_argmax"]]
    assert set(top["label"]) <= {*codes, "none"} and top["label"].nunique() >= 5
    # a code carries its concept's dimension; 'none' carries none
    by_label = top.drop_duplicates("label").set_index("label")
    assert by_label.loc["Enacting the push model through top-down leadership", "dimension"] == "push"
    e = pq.read_table(tmp_path / "learn_eval.parquet").to_pandas()
    cv = e[(e["evaluation"] == "cross-validation") & (e["metric"] == "cohen_kappa")]
    assert {"code", "dimension", "second-order"} <= set(cv["level"])
    machine_a = cv[(cv["level"] == "code") & (cv["coder_a"] == "coder_a") & (cv["coder_b"] == "machine")]
    assert machine_a["value"].iloc[0] > 0.4
    assert json.loads((tmp_path / "manifest.json").read_text())["stages"]["learn"]["level"] == "code"


# ---------------------------------------------------------------- bad input

def _utterance_codes(path, codes: dict[str, list[str]]):
    """Per-utterance human codes: concept -> utterance ids, one coder."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["utterance_id", "code", "coder"])
        for code, ids in codes.items():
            w.writerows([u, code, "coder_a"] for u in ids)
    return path


def _ids(run_dir, interview, n, start=0):
    u = pq.read_table(run_dir / "utterances.parquet").to_pandas()
    return u[u["coded"] & (u["interview_id"] == interview)]["utterance_id"].tolist()[start:start + n]


def test_too_few_coded_utterances_says_how_many_more(mapped, tmp_path):
    from pipeline.cli import app

    before = _sha(mapped / "utterance_dimensions.parquet")
    path = _utterance_codes(tmp_path / "few.csv", {
        "top-down push": _ids(mapped, "C01-W1", 4), "leadership capability": _ids(mapped, "P01-W1", 3),
        "reengineering relations": _ids(mapped, "P01-W2", 3)})
    result = CliRunner().invoke(app, ["learn", str(mapped), "--human", str(path)])
    assert result.exit_code == 2
    assert "only 10 human-coded utterances" in result.output and "code 10 more" in result.output
    assert "framework-similarity mapping stays in place" in result.output
    assert "Traceback" not in result.output
    assert _sha(mapped / "utterance_dimensions.parquet") == before


def test_a_class_with_two_examples_is_refused(mapped, tmp_path, encoder):
    from pipeline.runner import run_learn

    path = _utterance_codes(tmp_path / "rare.csv", {
        "Enacting the push model through top-down leadership": _ids(mapped, "C01-W1", 12),
        "Developing leadership capability": _ids(mapped, "P01-W1", 11),
        "reengineering_relations": _ids(mapped, "P01-W2", 2)})
    with pytest.raises(InputError, match=r"'reengineering_relations' has 2 \(code 1 more\) \(or learn dimensions "
                                         r"only: --level dimension\)"):
        run_learn(mapped, path, load_config(), encoder=encoder)
    with pytest.raises(InputError, match=r"every dimension label .* 'exchange' has 2 \(code 1 more\); the framework"):
        run_learn(mapped, path, load_config(), level="dimension", encoder=encoder)


def test_unknown_code_names_are_reported_not_dropped(mapped, tmp_path, encoder):
    from pipeline.runner import run_learn

    path = _utterance_codes(tmp_path / "odd.csv", {"Enacting the push model through top-down leadership":
                                                   _ids(mapped, "C01-W1", 30), "Team morale": _ids(mapped, "P01-W1", 5)})
    with pytest.raises(InputError, match="'Team morale'.*--mapping"):
        run_learn(mapped, path, load_config(), encoder=encoder)


# ---------------------------------------------------------------- suggest

def test_suggest_lists_uncertain_diverse_uncoded_utterances(learned, tmp_path):
    from pipeline.io.human_codes import read_human_codes
    from pipeline.learn import drop_suggestion_markers
    from pipeline.runner import run_suggest

    run_dir, _, _ = learned
    cfg = _cfg()
    rec = run_suggest(run_dir, cfg, 20, "utterance", tmp_path / "next.csv")
    df = pd.read_csv(tmp_path / "next.csv")
    assert len(df) == 20 and df["utterance_id"].is_unique and rec["source"] == "learned"
    coded = set(pd.read_csv(HUMAN)["interview_id"])
    assert not set(df["interview_id"]) & coded and set(rec["excluded_hand_coded_interviews"]) == coded
    assert df["uncertainty"].between(0, 1).all() and list(df["rank"]) == list(range(1, 21))
    # the project opens as human codes, and the markers are nobody's coding: markers alone are refused
    back = read_human_codes(tmp_path / "next.qdpx")
    assert len(back.frame) == 20 and set(back.frame["coder"]) == {cfg["learn"]["suggest_user"]}
    with pytest.raises(InputError, match="only codings by themeshift's own users"):
        drop_suggestion_markers(back, settings_for(LearnSettings, cfg).suggest_user)

    assert (np.diff(df["uncertainty"].to_numpy()) <= 1e-12).all()  # default, no novelty term: most uncertain first
    diverse = load_config(None, {"learn": {"suggest_diversity": 0.5}})
    run_suggest(run_dir, diverse, 10, "utterance", tmp_path / "u.csv")
    d = pd.read_csv(tmp_path / "u.csv")
    np.testing.assert_allclose(d["score"], 0.5 * d["uncertainty"] + 0.5 * d["novelty"])
    assert (np.diff(d["score"].to_numpy()) <= 1e-12).all() and d["novelty"].between(0, 1).all()

    run_suggest(run_dir, cfg, 3, "interview", tmp_path / "i.csv")
    i = pd.read_csv(tmp_path / "i.csv")
    assert len(i) == 3 and i["interview_id"].is_unique and not set(i["interview_id"]) & coded


def test_uncertainty_is_one_minus_the_lead_of_the_best_label():
    """Margin sampling, by hand: a unit split between two labels outranks one spread thin over many
    (normalised entropy ranked them the other way round)."""
    from pipeline.suggest import uncertainty

    p = np.array([[1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0], [0.4, 0.2, 0.2, 0.2], [0.1, 0.2, 0.6, 0.1]])
    np.testing.assert_allclose(uncertainty(p), [0.0, 1.0, 0.8, 0.6])
    assert uncertainty(np.ones((2, 1))).tolist() == [0.0, 0.0]


def test_stratified_pick_shares_the_batch_evenly_and_ranks_by_score():
    """By hand: five units of stratum 0 (uncertainty .9 .8 .7 .6 .5) and two of stratum 1 (.2 .1);
    five picks are three and two, not the five most uncertain of stratum 0; a stratum with too few
    units leaves its share to the others; without strata it is greedy_pick."""
    from pipeline.suggest import greedy_pick, split_evenly, stratified_pick

    assert split_evenly(5, [5, 2]) == [3, 2] and split_evenly(5, [5, 1]) == [4, 1]
    assert split_evenly(7, [2, 9, 0]) == [2, 5, 0] and split_evenly(3, [1, 1]) == [1, 1]
    u = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.2, 0.1])
    vecs = np.eye(7)
    strata = np.array([0, 0, 0, 0, 0, 1, 1])
    pick, _, score = stratified_pick(u, vecs, np.zeros((0, 7)), 5, 0.0, strata)
    assert pick.tolist() == [0, 1, 2, 5, 6] and score.tolist() == [0.9, 0.8, 0.7, 0.2, 0.1]
    alone, _, _ = greedy_pick(u, vecs, np.zeros((0, 7)), 5, 0.0)
    assert stratified_pick(u, vecs, np.zeros((0, 7)), 5, 0.0, None)[0].tolist() == alone.tolist() == [0, 1, 2, 3, 4]


def test_open_units_leave_out_coded_units_and_roles_no_model_codes():
    """Four units: the first hand-coded, the third by a role with no concept (stratum -1). What is left
    is proposed; when nothing is, the message says which of the two emptied the pool."""
    from pipeline.errors import InputError
    from pipeline.suggest import open_units

    hand = np.array([True, False, False, False])
    assert open_units(hand, np.array([0, 1, -1, 0])).tolist() == [1, 3]
    assert open_units(hand, None).tolist() == [1, 2, 3]
    with pytest.raises(InputError, match="every interview of the run is hand-coded"):
        open_units(np.ones(4, bool), None)
    with pytest.raises(InputError, match="speaker role the framework gives no concept"):
        open_units(hand, np.array([0, -1, -1, -1]))


def test_answer_length_columns():
    from pipeline.learn_features import LENGTH_SCALE, answer_length

    got = answer_length(np.array([1, 8, 9, 199]))
    np.testing.assert_allclose(got[:, 0], np.log1p([1, 8, 9, 199]) / np.log(200) * LENGTH_SCALE)
    assert got[:, 1].tolist() == [LENGTH_SCALE, LENGTH_SCALE, 0.0, 0.0]  # at most 8 words is a short answer


def test_turn_taking_flags_follow_who_spoke_before_and_after():
    """Two lessons, by hand: teacher, student, student, teacher | student, teacher. A student who
    follows a student (row 2) and one a student follows (row 1) are flagged; a lesson's first and last
    turns have no neighbour there; the other lesson's turns never count as neighbours."""
    from pipeline.learn_features import DIALOGUE_CUE_SCALE, turn_taking

    turns = pd.DataFrame({"interview_id": ["a", "a", "a", "a", "b", "b"],
                          "side": ["TEACHER", "STUDENT", "STUDENT", "TEACHER", "STUDENT", "TEACHER"]})
    same_before = np.r_[False, turns["interview_id"].to_numpy()[1:] == turns["interview_id"].to_numpy()[:-1]]
    got = turn_taking(turns, same_before) / DIALOGUE_CUE_SCALE
    assert got[:, 0].tolist() == [0, 0, 1, 0, 0, 0]  # the turn before is by the same side
    assert got[:, 1].tolist() == [1, 0, 0, 0, 1, 0]  # no turn before
    assert got[:, 2].tolist() == [0, 1, 0, 0, 0, 0]  # the turn after is by the same side
    assert got[:, 3].tolist() == [0, 0, 0, 1, 0, 1]  # no turn after


def test_short_answers_the_coders_left_uncoded_stay_uncoded(learned):
    """'Every time.', 'Exactly that.': held-out predictions leave short answers that both coders left
    uncoded (the answer key's 'none' turns) uncoded."""
    run_dir, _, _ = learned
    u = pq.read_table(run_dir / "utterances.parquet").to_pandas()
    cv = pq.read_table(run_dir / "utterance_dimensions_cv.parquet").to_pandas().drop_duplicates("utterance_id")
    cv = cv.merge(u[["utterance_id", "interview_id", "turn_index", "text"]], on="utterance_id")
    turns = cv.groupby(["interview_id", "turn_index"]).agg(words=("text", lambda s: len(" ".join(s).split())),
                                                           mapped=("mapped", "any")).reset_index()
    key = pd.read_csv(ANSWER_KEY / "turns.csv")
    turns = turns.merge(key[["interview_id", "turn_index", "dimension"]], on=["interview_id", "turn_index"])
    short_none = turns[(turns["words"] <= 8) & (turns["dimension"] == "none")]
    assert len(short_none) == 15
    # without the answer-length columns 4 of the 15 stayed uncoded; with them all do (one spared for rounding)
    assert (~short_none["mapped"]).sum() >= 14


def test_qa_block_is_the_preceding_question_times_the_answer(example_run, encoder):
    """The qa block pairs each answer with the interviewer turn right before it, and is zero for framework texts."""
    from pipeline.io.rundir import read_table
    from pipeline.learn_features import QA_SCALE, build_blocks, weak_blocks

    utterances, embeddings = read_table(example_run, "utterances"), read_table(example_run, "embeddings")
    blocks = build_blocks(utterances, embeddings, encoder, settings_for(LearnSettings, load_config()))
    u = utterances.to_pandas()
    row = blocks.utterance_ids.index(u[~u["is_interviewer"]].iloc[5]["utterance_id"])
    unit = u.set_index("utterance_id").loc[blocks.utterance_ids[row]]
    asked = u[(u["interview_id"] == unit["interview_id"]) & (u["turn_index"] == unit["turn_index"] - 1)]
    assert asked["is_interviewer"].all() and len(asked) >= 1
    question = encoder.encode([" ".join(asked["text"])])[0]
    np.testing.assert_allclose(blocks.blocks["question"][row], question, atol=1e-5)
    np.testing.assert_allclose(blocks.blocks["qa"][row], question * blocks.blocks["turn"][row] * QA_SCALE, atol=1e-5)
    assert np.abs(blocks.blocks["qa"]).sum(axis=1).min() > 0  # every answer in the example follows a question
    weak = weak_blocks(blocks.blocks["own"][:3], np.full((3, 7), 1 / 7), blocks.words.transform(["a", "b", "c"]))
    assert not weak["qa"].any()


def test_class_balance_keeps_the_most_used_concept_from_swallowing_its_neighbours(learned, mapped, encoder, tmp_path):
    """The coders' most used concept: unweighted (the default, chosen on TalkMoves), the model gives
    it more utterances than the coders did; balance_classes brings it back nearer the coders' count
    (measured: 349 unweighted, 247 weighted, where the coders used it on 317 and 251)."""
    import json

    from pipeline.runner import run_learn

    def most_used(run_dir):
        cv = pd.read_parquet(run_dir / "utterance_dimensions_cv.parquet")
        return cv[cv["is_argmax"] & cv["mapped"]]["second_order"].value_counts()

    run_dir, _, _ = learned
    u = pd.read_parquet(run_dir / "utterances.parquet")
    u = u[u["coded"]]
    spans = pd.read_csv(HUMAN).merge(u, on="source_file", suffixes=("", "_u"))
    inside = spans[(spans["start_char_u"] >= spans["start_char"]) & (spans["end_char_u"] <= spans["end_char"])]
    coded = inside.groupby("coder")["code"].value_counts().unstack(0)  # coded utterances per concept and coder
    top = coded.mean(axis=1).idxmax()
    assert not json.loads((run_dir / "learn_model" / "model.json").read_text())["parameters"]["balance_classes"]
    unweighted = most_used(run_dir)[top]

    _copy_files(mapped, tmp_path)
    run_learn(tmp_path, HUMAN, _cfg(feature_sets=["context_prior"], balance_classes=True, learning_curve_draws=0),
              encoder=encoder)
    weighted = most_used(tmp_path)[top]
    assert weighted < unweighted
    assert abs(weighted - coded.loc[top].mean()) < abs(unweighted - coded.loc[top].mean())


def test_transform_codes_new_transcripts_with_the_learned_model(example_run, encoder, tmp_path):
    """The saved learned coder codes transcripts it is given later (themeshift transform): given the
    study's own transcripts again, it reproduces exactly what learn wrote for the utterances no coder
    coded, and learned_codes carries the same classes."""
    from pipeline.runner import run_learn, run_map, run_transform

    fitted = tmp_path / "fitted"
    shutil.copytree(example_run, fitted)
    run_map(fitted, _cfg(), encoder=encoder)
    run_learn(fitted, HUMAN, _cfg(learning_curve_draws=0), encoder=encoder)
    new = tmp_path / "new"
    record = run_transform(fitted, EXAMPLE, new, _cfg())
    assert record["learned"]["encoder"] == "frozen" and record["learned"]["level"] == "second-order"
    mine = pq.read_table(new / "learned_codes.parquet").to_pandas()
    theirs = pq.read_table(fitted / "learned_codes.parquet").to_pandas()
    assert list(mine.columns) == list(theirs.columns) and not mine["cross_validated"].any()
    uncoded = theirs[~theirs["cross_validated"]]
    assert len(uncoded) > 1000
    got = mine.set_index(["utterance_id", "label"]).loc[uncoded.set_index(["utterance_id", "label"]).index]
    np.testing.assert_allclose(got["probability"].to_numpy(), uncoded["probability"].to_numpy(), atol=1e-9)
    assert (got["is_argmax"].to_numpy() == uncoded["is_argmax"].to_numpy()).all()
    dims = pq.read_table(new / "utterance_dimensions.parquet").to_pandas()
    assert set(dims["source"]) == {"learned"}
    manifest = json.loads((new / "manifest.json").read_text())
    assert manifest["stages"]["learn"]["applied_from"].endswith("learn_model")
