"""Validity of machine coding on real human-coded speech (TalkMoves), per speaker role, beside
plain baselines run on the same units and the same held-out lessons.

Needs a run of the corpus up to map with the role-aware framework (the bench's first step makes
it when missing; ~15 minutes, embeddings cached afterwards):

    themeshift run ../shared/corpora/talkmoves --out runs/talkmoves \\
        --config ../shared/corpora/talkmoves/themeshift.toml \\
        --framework configs/frameworks/talkmoves.yaml --until map

Reports per role (teacher, student), against the human talk move of every coded sentence
("none" included), Cohen's kappa and macro-F1:
- zero-shot: the map stage (role-aware framework) vs nearest-description similarity (each unit
  takes the concept of its most similar framework text, within its role). The map is read twice:
  as it ships (an unmapped unit counts as "none") and forced (every unit its most probable
  concept), the baseline's own protocol;
- learned, with a learning curve over the share of coded lessons (5, 10, 20, 40, 80%; lessons
  drawn at random, scored on the lessons not coded): `themeshift learn` with the frozen sentence model
  and as shipped ([learn] encoder = "auto": fine-tuned where it scores higher on held-out coded
  lessons) vs a plain logistic regression on the sentence embedding alone (one per role), same lessons;
- wall time and peak memory of `themeshift learn` (a child process, per share and encoder).

And on games_as_art (thematic codes, several per passage; ../shared/corpora/games_as_art), grouped
5-fold cross-validation by answer: micro-F1 of the code sets of `themeshift learn` (its own
cross-validation, frozen and as shipped) against a plain one-vs-rest logistic regression on the
sentence embedding (each code present at probability >= 0.5), on the same folds.

Usage: python bench/validity.py [--run runs/talkmoves] [--learn-shares 0.2] [--shares ...] [--skip-games]
writes bench/results/validity.json
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import cohen_kappa_score, f1_score

from shift_corpora import REPO, TALKMOVES

from _results import save  # noqa: E402

from pipeline.config import load_config
from pipeline.embed import vectors
from pipeline.framework import load_framework

FRAMEWORK = REPO / "configs" / "frameworks" / "talkmoves.yaml"
ROLES = {"TEACHER": "teacher", "STUDENT": "student"}
NONE = "none"


def ensure_run(run: Path) -> None:
    if (run / "utterance_dimensions.parquet").is_file():
        return
    subprocess.run([str(REPO / ".venv" / "bin" / "themeshift"), "run", str(TALKMOVES), "--out", str(run),
                    "--config", str(TALKMOVES / "themeshift.toml"), "--framework", str(FRAMEWORK),
                    "--until", "map", "--quiet"], check=True)


def human_units(run: Path, framework, cfg: dict) -> pd.DataFrame:
    """Every coded utterance of the run with its human talk move (the code of largest overlap)."""
    import pyarrow as pa  # noqa: F401

    from pipeline.io.human_codes import align, read_human_codes, resolve_codes

    human = read_human_codes(TALKMOVES / "human_codes.csv")
    resolved, _ = resolve_codes(human, framework, None, "ignore")  # 'none' and the retired 'marking': outside
    utterances, sources = pq.read_table(run / "utterances.parquet"), pq.read_table(run / "sources.parquet")
    aligned = align(human, resolved, utterances, sources, cfg["compare"]["min_overlap"]).to_pandas()
    aligned = aligned.sort_values("overlap", ascending=False).drop_duplicates("utterance_id")
    ids = {c.name: c.id for c in framework.concepts}
    aligned["label"] = aligned["second_order"].map(lambda n: ids.get(n, n) if isinstance(n, str) else NONE)
    utt = utterances.select(["utterance_id", "interview_id", "turn_index", "speaker_role", "coded"]).to_pandas()
    units = utt[utt["coded"]].merge(aligned[["utterance_id", "label"]], on="utterance_id")
    return units[units["speaker_role"].isin(list(ROLES))].reset_index(drop=True)


def scores(truth: pd.Series, pred: pd.Series) -> dict:
    labels = sorted(set(truth) | set(pred))
    return {"kappa": round(float(cohen_kappa_score(truth, pred)), 4),
            "macro_f1": round(float(f1_score(truth, pred, labels=labels, average="macro", zero_division=0)), 4),
            "n": int(len(truth))}


def by_role(units: pd.DataFrame, pred: pd.Series, rows: np.ndarray | None = None) -> dict:
    u = units if rows is None else units.iloc[rows]
    p = pred if rows is None else pred.iloc[rows]
    return {ROLES[r]: scores(u.loc[m, "label"], p.loc[m]) for r in ROLES if (m := u["speaker_role"] == r).any()}


def nearest_description(X: np.ndarray, units: pd.DataFrame, framework) -> pd.Series:
    from pipeline.embed import load_encoder
    from pipeline.map import description_similarity, embed_framework

    fv = embed_framework(framework, load_encoder("minilm"))
    allowed = framework.allowed_concepts(units["speaker_role"].tolist())
    pick = description_similarity(X, fv.vectors, fv.labels, len(framework.concepts), allowed).argmax(axis=1)
    return pd.Series(np.asarray(framework.concept_ids)[pick], index=units.index)


def plain_classifier(X: np.ndarray, units: pd.DataFrame, coded: np.ndarray, seed: int) -> pd.Series:
    """One logistic regression per role on the sentence embedding alone."""
    pred = pd.Series(NONE, index=units.index, dtype=object)
    for role in ROLES:
        r = (units["speaker_role"] == role).to_numpy()
        train = r & coded
        if len(set(units.loc[train, "label"])) < 2:
            continue
        model = LogisticRegression(max_iter=2000, random_state=seed).fit(X[train], units.loc[train, "label"])
        pred[r] = model.predict(X[r])
    return pred


def tool_learn(run: Path, units: pd.DataFrame, coded_lessons: set[str], framework, config: Path | None,
               encoder: str) -> tuple:
    """`themeshift learn` on a copy of the run with only the coded lessons' human codes; returns
    the learned label per unit, wall seconds and the child's peak memory."""
    from pipeline.compare import machine_labels

    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "run"
        subprocess.run(["cp", "-r", str(run), str(copy)], check=True)
        codes = pd.read_csv(TALKMOVES / "human_codes.csv")
        codes = codes[codes["interview_id"].isin(coded_lessons)]
        codes.to_csv(Path(tmp) / "codes.csv", index=False)
        cmd = [str(REPO / ".venv" / "bin" / "themeshift"), "learn", str(copy), "--human", str(Path(tmp) / "codes.csv"),
               "--framework", str(FRAMEWORK), "--quiet"]
        cfg_file = Path(tmp) / "learn.toml"
        text = (TALKMOVES / "themeshift.toml").read_text(encoding="utf-8")
        text += "\n[compare]\nunknown_codes = \"ignore\"\n"
        if config is not None:
            text += "\n" + config.read_text(encoding="utf-8")
        if "[learn]" in text:
            text = text.replace("[learn]", f"[learn]\nencoder = \"{encoder}\"", 1)
        else:
            text += f"\n[learn]\nencoder = \"{encoder}\"\n"
        cfg_file.write_text(text, encoding="utf-8")
        cmd += ["--config", str(cfg_file)]
        started = time.perf_counter()
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        subprocess.run(cmd, check=True)
        seconds = time.perf_counter() - started
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        labels = machine_labels(pq.read_table(copy / "utterance_dimensions.parquet"), framework)
        counts = json.loads((copy / "manifest.json").read_text())["stages"]["learn"]["counts"]
    pred = units["utterance_id"].map(labels["second-order"]).fillna(NONE)
    return pred, round(seconds, 1), round(max(peak, before) / 1024), len(codes), counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=REPO / "runs" / "talkmoves")
    ap.add_argument("--shares", default="0.05,0.1,0.2,0.4,0.8", help="shares of lessons coded (learning curve)")
    ap.add_argument("--learn-shares", default="0.2", help="shares at which `themeshift learn` itself runs")
    ap.add_argument("--learn-config", type=Path, default=None,
                    help="extra TOML for `themeshift learn` (default: its own defaults, everything included)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--skip-games", action="store_true", help="TalkMoves only")
    args = ap.parse_args()
    ensure_run(args.run)
    cfg = load_config(TALKMOVES / "themeshift.toml")
    framework = load_framework(FRAMEWORK)
    units = human_units(args.run, framework, cfg)
    emb = pq.read_table(args.run / "embeddings.parquet")
    pos = pd.Series(np.arange(emb.num_rows), index=emb.column("utterance_id").to_pylist())
    X = vectors(emb)[pos.loc[units["utterance_id"]].to_numpy()]
    results: dict = {"units": {ROLES[r]: int((units["speaker_role"] == r).sum()) for r in ROLES},
                     "labels": units.groupby("speaker_role")["label"].value_counts().unstack(0).fillna(0)
                     .astype(int).to_dict()}

    from pipeline.compare import machine_labels

    ud = pq.read_table(args.run / "utterance_dimensions.parquet")
    zero = machine_labels(ud, framework)
    top = ud.to_pandas().query("is_argmax").drop_duplicates("utterance_id").set_index("utterance_id")
    concept_id = {c.name: c.id for c in framework.concepts}
    forced = units["utterance_id"].map(top["second_order"].map(concept_id)).fillna(NONE)
    mapped = units["utterance_id"].map(zero["second-order"]).fillna(NONE)
    results["zero_shot"] = {"themeshift_map": by_role(units, mapped),
                            "themeshift_map_forced": by_role(units, forced),
                            "nearest_description": by_role(units, nearest_description(X, units, framework))}
    results["zero_shot_mapped_share"] = {ROLES[r]: round(float((mapped[units["speaker_role"] == r] != NONE).mean()), 4)
                                         for r in ROLES}

    lessons = np.array(sorted(units["interview_id"].unique()))
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(lessons)  # nested: 5% of lessons is part of 10%, ...
    learn_shares = {float(s) for s in args.learn_shares.split(",") if s}
    curve = []
    for share in (float(s) for s in args.shares.split(",")):
        coded_lessons = set(order[: max(1, round(share * len(lessons)))])
        coded = units["interview_id"].isin(coded_lessons).to_numpy()
        held = np.flatnonzero(~coded)
        point = {"share": share, "coded_lessons": len(coded_lessons), "coded_units": int(coded.sum()),
                 "plain_logistic_regression": by_role(units, plain_classifier(X, units, coded, args.seed), held)}
        if share in learn_shares:
            for encoder, key in (("frozen", "themeshift_learn_frozen"), ("auto", "themeshift_learn")):
                pred, seconds, peak_mib, n_codes, counts = tool_learn(args.run, units, coded_lessons, framework,
                                                                      args.learn_config, encoder)
                point[key] = by_role(units, pred, held)
                point[key + "_seconds"], point[key + "_peak_mib"] = seconds, peak_mib
                point[key + "_encoder"] = {"kept": counts["encoder"], "reason": counts["encoder_reason"]}
        curve.append(point)
        print(json.dumps(point))
    results["learned"] = curve

    print("\nzero-shot (all coded units)")
    for name, r in results["zero_shot"].items():
        print(f"  {name:22s} " + "  ".join(f"{role}: kappa {v['kappa']:.3f} F1 {v['macro_f1']:.3f}" for role, v in r.items()))
    print("learned (lessons not coded)")
    for p in curve:
        for name in ("plain_logistic_regression", "themeshift_learn_frozen", "themeshift_learn"):
            if name in p:
                print(f"  {p['share']:4.0%} {name:26s} " + "  ".join(
                    f"{role}: kappa {v['kappa']:.3f} F1 {v['macro_f1']:.3f}" for role, v in p[name].items()))
        for name in ("themeshift_learn_frozen", "themeshift_learn"):
            if name + "_seconds" in p:
                print(f"  {name}: {p[name + '_seconds']} s, peak {p[name + '_peak_mib']} MiB; encoder "
                      f"{p[name + '_encoder']['kept']}: {p[name + '_encoder']['reason']}")
    if not args.skip_games:
        results["games_as_art"] = games_as_art(args.seed)
    save("validity", results)


GAMES = TALKMOVES.parent / "games_as_art"
GAMES_FRAMEWORK = REPO / "configs" / "frameworks" / "games_as_art.yaml"


def games_as_art(seed: int) -> dict:
    """Grouped 5-fold micro-F1 of code sets: learn (frozen, as shipped) vs plain one-vs-rest."""
    from sklearn.model_selection import GroupKFold

    from pipeline.io.human_codes import read_human_codes
    from pipeline.io.rundir import read_table
    from pipeline.learn import human_targets, interview_codes
    from pipeline.settings import CompareSettings, settings_for

    run = REPO / "runs" / "games_as_art"
    if not (run / "utterance_dimensions.parquet").is_file():
        subprocess.run([str(REPO / ".venv" / "bin" / "themeshift"), "run", str(GAMES), "--out", str(run),
                        "--config", str(GAMES / "themeshift.toml"), "--framework", str(GAMES_FRAMEWORK),
                        "--until", "map", "--quiet"], check=True)
    cfg = load_config(GAMES / "themeshift.toml")
    framework = load_framework(GAMES_FRAMEWORK)
    t = human_targets(read_table(run, "utterances"), read_table(run, "sources"),
                      read_human_codes(GAMES / "human_codes.csv"), framework, None, "second_order",
                      settings_for(CompareSettings, cfg))
    truth = t.truth_sets()[0][:, :-1]  # the codes; 'none' is not a code
    emb = read_table(run, "embeddings")
    row = {u: i for i, u in enumerate(emb.column("utterance_id").to_pylist())}
    x = vectors(emb)[[row[u] for u in t.units["utterance_id"]]]
    _, groups = interview_codes(t)
    pred = np.zeros_like(truth)
    for train, test in GroupKFold(n_splits=5).split(x, groups=groups):
        for k in range(truth.shape[1]):
            y = truth[train, k]
            if y.any() and not y.all():
                model = LogisticRegression(max_iter=2000, random_state=seed).fit(x[train], y)
                pred[test, k] = model.predict_proba(x[test])[:, 1] >= 0.5
    tp, fp, fn = (pred & truth).sum(), (pred & ~truth).sum(), (~pred & truth).sum()
    out = {"units": len(t.units), "codes": int(truth.shape[1]),
           "plain_one_vs_rest_micro_f1": round(float(2 * tp / (2 * tp + fp + fn)), 4)}
    for encoder in ("frozen", "auto"):
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / "run"
            subprocess.run(["cp", "-r", str(run), str(copy)], check=True)
            cfg_file = Path(tmp) / "learn.toml"
            cfg_file.write_text((GAMES / "themeshift.toml").read_text(encoding="utf-8")
                                + f"\n[learn]\nencoder = \"{encoder}\"\ncv_folds = 5\n", encoding="utf-8")
            started = time.perf_counter()
            before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            subprocess.run([str(REPO / ".venv" / "bin" / "themeshift"), "learn", str(copy), "--human",
                            str(GAMES / "human_codes.csv"), "--framework", str(GAMES_FRAMEWORK), "--config",
                            str(cfg_file), "--quiet"], check=True)
            seconds = time.perf_counter() - started
            peak = max(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, before)
            e = pq.read_table(copy / "learn_eval.parquet").to_pandas()
            counts = json.loads((copy / "manifest.json").read_text())["stages"]["learn"]["counts"]
        cv = e[(e["evaluation"] == "cross-validation") & (e["level"] == "second-order") & (e["metric"] == "f1")
               & (e["dimension"] == "micro") & (e["coder_a"] == "machine")]
        kappa = e[(e["evaluation"] == "cross-validation") & (e["level"] == "second-order")
                  & (e["metric"] == "cohen_kappa")]
        out[f"learn_{encoder}"] = {"micro_f1": round(float(cv["value"].iloc[0]), 4),
                                   "kappa_top_code": round(float(kappa["value"].iloc[0]), 4),
                                   "seconds": round(seconds, 1), "peak_mib": round(peak / 1024),
                                   "encoder": counts["encoder"], "encoder_reason": counts["encoder_reason"]}
    print("games_as_art (grouped 5-fold, micro-F1 of code sets): plain one-vs-rest "
          f"{out['plain_one_vs_rest_micro_f1']:.3f}; learn frozen {out['learn_frozen']['micro_f1']:.3f} "
          f"({out['learn_frozen']['seconds']} s); learn as shipped {out['learn_auto']['micro_f1']:.3f} "
          f"({out['learn_auto']['seconds']} s, encoder {out['learn_auto']['encoder']})")
    return out


if __name__ == "__main__":
    sys.exit(main())
