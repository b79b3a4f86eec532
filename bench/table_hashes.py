"""Content hashes of every table in run directories, and their comparison with an earlier set.

A refactoring that must not change behaviour is checked by running the same study before and after
and comparing the tables' contents (not the Parquet bytes, which carry library versions):

    python bench/table_hashes.py runs/before_demo runs/before_talkmoves --write before.json
    python bench/table_hashes.py runs/after_demo runs/after_talkmoves --compare before.json

Run directories are matched by position; prints one line per table and exits 1 on any difference.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def table_digest(path: Path) -> str:
    """SHA-256 of a table's schema (names and types) and rows, in order, independent of file layout."""
    table = pq.read_table(path)
    table = table.replace_schema_metadata(None).combine_chunks()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()


def run_digests(run_dir: Path) -> dict[str, str]:
    """Every table of a run (NAME.parquet or a folder of parts), by name; the report page too."""
    out = {}
    for path in sorted(Path(run_dir).iterdir()):
        if path.suffix == ".parquet" or (path.is_dir() and any(path.glob("part-*.parquet"))):
            out[path.name.removesuffix(".parquet")] = table_digest(path)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--write", type=Path, help="write the digests to this JSON file")
    parser.add_argument("--compare", type=Path, help="compare with digests written earlier")
    args = parser.parse_args()
    digests = [run_digests(r) for r in args.runs]
    if args.write:
        args.write.write_text(json.dumps(digests, indent=2) + "\n", encoding="utf-8")
    if not args.compare:
        for run, d in zip(args.runs, digests):
            print(f"{run}: {len(d)} tables")
        return 0
    before = json.loads(args.compare.read_text(encoding="utf-8"))
    differ = 0
    for run, old, new in zip(args.runs, before, digests):
        for name in sorted(set(old) | set(new)):
            same = old.get(name) == new.get(name)
            differ += not same
            state = "identical" if same else ("missing now" if name not in new else
                                               "new" if name not in old else "DIFFERENT")
            print(f"{run.name:24} {name:34} {state}")
    total = sum(len(set(o) | set(n)) for o, n in zip(before, digests))
    print(f"{total - differ} of {total} tables identical")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
