"""Topic coherence of themeshift's codes beside plain BERTopic's topics, on the same units.

For each run (default: runs/talkmoves and runs/ami, made by `themeshift run ... --until codes`):

- themeshift: the codes as they are in the run; a code's words are its `keywords` (top 10), the
  outlier share is the share of units whose code_id is -1.
- plain BERTopic: `BERTopic()` with its defaults (default CountVectorizer, HDBSCAN, c-TF-IDF,
  top 10 words) except a seeded UMAP (n_neighbors=15, n_components=5, min_dist=0, cosine,
  random_state=42), fitted on the same units' raw texts and the run's own embeddings; topic -1
  (outliers) has no words and is left out.

The units are the run's clustered units (embeddings.parquet), or a seeded sample of them
(--sample N) used by both systems.

NPMI (Roeder et al. 2015; gensim's c_npmi with one window per document): for a topic's word pairs,
NPMI(wi, wj) = log((P(wi,wj) + eps) / (P(wi) P(wj))) / -log(P(wi,wj) + eps), eps = 1e-12, with P the
share of units that contain the word (boolean document frequency). Pairs are averaged within a topic,
topics are averaged (and the median taken) over the system. Both systems' words are looked up in one
and the same representation of each unit: its lower-cased word tokens under either system's tokenizer
(hyphenated words whole and split, numbers kept) plus each token's spaCy lemma (the run's
codes.lemmatizer), so themeshift's lemmatised keywords ('student') and BERTopic's surface words
('students') are both found. A two-word keyword occurs in a unit when both its words do. Keywords
that reduce to the same words as an earlier one ('method method' after 'method') are dropped, and so
are words no unit contains; a topic left with fewer than two words gets no score. "NPMI unigrams"
scores the single-word keywords only, since a phrase co-occurs with its own words by construction.

Diversity: distinct keywords (as written) among all topics' top-10 keywords / all of them.

With gensim installed, --gensim recomputes every topic's NPMI with gensim's CoherenceModel
(c_npmi, a window as long as the longest unit) and reports the largest difference.

Usage: HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 python bench/code_coherence.py [RUN ...] [--sample N] [--gensim]
writes bench/results/code_coherence.json
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from _results import save  # noqa: E402

from pipeline.embed import vectors  # noqa: E402
from pipeline.keywords import _TOKEN, lemma_map  # noqa: E402
from pipeline.numba_cache import enable as enable_numba_cache  # noqa: E402

enable_numba_cache()  # before umap/bertopic are imported

EPS = 1e-12
TOP_N = 10
SKLEARN_TOKEN = re.compile(r"(?u)\b\w\w+\b")  # CountVectorizer's default token_pattern


def load_run(run: Path, sample: int, seed: int):
    """Units that were clustered (embedding order), their texts, vectors, codes and code per unit."""
    emb = pq.read_table(run / "embeddings.parquet")
    ids = emb.column("utterance_id").to_pylist()
    utt = pq.read_table(run / "utterances.parquet", columns=["utterance_id", "text"])
    text = dict(zip(utt.column("utterance_id").to_pylist(), utt.column("text").to_pylist()))
    assigned = pq.read_table(run / "assignments.parquet", columns=["utterance_id", "code_id"])
    code_of = dict(zip(assigned.column("utterance_id").to_pylist(), assigned.column("code_id").to_pylist()))
    X = vectors(emb)
    keep = np.arange(len(ids))
    if 0 < sample < len(ids):
        keep = np.sort(np.random.default_rng(seed).choice(len(ids), sample, replace=False))
    codes = pq.read_table(run / "codes.parquet", columns=["code_id", "keywords"]).to_pylist()
    return {
        "texts": [text[ids[i]] for i in keep],
        "X": np.ascontiguousarray(X[keep]),
        "codes": np.array([-1 if code_of.get(ids[i]) is None else code_of[ids[i]] for i in keep]),
        "code_words": [list(c["keywords"])[:TOP_N] for c in codes],
        "units_in_run": len(ids),
    }


def unit_words(texts: list[str], lemmatizer: str) -> list[set[str]]:
    """Each unit as the set of words either system could name: tokens of both tokenizers, plus lemmas."""
    tokens = [set(_TOKEN.findall(t.lower().replace("\u2019", "'"))) | set(SKLEARN_TOKEN.findall(t.lower()))
              for t in texts]
    lemmas = lemma_map({w for ws in tokens for w in ws if w.isalpha()}, lemmatizer)
    return [ws | {lemmas[w] for w in ws if w in lemmas} for ws in tokens]


class Occurrence:
    """Which units contain a word or all words of a phrase, as boolean vectors over the units."""

    def __init__(self, words_per_unit: list[set[str]]):
        self.n = len(words_per_unit)
        self.index: dict[str, list[int]] = {}
        for i, ws in enumerate(words_per_unit):
            for w in ws:
                self.index.setdefault(w, []).append(i)

    def of(self, parts: frozenset[str]) -> np.ndarray:
        out = np.ones(self.n, bool)
        for w in parts:
            v = np.zeros(self.n, bool)
            v[self.index.get(w, [])] = True
            out &= v
        return out


def topic_terms(keywords: list[str], occ: Occurrence, unigrams_only: bool) -> list[frozenset[str]]:
    """A topic's keywords as word sets, repeats and never-occurring ones dropped (see docstring)."""
    terms: list[frozenset[str]] = []
    for k in keywords[:TOP_N]:
        parts = frozenset(k.lower().split())
        if not parts or parts in terms or (unigrams_only and len(parts) > 1):
            continue
        if occ.of(parts).any():
            terms.append(parts)
    return terms


def npmi(terms: list[frozenset[str]], occ: Occurrence) -> float | None:
    """Mean NPMI over the topic's word pairs; None for fewer than two words."""
    if len(terms) < 2:
        return None
    M = np.stack([occ.of(t) for t in terms]).astype(np.float64)
    p = M.sum(axis=1) / occ.n
    joint = (M @ M.T) / occ.n + EPS
    scores = np.log(joint / np.outer(p, p)) / -np.log(joint)
    return float(scores[np.triu_indices(len(terms), 1)].mean())


def diversity(topics: list[list[str]]) -> float:
    words = [w for t in topics for w in t[:TOP_N]]
    return len(set(words)) / max(len(words), 1)


def fit_plain_bertopic(texts: list[str], X: np.ndarray, seed: int) -> tuple[np.ndarray, list[list[str]], float]:
    from bertopic import BERTopic
    from umap import UMAP

    umap_model = UMAP(n_neighbors=15, n_components=5, min_dist=0.0, metric="cosine", random_state=seed)
    start = time.perf_counter()
    model = BERTopic(umap_model=umap_model)
    topics = np.asarray(model.fit_transform(texts, embeddings=X)[0])
    seconds = time.perf_counter() - start
    words = [[w for w, _ in (model.get_topic(t) or []) if w][:TOP_N] for t in sorted(set(topics.tolist()) - {-1})]
    return topics, words, seconds


def gensim_npmi(topic_terms_list: list[list[frozenset[str]]], words_per_unit: list[set[str]]) -> list[float]:
    """The same NPMI through gensim: phrases become one token per unit that holds all their words."""
    from gensim.corpora import Dictionary
    from gensim.models.coherencemodel import CoherenceModel

    phrases = {t for terms in topic_terms_list for t in terms if len(t) > 1}
    joined = {t: "_".join(sorted(t)) for t in phrases}
    texts = [sorted(ws | {joined[t] for t in phrases if t <= ws}) for ws in words_per_unit]
    topics = [[joined.get(t) or next(iter(t)) for t in terms] for terms in topic_terms_list if len(terms) >= 2]
    model = CoherenceModel(topics=topics, texts=texts, dictionary=Dictionary(texts), coherence="c_npmi",
                           window_size=max(len(t) for t in texts), topn=TOP_N, processes=1)
    return model.get_coherence_per_topic()


def score(name: str, topics: list[list[str]], unit_codes: np.ndarray, words_per_unit, occ: Occurrence,
          check_gensim: bool) -> dict:
    terms = [topic_terms(t, occ, unigrams_only=False) for t in topics]
    values = [v for v in (npmi(t, occ) for t in terms) if v is not None]
    unigram = [v for v in (npmi(topic_terms(t, occ, unigrams_only=True), occ) for t in topics) if v is not None]
    result = {
        "system": name,
        "codes": len(topics),
        "outlier_share": round(float((unit_codes == -1).mean()), 4),
        "npmi_mean": round(float(np.mean(values)), 4),
        "npmi_median": round(float(np.median(values)), 4),
        "codes_scored": len(values),
        "npmi_unigrams_mean": round(float(np.mean(unigram)), 4) if unigram else None,
        "codes_scored_unigrams": len(unigram),
        "diversity": round(diversity(topics), 4),
        "examples": [t[:TOP_N] for t in topics[:5]],
    }
    if check_gensim:
        theirs = gensim_npmi(terms, words_per_unit)
        result["gensim_max_abs_diff"] = float(np.max(np.abs(np.asarray(theirs) - np.asarray(values))))
    return result


def compare(run: Path, sample: int, seed: int, check_gensim: bool) -> dict:
    data = load_run(run, sample, seed)
    lemmatizer = json.loads((run / "manifest.json").read_text())["config"]["codes"]["lemmatizer"]
    words_per_unit = unit_words(data["texts"], lemmatizer)
    occ = Occurrence(words_per_unit)
    plain_codes, plain_topics, fit_seconds = fit_plain_bertopic(data["texts"], data["X"], seed)
    systems = [
        score("themeshift", data["code_words"], data["codes"], words_per_unit, occ, check_gensim),
        score("plain BERTopic", plain_topics, plain_codes, words_per_unit, occ, check_gensim),
    ]
    systems[1]["fit_seconds"] = round(fit_seconds, 1)
    return {"run": str(run), "units": len(data["texts"]), "units_in_run": data["units_in_run"],
            "sampled": len(data["texts"]) < data["units_in_run"], "systems": systems}


def print_table(results: list[dict]) -> None:
    head = ("corpus", "units", "system", "codes", "outliers", "NPMI mean", "NPMI median", "NPMI unigrams",
            "diversity", "fit s")
    print("  ".join(f"{h:>14}" for h in head))
    for r in results:
        for s in r["systems"]:
            row = (Path(r["run"]).name, r["units"], s["system"], s["codes"], f"{s['outlier_share']:.1%}",
                   f"{s['npmi_mean']:+.4f}", f"{s['npmi_median']:+.4f}",
                   "-" if s["npmi_unigrams_mean"] is None else f"{s['npmi_unigrams_mean']:+.4f}",
                   f"{s['diversity']:.3f}", s.get("fit_seconds", "-"))
            print("  ".join(f"{str(v):>14}" for v in row))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="*", default=[str(REPO / "runs" / "talkmoves"), str(REPO / "runs" / "ami")])
    ap.add_argument("--sample", type=int, default=0, help="score a seeded sample of N units (0 = all)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--gensim", action="store_true", help="cross-check every topic's NPMI with gensim")
    args = ap.parse_args()
    results = [compare(Path(run), args.sample, args.seed, args.gensim) for run in args.runs]
    print_table(results)
    for r in results:
        for s in r["systems"]:
            if "gensim_max_abs_diff" in s:
                print(f"{Path(r['run']).name} {s['system']}: gensim c_npmi differs by at most "
                      f"{s['gensim_max_abs_diff']:.2e}")
    save("code_coherence", {"sample": args.sample, "seed": args.seed, "results": results})


if __name__ == "__main__":
    main()
