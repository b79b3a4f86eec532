"""The zero-shot map against the naive baseline, on three kinds of codebook: TalkMoves (dialogue moves,
one per sentence, role-aware), games_as_art (thematic codes, several per passage) and the example study
(knowledge-translation concepts, answer-level, two coders).

For every coded utterance of the human-coded interviews ("none" where the coders left it uncoded),
Cohen's kappa of the machine's second-order concept and of its dimension against each coder's label
(the label covering most of the utterance; mean over coders), for:
- map (as shipped): the map stage's label under the current defaults (recomputed from the run's
  embeddings and codes), an unmapped utterance counting as "none";
- map (forced): every utterance its most probable concept;
- nearest description: the concept of the most similar framework text (name, description or
  exemplar), within the speaker's role where the framework has roles.
And a sweep of the map's two gates on the same units: min_similarity (the closest framework text)
and utterance_threshold / utterance_margin (the best dimension's probability and lead).

Needs the runs up to map (made when missing; TalkMoves ~15 minutes, embeddings cached afterwards).
Usage: python bench/zero_shot.py [--corpus talkmoves,games_as_art,example]
writes bench/results/zero_shot.json
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from sklearn.metrics import cohen_kappa_score

from shift_corpora import REPO, SHARED

from _results import save  # noqa: E402

from pipeline.agreement import MISSING
from pipeline.config import load_config
from pipeline.embed import load_encoder, vectors
from pipeline.framework import load_framework
from pipeline.io.human_codes import read_human_codes
from pipeline.io.rundir import read_table
from pipeline.learn import human_targets
from pipeline.map import best_concept, description_similarity, dimension_lead, embed_framework, map_stage, speaker_roles
from pipeline.settings import CompareSettings, MapSettings, settings_for

CORPORA = {
    "talkmoves": {"dir": SHARED / "corpora" / "talkmoves", "run": REPO / "runs" / "talkmoves",
                  "framework": REPO / "configs" / "frameworks" / "talkmoves.yaml",
                  "human": SHARED / "corpora" / "talkmoves" / "human_codes.csv"},
    "games_as_art": {"dir": SHARED / "corpora" / "games_as_art", "run": REPO / "runs" / "games_as_art",
                     "framework": REPO / "configs" / "frameworks" / "games_as_art.yaml",
                     "human": SHARED / "corpora" / "games_as_art" / "human_codes.csv"},
    "example": {"dir": REPO / "examples" / "kt_study", "run": REPO / "runs" / "demo", "framework": None,
                "human": REPO / "examples" / "answer_key" / "human_codes.csv"},
}


def ensure_run(spec: dict) -> None:
    if (spec["run"] / "utterance_dimensions.parquet").is_file():
        return
    cmd = [str(REPO / ".venv" / "bin" / "themeshift"), "run", str(spec["dir"]), "--out", str(spec["run"]),
           "--until", "map", "--quiet"]
    if (spec["dir"] / "themeshift.toml").is_file():
        cmd += ["--config", str(spec["dir"] / "themeshift.toml")]
    if spec["framework"]:
        cmd += ["--framework", str(spec["framework"])]
    subprocess.run(cmd, check=True)


def current_map(run: Path, framework, encoder, cfg):
    """The map stage under the current configuration (defaults unless the corpus's file sets them),
    recomputed from the run's embeddings and codes, so a changed default is measured without a new run."""
    m = settings_for(MapSettings, cfg)
    utterances = read_table(run, "utterances")
    result = map_stage(utterances, read_table(run, "embeddings"), read_table(run, "codes"),
                       read_table(run, "assignments"), framework, encoder, m)
    return m, result


def kappas(t, level: str, labels: np.ndarray) -> float:
    """Mean over coders of kappa between labels (category indices) and each coder's primary label."""
    cats, primary, _ = t.eval_levels[level]
    out = []
    for c in t.coders:
        ok = (primary[c] != MISSING) & (labels != MISSING)
        out.append(cohen_kappa_score(primary[c][ok], labels[ok]))
    return round(float(np.mean(out)), 4)


def evaluate(name: str, spec: dict, encoder) -> dict:
    ensure_run(spec)
    cfg_file = spec["dir"] / "themeshift.toml"
    cfg = load_config(cfg_file if cfg_file.is_file() else None, {"compare": {"unknown_codes": "ignore"}})
    framework = load_framework(spec["framework"])
    run = spec["run"]
    utterances, sources = read_table(run, "utterances"), read_table(run, "sources")
    t = human_targets(utterances, sources, read_human_codes(spec["human"]), framework, None, "second_order",
                      settings_for(CompareSettings, cfg))
    ids = t.units["utterance_id"].tolist()
    m, result = current_map(run, framework, encoder, cfg)
    um = result.utterance_mapping
    at = {u: i for i, u in enumerate(um.utterance_ids)}
    rows = np.array([at[u] for u in ids])
    concept, dim = best_concept(um.concepts[rows], framework)
    forced = np.asarray(framework.concept_ids)[concept]
    top, lead = dimension_lead(um.dimensions[rows], dim)
    closest = um.extra["closest"][rows]
    gate = ~um.extra["no_concept"][rows]

    emb = read_table(run, "embeddings")
    row = {u: i for i, u in enumerate(emb.column("utterance_id").to_pylist())}
    x = vectors(emb)[[row[u] for u in ids]].astype(np.float64)
    fv = embed_framework(framework, encoder)
    allowed = framework.allowed_concepts(speaker_roles(utterances, ids)) if framework.has_roles else None
    near = description_similarity(x, fv.vectors, fv.labels, len(framework.concepts), allowed)
    nearest = np.asarray(framework.concept_ids)[near.argmax(axis=1)]
    concept_ids = set(framework.concept_ids)

    def score(concepts, mapped, level: str) -> float:
        cats = t.eval_levels[level][0]
        index = {c: i for i, c in enumerate(cats)}
        if level == "dimension":
            concepts = [framework.dimension_of(c) if c in concept_ids else c for c in concepts]
        labels = [c if ok else "none" for c, ok in zip(concepts, mapped)]
        return kappas(t, level, np.array([index.get(c, MISSING) for c in labels], dtype=np.int64))

    everything = np.ones(len(ids), dtype=bool)
    shipped = um.mapped[rows]
    out = {"units": len(ids), "coders": t.coders, "human_none_share": human_none_share(t),
           "settings": {k: getattr(m, k) for k in ("min_similarity", "utterance_threshold", "utterance_margin",
                                                   "own_weight", "context_weight", "code_weight",
                                                   "similarity_top_k")}}
    for level in ("second-order", "dimension"):
        v = out[level] = {"map_as_shipped": score(forced, shipped, level),
                          "map_forced": score(forced, everything, level),
                          "nearest_description": score(nearest, everything, level)}
        v["as_shipped_minus_baseline"] = round(v["map_as_shipped"] - v["nearest_description"], 4)
        v["forced_minus_baseline"] = round(v["map_forced"] - v["nearest_description"], 4)
    out["mapped_share"] = round(float(shipped.mean()), 4)
    # What each gate alone and together would give: the evidence for the defaults.
    sweep = []
    for min_sim in SWEEP_SIMILARITY:
        for thr, margin in SWEEP_PROBABILITY:
            mapped = gate & (closest >= min_sim) & (top >= thr) & (lead >= margin)
            sweep.append({"min_similarity": min_sim, "utterance_threshold": thr, "utterance_margin": margin,
                          "mapped_share": round(float(mapped.mean()), 4),
                          "second-order": score(forced, mapped, "second-order"),
                          "dimension": score(forced, mapped, "dimension")})
    out["sweep"] = sweep
    return out


def human_none_share(t) -> float:
    """Share of units the (first) coder left uncoded: what an abstaining map can get right."""
    cats, primary, _ = t.eval_levels["second-order"]
    p = primary[t.coders[0]]
    known = p != MISSING
    return round(float(np.mean([cats[i] == "none" for i in p[known]])), 4)


SWEEP_SIMILARITY = (-1.0, 0.2, 0.25, 0.3, 0.35)
SWEEP_PROBABILITY = ((0.0, -1.0), (0.0, 0.0), (0.5, 0.1))  # (utterance_threshold, utterance_margin): off; the
# concept's dimension must lead (margin 0); the old default


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default="talkmoves,games_as_art,example")
    args = ap.parse_args()
    encoder = load_encoder("minilm", "cpu")
    results = {}
    for name in args.corpus.split(","):
        results[name] = r = evaluate(name, CORPORA[name], encoder)
        for level in ("second-order", "dimension"):
            v = r[level]
            print(f"{name:13s} {level:12s} kappa: map as shipped {v['map_as_shipped']:.3f}, forced {v['map_forced']:.3f}, "
                  f"nearest description {v['nearest_description']:.3f} (mapped share {r['mapped_share']:.2f}, "
                  f"n={r['units']})", flush=True)
        for w in r["sweep"]:
            print(f"    min_similarity {w['min_similarity']:+.2f}, threshold/margin {w['utterance_threshold']}/"
                  f"{w['utterance_margin']}: mapped {w['mapped_share']:.2f}, kappa {w['second-order']:.3f} / "
                  f"{w['dimension']:.3f}", flush=True)
    save("zero_shot", results)


if __name__ == "__main__":
    sys.exit(main())
