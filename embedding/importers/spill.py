"""One table's rows spilled to local files, one set per shard, as they are read (values
never all in memory); then each shard's ids sorted, as the servers binary-search them,
and refused if one repeats. Memory: 24 bytes per row of the shard being sorted."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from embedding.importers.sources import Batch
from embedding.importers.target import ImportRefused
from embedding.partition import shard_of

_ORIGIN = np.dtype([("file", "<i4"), ("row", "<i8")])


class Spill:
    def __init__(self, directory: Path, table: str, shard_count: int, dim: int):
        self.dir = directory
        self.table = table
        self.dim = dim
        self.files: list[Path] = []  # the source files rows came from, by index
        self.rows = [0] * shard_count
        self._out = [{part: open(self._path(s, part), "wb")  # noqa: SIM115 (closed in close())
                      for part in ("ids", "origin", "values")} for s in range(shard_count)]

    def _path(self, shard: int, part: str) -> Path:
        return self.dir / f"{self.table}.{shard}.{part}"

    def add(self, batch: Batch) -> None:
        if not self.files or self.files[-1] != batch.path:
            self.files.append(batch.path)
        origin = np.empty(len(batch.ids), _ORIGIN)
        origin["file"] = len(self.files) - 1
        origin["row"] = np.arange(batch.first_row, batch.first_row + len(batch.ids))
        owners = shard_of(batch.ids, len(self._out))
        for shard, out in enumerate(self._out):
            mine = owners == shard
            if not mine.any():
                continue
            batch.ids[mine].tofile(out["ids"])
            origin[mine].tofile(out["origin"])
            np.ascontiguousarray(batch.values[mine], dtype=np.float32).tofile(out["values"])
            self.rows[shard] += int(mine.sum())

    def close(self) -> None:
        for out in self._out:
            for handle in out.values():
                handle.close()

    def sort(self, shard: int) -> np.ndarray:
        """The shard's rows in id order (saved beside the spill for `ordered`); refuses an
        id that appears twice, naming both rows."""
        ids = np.fromfile(self._path(shard, "ids"), np.int64)
        order = np.argsort(ids, kind="stable")
        ordered = ids[order]
        again = np.flatnonzero(ordered[1:] == ordered[:-1])
        if again.size:
            origin = np.fromfile(self._path(shard, "origin"), _ORIGIN)
            first, second = origin[order[again[0]]], origin[order[again[0] + 1]]
            raise ImportRefused(self.files[second["file"]], self.table, int(second["row"]),
                                f"duplicate id {ordered[again[0]]}, first at "
                                f"{self.files[first['file']]} row {first['row']}")
        np.save(self._path(shard, "order.npy"), order)
        return ordered

    def ordered(self, shard: int, chunk_rows: int):
        """(ids, fp32 values) of the shard in id order, `chunk_rows` rows at a time."""
        order = np.load(self._path(shard, "order.npy"))
        if not len(order):
            return
        ids = np.memmap(self._path(shard, "ids"), np.int64, "r")
        values = np.memmap(self._path(shard, "values"), np.float32, "r",
                           shape=(len(order), self.dim))
        for start in range(0, len(order), chunk_rows):
            rows = order[start:start + chunk_rows]
            yield np.asarray(ids[rows]), np.asarray(values[rows])
