"""Parquet tables (one file, or a directory of part files as Spark and Flink write them):
an int64 id column and a vector column, a fixed-size list of floats or a list whose rows
must all have the same length, read through pyarrow a batch of rows at a time."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from embedding.importers.sources import Batch, TableSource
from embedding.importers.target import ImportRefused

ID_COLUMN = "id"
VECTOR_COLUMNS = ("embedding", "vector", "values")


def parquet_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*.parquet") if not p.name.startswith((".", "_")))
    return [path]


def parquet_table(path: Path, label: str | None, id_column: str = ID_COLUMN,
                  vector_column: str | None = None) -> TableSource:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as err:
        raise ImportError("reading Parquet needs pyarrow: pip install 'recop[import]'") from err
    table = label or path.stem
    files = parquet_files(path)
    if not files:
        raise ImportRefused(path, table, None, "no .parquet files in this directory")
    dim = None
    rows = 0
    for file in files:
        meta = pq.ParquetFile(file)
        schema = meta.schema_arrow
        vector = _vector(schema.names, vector_column)
        for column in (id_column, vector):
            if column is None or column not in schema.names:
                raise ImportRefused(file, table, None, f"no column {column or VECTOR_COLUMNS}"
                                    f" (columns: {', '.join(schema.names)})")
        if schema.field(id_column).type != pa.int64():
            raise ImportRefused(file, table, 0, f"ids ({id_column}) are "
                                f"{schema.field(id_column).type}, not int64")
        kind = schema.field(vector).type
        if not (pa.types.is_list(kind) or pa.types.is_large_list(kind)
                or pa.types.is_fixed_size_list(kind)) or not pa.types.is_floating(
                kind.value_type):
            raise ImportRefused(file, table, 0, f"{vector} is {kind}, not a list of floats")
        if pa.types.is_fixed_size_list(kind):
            if dim is not None and kind.list_size != dim:
                raise ImportRefused(file, table, 0, f"vectors of {kind.list_size} values "
                                    f"where the files before have {dim}")
            dim = kind.list_size
        rows += meta.metadata.num_rows
    if dim is None:
        dim = _first_dim(files[0], table, _vector(pq.ParquetFile(files[0]).schema_arrow.names,
                                                  vector_column))

    def batches(batch_rows: int) -> Iterator[Batch]:
        for file in files:
            reader = pq.ParquetFile(file)
            vector = _vector(reader.schema_arrow.names, vector_column)
            first = 0
            for record in reader.iter_batches(batch_size=batch_rows,
                                              columns=[id_column, vector]):
                ids = record.column(0)
                vectors = record.column(1)
                _no_nulls(file, table, first, ids, id_column)
                _no_nulls(file, table, first, vectors, vector)
                yield Batch(file, first, ids.to_numpy(),
                            _matrix(file, table, first, vectors, dim))
                first += record.num_rows
    return TableSource(path, table, dim, rows * dim * 4, batches)


def _vector(names: list[str], vector_column: str | None) -> str | None:
    return vector_column or next((c for c in VECTOR_COLUMNS if c in names), None)


def _first_dim(file: Path, table: str, vector: str) -> int:
    import pyarrow.parquet as pq

    for record in pq.ParquetFile(file).iter_batches(batch_size=1, columns=[vector]):
        column = record.column(0)
        _no_nulls(file, table, 0, column, vector)
        return len(column[0])
    raise ImportRefused(file, table, None, "no rows")


def _no_nulls(file: Path, table: str, first: int, column, name: str) -> None:
    if column.null_count:
        row = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
        raise ImportRefused(file, table, first + row, f"{name} is null")


def _matrix(file: Path, table: str, first: int, vectors, dim: int) -> np.ndarray:
    import pyarrow as pa

    if pa.types.is_fixed_size_list(vectors.type):
        if vectors.type.list_size != dim:
            raise ImportRefused(file, table, first, f"vectors of {vectors.type.list_size} "
                                f"values where the table has {dim}")
    else:
        lengths = np.diff(vectors.offsets.to_numpy())
        bad = np.flatnonzero(lengths != dim)
        if bad.size:
            raise ImportRefused(file, table, first + int(bad[0]), f"ragged vectors: "
                                f"{lengths[bad[0]]} values where the table has {dim}")
    flat = vectors.flatten().to_numpy(zero_copy_only=False)
    return np.asarray(flat, dtype=np.float32).reshape(len(vectors), dim)
