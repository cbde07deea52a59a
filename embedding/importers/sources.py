"""What every format reader yields: tables as sources of row batches (ids int64, values
fp32) read a bounded number of rows at a time, each batch saying which file and rows it
came from; and the naming rules of tensor containers (safetensors, .npz, state dicts)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedding.importers.target import ImportRefused

# TorchRec's EmbeddingBagCollection and EmbeddingCollection keep table T's weight at
# `embedding_bags.T.weight` and `embeddings.T.weight`, under any module prefix.
_TORCHREC = re.compile(r"(?:^|\.)(?:embedding_bags|embeddings)\.([^.]+)\.weight$")
IDS_SUFFIX = ".ids"
# The one-table layout: an `ids` array beside a `values` (or `embeddings`) matrix.
PAIR_IDS = "ids"
PAIR_VALUES = ("values", "embeddings")


@dataclass
class Batch:
    path: Path  # the file these rows are in (a Parquet dataset has many)
    first_row: int  # their first row's number in that file
    ids: np.ndarray  # int64 [n]
    values: np.ndarray  # fp32 [n, dim]


@dataclass
class TableSource:
    path: Path
    table: str
    dim: int
    nbytes: int  # of the values as stored in the source, for progress
    batches: Callable[[int], Iterator[Batch]]  # rows per batch -> batches


@dataclass
class Array:
    """One array of a tensor container: shape, dtype name, and its rows read in order."""

    shape: tuple[int, ...]
    dtype: str  # numpy's name: float32, float16, float64, int64, ...
    chunks: Callable[[int], Iterator[np.ndarray]]  # rows per chunk -> chunks

    def load(self) -> np.ndarray:
        return np.concatenate(list(self.chunks(1 << 20)) or [np.zeros(0, self.dtype)])


def table_name(key: str) -> str:
    """The table a container key holds: TorchRec's table name, else the key less
    `.weight` (an nn.Embedding's state-dict key)."""
    match = _TORCHREC.search(key)
    return match.group(1) if match else key.removesuffix(".weight")


def container_tables(path: Path, arrays: dict[str, Array], label: str | None) -> list[TableSource]:
    """Every 2-D floating array is a table (rows = ids 0..n-1 unless an int64 array
    `<key less .weight>.ids` gives them); `label` names the table of the ids/values pair."""
    pair = [k for k in PAIR_VALUES if k in arrays]
    if PAIR_IDS in arrays and len(pair) == 1:
        return [_table(path, label or path.stem, arrays[pair[0]], arrays[PAIR_IDS])]
    found: dict[str, TableSource] = {}
    for key, array in arrays.items():
        if key.endswith(IDS_SUFFIX) or len(array.shape) != 2 or not _floating(array.dtype):
            continue
        name = table_name(key)
        if name in found:
            raise ImportRefused(path, name, None, f"two arrays hold it ({key} and another)")
        found[name] = _table(path, name, array, arrays.get(key.removesuffix(".weight")
                                                           + IDS_SUFFIX), key)
    return list(found.values())


def _floating(dtype: str) -> bool:
    return dtype in ("float16", "float32", "float64", "bfloat16")


def _table(path: Path, name: str, values: Array, ids: Array | None,
           key: str | None = None) -> TableSource:
    rows, dim = values.shape
    what = f"array {key}" if key else "its values"
    if ids is not None:
        if ids.dtype != "int64":
            raise ImportRefused(path, name, 0, f"ids are {ids.dtype}, not int64")
        if ids.shape != (rows,):
            raise ImportRefused(path, name, min(rows, ids.shape[0]) if ids.shape else 0,
                                f"{ids.shape[0] if ids.shape else 0} ids for {rows} rows "
                                f"of {what}")

    def batches(batch_rows: int) -> Iterator[Batch]:
        all_ids = ids.load() if ids is not None else None
        start = 0
        for chunk in values.chunks(batch_rows):
            stop = start + len(chunk)
            chunk_ids = (all_ids[start:stop] if all_ids is not None
                         else np.arange(start, stop, dtype=np.int64))
            yield Batch(path, start, chunk_ids, np.asarray(chunk, dtype=np.float32))
            start = stop

    itemsize = 2 if values.dtype in ("float16", "bfloat16") else np.dtype(values.dtype).itemsize
    return TableSource(path, name, dim, rows * dim * itemsize, batches)
