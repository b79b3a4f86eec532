"""Keyword text for c-TF-IDF: lower-cased lemmas with stop words and spoken fillers removed.

Lemmas are looked up once per distinct word (spaCy tagger + lemmatizer over the
vocabulary, not over every sentence), which keeps this fast at 100k utterances.
"""

from __future__ import annotations

import json
import re
import warnings
from collections import Counter

from pipeline.io.rundir import write_json
from pipeline.models import cache_root

_TOKEN = re.compile(r"[a-z][a-z'\u2019-]*[a-z]|[a-z]")
_KEEP = {"datum": "data", "media": "media"}  # lemmatizer outputs researchers would not recognise
# For vectorizers over keyword text, which is already tokenised: split on spaces only, so
# "co-design" stays one word; the one-character placeholder "_" of an empty text is no token.
TOKEN_PATTERN = r"\S\S+"


def vocabulary_min_df(min_df: int, n_docs: int) -> int:
    """A word's minimum document count, eased for small corpora so some vocabulary survives."""
    return min(min_df, max(1, n_docs // 10))


def lemma_map(words: set[str], pipeline_name: str, cache_dir: str = "") -> dict[str, str]:
    """word -> lemma; words lemmatised before are read from a small per-pipeline cache file."""
    if not pipeline_name or not words:
        return {w: w for w in words}
    from importlib import metadata

    import spacy

    try:
        version = metadata.version(pipeline_name.replace("_", "-"))
    except metadata.PackageNotFoundError:
        version = "unknown"
    path = cache_root(cache_dir) / "lemmas" / f"{pipeline_name}-{version}.json"
    known: dict[str, str] = {}
    if path.is_file():
        try:
            known = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            known = {}  # unreadable: rebuilt below
    missing = sorted(words - known.keys())
    if missing:
        try:
            nlp = spacy.load(pipeline_name, exclude=["parser", "ner"])
        except OSError:
            warnings.warn(
                f"spaCy pipeline {pipeline_name!r} is not installed; keywords are not lemmatised", stacklevel=2
            )
            return {w: w for w in words}
        for word, doc in zip(missing, nlp.pipe(missing, batch_size=2048)):
            lemma = doc[0].lemma_.lower() if len(doc) == 1 else word
            known[word] = _KEEP.get(lemma, lemma)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, known)
    return {w: known[w] for w in words}


# Spoken sounds and transcriber marks that carry no content, whatever the fillers list says.
SPOKEN = {
    "mhm",
    "mhmm",
    "mmhmm",
    "mm-hmm",
    "mmm",
    "hmm",
    "hm",
    "umm",
    "uhm",
    "uhh",
    "uh-huh",
    "ahh",
    "ohh",
    "ooh",
    "huh",
    "yep",
    "yup",
    "yeah",
    "yah",
    "nope",
    "okay",
    "ok",
    "kay",
    "inaudible",
    "unintelligible",
    "crosstalk",
    "laughter",
    "laughs",
    "laughing",
    "pause",
    "silence",
    "indiscernible",
}
_WORD = re.compile(r"[A-Za-z][A-Za-z'\u2019-]*")


def name_like(texts: list[str], min_count: int = 2, share: float = 0.8) -> set[str]:
    """Lower-cased words written with a capital inside sentences at least `share` of the time:
    personal names ('Donna', 'Jackie'), which make labels that say who talked, not what about."""
    mid: Counter[str]
    capital: Counter[str]
    mid, capital = Counter(), Counter()
    for text in texts:
        for m in _WORD.finditer(text):
            before = text[: m.start()].rstrip()
            if not before or before[-1] in '.!?:;"\u201c(':  # sentence or quote start: no evidence
                continue
            word = m.group()
            if len(word) > 1 and word.isupper():  # acronyms (NHS, PDSA) carry content
                continue
            low = word.lower()
            mid[low] += 1
            capital[low] += word[0].isupper()
    return {w for w, n in mid.items() if n >= min_count and capital[w] >= share * n}


def keyword_texts(texts: list[str], fillers: list[str], pipeline_name: str, cache_dir: str = "") -> list[str]:
    """One string of content lemmas per text (may be empty), ready for a CountVectorizer. Stop
    words, fillers, spoken sounds and personal names (name_like) are left out."""
    from spacy.lang.en.stop_words import STOP_WORDS

    stop = {w.lower() for w in STOP_WORDS} | {f.lower() for f in fillers} | SPOKEN | name_like(texts)
    tokens = [[t.replace("\u2019", "'") for t in _TOKEN.findall(text.lower())] for text in texts]
    lemmas = lemma_map({t for ts in tokens for t in ts if t not in stop and len(t) > 2}, pipeline_name, cache_dir)
    out = []
    for ts in tokens:
        kept = [lemmas[t] for t in ts if t in lemmas]
        out.append(" ".join(w for w in kept if w not in stop and "'" not in w))
    return out
