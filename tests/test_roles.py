"""Role-aware frameworks: a concept that names speaker roles is never given to a unit of another
role, by map or by learn; frameworks without roles behave as before.

Real data: eight TalkMoves lessons (tests/fixtures/talkmoves, CC BY-NC-SA 4.0), whose codebook has
separate teacher and student talk moves (configs/frameworks/talkmoves.yaml).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from conftest import EXAMPLE, REPO
from pipeline.config import load_config
from pipeline.errors import InputError
from pipeline.framework import load_framework
from pipeline.map import restrict_to_roles

TALKMOVES = REPO / "tests" / "fixtures" / "talkmoves"
FRAMEWORK = REPO / "configs" / "frameworks" / "talkmoves.yaml"
TEACHER_MOVES = {"keeping_everyone_together", "getting_students_to_relate", "restating", "revoicing",
                 "pressing_for_accuracy", "pressing_for_reasoning"}
STUDENT_MOVES = {"relating_to_another_student", "asking_for_more_information", "making_a_claim",
                 "providing_evidence_or_reasoning"}


def _framework_text(dimension_roles: str = "", concept_roles: str = "") -> str:
    return f"""name: roles
dimensions:
  - id: a
    name: A
{dimension_roles}    concepts:
      - id: a1
        name: A one
{concept_roles}        descriptions: [one]
      - id: a2
        name: A two
        descriptions: [two]
  - id: b
    name: B
    concepts:
      - id: b1
        name: B one
        descriptions: [three]
"""


def test_roles_are_read_inherited_and_matched_like_speaker_labels(tmp_path):
    path = tmp_path / "f.yaml"
    path.write_text(_framework_text("    roles: [CORE]\n", "        roles: [Project-Lead, CORE]\n"))
    fw = load_framework(path)
    assert [c.roles for c in fw.concepts] == [("Project-Lead", "CORE"), ("CORE",), ()]
    allowed = fw.allowed_concepts(["core", "project lead", "OTHER", None, float("nan")])
    assert allowed.tolist() == [[True, True, True], [True, False, True], [False, False, True],
                                [False, False, True], [False, False, True]]
    path.write_text(_framework_text("    roles: CORE\n"))  # a single role may be written without a list
    assert load_framework(path).concepts[0].roles == ("CORE",)
    path.write_text(_framework_text("    roles: {CORE: 1}\n"))
    with pytest.raises(InputError, match="roles must be a list of text"):
        load_framework(path)


def test_restricting_probabilities_renormalises_within_the_role():
    fw = load_framework(FRAMEWORK)
    p = np.full((3, len(fw.concepts)), 1.0 / len(fw.concepts))
    out, none = restrict_to_roles(p, fw, ["TEACHER", "STUDENT", "PARENT"])
    ids = np.array(fw.concept_ids)
    assert set(ids[out[0] > 0]) == TEACHER_MOVES and set(ids[out[1] > 0]) == STUDENT_MOVES
    assert np.allclose(out.sum(axis=1), 1.0)
    assert none.tolist() == [False, False, True]  # no concept applies to a PARENT: unmapped
    plain = load_framework(None)  # no roles anywhere: probabilities pass through untouched
    q = np.random.default_rng(0).dirichlet(np.ones(len(plain.concepts)), 4)
    assert restrict_to_roles(q, plain, [None] * 4)[0] is q


@pytest.fixture(scope="module")
def talkmoves_run(tmp_path_factory, encoder):
    from pipeline.runner import run_codes, run_embed, run_map, run_segment

    run_dir = tmp_path_factory.mktemp("talkmoves_run")
    cfg = load_config(TALKMOVES / "themeshift.toml")
    run_segment(TALKMOVES, run_dir, cfg)
    run_embed(run_dir, cfg, encoder=encoder)
    run_codes(run_dir, cfg, encoder=encoder)
    run_map(run_dir, cfg, FRAMEWORK, encoder=encoder)
    return run_dir


def _concepts_by_role(run_dir: Path, table: str = "utterance_dimensions") -> pd.DataFrame:
    fw = load_framework(FRAMEWORK)
    ids = {c.name: c.id for c in fw.concepts}
    dims = pq.read_table(run_dir / f"{table}.parquet").to_pandas()
    top = dims[dims["is_argmax"]].drop_duplicates("utterance_id")
    utt = pq.read_table(run_dir / "utterances.parquet").to_pandas()[["utterance_id", "speaker_role"]]
    top = top.merge(utt, on="utterance_id")
    top["concept_id"] = top["second_order"].map(ids)
    return top


def test_map_gives_teachers_teacher_moves_and_students_student_moves(talkmoves_run):
    top = _concepts_by_role(talkmoves_run)
    assert set(top["speaker_role"]) == {"TEACHER", "STUDENT"}
    teacher = set(top.loc[top["speaker_role"] == "TEACHER", "concept_id"].dropna())
    student = set(top.loc[top["speaker_role"] == "STUDENT", "concept_id"].dropna())
    assert teacher and student
    assert teacher <= TEACHER_MOVES and student <= STUDENT_MOVES


def test_without_roles_teachers_would_get_student_moves(talkmoves_run, tmp_path, encoder):
    """The same framework with its roles removed: the restriction is what keeps the codebooks apart."""
    from pipeline.runner import run_map

    plain = tmp_path / "talkmoves_plain.yaml"
    plain.write_text("\n".join(line for line in FRAMEWORK.read_text(encoding="utf-8").splitlines()
                               if "roles:" not in line), encoding="utf-8")
    run = tmp_path / "run"
    shutil.copytree(talkmoves_run, run)
    run_map(run, load_config(TALKMOVES / "themeshift.toml"), plain, encoder=encoder)
    top = _concepts_by_role(run)
    assert (top.loc[top["speaker_role"] == "TEACHER", "concept_id"].isin(STUDENT_MOVES)).sum() > 50


def test_learn_respects_roles_on_real_coded_lessons(talkmoves_run, tmp_path, encoder):
    from pipeline.runner import run_learn

    run = tmp_path / "run"
    shutil.copytree(talkmoves_run, run)
    cfg = load_config(TALKMOVES / "themeshift.toml",
                      overrides={"learn": {"feature_sets": ["utterance", "dialogue"], "learning_curve_draws": 0,
                                           "encoder": "frozen"}})
    run_learn(run, TALKMOVES / "human_codes.csv", cfg, framework_path=FRAMEWORK, encoder=encoder)
    for table in ("utterance_dimensions", "utterance_dimensions_cv"):
        top = _concepts_by_role(run, table)
        mapped = top[top["mapped"]]
        assert not mapped.loc[mapped["speaker_role"] == "TEACHER", "concept_id"].isin(STUDENT_MOVES).any(), table
        assert not mapped.loc[mapped["speaker_role"] == "STUDENT", "concept_id"].isin(TEACHER_MOVES).any(), table
    ev = pq.read_table(run / "learn_eval.parquet").to_pandas()
    cv = ev[(ev["evaluation"] == "cross-validation") & (ev["metric"] == "cohen_kappa")
            & (ev["level"] == "second-order")]
    assert len(cv) and (cv["value"] > 0.3).all()


def _half_coded_cfg():
    return load_config(TALKMOVES / "themeshift.toml",
                       overrides={"learn": {"feature_sets": ["dialogue"], "learning_curve_draws": 0,
                                            "encoder": "frozen"},
                                  "compare": {"unknown_codes": "ignore"}})


@pytest.fixture(scope="module")
def half_coded(talkmoves_run, tmp_path_factory, encoder):
    """learn (frozen, dialogue features) on the talk moves of four of the eight lessons."""
    from pipeline.runner import run_learn

    tmp = tmp_path_factory.mktemp("half_coded")
    codes = pd.read_csv(TALKMOVES / "human_codes.csv")
    lessons = sorted(codes["interview_id"].unique())
    assert len(lessons) == 8
    coded_lessons = set(lessons[::2])
    (tmp / "codes.csv").write_text(codes[codes["interview_id"].isin(coded_lessons)].to_csv(index=False))
    run = tmp / "run"
    shutil.copytree(talkmoves_run, run)
    run_learn(run, tmp / "codes.csv", _half_coded_cfg(), framework_path=FRAMEWORK, encoder=encoder)
    return run, coded_lessons


def test_learn_beats_a_plain_classifier_on_lessons_nobody_coded(half_coded):
    """Coded talk moves of four lessons: `learn` codes the other four better than a logistic
    regression per role on the sentence embedding alone (the plain baseline of bench/validity.py),
    both scored against the human codes neither saw."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import cohen_kappa_score

    from pipeline.compare import machine_labels
    from pipeline.embed import vectors
    from pipeline.io.human_codes import align, read_human_codes, resolve_codes

    framework = load_framework(FRAMEWORK)
    run, coded_lessons = half_coded

    # every coded sentence's human talk move ("none" where it has none)
    human = read_human_codes(TALKMOVES / "human_codes.csv")
    resolved, _ = resolve_codes(human, framework, None, "ignore")
    utt = pq.read_table(run / "utterances.parquet")
    aligned = align(human, resolved, utt, pq.read_table(run / "sources.parquet"), 0.5).to_pandas()
    aligned = aligned.sort_values("overlap", ascending=False).drop_duplicates("utterance_id")
    ids = {c.name: c.id for c in framework.concepts}
    aligned["label"] = aligned["second_order"].map(lambda n: ids.get(n, n) if isinstance(n, str) else "none")
    units = utt.to_pandas()
    units = units[units["coded"] & units["speaker_role"].isin(["TEACHER", "STUDENT"])]
    units = units.merge(aligned[["utterance_id", "label"]], on="utterance_id")
    emb = pq.read_table(run / "embeddings.parquet")
    row = {u: i for i, u in enumerate(emb.column("utterance_id").to_pylist())}
    x = vectors(emb)[units["utterance_id"].map(row).to_numpy()]
    learned = units["utterance_id"].map(machine_labels(pq.read_table(run / "utterance_dimensions.parquet"),
                                                       framework)["second-order"])
    held = ~units["interview_id"].isin(coded_lessons).to_numpy()
    kappas = {}
    for role in ("TEACHER", "STUDENT"):
        r = (units["speaker_role"] == role).to_numpy()
        plain = LogisticRegression(max_iter=2000).fit(x[r & ~held], units.loc[r & ~held, "label"])
        truth = units.loc[r & held, "label"]
        k_plain = cohen_kappa_score(truth, plain.predict(x[r & held]))
        k_learn = cohen_kappa_score(truth, learned[r & held])
        kappas[role] = (k_learn, k_plain)
    # measured: teacher 0.540 against 0.415; student 0.459 against 0.432 (students' gain needs more
    # coded lessons: +0.16 with 38 lessons coded in bench/validity.py)
    assert kappas["TEACHER"][0] > kappas["TEACHER"][1] + 0.1, kappas
    assert kappas["STUDENT"][0] > kappas["STUDENT"][1] - 0.01, kappas


def test_suggest_shares_its_picks_evenly_between_the_role_models(half_coded, tmp_path):
    """Ranked together, the margin would hand most of a batch to the students' weaker model; under a
    role-aware framework each of learn's role models gets half, from the lessons nobody coded."""
    from pipeline.runner import run_suggest

    run, coded_lessons = half_coded
    cfg = _half_coded_cfg()
    run_suggest(run, cfg, 21, "utterance", tmp_path / "next.csv", FRAMEWORK)
    got = pd.read_csv(tmp_path / "next.csv")
    roles = pq.read_table(run / "utterances.parquet").to_pandas().set_index("utterance_id")["speaker_role"]
    assert len(got) == 21 and got["utterance_id"].is_unique
    assert sorted(got["utterance_id"].map(roles).value_counts().tolist()) == [10, 11]
    assert not set(got["interview_id"]) & coded_lessons
    assert (got["score"].diff().dropna() <= 1e-12).all()  # one ranking, best first, across both roles


def test_a_framework_role_no_speaker_has_stops_the_run_before_any_stage(tmp_path):
    """roles: [PROJEKT] for PROJECT would empty the pull dimension without a word: one line naming the
    role, the framework line and the nearest role, exit 2, and nothing written."""
    from typer.testing import CliRunner

    from pipeline.cli import app

    text = (REPO / "configs" / "frameworks" / "kt_push_pull_exchange.yaml").read_text(encoding="utf-8")
    marker = "  - id: pull\n"
    assert marker in text
    bad = tmp_path / "fw.yaml"
    bad.write_text(text.replace(marker, marker + "    roles: [PROJEKT]\n"), encoding="utf-8")
    line = text[: text.index(marker)].count("\n") + 1
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", str(EXAMPLE), "--out", str(out), "--framework", str(bad)])
    assert result.exit_code == 2, result.output
    assert (f"fw.yaml:{line}: framework role 'PROJEKT' matches no speaker role (roles in the corpus: CORE, "
            "PROJECT, interviewer); did you mean 'PROJECT'?") in result.output
    assert not out.exists() or not any(out.glob("*.parquet"))


@pytest.fixture(scope="module")
def finetuned(talkmoves_run, tmp_path_factory, encoder):
    """learn with the sentence model fine-tuned on the eight coded lessons (two held out to compare)."""
    from pipeline.runner import run_learn

    run = tmp_path_factory.mktemp("finetuned") / "run"
    shutil.copytree(talkmoves_run, run)
    record = run_learn(run, TALKMOVES / "human_codes.csv", _finetune_cfg(), framework_path=FRAMEWORK, encoder=encoder)
    return run, record


def _finetune_cfg():
    return load_config(TALKMOVES / "themeshift.toml",
                       overrides={"learn": {"feature_sets": ["dialogue"], "learning_curve_draws": 0,
                                            "encoder": "finetune", "finetune_samples": 1500},
                                  "compare": {"unknown_codes": "ignore", "bootstrap": 0}})


def test_finetuned_encoder_beats_the_frozen_one_on_held_out_lessons(finetuned):
    """The same model on the same six coded lessons, scored on two lessons it never saw: with the
    fine-tuned sentence model it agrees with the coders better than with the frozen one."""
    run, record = finetuned
    counts = record["counts"]
    assert counts["encoder"] == "finetune" and counts["finetune"]["units"] > 800
    # kept, the encoder is tuned again on every coded unit, the two held-out lessons' too
    assert counts["finetune_final"]["units"] > counts["finetune"]["units"]
    ev = pq.read_table(run / "learn_eval.parquet").to_pandas()
    held = ev[ev["evaluation"].str.startswith("held-out") & (ev["metric"] == "cohen_kappa")
              & (ev["level"] == "second-order")].set_index("evaluation")["value"]
    # measured: 0.663 against 0.660 (0.650 with earlier library versions; the frozen
    # model's turn-taking and character features narrowed it from 0.03). On two lessons this is the direction
    # `auto` acts on, not an effect size: bench/validity.py measures that on 153 lessons nobody coded
    assert held["held-out-finetune"] > held["held-out-frozen"], held
    assert ev.loc[ev["evaluation"] == "held-out-finetune", "selected"].all()
    meta = json.loads((run / "learn_model" / "model.json").read_text())
    assert meta["encoder"]["kept"] == "finetune" and (run / "learn_model" / "encoder").is_dir()
    assert meta["encoder"]["finetune"]["units"] == counts["finetune_final"]["units"]  # the saved encoder's tuning
    # the saved encoder is the tuned one: it embeds a sentence differently from the shipped model
    from sentence_transformers import SentenceTransformer

    from pipeline.embed import load_encoder

    tuned = SentenceTransformer(str(run / "learn_model" / "encoder"), device="cpu")
    text = "Can you explain why you multiplied by two?"
    a = tuned.encode([text], normalize_embeddings=True)[0]
    b = load_encoder("minilm", "cpu").encode([text])[0]
    assert 0.5 < float(a @ b) < 0.999


def test_a_finetuned_rerun_gives_identical_tables(finetuned, tmp_path, encoder, talkmoves_run):
    from pipeline.runner import run_learn

    run, _ = finetuned
    again = tmp_path / "run"
    shutil.copytree(talkmoves_run, again)
    run_learn(again, TALKMOVES / "human_codes.csv", _finetune_cfg(), framework_path=FRAMEWORK, encoder=encoder)
    for table in ("learned_codes", "utterance_dimensions", "learn_eval"):
        assert pq.read_table(run / f"{table}.parquet").equals(pq.read_table(again / f"{table}.parquet")), table


def test_transform_codes_with_the_fine_tuned_encoder(finetuned, tmp_path):
    """transform reads the saved tuned encoder: the lessons coded again agree with their human codes (the
    model saw them: an in-sample check that the tuned encoder and the model travel together), and a
    teacher is never given a student move."""
    from sklearn.metrics import cohen_kappa_score

    from pipeline.runner import run_transform

    run, _ = finetuned
    new = tmp_path / "new"
    record = run_transform(run, TALKMOVES, new, _finetune_cfg())
    assert record["learned"]["encoder"] == "finetune"
    top = _concepts_by_role(new)
    assert set(top["source"]) == {"learned"}
    mapped = top[top["mapped"]]
    assert not mapped.loc[mapped["speaker_role"] == "TEACHER", "concept_id"].isin(STUDENT_MOVES).any()
    human = _concepts_by_role(run)  # learn's table: human codes where coders coded
    both = top.merge(human[human["source"] == "human"][["utterance_id", "concept_id"]], on="utterance_id",
                     suffixes=("", "_human"))
    teacher = both[both["speaker_role"] == "TEACHER"]
    k = cohen_kappa_score(teacher["concept_id_human"].fillna("none"), teacher["concept_id"].fillna("none"))
    assert k > 0.6


def test_map_leaves_unmapped_the_talk_coders_left_uncoded(talkmoves_run, encoder):
    """map.min_similarity on real lessons: the sentences far from every talk move are those the
    coders most often gave no move, and the map as shipped (unmapped = none) agrees with the coders
    more than the nearest framework description (bench/zero_shot.py measures all 191 lessons)."""
    from sklearn.metrics import cohen_kappa_score

    from pipeline.agreement import MISSING
    from pipeline.compare import machine_labels
    from pipeline.embed import vectors
    from pipeline.io.human_codes import read_human_codes
    from pipeline.learn import human_targets
    from pipeline.map import embed_framework, pooled_similarity, speaker_roles
    from pipeline.settings import CompareSettings, settings_for

    fw = load_framework(FRAMEWORK)
    cfg = load_config(TALKMOVES / "themeshift.toml", {"compare": {"unknown_codes": "ignore"}})
    utt = pq.read_table(talkmoves_run / "utterances.parquet")
    t = human_targets(utt, pq.read_table(talkmoves_run / "sources.parquet"),
                      read_human_codes(TALKMOVES / "human_codes.csv"), fw, None, "second_order",
                      settings_for(CompareSettings, cfg))
    ids = t.units["utterance_id"].tolist()
    cats, primary, _ = t.eval_levels["second-order"]
    human = primary[t.coders[0]]
    known = human != MISSING
    shipped = machine_labels(pq.read_table(talkmoves_run / "utterance_dimensions.parquet"), fw)
    machine = np.array([cats.index(shipped.at[u, "second-order"]) for u in ids])
    none = cats.index("none")
    left_out = machine == none
    assert 0.2 < left_out.mean() < 0.8
    # coders gave no move to much more of what the map left out than of what it mapped (0.44 and 0.26)
    assert (human[known & left_out] == none).mean() > (human[known & ~left_out] == none).mean() + 0.1

    emb = pq.read_table(talkmoves_run / "embeddings.parquet")
    row = {u: i for i, u in enumerate(emb.column("utterance_id").to_pylist())}
    x = vectors(emb)[[row[u] for u in ids]].astype(np.float64)
    fv = embed_framework(fw, encoder)
    near = pooled_similarity(x @ fv.vectors.T, fv.labels, len(fw.concepts), 1)
    near = np.where(fw.allowed_concepts(speaker_roles(utt, ids)), near, -np.inf)
    nearest = np.array([cats.index(c) for c in np.asarray(fw.concept_ids)[near.argmax(axis=1)]])
    map_kappa = cohen_kappa_score(human[known], machine[known])
    baseline_kappa = cohen_kappa_score(human[known], nearest[known])
    assert map_kappa > baseline_kappa + 0.05, (map_kappa, baseline_kappa)  # 0.257 and 0.170 here
