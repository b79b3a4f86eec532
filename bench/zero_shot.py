"""The zero-shot map against the naive baseline, on three kinds of codebook: TalkMoves (dialogue moves,
one per sentence, role-aware), games_as_art (thematic codes, several per passage) and the example study
(knowledge-translation concepts, answer-level, two coders).

For every coded utterance of the human-coded interviews ("none" where the coders left it uncoded),
Cohen's kappa of the machine's second-order concept and of its dimension against each coder's label
(the label covering most of the utterance; mean over coders), for:
- map (as shipped): the map stage's label, an unmapped utterance counting as "none";
- map (forced): every utterance its most probable concept;
- nearest description: the concept of the most similar framework text (name, description or
  exemplar), within the speaker's role where the framework has roles.

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
from pipeline.compare import machine_labels
from pipeline.config import load_config
from pipeline.embed import load_encoder, vectors
from pipeline.framework import load_framework
from pipeline.io.human_codes import read_human_codes
from pipeline.io.rundir import read_table
from pipeline.learn import human_targets
from pipeline.map import embed_framework, pooled_similarity, speaker_roles
from pipeline.settings import CompareSettings, settings_for

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


def map_table(run: Path):
    """The map stage's own table (learn keeps it as utterance_dimensions_framework)."""
    kept = run / "utterance_dimensions_framework.parquet"
    return pq.read_table(kept if kept.is_file() else run / "utterance_dimensions.parquet")


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
    dims = map_table(run)
    shipped = machine_labels(dims, framework)
    top = dims.to_pandas().query("is_argmax").drop_duplicates("utterance_id").set_index("utterance_id")
    concept_id = {c.name: c.id for c in framework.concepts}
    forced_concept = top["second_order"].map(lambda n: concept_id.get(n, n))

    emb = read_table(run, "embeddings")
    row = {u: i for i, u in enumerate(emb.column("utterance_id").to_pylist())}
    x = vectors(emb)[[row[u] for u in ids]].astype(np.float64)
    fv = embed_framework(framework, encoder)
    near = pooled_similarity(x @ fv.vectors.T.astype(np.float64), fv.labels, len(framework.concepts), 1)
    if framework.has_roles:
        near = np.where(framework.allowed_concepts(speaker_roles(utterances, ids)), near, -np.inf)
    nearest = np.asarray(framework.concept_ids)[near.argmax(axis=1)]

    out = {"units": len(ids), "coders": t.coders}
    for level in ("second-order", "dimension"):
        cats = t.eval_levels[level][0]
        index = {c: i for i, c in enumerate(cats)}

        def as_level(concepts) -> np.ndarray:
            if level == "dimension":
                concepts = [framework.dimension_of(c) if c in concept_id.values() else c for c in concepts]
            return np.array([index.get(c, MISSING) for c in concepts], dtype=np.int64)

        ship = [shipped.at[u, "second-order"] if u in shipped.index else "none" for u in ids]
        forced = [forced_concept.get(u, "none") for u in ids]
        out[level] = {"map_as_shipped": kappas(t, level, as_level(ship)),
                      "map_forced": kappas(t, level, as_level(forced)),
                      "nearest_description": kappas(t, level, as_level(list(nearest)))}
        out[level]["as_shipped_minus_baseline"] = round(out[level]["map_as_shipped"]
                                                        - out[level]["nearest_description"], 4)
        out[level]["forced_minus_baseline"] = round(out[level]["map_forced"] - out[level]["nearest_description"], 4)
    out["mapped_share"] = round(float(np.mean([s != "none" for s in ship])), 4)
    return out


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
    save("zero_shot", results)


if __name__ == "__main__":
    sys.exit(main())
