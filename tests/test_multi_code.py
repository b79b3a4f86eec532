"""Thematic codebooks with several codes per passage, on real data: the games_as_art answers (90
answers, 31 codes, 89% of the coded passages carry two or more; tests/fixtures/games_as_art)."""
from __future__ import annotations

import csv

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.config import load_config

from conftest import REPO

GAMES = REPO / "tests" / "fixtures" / "games_as_art"
HUMAN = GAMES / "human_codes.csv"
FRAMEWORK = REPO / "configs" / "frameworks" / "games_as_art.yaml"


def _cfg(**learn):
    return load_config(None, {"input": {"ignore": ["*.csv", "*.md", "LICENSE"]},
                              "learn": {"cv_folds": 5, "learning_curve_draws": 0, "encoder": "frozen", **learn},
                              "compare": {"bootstrap": 0}})


@pytest.fixture(scope="module")
def games_run(tmp_path_factory, encoder):
    from pipeline.runner import run_codes, run_embed, run_map, run_segment

    run_dir = tmp_path_factory.mktemp("games_as_art")
    cfg = _cfg()
    run_segment(GAMES, run_dir, cfg)
    run_embed(run_dir, cfg, encoder=encoder)
    run_codes(run_dir, cfg, encoder=encoder)
    run_map(run_dir, cfg, FRAMEWORK, encoder=encoder)
    return run_dir


@pytest.fixture(scope="module")
def games_learned(games_run, encoder):
    from pipeline.runner import run_learn

    record = run_learn(games_run, HUMAN, _cfg(), framework_path=FRAMEWORK, encoder=encoder)
    return games_run, record


def _human_sets(run_dir) -> dict[str, set[str]]:
    """utterance -> the concept ids the coders gave it (aligned by compare's rules)."""
    from pipeline.compare import compare
    from pipeline.framework import load_framework
    from pipeline.io.human_codes import read_human_codes
    from pipeline.io.rundir import read_table
    from pipeline.settings import CompareSettings, settings_for

    framework = load_framework(FRAMEWORK)
    result = compare(read_table(run_dir, "utterances"), read_table(run_dir, "sources"), read_human_codes(HUMAN),
                     framework, None, read_table(run_dir, "utterance_dimensions_framework"), None,
                     settings_for(CompareSettings, _cfg()))
    aligned = result.human_codes.to_pandas()
    return aligned.groupby("utterance_id")["second_order"].agg(set).to_dict(), result


def test_several_codes_on_one_passage_are_one_coders_set(games_learned):
    """A passage with two codes from one coder is that coder's set, not two disagreeing coders."""
    run_dir, _ = games_learned
    sets, result = _human_sets(run_dir)
    assert result.counts["coders"] == ["authors"]
    with open(HUMAN, encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["interview_id"] == "answer_001"]
    first = {r["code"] for r in rows if (r["start_char"], r["end_char"]) == ("29", "65")}
    assert first == {"emotional response", "engagement"}
    utt = pq.read_table(run_dir / "utterances.parquet").to_pandas()
    u = utt[(utt["interview_id"] == "answer_001") & (utt["start_char"] <= 29) & (utt["end_char"] >= 65)]
    assert len(u) == 1 and sets[u["utterance_id"].iloc[0]] >= {"emotional_response", "engagement"}
    multi = sum(len(s) >= 2 for s in sets.values())
    assert result.counts["multi_label_utterances"]["authors"] == multi and multi > 200
    # no coder pair to compare: the only agreement rows are the machine's with 'authors'
    ag = result.agreement.to_pandas()
    assert set(ag["coder_a"]) | set(ag["coder_b"].dropna()) == {"authors", "machine", "authors+machine"}


def test_compare_gives_set_agreement_and_per_code_kappa(games_learned):
    run_dir, _ = games_learned
    sets, result = _human_sets(run_dir)
    ag = result.agreement.to_pandas()
    so = ag[(ag["level"] == "second-order") & (ag["coder_a"] == "authors") & (ag["coder_b"] == "machine")]
    exact = so[so["metric"] == "exact_set"]["value"].iloc[0]
    # by hand: the machine's set is its one concept (framework-similarity gives one label), or 'none'
    from pipeline.compare import machine_labels
    from pipeline.framework import load_framework

    machine = machine_labels(pq.read_table(run_dir / "utterance_dimensions_framework.parquet"),
                             load_framework(FRAMEWORK))["second-order"]
    utt = pq.read_table(run_dir / "utterances.parquet").to_pandas()
    units = utt[utt["coded"] & utt["interview_id"].isin(set(result.human_codes.column("interview_id").to_pylist()))]
    units = units["utterance_id"].tolist()  # left uncoded in a coded answer: the label 'none'
    human = {u: sets.get(u, {"none"}) for u in units}
    assert so[so["metric"] == "exact_set"]["n"].iloc[0] == len(units)
    assert exact == pytest.approx(np.mean([human[u] == {machine[u]} for u in units]))
    jaccard = np.mean([len(human[u] & {machine[u]}) / len(human[u] | {machine[u]}) for u in units])
    assert so[so["metric"] == "jaccard"]["value"].iloc[0] == pytest.approx(jaccard)
    codes = so[so["metric"] == "label_kappa"]
    assert "emotional_response" in set(codes["dimension"]) and "macro" in set(codes["dimension"])


def test_learn_codes_sets_one_vs_rest_and_beats_one_label(games_learned):
    run_dir, record = games_learned
    counts = record["counts"]
    assert counts["multi_code"] and counts["multi_code_share"] > 0.5
    assert counts["unlearned"] == ["awe", "humor", "tension"]  # one coded unit each: left to the coders
    lc = pq.read_table(run_dir / "learned_codes.parquet").to_pandas()
    cv = lc[lc["cross_validated"]]
    assert not cv[cv["label"].isin(["awe", "humor", "tension"])]["assigned"].any()
    assert (cv[cv["is_argmax"]]["assigned"]).all()
    per_unit = cv.groupby("utterance_id")["assigned"].sum()
    assert per_unit.min() >= 1 and (per_unit >= 2).mean() > 0.2
    # out-of-fold sets against the coders' sets, by hand: micro-F1 of the sets beats the top label alone
    sets, _ = _human_sets(run_dir)

    def micro_f1(pred: dict[str, set]) -> float:
        tp = fp = fn = 0
        for u, p in pred.items():  # every coded unit of a coded answer; uncoded ones have the empty set
            h, p = sets.get(u, set()), p - {"none"}
            tp, fp, fn = tp + len(p & h), fp + len(p - h), fn + len(h - p)
        return 2 * tp / (2 * tp + fp + fn)

    assigned = cv[cv["assigned"]].groupby("utterance_id")["label"].agg(set).to_dict()  # labels are concept ids
    top = cv[cv["is_argmax"]].groupby("utterance_id")["label"].agg(set).to_dict()
    assert micro_f1(assigned) > micro_f1(top) + 0.03
    e = pq.read_table(run_dir / "learn_eval.parquet").to_pandas()
    row = e[(e["evaluation"] == "cross-validation") & (e["level"] == "second-order") & (e["metric"] == "f1")
            & (e["dimension"] == "micro")]
    assert row["value"].iloc[0] == pytest.approx(micro_f1(assigned), abs=1e-9)
    base = e[(e["evaluation"] == "framework-similarity") & (e["level"] == "second-order") & (e["metric"] == "f1")
             & (e["dimension"] == "micro")]
    assert row["value"].iloc[0] > base["value"].iloc[0] + 0.1  # 0.43 against 0.27 for the zero-shot map


def test_compare_after_learn_scores_the_learned_code_sets(games_learned, tmp_path):
    """compare after a multi-code learn sees every code of the machine's set (out of fold), not only its
    top code: the Jaccard figure is the one computed by hand from learned_codes.assigned."""
    import shutil

    from pipeline.runner import run_compare

    run_dir, _ = games_learned
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    run_compare(copy, HUMAN, _cfg(), framework_path=FRAMEWORK)
    ag = pq.read_table(copy / "agreement.parquet").to_pandas()
    row = ag[(ag["level"] == "second-order") & (ag["metric"] == "jaccard") & (ag["coder_a"] == "authors")
             & (ag["coder_b"] == "machine")]
    sets, _ = _human_sets(run_dir)
    lc = pq.read_table(run_dir / "learned_codes.parquet").to_pandas()
    cv = lc[lc["cross_validated"]]
    machine = cv[cv["assigned"]].dropna(subset=["second_order"]).groupby("utterance_id")["second_order"].agg(set)
    top_none = set(cv[cv["is_argmax"] & (cv["label"] == "none")]["utterance_id"])
    units = cv["utterance_id"].unique()
    jac = []
    for u in units:
        m = set(machine.get(u, set())) | ({"none"} if u in top_none else set())
        h = sets.get(u, {"none"})
        jac.append(len(m & h) / len(m | h))
    assert row["n"].iloc[0] == len(units)
    assert row["value"].iloc[0] == pytest.approx(np.mean(jac))
    assert max(len(s) for s in machine) >= 2


def test_a_qdpx_with_several_codes_on_one_passage_reads_as_the_same_sets(games_learned, tmp_path):
    """The games_as_art coding written as a REFI-QDA project (one selection per passage carrying all its
    codes, as QDA tools export it) aligns to exactly the sets the CSV gives."""
    import pandas as pd

    from pipeline.compare import compare
    from pipeline.framework import load_framework
    from pipeline.io.human_codes import read_human_codes
    from pipeline.io.qdpx import ExportCode, ExportSource, write_qdpx
    from pipeline.io.rundir import read_table
    from pipeline.settings import CompareSettings, settings_for

    run_dir, _ = games_learned
    sources = read_table(run_dir, "sources")
    text = dict(zip(sources.column("interview_id").to_pylist(), sources.column("source_text").to_pylist()))
    rows = pd.read_csv(HUMAN)
    codes = {name: ExportCode(name, key=("code", name)) for name in sorted(rows["code"].unique())}
    project = []
    for iid, g in rows.groupby("interview_id"):
        passages = g.groupby(["start_char", "end_char"])["code"].agg(sorted)
        project.append(ExportSource(iid, "", text[iid], [(int(s), int(e), [codes[c] for c in names])
                                                           for (s, e), names in passages.items()]))
    path = tmp_path / "games.qdpx"
    write_qdpx(path, "games as art", "authors", list(codes.values()), project)
    qdpx = read_human_codes(path)
    assert set(qdpx.frame["coder"]) == {"authors"} and len(qdpx.frame) == len(rows)
    framework = load_framework(FRAMEWORK)
    got = compare(read_table(run_dir, "utterances"), sources, qdpx, framework, None,
                  read_table(run_dir, "utterance_dimensions_framework"), None, settings_for(CompareSettings, _cfg()))
    from_qdpx = got.human_codes.to_pandas().groupby("utterance_id")["second_order"].agg(set).to_dict()
    from_csv, _ = _human_sets(run_dir)
    assert from_qdpx == from_csv
    assert got.counts["coders"] == ["authors"]
