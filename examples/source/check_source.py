"""Validate authored interview sources against SPEC.md (used while writing the example corpus)."""
import json
import sys

CONCEPTS = {
    "technical_infrastructure": "push", "top_down_push": "push",
    "resistance": "pull", "leadership_capability": "pull", "iterative_learning": "pull",
    "ambiguity_roles": "exchange", "reengineering_relations": "exchange", "none": "none",
}


def check(path: str) -> list[str]:
    errors = []
    doc = json.load(open(path, encoding="utf-8"))
    for key in ("interview_id", "participant", "role", "wave", "date", "turns"):
        if key not in doc:
            errors.append(f"missing {key}")
    turns = doc.get("turns", [])
    n_int = sum(t["speaker"] == "INT" for t in turns)
    n_par = sum(t["speaker"] == doc.get("participant") for t in turns)
    if n_int < 22 or n_par < 22:
        errors.append(f"too few turns: INT {n_int}, participant {n_par}")
    for i, t in enumerate(turns):
        expected = "INT" if i % 2 == 0 else doc.get("participant")
        if t.get("speaker") != expected:
            errors.append(f"turn {i}: speaker {t.get('speaker')!r}, expected {expected!r}")
        if not t.get("text", "").strip():
            errors.append(f"turn {i}: empty text")
        if t.get("speaker") != "INT":
            c, d = t.get("concept"), t.get("dimension")
            if CONCEPTS.get(c) != d:
                errors.append(f"turn {i}: concept {c!r} does not belong to dimension {d!r}")
            if "alt_concept" in t and CONCEPTS.get(t["alt_concept"]) != t.get("alt_dimension"):
                errors.append(f"turn {i}: bad alt_concept/alt_dimension")
    return errors


if __name__ == "__main__":
    bad = 0
    for p in sys.argv[1:]:
        errs = check(p)
        bad += bool(errs)
        print(p, "OK" if not errs else "\n  " + "\n  ".join(errs))
    sys.exit(1 if bad else 0)
