"""A run's embeddings, read a batch at a time: the rows a stage asks for, never the whole table.

map, shift and report take their vectors through here, so a run of millions of utterances (a
folder of part files from the Ray engine, or one large file) needs memory for what a stage keeps,
not for every embedding at once. A table already in memory works the same way (tests, benches).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.embed import vectors
from pipeline.io.rundir import iter_table, read_table, table_files, take_sorted

BATCH_ROWS = 100_000
SPILL_BYTES = 2 << 30  # gathered vectors above this size live in a temporary file in the run directory


class StoredEmbeddings:
    """utterance_id + vector rows, from a run directory (streamed) or from a table in memory."""

    def __init__(self, run_dir: Path | None = None, table: pa.Table | None = None):

        self.run_dir, self.table = (Path(run_dir) if run_dir else None), table
        if table is None:  # the checked read: stale embeddings are refused, and the read is recorded
            if self.run_dir is None:  # neither given: read_table's Path(None) raised a TypeError too
                raise TypeError("StoredEmbeddings needs a run directory or a table")
            self.ids = read_table(self.run_dir, "embeddings", columns=["utterance_id"]).column("utterance_id")
            self.dim = self._schema().field("vector").type.list_size
        else:
            self.ids = table.column("utterance_id")
            self.dim = table.schema.field("vector").type.list_size

    @classmethod
    def of(cls, embeddings: "pa.Table | StoredEmbeddings") -> "StoredEmbeddings":
        return embeddings if isinstance(embeddings, StoredEmbeddings) else cls(table=embeddings)

    @property
    def num_rows(self) -> int:
        return len(self.ids)

    def _schema(self) -> pa.Schema:
        import pyarrow.parquet as pq

        assert self.run_dir is not None  # __init__ reads the schema only from a run directory
        return pq.read_schema(table_files(self.run_dir, "embeddings")[0])

    def batches(self, rows: int = BATCH_ROWS) -> Iterator[pa.Table]:
        """The table in row order, about `rows` rows at a time."""
        if self.table is not None:
            for start in range(0, self.table.num_rows, rows):
                yield self.table.slice(start, rows)
            return

        assert self.run_dir is not None  # without a table __init__ needed a run directory
        yield from iter_table(self.run_dir, "embeddings", batch_rows=rows)

    def chunks(self, cuts: Sequence[int]) -> Iterator[pa.Table]:
        """Rows [cuts[i], cuts[i+1]) for each i, as one table each, whatever the batches' sizes."""
        held: list[pa.Table] = []
        held_from = 0  # row index of held[0]'s first row
        bounds = iter(zip(cuts[:-1], cuts[1:]))
        lo, hi = next(bounds, (None, None))
        for batch in self.batches():
            held.append(batch)
            held_to = held_from + sum(t.num_rows for t in held)
            while lo is not None and hi is not None and held_to >= hi:  # lo and hi are None together
                block = pa.concat_tables(held)
                yield block.slice(lo - held_from, hi - lo)
                rest = block.slice(hi - held_from)
                held, held_from = [rest], hi
                lo, hi = next(bounds, (None, None))
        if lo is not None and hi is not None and hi > lo:
            raise ValueError("the embeddings have fewer rows than the cuts ask for")

    def gather(self, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(vectors, found): float32 rows in the order of `ids` (zeros where not embedded) and a mask
        of the ids that were found. Above SPILL_BYTES the matrix is a temporary file, mapped."""

        wanted = pa.array(list(ids), pa.string())
        n = len(wanted)
        out: np.ndarray
        if self.run_dir is not None and n * self.dim * 4 > SPILL_BYTES:
            spill = tempfile.TemporaryFile(dir=self.run_dir, prefix=".vectors-")  # gone when closed
            out = np.memmap(spill, dtype=np.float32, mode="w+", shape=(n, self.dim))
        else:
            out = np.zeros((n, self.dim), dtype=np.float32)
        row = pc.index_in(wanted, value_set=self.ids.combine_chunks()).fill_null(-1).to_numpy()
        found = row >= 0
        order = np.argsort(row[found], kind="stable")
        rows, dest = row[found][order], np.flatnonzero(found)[order]
        for lo, hi, taken in take_sorted(self.batches(), rows):
            out[dest[lo:hi]] = vectors(taken)
        return out, found
