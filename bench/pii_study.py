"""The example study as it was before its transcripts were anonymised by hand: a copy of
examples/kt_study whose placeholders ([colleague], [Trust name], [town], ...) are filled with
realistic names, with speakers.csv naming every participant, and with contact details, NHS
numbers, dates of birth and postcodes planted in some answers. What must be replaced is written to
bench/data/pii_answer_key.csv (committed; tests check the builder still makes exactly it).

    python bench/pii_study.py DEST     # build the study into DEST and rewrite the answer key

People's names are invented; organisations and places are real public bodies and towns.
"""
from __future__ import annotations

import csv
import re
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "kt_study"
ANSWER_KEY = REPO / "bench" / "data" / "pii_answer_key.csv"
# the study's own list (--names): its local places and wards, and a GP the participants name
NAMES = REPO / "bench" / "data" / "pii_names.csv"

# speakers.csv gains a name column: these are the "listed" names (always replaced)
PARTICIPANTS = {
    "C01": "Margaret Holroyd", "C02": "Rajesh Menon", "C03": "Fiona Cartwright", "C04": "Daniel Okoro",
    "P01": "Bernadette Kelly", "P02": "Imran Siddiqui", "P03": "Lucy Fairbairn", "P04": "Gavin Thorpe",
    "P05": "Priya Desai", "P06": "Siobhan Doyle", "P07": "Kwame Mensah", "P08": "Hannah Lister",
    "P09": "Tomasz Nowak", "P10": "Eleanor Beaumont",
}
_LISTED = list(PARTICIPANTS.values())
# placeholder -> (entity, names used in turn); people mix study participants (listed) and others
FILL = {
    "[colleague]": ("person", ["Helen Marsh", _LISTED[4], "Gareth Pryce", "Aisha Okafor", _LISTED[1], "Tom Whitaker",
                               "Nicola Brennan", _LISTED[9], "Owen Gallagher", "Sunita Rao"]),
    "[CORE member]": ("person", [_LISTED[0], _LISTED[2], _LISTED[3], _LISTED[1]]),
    "[consultant]": ("person", ["Dr Alan Whitfield", "Dr Ruth Akinola"]),
    "[academic]": ("person", ["Professor Claire Dunmore", "Dr Martin Sheard"]),
    "[carer]": ("person", ["Janet Hirst"]),
    "[surname]": ("person", ["Lindqvist"]),
    "[first name]": ("person", ["Anders"]),
    "[Trust name]": ("org", ["Bradford Teaching Hospitals NHS Foundation Trust", "Airedale NHS Foundation Trust",
                             "Calderdale and Huddersfield NHS Foundation Trust"]),
    "[university]": ("org", ["University of Bradford", "Leeds Beckett University", "University of Huddersfield"]),
    "[practice name]": ("org", ["Ridgeway Medical Practice", "Kirkgate Surgery"]),
    "[care home]": ("org", ["Beechwood House Care Home", "Oakroyd Nursing Home"]),
    "[community centre]": ("org", ["Manningham Community Centre"]),
    "[ward name]": ("place", ["Ward 23", "Ward 7"]),
    "[town]": ("place", ["Keighley", "Shipley"]),
    "[city]": ("place", ["Bradford", "Wakefield"]),
}
# (file, text the sentence goes after, the sentence, [(entity, text), ...])
PLANTED = [
    ("project/P03_wave2.txt", "asked me to present",
     " She rang me on 07911 123456 and sent the slides to lucy.fairbairn@nhs.net the same night.",
     [("phone", "07911 123456"), ("email", "lucy.fairbairn@nhs.net")]),
    ("project/P01_wave1.txt", None,
     "P01: For the record, I was born on 14 February 1979, so I'm not new to this.\n",
     [("date", "14 February 1979")]),
    ("project/P04_wave2.txt", None,
     "P04: One gentleman, NHS number 943 476 5919, came back in three times before anyone joined the dots.\n",
     [("nhs_number", "943 476 5919")]),
    ("project/P07_wave1.txt", None,
     "P07: The hub is at BD9 6RJ, next to the library, and you can ring the office on 01274 542200.\n",
     [("postcode", "BD9 6RJ"), ("phone", "01274 542200")]),
    ("core/C04_wave1.txt", None,
     "C04: Email me at d.okoro@bradford.ac.uk or call 0113 496 0757 if the data do not arrive.\n",
     [("email", "d.okoro@bradford.ac.uk"), ("phone", "0113 496 0757")]),
    ("project/P10_wave2.txt", None,
     "P10: My date of birth is 03/07/1968 and my NHS number is 401 023 2137, if the research office needs them.\n",
     [("date", "03/07/1968"), ("nhs_number", "401 023 2137")]),
]


def _fill(text: str, rel: str, counters: dict[str, int], speaker: str | None, found: list[dict]) -> str:
    def sub(m: re.Match) -> str:
        ph = m.group()
        if ph == "[my name]":
            name = PARTICIPANTS[speaker].split()[0]
            found.append({"file": rel, "entity": "person", "text": name, "listed": True})
            return name
        if ph not in FILL:
            return ph
        entity, names = FILL[ph]
        name = names[counters.get(ph, 0) % len(names)]
        counters[ph] = counters.get(ph, 0) + 1
        found.append({"file": rel, "entity": entity, "text": name, "listed": name in _LISTED})
        return name
    return re.sub(r"\[[A-Za-z][A-Za-z ']*\]", sub, text)


def build(dest: Path) -> list[dict]:
    """Write the identifiable study to dest; return the answer key rows (one per distinct text per file)."""
    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(EXAMPLE, dest)
    with open(dest / "speakers.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    with open(dest / "speakers.csv", "w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, ["speaker_id", "name", "role", "is_interviewer", "aliases"], lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({**r, "name": PARTICIPANTS.get(r["speaker_id"], "")})
    counters: dict[str, int] = {}
    found: list[dict] = []
    for path in sorted(p for p in dest.rglob("*") if p.suffix in (".txt", ".md", ".vtt", ".srt", ".json", ".docx")):
        rel = path.relative_to(dest).as_posix()
        speaker = re.match(r"([CP]\d\d)_", path.name).group(1)
        if path.suffix == ".docx":
            import docx

            from pipeline.io.formats.docx_format import every_paragraph

            document = docx.Document(str(path))
            for p in every_paragraph(document):
                if "[" in p.text:
                    new = _fill(p.text, rel, counters, speaker, found)
                    if new != p.text:
                        p.text = new
            document.save(str(path))
            continue
        text = _fill(path.read_text(encoding="utf-8"), rel, counters, speaker, found)
        for f, after, sentence, planted in PLANTED:
            if f != rel:
                continue
            if after:
                i = text.index(after)
                j = text.index(".", i) + 1
                text = text[:j] + sentence + text[j:]
            else:
                text = text.rstrip("\n") + "\n" + sentence
            found += [{"file": rel, "entity": e, "text": t, "listed": False} for e, t in planted]
        path.write_text(text, encoding="utf-8")
    key = {(r["file"], r["entity"], r["text"]): r for r in found}
    return sorted(key.values(), key=lambda r: (r["file"], r["entity"], r["text"]))


def write_key(rows: list[dict], path: Path = ANSWER_KEY) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, ["file", "entity", "text", "listed"], lineterminator="\n")
        w.writeheader()
        w.writerows({**r, "listed": str(r["listed"]).lower()} for r in rows)


def read_key(path: Path = ANSWER_KEY) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [{**r, "listed": r["listed"] == "true"} for r in csv.DictReader(fh)]


if __name__ == "__main__":
    rows = build(Path(sys.argv[1]))
    write_key(rows)
    print(f"{len(rows)} answer-key rows -> {ANSWER_KEY}")


# --- measuring a pseudonymisation against an answer key ---------------------------------------------------
_NOT_IDENTIFYING = {"and", "of", "the", "dr", "professor", "prof", "mr", "mrs", "ms"}


def _occurrences(text: str, original: str) -> list[tuple[int, int]]:
    return [m.span() for m in re.finditer(rf"(?<![\w-]){re.escape(original)}(?![\w-])", text)]


def _covered(text: str, span: tuple[int, int], covers: list[tuple[int, int]]) -> bool:
    """Every identifying word of the occurrence lies inside a replacement ("and", "of", titles need not)."""
    for m in re.finditer(r"[\w@.'-]+", text[span[0]:span[1]]):
        if m.group().strip(".'").lower() in _NOT_IDENTIFYING:
            continue
        a, b = span[0] + m.start(), span[0] + m.end()
        if not any(s <= a and b <= e for s, e in covers):
            return False
    return True


def evaluate(study: Path, review, key_rows: list[dict]) -> dict:
    """Recall per answer-key group (occurrences whose identifying words were all replaced) and precision
    per entity (replacements overlapping an answer-key occurrence). `review`: the review table (pandas)."""
    from pipeline.io.pseudonymise_formats import read_for_pseudonymising

    by_file: dict[str, list[dict]] = {}
    for r in key_rows:
        by_file.setdefault(r["file"], []).append(r)
    spans: dict[tuple[str, int], list[tuple[int, int, str]]] = {}
    for r in review.itertuples():
        spans.setdefault((r.source_file, int(r.line)), []).append((int(r.start_char), int(r.end_char), r.entity))
    hits: dict[str, list[int]] = {}
    true_pos: dict[str, list[int]] = {}
    for rel in sorted({r.source_file for r in review.itertuples()} | set(by_file)):
        source = read_for_pseudonymising(study / rel, rel, ["cp1252"])
        for piece in source.pieces:
            made = spans.get((rel, piece.line), [])
            answers = []
            for row in by_file.get(rel, []):
                group = f"{row['entity']}_listed" if row["entity"] == "person" and row["listed"] else row["entity"]
                for occ in _occurrences(piece.text, row["text"]):
                    answers.append(occ)
                    hits.setdefault(group, [0, 0])
                    hits[group][0] += _covered(piece.text, occ, [(s, e) for s, e, _ in made])
                    hits[group][1] += 1
            for s, e, entity in made:
                true_pos.setdefault(entity, [0, 0])
                true_pos[entity][0] += any(a < e and s < b for a, b in answers)
                true_pos[entity][1] += 1
    out = {"recall": {g: {"value": round(h / n, 4), "found": h, "occurrences": n} for g, (h, n) in sorted(hits.items())},
           "precision": {k: {"value": round(t / n, 4), "true": t, "replacements": n}
                         for k, (t, n) in sorted(true_pos.items())}}
    return out


# --- does any original survive in a run's outputs? ------------------------------------------------------
def _texts_of(path: Path):
    """Every piece of text a file holds: Parquet string cells, zip members (docx, qdpx), plain files."""
    import io
    import zipfile

    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        for column in table.columns:
            t = column.type
            if pa.types.is_string(t) or pa.types.is_large_string(t) or (pa.types.is_list(t) and pa.types.is_string(t.value_type)):
                yield "\n".join(str(v) for v in column.to_pylist() if v is not None)
    elif zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            for name in z.namelist():
                data = z.read(name)
                if zipfile.is_zipfile(io.BytesIO(data)):
                    continue
                yield data.decode("utf-8", "replace")
    else:
        yield path.read_bytes().decode("utf-8", "replace")


def surviving(folder: Path, key_rows: list[dict]) -> dict[str, list[str]]:
    """Answer-key texts found anywhere under folder: a person's every name (first and last names alone
    too), any other entity's whole text. Returns {file: [texts]}."""
    needles = set()
    for r in key_rows:
        if r["entity"] == "person":
            needles |= {w for w in re.findall(r"[A-Za-z]+", r["text"]) if w.lower() not in _NOT_IDENTIFYING}
        else:
            needles.add(r["text"])
    rx = re.compile(r"(?<![\w-])(?:" + "|".join(re.escape(n) for n in sorted(needles, key=len, reverse=True))
                    + r")(?![\w-])")
    found: dict[str, list[str]] = {}
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        for text in _texts_of(path):
            hits = sorted(set(rx.findall(text)))
            if hits:
                found.setdefault(path.relative_to(folder).as_posix(), []).extend(hits)
    return found
