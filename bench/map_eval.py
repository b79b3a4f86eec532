"""How well does `map` put utterances in the right aggregate dimension? Measured on the
example study's answer key, for both mapping methods, a plain keyword baseline and the naive
similarity baseline (nearest framework description).

Gold label of an utterance = its speaker turn's dimension in examples/answer_key/turns.csv.
Turns labelled 'none' (introductions, logistics, closing remarks) are excluded from the
accuracy figures, because the framework has no 'none' concept; instead the table reports
how often their utterances end up unmapped, next to the same share for substantive turns.

Two readings of every method:
- forced: every utterance takes its most probable dimension;
- thresholded: an unmapped utterance counts as a wrong answer (and as its own category for kappa).

Usage: python bench/map_eval.py [RUN_DIR]   (default runs/demo; needs segment, embed and codes)
Writes bench/results/map_eval.json.
"""
from __future__ import annotations

import csv
import dataclasses
import re
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, cohen_kappa_score, f1_score, precision_recall_fscore_support

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline.config import load_config  # noqa: E402
from pipeline.embed import load_encoder, vectors  # noqa: E402
from pipeline.framework import Framework, load_framework  # noqa: E402
from pipeline.io.rundir import read_table, write_json  # noqa: E402
from pipeline.map import (best_concept, description_similarity, code_probabilities, decide_codes, embed_framework,  # noqa: E402
                          make_mapper, map_utterances)
from pipeline.settings import MapSettings, settings_for  # noqa: E402

UNMAPPED = "unmapped"


def gold_labels(utterances, ids: list[str]) -> np.ndarray:
    with open(REPO / "examples" / "answer_key" / "turns.csv", encoding="utf-8") as fh:
        key = {(r["interview_id"], int(r["turn_index"])): r["dimension"] for r in csv.DictReader(fh)}
    u = utterances.select(["utterance_id", "interview_id", "turn_index"]).to_pydict()
    turn = {a: (b, c) for a, b, c in zip(u["utterance_id"], u["interview_id"], u["turn_index"])}
    return np.array([key.get(turn[i], "missing") for i in ids], dtype=object)


def metrics(gold: np.ndarray, pred: np.ndarray, dims: list[str]) -> dict:
    p, r, f, n = precision_recall_fscore_support(gold, pred, labels=dims, zero_division=0)
    covered = pred != UNMAPPED
    return {
        "n": int(len(gold)),
        "accuracy": round(float(accuracy_score(gold, pred)), 4),
        "macro_f1": round(float(f1_score(gold, pred, labels=dims, average="macro", zero_division=0)), 4),
        "kappa": round(float(cohen_kappa_score(gold, pred)), 4),
        "coverage": round(float(covered.mean()), 4),
        "accuracy_when_mapped": round(float((gold[covered] == pred[covered]).mean()), 4) if covered.any() else None,
        "per_dimension": {d: {"precision": round(float(p[i]), 4), "recall": round(float(r[i]), 4),
                              "f1": round(float(f[i]), 4), "support": int(n[i])} for i, d in enumerate(dims)},
    }


def keyword_counts(texts: list[str], framework: Framework) -> np.ndarray:
    """(n, n_dimensions): framework keyword occurrences (whole words, case-insensitive) per dimension."""
    dims = framework.dimension_ids
    out = np.zeros((len(texts), len(dims)))
    for c in framework.concepts:
        if not c.keywords:
            continue
        pattern = re.compile(r"\b(?:" + "|".join(re.escape(k) for k in sorted(c.keywords, key=len, reverse=True))
                             + r")\b", re.IGNORECASE)
        out[:, dims.index(c.dimension)] += [len(pattern.findall(t)) for t in texts]
    return out


def keyword_predictions(counts: np.ndarray, dims: list[str]) -> np.ndarray:
    """Most keyword hits wins; no hit or a tie at the top is unmapped."""
    top = counts.max(axis=1)
    tie = (counts == top[:, None]).sum(axis=1) > 1
    pred = np.array(dims, dtype=object)[counts.argmax(axis=1)]
    pred[(top == 0) | tie] = UNMAPPED
    return pred


def predictions(um, dims: list[str], framework: Framework) -> tuple[np.ndarray, np.ndarray]:
    """forced: every utterance the dimension of its most probable concept (the map's label)."""
    forced = np.array(dims, dtype=object)[best_concept(um.concepts, framework)[1]]
    thresholded = forced.copy()
    thresholded[~um.mapped] = UNMAPPED
    return forced, thresholded


def with_map(m: MapSettings, **changes) -> MapSettings:
    return dataclasses.replace(m, **changes)


def main(run_dir: Path) -> dict:
    started = time.perf_counter()
    cfg = load_config()
    framework = load_framework()
    dims = framework.dimension_ids
    utterances = read_table(run_dir, "utterances")
    embeddings = read_table(run_dir, "embeddings")
    codes = read_table(run_dir, "codes")
    assignments = read_table(run_dir, "assignments")
    ids = embeddings.column("utterance_id").to_pylist()
    emb = vectors(embeddings)
    gold = gold_labels(utterances, ids)
    substantive = np.isin(gold, dims)
    g = gold[substantive]
    encoder = load_encoder(cfg["embed"]["model"])
    fv = embed_framework(framework, encoder)
    emb_index = {u: i for i, u in enumerate(ids)}
    fingerprints = codes.column("fingerprint").to_pylist()

    def run(c: MapSettings, mapper=None):
        mapper = mapper or make_mapper(c).fit(fv)
        probs = code_probabilities(codes, emb_index, emb, mapper, c)
        mapping = decide_codes(probs, fingerprints, {}, mapper.source, c)
        return mapper, mapping, map_utterances(utterances, embeddings, assignments, codes, mapping, mapper, framework, c)

    results: dict = {"run_dir": str(run_dir), "gold": "utterance inherits its turn's dimension "
                     "(examples/answer_key/turns.csv); 'none' turns excluded from accuracy figures",
                     "n_substantive": int(substantive.sum()), "n_none": int((gold == "none").sum()),
                     "config": cfg["map"], "methods": {}, "ablation": {}, "baselines": {}}
    map_settings = settings_for(MapSettings, cfg)
    for method in ("similarity", "classifier"):
        c = with_map(map_settings, method=method)
        mapper, mapping, um = run(c)
        forced, thresholded = predictions(um, dims, framework)
        results["methods"][method] = {
            "source": mapper.source, "temperature": getattr(mapper, "temperature_", None),
            "forced": metrics(g, forced[substantive], dims),
            "thresholded": metrics(g, thresholded[substantive], dims),
            "unmapped_share_substantive": round(float(1 - um.mapped[substantive].mean()), 4),
            "unmapped_share_none_turns": round(float(1 - um.mapped[gold == "none"].mean()), 4),
            "codes_unmapped_share": round(float((mapping.assigned < 0).mean()), 4),
        }
        # What each part of the evidence adds (forced argmax).
        for name, w in {"own": (1, 0, 0), "own+context": (cfg["map"]["own_weight"], cfg["map"]["context_weight"], 0),
                        "own+code": (cfg["map"]["own_weight"], 0, cfg["map"]["code_weight"]),
                        "own+context+code": (cfg["map"]["own_weight"], cfg["map"]["context_weight"],
                                             cfg["map"]["code_weight"])}.items():
            cc = with_map(c, own_weight=float(w[0]), context_weight=float(w[1]), code_weight=float(w[2]))
            _, _, u2 = run(cc, mapper)
            f2, _ = predictions(u2, dims, framework)
            m2 = metrics(g, f2[substantive], dims)
            results["ablation"][f"{method}:{name}"] = {k: m2[k] for k in ("accuracy", "macro_f1", "kappa")}

        # Unmapped share vs thresholds (codes: code_threshold; utterances: utterance_threshold).
        sweep_codes, sweep_utt = [], []
        for t in (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6):
            d = decide_codes(mapping.probabilities, fingerprints, {}, mapper.source, with_map(c, code_threshold=t))
            mapped = d.assigned >= 0
            sizes = codes.column("size").to_numpy()
            sweep_codes.append({"code_threshold": t, "codes_unmapped_share": round(float(1 - mapped.mean()), 4),
                                "utterances_in_unmapped_codes_share": round(float(sizes[~mapped].sum() / sizes.sum()), 4)})
        top = np.sort(um.dimensions, axis=1)
        margin_ok = (top[:, -1] - top[:, -2]) >= c.utterance_margin
        forced_sub = forced[substantive]
        for t in (0.34, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7, 0.8):
            ok = (top[:, -1] >= t) & margin_ok
            ok_sub = ok[substantive]
            sweep_utt.append({"utterance_threshold": t, "unmapped_share": round(float(1 - ok.mean()), 4),
                              "unmapped_share_substantive": round(float(1 - ok_sub.mean()), 4),
                              "unmapped_share_none_turns": round(float(1 - ok[gold == "none"].mean()), 4),
                              "accuracy_when_mapped": round(float((forced_sub[ok_sub] == g[ok_sub]).mean()), 4)
                              if ok_sub.any() else None})
        results["methods"][method]["threshold_sweep_codes"] = sweep_codes
        results["methods"][method]["threshold_sweep_utterances"] = sweep_utt

    texts_by_id = dict(zip(utterances.column("utterance_id").to_pylist(), utterances.column("text").to_pylist()))
    texts = [texts_by_id[i] for i in ids]
    kw = keyword_counts(texts, framework)
    results["baselines"]["keyword"] = metrics(g, keyword_predictions(kw, dims)[substantive], dims)
    # A stronger baseline: count keywords over the utterance's whole speaker turn.
    u = utterances.select(["utterance_id", "interview_id", "turn_index"]).to_pydict()
    turn = {a: (b, c) for a, b, c in zip(u["utterance_id"], u["interview_id"], u["turn_index"])}
    turn_counts: dict = {}
    for i, uid in enumerate(ids):
        turn_counts[turn[uid]] = turn_counts.get(turn[uid], 0) + kw[i]
    kw_turn = np.stack([turn_counts[turn[uid]] for uid in ids])
    results["baselines"]["keyword_turn"] = metrics(g, keyword_predictions(kw_turn, dims)[substantive], dims)
    # The naive similarity baseline of bench/validity.py: the dimension of the most similar framework text.
    nearest = description_similarity(emb, fv.vectors, fv.labels, len(framework.concepts))
    nearest_dim = np.array(dims, dtype=object)[best_concept(nearest, framework)[1]]
    results["baselines"]["nearest_description"] = metrics(g, nearest_dim[substantive], dims)
    best = max(results["methods"], key=lambda k: results["methods"][k]["forced"]["macro_f1"])
    results["best_method"] = best
    results["seconds"] = round(time.perf_counter() - started, 1)
    return results


def _print(results: dict) -> None:
    rows = [(f"{m} ({r})", results["methods"][m][r]) for m in results["methods"] for r in ("forced", "thresholded")]
    rows += [(f"baseline {b}", v) for b, v in results["baselines"].items()]
    dims = list(rows[0][1]["per_dimension"])
    head = f"{'method':28s} {'acc':>6s} {'macroF1':>8s} {'kappa':>6s} {'cover':>6s} " + " ".join(
        f"{d[:8] + ' P/R':>14s}" for d in dims)
    print(f"utterances: {results['n_substantive']} in substantive turns ({results['n_none']} in 'none' turns excluded)")
    print(head)
    for name, v in rows:
        pr = " ".join(f"{v['per_dimension'][d]['precision']:>6.3f}/{v['per_dimension'][d]['recall']:<6.3f} " for d in dims)
        print(f"{name:28s} {v['accuracy']:6.3f} {v['macro_f1']:8.3f} {v['kappa']:6.3f} {v['coverage']:6.3f} {pr}")
    print("\nablation (forced):")
    for k, v in results["ablation"].items():
        print(f"  {k:34s} acc {v['accuracy']:.3f}  macro-F1 {v['macro_f1']:.3f}  kappa {v['kappa']:.3f}")
    for m, r in results["methods"].items():
        print(f"\n{m}: temperature {r['temperature']}, unmapped utterances {r['unmapped_share_substantive']:.3f} "
              f"(substantive turns) vs {r['unmapped_share_none_turns']:.3f} ('none' turns)")
        print("  code_threshold -> unmapped codes share (utterances in them): " + ", ".join(
            f"{s['code_threshold']}: {s['codes_unmapped_share']:.2f} ({s['utterances_in_unmapped_codes_share']:.2f})"
            for s in r["threshold_sweep_codes"]))
        print("  utterance_threshold -> unmapped share (substantive/none) acc-when-mapped: " + ", ".join(
            f"{s['utterance_threshold']}: {s['unmapped_share_substantive']:.2f}/{s['unmapped_share_none_turns']:.2f} "
            f"{s['accuracy_when_mapped']}" for s in r["threshold_sweep_utterances"]))
    print(f"\nbest method (forced macro-F1): {results['best_method']}; {results['seconds']} s")


if __name__ == "__main__":
    run_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "runs" / "demo"
    res = main(run_dir)
    _print(res)
    out = REPO / "bench" / "results" / "map_eval.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, res)
    print(f"written {out.relative_to(REPO)}")
