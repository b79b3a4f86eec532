"""segment + embed + codes against plain BERTopic, embedding throughput, the fast model
at scale, reproducibility at 20k+, and how well codes follow human topic labels.

    .venv/bin/python bench/codes_pipeline.py [--ami-meetings 40] [--skip-baseline]

Prints every number and writes bench/results/codes_pipeline.json. Takes 15-25 minutes
on two cores. The AMI meeting corpus is read from ../shared/corpora/ami.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from scipy.stats import spearmanr
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

import pipeline  # noqa: F401  (offline environment)

REPO = Path(__file__).resolve().parent.parent
AMI = REPO.parent / "shared" / "corpora" / "ami"
PY = sys.executable
CLI = [PY, "-m", "pipeline.cli"]
RESULTS: dict = {}


def measured(cmd: list[str], env: dict | None = None) -> dict:
    out = subprocess.run([PY, str(REPO / "bench" / "_measure.py"), *cmd], capture_output=True, text=True,
                         env={**os.environ, **(env or {})}, cwd=REPO, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["rc"] != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}")
    return result


def report(key: str, value) -> None:
    RESULTS[key] = value
    print(f"{key:40} {value}", flush=True)


def purity(gold: list, pred: np.ndarray) -> float:
    return sum(Counter(g for g, p in zip(gold, pred) if p == c).most_common(1)[0][1] for c in set(pred)) / len(pred)


def alignment(gold: dict[str, str], run: Path) -> dict:
    asg = pq.read_table(run / "assignments.parquet").to_pandas()
    share = float((asg.code_id == -1).mean())
    asg = asg[asg.utterance_id.isin(gold) & (asg.code_id >= 0)]
    g, p = [gold[u] for u in asg.utterance_id], asg.code_id.to_numpy()
    return {"ari": round(adjusted_rand_score(g, p), 3), "nmi": round(normalized_mutual_info_score(g, p), 3),
            "purity": round(purity(g, p), 3), "outlier_share": round(share, 3), "n": len(p),
            "codes": int(asg.code_id.nunique())}


def alignment_within_meetings(gold: dict[str, str], run: Path) -> dict:
    """Topic segments are labelled per meeting, so corpus-wide codes cannot score high on
    purity; here the agreement is taken inside each meeting and averaged, weighted by size."""
    asg = pq.read_table(run / "assignments.parquet").to_pandas()
    asg = asg[asg.utterance_id.isin(gold) & (asg.code_id >= 0)]
    asg["gold"] = [gold[u] for u in asg.utterance_id]
    asg["meeting"] = asg["gold"].str.split("#").str[0]
    ari, nmi, weights = [], [], []
    for _, m in asg.groupby("meeting"):
        if m["gold"].nunique() < 2:
            continue
        ari.append(adjusted_rand_score(m["gold"], m["code_id"]))
        nmi.append(normalized_mutual_info_score(m["gold"], m["code_id"]))
        weights.append(len(m))
    return {"meetings": len(weights), "ari": round(float(np.average(ari, weights=weights)), 3),
            "nmi": round(float(np.average(nmi, weights=weights)), 3)}


def ami_subset(n_meetings: int, dest: Path) -> Path:
    rows = list(csv.DictReader(open(AMI / "manifest.csv", encoding="utf-8")))
    series = sorted({r["series"] for r in rows})
    keep, chosen = [], set()
    for s in series:  # whole series, so every speaker keeps all waves
        if len(keep) >= n_meetings:
            break
        keep += [r for r in rows if r["series"] == s]
        chosen.add(s)
    (dest / "transcripts").mkdir(parents=True)
    for r in keep:
        shutil.copyfile(AMI / r["file"], dest / r["file"])
    with open(dest / "manifest.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(keep)
    return dest


def ami_by_utterances(target: int, dest: Path) -> Path:
    """Whole AMI series, in order, until they hold at least target utterances."""
    from pipeline.config import load_config
    from pipeline.ingest import segment_corpus
    from pipeline.settings import SegmentSettings, settings_for

    cfg = load_config(None)
    cfg["input"]["speaker_scope_column"] = "series"
    utterances = segment_corpus(AMI, settings_for(SegmentSettings, cfg)).utterances
    per_meeting = Counter(utterances.column("interview_id").to_pylist())
    rows = list(csv.DictReader(open(AMI / "manifest.csv", encoding="utf-8")))
    total, n_meetings = 0, 0
    for s in sorted({r["series"] for r in rows}):
        if total >= target:
            break
        meetings = [r["meeting"] for r in rows if r["series"] == s]
        total += sum(per_meeting[m] for m in meetings)
        n_meetings += len(meetings)
    return ami_subset(n_meetings, dest)


def ami_gold(run: Path) -> dict[str, str]:
    segs: dict[str, list] = {}
    for r in csv.DictReader(open(AMI / "topics.csv", encoding="utf-8")):
        segs.setdefault(r["meeting"], []).append((int(r["first_turn"]), int(r["last_turn"]), r["topic"]))
    utt = pq.read_table(run / "utterances.parquet", columns=["utterance_id", "interview_id", "turn_index"])
    gold = {}
    for u, m, t in zip(*(utt.column(c).to_pylist() for c in ("utterance_id", "interview_id", "turn_index"))):
        for i, (a, b, _) in enumerate(segs.get(m, [])):
            if a <= t <= b:
                gold[u] = f"{m}#{i}"
                break
    return gold


def example_gold(run: Path, column: str) -> dict[str, str]:
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import gold_labels

    return gold_labels(pq.read_table(run / "utterances.parquet"), column)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ami-meetings", type=int, default=40)
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--fast-utterances", type=int, default=50_000, help="AMI utterances for the fast-model run")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="themeshift-bench-"))
    numba = {"NUMBA_CACHE_DIR": str(Path.home() / ".cache" / "themeshift" / "numba")}
    example = str(REPO / "examples" / "kt_study")

    # 1. cold and warm pipeline vs plain BERTopic on the example study, each in a fresh process
    # segment + embed + codes (`run --until codes`), as the target names, and the whole `run`
    # (plus map, shift and report); cold = empty embedding, lemma and keyword caches
    cold_cache = {**numba, "THEMESHIFT_CACHE": str(tmp / "cache")}
    cold = measured([*CLI, "run", example, "--out", str(tmp / "cold"), "--quiet", "--until", "codes"], cold_cache)
    warm = measured([*CLI, "run", example, "--out", str(tmp / "warm"), "--quiet", "--until", "codes"], cold_cache)
    whole_cache = {**numba, "THEMESHIFT_CACHE": str(tmp / "cache-whole")}
    whole_cold = measured([*CLI, "run", example, "--out", str(tmp / "whole_cold"), "--quiet"], whole_cache)
    whole_warm = measured([*CLI, "run", example, "--out", str(tmp / "whole_warm"), "--quiet"], whole_cache)
    report("example: segment+embed+codes cold (s, MiB)", cold)
    report("example: segment+embed+codes warm cache (s, MiB)", warm)
    report("example: whole run cold (s, MiB)", whole_cold)
    report("example: whole run warm cache (s, MiB)", whole_warm)
    if not args.skip_baseline:
        base = measured([PY, "bench/baseline_bertopic.py", str(tmp / "cold")], numba)
        report("example: plain BERTopic baseline (s, MiB)", base)
        report("ratio cold / baseline (target <= 1.2)", round(cold["seconds"] / base["seconds"], 3))
        report("ratio warm / baseline (target < 0.3)", round(warm["seconds"] / base["seconds"], 3))
        report("ratio whole run cold / baseline", round(whole_cold["seconds"] / base["seconds"], 3))
        report("ratio whole run warm / baseline", round(whole_warm["seconds"] / base["seconds"], 3))
    report("example codes vs answer-key concepts", alignment(example_gold(tmp / "cold", "concept"), tmp / "cold"))
    report("example codes vs answer-key dimensions", alignment(example_gold(tmp / "cold", "dimension"), tmp / "cold"))

    # 2. embedding throughput on real meeting speech (MiniLM, empty cache)
    ami_dir = ami_subset(args.ami_meetings, tmp / "ami")
    ami_cfg = tmp / "ami.toml"
    ami_cfg.write_text('[input]\nspeaker_scope_column = "series"\n')
    from pipeline.config import load_config
    from pipeline.embed import embed_utterances, load_encoder
    from pipeline.ingest import segment_corpus
    from pipeline.settings import EmbedSettings, SegmentSettings, settings_for

    cfg = load_config(ami_cfg)
    cfg["embed"]["cache_dir"] = str(tmp / "cache-ami")
    utt = segment_corpus(ami_dir, settings_for(SegmentSettings, cfg)).utterances
    encoder = load_encoder("minilm", "auto")
    started = time.perf_counter()
    emb, stats = embed_utterances(utt, encoder, settings_for(EmbedSettings, cfg))
    seconds = time.perf_counter() - started
    raw = stats.embedded / stats.seconds_encoding
    report("ami: utterances / coded / distinct", [utt.num_rows, stats.coded, stats.distinct_texts])
    report("ami: MiniLM encode rate (texts/s)", round(raw, 1))
    report("ami: efficiency vs ~400/s ceiling", round(raw / 400, 3))
    report("ami: effective rate, all utterances (/s, target 250)", round(utt.num_rows / seconds, 1))
    report("ami: effective rate, coded utterances (/s)", round(stats.coded / seconds, 1))
    # side by side on one sample of distinct texts: sentence-transformers' own batching vs ours
    import random

    distinct = sorted(set(utt.filter(utt.column("coded")).column("text").to_pylist()))
    sample = random.Random(0).sample(distinct, min(3000, len(distinct)))
    rates = {}
    for name, fn in (("sentence-transformers encode, batch 64", lambda: encoder.model.encode(sample, batch_size=64)),
                     ("token-budget batches (ours)", lambda: encoder.encode(sample, cfg["embed"]["batch_size"], None,
                                                                           cfg["embed"]["batch_tokens"]))):
        started = time.perf_counter()
        fn()
        rates[name] = round(len(sample) / (time.perf_counter() - started), 1)
    report("ami: same 3,000 texts (texts/s)", rates)
    ref = encoder.model.encode(sample, batch_size=64, normalize_embeddings=True)
    report("ami: max |difference| from plain encode", float(np.abs(ref - encoder.encode(sample)).max()))

    # 3. fast vs MiniLM similarities (how much the fast model approximates)
    fast_ok = (REPO / "models" / "artifacts" / "fast-minilm-m2v").is_dir()
    if not fast_ok:
        subprocess.run([*CLI, "models", "build", "fast"], check=True, cwd=REPO)
    fast = load_encoder("fast")
    sample = utt.filter(utt.column("coded")).column("text").to_pylist()[:1500]
    a, b = encoder.encode(sample), fast.encode(sample)
    iu = np.triu_indices(len(sample), 1)
    report("fast vs MiniLM pairwise-similarity Spearman", round(float(spearmanr((a @ a.T)[iu], (b @ b.T)[iu])[0]), 3))

    # 4. 50k utterances of AMI with the fast model, end to end, fresh process, empty embedding
    # cache; numba's compiled code cached (a one-time cost per installation, reported separately)
    big = ami_by_utterances(args.fast_utterances, tmp / "ami_big")
    fresh = {"THEMESHIFT_CACHE": str(tmp / "cache-fast"), "NUMBA_CACHE_DIR": numba["NUMBA_CACHE_DIR"]}
    cold = measured([*CLI, "run", str(big), "--out", str(tmp / "ami_fast_cold"), "--model", "fast", "--quiet",
                     "--config", str(ami_cfg)], {**fresh, "NUMBA_CACHE_DIR": str(tmp / "cache-fast" / "numba")})
    shutil.rmtree(tmp / "cache-fast" / "embeddings")
    shutil.rmtree(tmp / "cache-fast" / "lemmas")
    full = measured([*CLI, "run", str(big), "--out", str(tmp / "ami_fast"), "--model", "fast", "--quiet",
                     "--config", str(ami_cfg)], fresh)
    n_utt = pq.read_metadata(tmp / "ami_fast" / "utterances.parquet").num_rows
    n = pq.read_metadata(tmp / "ami_fast" / "embeddings.parquet").num_rows
    stages = json.loads((tmp / "ami_fast" / "manifest.json").read_text())["stages"]
    report("ami fast: utterances / coded", [n_utt, n])
    report("ami fast: end to end, first run ever incl. numba compile (s, MiB)", cold)
    report("ami fast: end to end, empty embedding cache (s, MiB; target 120 s, 4 GiB)", full)
    report("ami fast: seconds by stage", {k: v["seconds"] for k, v in stages.items()})
    report("ami fast codes vs human topic segments", alignment(ami_gold(tmp / "ami_fast"), tmp / "ami_fast"))
    report("ami fast codes vs topic segments, within meetings",
           alignment_within_meetings(ami_gold(tmp / "ami_fast"), tmp / "ami_fast"))

    # 5. reproducibility at 20k+: the codes stage again, in another process, with another hash seed
    shutil.copytree(tmp / "ami_fast", tmp / "ami_fast2")
    (tmp / "ami_fast2" / "codes.parquet").unlink()  # so the stage runs instead of reusing
    subprocess.run([*CLI, "codes", str(tmp / "ami_fast2"), "--model", "fast", "--quiet", "--config", str(ami_cfg)],
                   check=True, cwd=REPO, env={**os.environ, **fresh, "PYTHONHASHSEED": "7"})
    same = all(pq.read_table(tmp / "ami_fast" / f"{t}.parquet").equals(pq.read_table(tmp / "ami_fast2" / f"{t}.parquet"))
               for t in ("codes", "assignments"))
    report(f"ami ({n} coded utterances): identical tables on re-run", same)

    out = REPO / "bench" / "results" / "codes_pipeline.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(RESULTS, indent=2) + "\n")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
