"""Agreement statistics: hand-computed cases, scikit-learn and the krippendorff package, and
the compare stage on the example study's double-coded interviews."""
from __future__ import annotations

import krippendorff
import numpy as np
import pyarrow as pa
import pytest
from sklearn.metrics import (adjusted_rand_score, cohen_kappa_score, completeness_score, homogeneity_score,
                             normalized_mutual_info_score)

from conftest import ANSWER_KEY
from pipeline.agreement import (MISSING, Bootstrap, Ratings, alpha, cluster_scores, coincidence_tables,
                                compare_ratings, confusion_tables, contingency_tables, kappa, precision_recall_f1)
from pipeline.config import load_config
from pipeline.errors import InputError
from pipeline.framework import load_framework
from pipeline.io.human_codes import read_human_codes
from pipeline.io.rundir import read_table
from pipeline.schema import UTTERANCE_DIMENSIONS
from pipeline.settings import CompareSettings, settings_for


# ---------------------------------------------------------------- hand-computed cases

def test_kappa_hand_computed():
    # 50 units: p_o = 35/50 = 0.7; p_e = 0.5*0.6 + 0.5*0.4 = 0.5; kappa = (0.7 - 0.5) / 0.5 = 0.4
    assert kappa(np.array([[20, 5], [10, 15]])) == pytest.approx(0.4)
    assert kappa(np.array([[7, 0], [0, 3]])) == pytest.approx(1.0)
    assert np.isnan(kappa(np.array([[5, 0], [0, 0]])))  # one category only: undefined, not 1


def test_alpha_hand_computed():
    # units (a,a) (a,b) (b,b) (b,b): o = [[2,1],[1,4]], n = 8, n_a = 3, n_b = 5
    # alpha = 1 - (n-1) * 2 / (64 - 9 - 25) = 1 - 14/30
    values = np.array([[0, 0], [0, 1], [1, 1], [1, 1]])
    o = coincidence_tables(values, np.zeros(4, int), 1, 2)[0]
    assert o.tolist() == [[2, 1], [1, 4]]
    assert alpha(o) == pytest.approx(1 - 14 / 30)
    assert krippendorff.alpha(reliability_data=values.T.astype(float), level_of_measurement="nominal") == \
        pytest.approx(1 - 14 / 30)


def test_precision_recall_f1_hand_computed():
    p, r, f = precision_recall_f1(np.array([3, 1, 2]))
    assert (p, r, f) == pytest.approx((0.75, 0.6, 6 / 9))


def test_cluster_scores_hand_computed():
    # clusters 0 and 1 are pure; cluster 2 mixes (2 of class 0, 3 of class 1)
    t = np.array([[5, 0], [0, 5], [2, 3]])
    s = cluster_scores(t)
    assert s["purity"] == pytest.approx(13 / 15)
    # Hungarian: 0->0, 1->1, cluster 2 unmatched; p_o = 10/15, p_e = (5*7 + 5*8) / 225 = 1/3 -> kappa 0.5
    assert s["matched_kappa"] == pytest.approx(0.5)
    clusters = np.repeat([0, 1, 2, 2], [5, 5, 2, 3])
    classes = np.repeat([0, 1, 0, 1], [5, 5, 2, 3])
    assert s["ari"] == pytest.approx(adjusted_rand_score(classes, clusters))
    assert s["nmi"] == pytest.approx(normalized_mutual_info_score(classes, clusters))
    assert s["homogeneity"] == pytest.approx(homogeneity_score(classes, clusters))
    assert s["completeness"] == pytest.approx(completeness_score(classes, clusters))


# ---------------------------------------------------------------- against the reference packages

def _labels(seed=3, n=400, k=5, agree=0.7):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, k, n)
    b = np.where(rng.random(n) < agree, a, rng.integers(0, k, n))
    c = np.where(rng.random(n) < agree, a, rng.integers(0, k, n))
    return a, b, c, rng.integers(0, 12, n)


def test_kappa_matches_sklearn_per_group_sum():
    a, b, _, g = _labels()
    tables = confusion_tables(a, b, g, 12, 5)
    assert kappa(tables.sum(axis=0)) == pytest.approx(cohen_kappa_score(a, b), abs=1e-12)


def test_alpha_matches_krippendorff_with_missing_data():
    a, b, c, g = _labels(seed=11)
    rng = np.random.default_rng(5)
    values = np.stack([a, b, c], axis=1)
    values[rng.random(values.shape) < 0.25] = MISSING  # a quarter of the codings missing
    ours = alpha(coincidence_tables(values, g, 12, 5).sum(axis=0))
    ref = krippendorff.alpha(reliability_data=np.where(values < 0, np.nan, values).T.astype(float),
                             level_of_measurement="nominal")
    assert ours == pytest.approx(ref, abs=1e-12)


def test_cluster_scores_match_sklearn():
    a, _, _, g = _labels(seed=8)
    clusters = (a * 3 + np.random.default_rng(2).integers(0, 3, a.size)) % 11  # 11 clusters over 5 classes
    s = cluster_scores(contingency_tables(clusters, a, g, 12, 11, 5).sum(axis=0))
    assert s["ari"] == pytest.approx(adjusted_rand_score(a, clusters))
    assert s["nmi"] == pytest.approx(normalized_mutual_info_score(a, clusters))
    assert s["homogeneity"] == pytest.approx(homogeneity_score(a, clusters))
    assert s["completeness"] == pytest.approx(completeness_score(a, clusters))


def test_bootstrap_is_seeded_and_brackets_the_estimate():
    a, b, _, g = _labels()
    tables = confusion_tables(a, b, g, 12, 5)
    one = Bootstrap.draw(12, 500, 42, 0.95).estimate(tables, kappa)
    two = Bootstrap.draw(12, 500, 42, 0.95).estimate(tables, kappa)
    assert one == two
    value, lo, hi = one
    assert lo < value < hi and hi - lo < 0.3
    narrow = Bootstrap.draw(12, 500, 42, 0.5).estimate(tables, kappa)
    assert narrow[2] - narrow[1] < hi - lo
    none = Bootstrap.draw(12, 0, 42, 0.95).estimate(tables, kappa)
    assert np.isnan(none[1]) and none[0] == pytest.approx(value)


def test_consensus_and_multi_label_precision():
    cats = ["push", "pull", "none"]
    #        unit:  0  1  2  3         coder_b missing on unit 3
    primary = {"a": np.array([0, 1, 0, 2]), "b": np.array([0, 0, 0, MISSING]), "m": np.array([0, 1, 1, 2])}
    present = {k: np.eye(3, dtype=bool)[np.maximum(v, 0)] & (v != MISSING)[:, None] for k, v in primary.items()}
    present["a"][2, 1] = True  # coder a gave unit 2 both push and pull
    r = Ratings("dimension", cats, primary, present)
    cons, cons_present, usable = r.consensus(["a", "b"])
    assert cons.tolist() == [0, MISSING, 0, MISSING]
    assert usable[:, 0].tolist() == [True, False, True, False]
    rows, conf, warnings = compare_ratings(r, ["a", "b"], "m", np.arange(4), 4, Bootstrap.draw(4, 0, 1, 0.95))
    got = {(x["metric"], x["coder_a"], x["coder_b"], x["dimension"]): x for x in rows}
    # machine "pull" on unit 2 is a true positive against coder a's multi-label set
    assert got[("precision", "m", "a", "pull")]["value"] == pytest.approx(1.0)
    assert got[("recall", "m", "b", "push")]["value"] == pytest.approx(1 / 3)
    assert got[("cohen_kappa", "a", "b", None)]["n"] == 3
    assert not warnings
    assert sum(c["n"] for c in conf if c["coder_a"] == "a" and c["coder_b"] == "m") == 4


def test_label_sets_agreement_hand_computed():
    """Passages with several codes: exact set, Jaccard, per-label kappa and micro-F1 by hand."""
    cats = ["a", "b", "c", "none"]
    sets = {"h": [{"a", "b"}, {"a"}, {"b", "c"}, {"c"}, {"a", "c"}],
            "m": [{"a", "b"}, {"a", "b"}, {"b"}, {"a"}, {"a", "c"}]}
    present = {k: np.array([[c in s for c in cats] for s in v]) for k, v in sets.items()}
    primary = {k: np.array([cats.index(sorted(s)[0]) for s in v]) for k, v in sets.items()}
    r = Ratings("second-order", cats, primary, present)
    rows, _, warnings = compare_ratings(r, ["h"], "m", np.arange(5), 5, Bootstrap.draw(5, 0, 1, 0.95))
    got = {(x["metric"], x["coder_a"], x["coder_b"], x["dimension"]): x["value"] for x in rows}
    assert got[("exact_set", "h", "m", None)] == pytest.approx(2 / 5)
    # Jaccard per passage: 1, 1/2, 1/2, 0, 1
    assert got[("jaccard", "h", "m", None)] == pytest.approx((1 + 0.5 + 0.5 + 0 + 1) / 5)
    # label a: h = 1 1 0 0 1, m = 1 1 0 1 1 -> p_o 4/5, p_e (3/5)(4/5) + (2/5)(1/5) = 14/25
    assert got[("label_kappa", "h", "m", "a")] == pytest.approx((4 / 5 - 14 / 25) / (1 - 14 / 25))
    # label c: h = 0 0 1 1 1, m = 0 0 0 0 1 -> p_o 3/5, p_e (3/5)(1/5) + (2/5)(4/5) = 11/25
    kc = (3 / 5 - 11 / 25) / (1 - 11 / 25)
    # label b: h = 1 0 1 0 0, m = 1 1 1 0 0 -> p_o 4/5, p_e (2/5)(3/5) + (3/5)(2/5) = 12/25
    kb = (4 / 5 - 12 / 25) / (1 - 12 / 25)
    assert got[("label_kappa", "h", "m", "c")] == pytest.approx(kc)
    assert got[("label_kappa", "h", "m", "macro")] == pytest.approx((0.5454545454 + kb + kc) / 3, abs=1e-6)
    # micro-F1 of the machine against h: tp 6 (a: 3, b: 2, c: 1), fp 2, fn 2 -> 12 / 16
    assert got[("f1", "m", "h", "micro")] == pytest.approx(12 / 16)
    assert not warnings


def test_coders_with_no_overlap_are_reported():
    cats = ["x", "y", "none"]
    primary = {"a": np.array([0, 1, MISSING, MISSING]), "b": np.array([MISSING, MISSING, 0, 1]),
               "m": np.array([0, 1, 0, 0])}
    present = {k: np.eye(3, dtype=bool)[np.maximum(v, 0)] & (v != MISSING)[:, None] for k, v in primary.items()}
    rows, _, warnings = compare_ratings(Ratings("dimension", cats, primary, present), ["a", "b"], "m",
                                        np.arange(4), 4, Bootstrap.draw(4, 0, 1, 0.95))
    assert any("a and b share no coded utterance" in w for w in warnings)
    assert any("a+b: no utterance coded by two" in w for w in warnings)
    assert {(r["coder_a"], r["coder_b"]) for r in rows if r["metric"] == "cohen_kappa"} == {("a", "m"), ("b", "m")}


# ---------------------------------------------------------------- the compare stage on the example study

def machine_from_coder(aligned, utterances, coder: str, flip_every: int) -> pa.Table:
    """utterance_dimensions whose argmax is one coder's label, with every n-th coded utterance flipped
    to the next dimension (a deterministic, known disagreement)."""
    fw = load_framework()
    dims = fw.dimension_ids
    a = aligned.to_pandas()
    a = a[(a["coder"] == coder) & a["coded"]].drop_duplicates("utterance_id").set_index("utterance_id")
    utt = utterances.to_pandas()
    coded = utt[utt["coded"] & utt["interview_id"].isin(set(a["interview_id"]))]["utterance_id"]
    rows = []
    for n, uid in enumerate(coded):
        dim, concept = (a.at[uid, "dimension"], a.at[uid, "second_order"]) if uid in a.index else (dims[0], None)
        mapped = uid in a.index
        if n % flip_every == 0:
            dim = dims[(dims.index(dim) + 1) % len(dims)]
            concept = next(c.id for c in fw.concepts if c.dimension == dim)
        for d in dims:
            rows.append({"utterance_id": uid, "dimension": d, "probability": 0.8 if d == dim else 0.1,
                         "is_argmax": d == dim, "mapped": mapped, "second_order": fw.concept(concept).name
                         if concept else None, "source": "human"})
    return pa.Table.from_pylist(rows, schema=UTTERANCE_DIMENSIONS)


@pytest.fixture(scope="module")
def example_comparison(example_segmented):
    from pipeline.compare import compare
    from pipeline.io.human_codes import align, resolve_codes

    fw, cfg = load_framework(), load_config()
    utt, src = read_table(example_segmented, "utterances"), read_table(example_segmented, "sources")
    human = read_human_codes(ANSWER_KEY / "human_codes.csv")
    aligned = align(human, resolve_codes(human, fw, None)[0], utt, src, 0.5)
    dims = machine_from_coder(aligned, utt, "coder_a", flip_every=10)
    result = compare(utt, src, human, fw, None, dims, None, settings_for(CompareSettings, cfg))
    return result, aligned, dims, utt


def test_compare_figures_match_sklearn_and_krippendorff(example_comparison):
    result, aligned, dims, utt = example_comparison
    a = result.agreement.to_pandas()
    units = utt.to_pandas()
    units = units[units["coded"] & units["interview_id"].isin(set(aligned.column("interview_id").to_pylist()))]
    al = aligned.to_pandas()
    al = al[al["coded"]]
    labels = {}
    for coder in ("coder_a", "coder_b"):
        got = al[al["coder"] == coder].drop_duplicates("utterance_id").set_index("utterance_id")["dimension"]
        labels[coder] = units["utterance_id"].map(got).fillna("none").to_numpy()
    d = dims.to_pandas()
    top = d[d["is_argmax"]].set_index("utterance_id")
    labels["machine"] = np.where(units["utterance_id"].map(top["mapped"]), units["utterance_id"].map(top["dimension"]),
                                 "none")
    assert len(units) == 1224

    def value(metric, a_, b_):
        row = a[(a["level"] == "dimension") & (a["metric"] == metric) & (a["coder_a"] == a_)
                & (a["coder_b"].fillna("") == b_)]
        assert len(row) == 1, (metric, a_, b_)
        return row.iloc[0]

    for x, y in (("coder_a", "coder_b"), ("coder_a", "machine"), ("coder_b", "machine")):
        row = value("cohen_kappa", x, y)
        assert row["value"] == pytest.approx(cohen_kappa_score(labels[x], labels[y]), abs=1e-12)
        assert row["n"] == 1224 and row["ci_low"] < row["value"] < row["ci_high"]
    cats = {c: i for i, c in enumerate(["push", "pull", "exchange", "none"])}
    for who in (["coder_a", "coder_b"], ["coder_a", "coder_b", "machine"]):
        data = np.array([[cats[v] for v in labels[w]] for w in who], dtype=float)
        row = value("krippendorff_alpha", "+".join(who), "")
        assert row["value"] == pytest.approx(krippendorff.alpha(reliability_data=data,
                                                                level_of_measurement="nominal"), abs=1e-12)
    # the machine is coder_a with every 10th of the 1224 utterances flipped (123); 12 of those coder_a left
    # uncoded, and an unmapped flip stays "none": 111 disagreements, each listed for review
    assert (labels["machine"] != labels["coder_a"]).sum() == 111
    dis = result.disagreements.to_pandas()
    assert len(dis[(dis["level"] == "dimension") & (dis["coder"] == "coder_a")]) == 111
    assert dis["text"].str.len().min() > 0


def test_compare_tables_are_reproducible(example_segmented, example_comparison):
    from pipeline.compare import compare

    result, _, dims, utt = example_comparison
    again = compare(utt, read_table(example_segmented, "sources"), read_human_codes(ANSWER_KEY / "human_codes.csv"),
                    load_framework(), None, dims, None, settings_for(CompareSettings, load_config()))
    assert again.agreement.equals(result.agreement)
    assert again.disagreements.equals(result.disagreements)


def test_machine_named_like_a_coder_is_refused(example_segmented, tmp_path):
    from pipeline.compare import compare

    path = tmp_path / "codes.csv"
    path.write_text((ANSWER_KEY / "human_codes.csv").read_text().replace("coder_b", "machine"))
    utt = read_table(example_segmented, "utterances")
    with pytest.raises(InputError, match="machine"):
        compare(utt, read_table(example_segmented, "sources"), read_human_codes(path), load_framework(), None,
                pa.Table.from_pylist([], schema=UTTERANCE_DIMENSIONS), None, settings_for(CompareSettings, load_config()))
