"""How well `themeshift anonymise` finds personal data, and how fast.

    .venv/bin/python bench/anonymise_eval.py [--ami-series 4]

1. The identifiable example study (bench/pii_study.py: the example study's placeholders filled with
   realistic names, contact details, NHS numbers and dates of birth planted; answer key
   bench/data/pii_answer_key.csv). Recall per entity type (an occurrence counts when every identifying
   word of it was replaced) and precision (replacements that hit an answer-key occurrence), without
   and with the study's own names list (bench/data/pii_names.csv).
2. AMI meetings (CC BY 4.0, ../shared/corpora/ami): participants introduce themselves ("I'm Laura");
   those first names, wherever they occur in the series' meetings, are the answer key. Recall of the
   detector alone (names nobody listed) and with the names listed; precision of person replacements
   against that key is a lower bound (other real names in the talk count as errors).
3. Speed: texts (lines, paragraphs) and characters per second on this machine, detection only.

Prints the numbers and writes bench/results/anonymise_eval.json.
"""
from __future__ import annotations

import argparse
import csv
import os
import re
import tempfile
import time
from collections import Counter
from pathlib import Path

import pandas as pd

import pipeline  # noqa: F401  (offline environment)
from _results import save
from pii_study import NAMES, build, evaluate, read_key, surviving
from pipeline.anonymise import anonymise_folder
from pipeline.config import load_config
from pipeline.settings import AnonymiseSettings, settings_for

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("THEMESHIFT_SHARED", REPO.parent / "shared"))
AMI = SHARED / "corpora" / "ami"
ROLES = ["Project Manager", "Marketing", "Industrial Designer", "User Interface"]
_INTRO = re.compile(r"\b(?:I'm|I am|[Mm]y name is|[Mm]y name's|[Tt]his is|[Cc]all me|I'm called)\s+([A-Z][a-z]{2,})\b")


def _run(study: Path, out: Path, cfg: dict, names: Path | None = None) -> tuple[dict, pd.DataFrame]:
    rec = anonymise_folder(study, out, settings_for(AnonymiseSettings, cfg), out.parent / f"{out.name}.key.json", names,
                           out.parent / f"{out.name}.review.csv")
    return rec, pd.read_csv(out.parent / f"{out.name}.review.csv", keep_default_na=False)


def _values(ev: dict) -> dict:
    return {part: {g: v["value"] for g, v in ev[part].items()} for part in ("recall", "precision")}


def example_study(work: Path) -> dict:
    study = work / "identifiable"
    rows = build(study)
    assert rows == read_key(), "bench/pii_study.py no longer makes the committed answer key"
    cfg = load_config()
    out = {"answer_key": {"rows": len(rows), "by_entity": dict(Counter(r["entity"] + ("_listed" if r["listed"] else "")
                                                                         for r in rows))}}
    for label, names in (("detector_and_speakers_file", None), ("with_names_list", NAMES)):
        rec, review = _run(study, work / label, cfg, names)
        ev = evaluate(study, review, rows)
        out[label] = {**ev, "summary": _values(ev), "texts": rec["counts"]["texts"],
                      "characters": rec["counts"]["characters"], "units_per_second": rec["units_per_second"],
                      "characters_per_second": rec["characters_per_second"],
                      "answer_key_texts_left_in_pseudonymised_files": surviving(work / label, rows)}
    return out


def _ami_subset(work: Path, n_series: int) -> tuple[Path, dict[str, set[str]]]:
    """The first complete series of the manifest, copied, and each series' self-introduced first names."""
    with open(AMI / "manifest.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    series = sorted({r["series"] for r in rows if r["series"].startswith("ES")})
    chosen = [s for s in series if sum(r["series"] == s for r in rows) == 4][:n_series]
    dest = work / "ami"
    dest.mkdir()
    lower = set()
    names: dict[str, set[str]] = {}
    kept = [r for r in rows if r["series"] in chosen]
    for r in kept:
        text = (AMI / r["file"]).read_text(encoding="utf-8")
        lower |= set(re.findall(r"\b[a-z]+\b", text))
        names.setdefault(r["series"], set()).update(_INTRO.findall(text))
        (dest / Path(r["file"]).name).write_text(text, encoding="utf-8")
    # an introduction that is a word used in lower case ("I'm Marketing", "I'm Sure") is no name
    names = {s: {n for n in ns if n.lower() not in lower and n not in " ".join(ROLES)} for s, ns in names.items()}
    with open(dest / "manifest.csv", "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["file", "interview_id", "wave", "series"])
        for r in kept:
            w.writerow([Path(r["file"]).name, r["meeting"], r["wave"], r["series"]])
    return dest, names


def ami(work: Path, n_series: int) -> dict:
    if not AMI.is_dir():
        return {"skipped": f"{AMI} not found"}
    study, names = _ami_subset(work, n_series)
    series_of = {p.name: p.stem[:6] for p in study.glob("*.txt")}
    key_rows = [{"file": f, "entity": "person", "text": n, "listed": False}
                for f, s in series_of.items() for n in sorted(names.get(s, ()))]
    cfg = load_config(overrides={"anonymise": {"keep_labels": ROLES}})
    out = {"series": sorted(names), "introduced_names": {s: sorted(n) for s, n in names.items()},
           "meetings": len(series_of)}
    names_file = work / "ami_names.csv"
    names_file.write_text("name,kind\n" + "".join(f"{n},person\n" for ns in names.values() for n in sorted(ns)))
    for label, listed in (("detector_only", None), ("names_listed", names_file)):
        rec, review = _run(study, work / f"ami_{label}", cfg, listed)
        ev = evaluate(study, review, key_rows)
        person = ev["recall"].get("person", {"value": None})
        prec = ev["precision"].get("person", {"value": None})
        top = review[review["entity"] == "person"]["original"].value_counts().head(15).to_dict()
        out[label] = {"recall_person": person, "precision_person_lower_bound": prec,
                      "most_replaced_person_texts": top,
                      "replacements_by_entity": rec["counts"]["by_kind"], "texts": rec["counts"]["texts"],
                      "characters": rec["counts"]["characters"], "units_per_second": rec["units_per_second"],
                      "characters_per_second": rec["characters_per_second"], "detect_seconds": rec["detect_seconds"]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ami-series", type=int, default=4, help="AMI scenario series to use (4 meetings each)")
    args = ap.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "ex").mkdir()
        results = {"cores": os.cpu_count(), "example_study": example_study(work / "ex"),
                   "ami": ami(work, args.ami_series)}
    results["seconds"] = round(time.perf_counter() - started, 1)
    ex = results["example_study"]
    for label in ("detector_and_speakers_file", "with_names_list"):
        s = ex[label]["summary"]
        print(f"example study, {label}: recall {s['recall']}")
        print(f"  precision {s['precision']}; {ex[label]['units_per_second']} texts/s, "
              f"{ex[label]['characters_per_second']} characters/s")
    a = results["ami"]
    if "skipped" not in a:
        for label in ("detector_only", "names_listed"):
            r = a[label]
            print(f"AMI ({a['meetings']} meetings), {label}: person recall {r['recall_person']['value']} "
                  f"({r['recall_person'].get('found')}/{r['recall_person'].get('occurrences')}), precision >= "
                  f"{r['precision_person_lower_bound']['value']}; {r['units_per_second']} texts/s")
    save("anonymise_eval", results)


if __name__ == "__main__":
    main()
