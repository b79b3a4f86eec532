"""Where every benchmark writes its numbers: bench/results/NAME.json (printed path)."""
import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def save(name: str, results) -> Path:
    out = RESULTS / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2), encoding="utf-8")
    print(f"written {out}")
    return out
