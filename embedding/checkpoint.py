"""Checkpoint format in S3: a JSON manifest plus raw per-table, per-shard files.

See docs/checkpoint-format.md for the layout; the manifest is embedding/manifest.py. This
module holds the writer (numpy arrays -> S3, used by tests, benchmarks and training jobs)
and the reader that streams one shard's files straight into numpy buffers with ranged GETs
in parallel.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import urlparse

import numpy as np
import urllib3
from botocore.exceptions import BotoCoreError

from embedding.manifest import (
    FORMAT,
    MANIFEST,
    PART_SIZE,
    DType,
    FileEntry,
    Manifest,
    ShardEntry,
    TableEntry,
)
from embedding.partition import shard_of

# Attempts at one part's ranged read when the connection fails under it.
PART_ATTEMPTS = 4
READ_CHUNK = 1 << 20


class IncompleteBody(ConnectionError):
    """S3 closed a ranged read before its last byte: the transfer, not the file, failed."""


TRANSPORT_ERRORS = (BotoCoreError, urllib3.exceptions.HTTPError, ConnectionError, TimeoutError)

STORAGE_DTYPES: dict[str, np.dtype] = {
    "fp32": np.dtype("<f4"),
    "fp16": np.dtype("<f2"),
    "int8": np.dtype("i1"),
    "int4": np.dtype("u1"),  # two values per byte: [rows, int4_row_bytes(dim)]
}
ID_DTYPE = np.dtype("<i8")
SCALE_DTYPE = np.dtype("<f4")


@dataclass(frozen=True)
class StreamPosition:
    """Where in the delta topic a checkpoint's rows stand: partition -> next offset whose
    delta the rows do not include."""

    topic: str
    offsets: dict[int, int]


def _stream_fields(stream: StreamPosition | None) -> dict:
    if stream is None:
        return {}
    return {"stream_topic": stream.topic, "stream_offsets": dict(stream.offsets)}


def split_uri(uri: str) -> tuple[str, str]:
    """s3://bucket/prefix -> (bucket, 'prefix/')."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"not an s3:// uri: {uri!r}")
    prefix = parsed.path.lstrip("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return parsed.netloc, prefix


# ---------------------------------------------------------------- quantisation


class Quantized(NamedTuple):
    values: np.ndarray  # the stored rows
    scales: np.ndarray | None  # int8, int4: one fp32 per row
    bias: np.ndarray | None  # int4: one fp32 per row


def quantize(values: np.ndarray, dtype: DType) -> Quantized:
    """fp32 rows -> stored rows.

    int8: value = q * scale, q in [-127, 127], scale = max |row| / 127; error per element
    at most scale / 2. int4: two values per byte (the even element in the low nibble),
    value = q * scale + bias, q in [0, 15], bias = min(row), scale = (max - min) / 15; error
    per element at most scale / 2 = (max(row) - min(row)) / 30 (plus fp32 rounding).
    """
    values = np.asarray(values, dtype=np.float32)
    if dtype == "fp32":
        return Quantized(np.ascontiguousarray(values), None, None)
    if dtype == "fp16":
        return Quantized(values.astype(np.float16), None, None)
    if dtype == "int4":
        return _quantize_int4(values)
    scales = (np.abs(values).max(axis=1) / 127.0).astype(np.float32) if len(values) else \
        np.zeros(0, np.float32)
    safe = np.where(scales > 0, scales, 1.0).astype(np.float32)
    q = np.rint(values / safe[:, None]).clip(-127, 127).astype(np.int8)
    return Quantized(q, scales, None)


def _quantize_int4(values: np.ndarray) -> Quantized:
    n, dim = values.shape
    if n == 0:
        return Quantized(np.zeros((0, int4_row_bytes(dim)), np.uint8),
                         np.zeros(0, np.float32), np.zeros(0, np.float32))
    low, high = values.min(axis=1), values.max(axis=1)
    scales = ((high - low) / np.float32(15)).astype(np.float32)
    safe = np.where(scales > 0, scales, 1.0).astype(np.float32)
    q = np.rint((values - low[:, None]) / safe[:, None]).clip(0, 15).astype(np.uint8)
    if dim % 2:
        q = np.concatenate([q, np.zeros((n, 1), np.uint8)], axis=1)
    packed = q[:, 0::2] | (q[:, 1::2] << 4)
    return Quantized(np.ascontiguousarray(packed), scales, low.astype(np.float32))


def int4_row_bytes(dim: int) -> int:
    return (dim + 1) // 2


def dequantize(stored: np.ndarray, scales: np.ndarray | None, out: np.ndarray,
               bias: np.ndarray | None = None) -> None:
    """Stored rows -> fp32 rows written into `out` (same row count)."""
    if bias is not None:  # int4
        q = np.empty((len(stored), 2 * stored.shape[1]), np.float32)
        q[:, 0::2] = stored & 0x0F
        q[:, 1::2] = stored >> 4
        np.multiply(q[:, :out.shape[1]], scales[:, None], out=out)
        out += bias[:, None]
    elif scales is None:
        out[...] = stored
    else:
        np.multiply(stored, scales[:, None], out=out)


# ---------------------------------------------------------------- writer


def _crc_parts(data: memoryview, part_size: int) -> list[int]:
    return [zlib.crc32(data[i:i + part_size]) for i in range(0, len(data), part_size)] or [0]


class CheckpointWriter:
    """Writes full and incremental checkpoints from numpy arrays (the manifest goes last,
    so a reader never sees a manifest whose files are not all there)."""

    def __init__(self, s3, uri: str, shard_count: int, threads: int = 8):
        self.s3 = s3
        self.bucket, self.prefix = split_uri(uri)
        self.shard_count = shard_count
        self.threads = threads

    def _put(self, pool: ThreadPoolExecutor, jobs: list, key: str, array: np.ndarray):
        data = memoryview(np.ascontiguousarray(array).reshape(-1).view(np.uint8))
        entry = FileEntry(key=key, size=len(data), part_crc32=_crc_parts(data, PART_SIZE))
        jobs.append(pool.submit(self.s3.put_object, Bucket=self.bucket,
                                Key=self.prefix + key, Body=data.tobytes()))
        return entry

    def _put_rows(self, pool: ThreadPoolExecutor, jobs: list, base: str,
                  stored: Quantized) -> dict[str, FileEntry]:
        files = {"values": self._put(pool, jobs, f"{base}.values", stored.values)}
        for kind, array in (("scales", stored.scales), ("bias", stored.bias)):
            if array is not None:
                files[kind] = self._put(pool, jobs, f"{base}.{kind}", array)
        return files

    def _split(self, ids: np.ndarray) -> list[np.ndarray]:
        """Row indices of each shard, each sorted by id (the server binary-searches ids)."""
        order = np.argsort(ids, kind="stable")
        shards = shard_of(ids[order], self.shard_count)
        return [order[shards == s] for s in range(self.shard_count)]

    def write_full(self, version: int, tables: dict[str, tuple[np.ndarray, np.ndarray]],
                   dtypes: dict[str, DType] | None = None,
                   stream: StreamPosition | None = None) -> Manifest:
        """`tables`: name -> (ids int64 [n], values fp32 [n, dim]); ids unique per table.
        `stream`: the delta topic's position these rows include, when they include any."""
        dtypes = dtypes or {}
        entries: dict[str, TableEntry] = {}
        jobs: list = []
        with ThreadPoolExecutor(self.threads) as pool:
            for name, (ids, values) in tables.items():
                ids = np.asarray(ids, dtype=ID_DTYPE)
                values = np.asarray(values, dtype=np.float32)
                _check_rows(name, ids, values)
                dtype = dtypes.get(name, "fp32")
                shards = []
                for s, rows in enumerate(self._split(ids)):
                    stored = quantize(values[rows], dtype)
                    base = f"tables/{name}/shard-{s:05d}-of-{self.shard_count:05d}"
                    files = {"ids": self._put(pool, jobs, f"{base}.ids", ids[rows]),
                             **self._put_rows(pool, jobs, base, stored)}
                    shards.append(ShardEntry(rows=len(rows), files=files))
                entries[name] = TableEntry(dim=values.shape[1], dtype=dtype, rows=len(ids),
                                           shards=shards)
            for job in jobs:
                job.result()
        return self._manifest(Manifest(kind="full", version=version,
                                       shard_count=self.shard_count, created_at=time.time(),
                                       tables=entries, **_stream_fields(stream)))

    def write_incremental(self, version: int, base_version: int,
                          upserts: dict[str, tuple[np.ndarray, np.ndarray]],
                          deletes: dict[str, np.ndarray], dims: dict[str, int],
                          dtypes: dict[str, DType] | None = None,
                          stream: StreamPosition | None = None) -> Manifest:
        """Rows upserted and ids deleted against `base_version`, per table. A table absent
        from both is unchanged; an id both upserted and deleted is an error."""
        dtypes = dtypes or {}
        entries: dict[str, TableEntry] = {}
        jobs: list = []
        with ThreadPoolExecutor(self.threads) as pool:
            for name in sorted(set(upserts) | set(deletes)):
                dim = dims[name]
                ids, values = upserts.get(name, (np.zeros(0, ID_DTYPE),
                                                 np.zeros((0, dim), np.float32)))
                ids = np.asarray(ids, dtype=ID_DTYPE)
                values = np.asarray(values, dtype=np.float32)
                _check_rows(name, ids, values)
                gone = np.unique(np.asarray(deletes.get(name, np.zeros(0)), dtype=ID_DTYPE))
                if np.intersect1d(ids, gone).size:
                    raise ValueError(f"table {name}: ids both upserted and deleted")
                dtype = dtypes.get(name, "fp32")
                gone_shards = shard_of(gone, self.shard_count)
                shards = []
                for s, rows in enumerate(self._split(ids)):
                    stored = quantize(values[rows], dtype)
                    base = f"tables/{name}/shard-{s:05d}-of-{self.shard_count:05d}"
                    shard_gone = gone[gone_shards == s]
                    files = {"ids": self._put(pool, jobs, f"{base}.ids", ids[rows]),
                             **self._put_rows(pool, jobs, base, stored),
                             "deleted": self._put(pool, jobs, f"{base}.deleted", shard_gone)}
                    shards.append(ShardEntry(rows=len(rows), deleted=len(shard_gone),
                                             files=files))
                entries[name] = TableEntry(dim=dim, dtype=dtype, rows=len(ids), shards=shards)
            for job in jobs:
                job.result()
        return self._manifest(Manifest(kind="incremental", version=version,
                                       base_version=base_version,
                                       shard_count=self.shard_count, created_at=time.time(),
                                       tables=entries, **_stream_fields(stream)))

    def _manifest(self, manifest: Manifest) -> Manifest:
        self.s3.put_object(Bucket=self.bucket, Key=self.prefix + MANIFEST,
                           Body=manifest.to_json().encode(),
                           ContentType="application/json")
        return manifest


def _check_rows(name: str, ids: np.ndarray, values: np.ndarray) -> None:
    if ids.ndim != 1 or values.ndim != 2 or len(ids) != len(values):
        raise ValueError(f"table {name}: need ids [n] and values [n, dim]")
    if len(np.unique(ids)) != len(ids):
        raise ValueError(f"table {name}: duplicate ids")


# ---------------------------------------------------------------- reader


class ChecksumError(RuntimeError):
    pass


def read_manifest(s3, uri: str) -> Manifest:
    bucket, prefix = split_uri(uri)
    body = s3.get_object(Bucket=bucket, Key=prefix + MANIFEST)["Body"].read()
    manifest = Manifest.from_json(body)
    if manifest.format != FORMAT:
        raise ValueError(f"unknown checkpoint format {manifest.format!r}")
    return manifest


@dataclass
class ShardData:
    """One table's files for one shard, as numpy arrays in their stored dtypes."""

    ids: np.ndarray
    values: np.ndarray
    scales: np.ndarray | None
    deleted: np.ndarray | None
    bias: np.ndarray | None = None  # int4 only


class ShardReader:
    """Fetches a shard's files with parallel ranged GETs into preallocated numpy buffers,
    verifying each part's crc32 in the worker that fetched it (no second pass)."""

    def __init__(self, s3, uri: str, manifest: Manifest, shard: int, threads: int = 8,
                 on_bytes: Callable[[int], None] = lambda n: None):
        self.s3 = s3
        self.bucket, self.prefix = split_uri(uri)
        self.manifest = manifest
        self.shard = shard
        self.threads = threads
        self.on_bytes = on_bytes

    def read_all(self) -> dict[str, ShardData]:
        plans: list[tuple[FileEntry, np.ndarray]] = []
        out: dict[str, dict[str, np.ndarray]] = {}
        for name, table in self.manifest.tables.items():
            shard = table.shards[self.shard]
            arrays: dict[str, np.ndarray] = {}
            for kind, entry in shard.files.items():
                arrays[kind] = self._alloc(kind, table, shard, entry)
                plans.append((entry, arrays[kind]))
            out[name] = arrays
        with ThreadPoolExecutor(self.threads) as pool:
            jobs = [pool.submit(self._fetch_part, entry, array, i)
                    for entry, array in plans for i in range(len(entry.part_crc32))]
            for job in jobs:
                job.result()
        return {name: ShardData(ids=a["ids"], values=a["values"], scales=a.get("scales"),
                                deleted=a.get("deleted"), bias=a.get("bias"))
                for name, a in out.items()}

    @staticmethod
    def _alloc(kind: str, table: TableEntry, shard: ShardEntry, entry: FileEntry) -> np.ndarray:
        if kind in ("ids", "deleted"):
            rows = shard.deleted if kind == "deleted" else shard.rows
            array = np.empty(rows, ID_DTYPE)
        elif kind in ("scales", "bias"):
            array = np.empty(shard.rows, SCALE_DTYPE)
        elif kind == "values":
            width = int4_row_bytes(table.dim) if table.dtype == "int4" else table.dim
            array = np.empty((shard.rows, width), STORAGE_DTYPES[table.dtype])
        else:
            raise ValueError(f"unknown file kind {kind!r}")
        if array.nbytes != entry.size:
            raise ValueError(f"{entry.key}: size {entry.size} does not match manifest shape")
        return array

    def _fetch_part(self, entry: FileEntry, array: np.ndarray, part: int) -> None:
        if entry.size == 0:
            return
        start = part * entry.part_size
        end = min(start + entry.part_size, entry.size)
        view = memoryview(array.reshape(-1).view(np.uint8))[start:end]
        # botocore retries a request, not a body cut off half way: a reset connection
        # would otherwise fail the whole load.
        for attempt in range(1, PART_ATTEMPTS + 1):
            try:
                self._read_range(entry, view, start)
                break
            except TRANSPORT_ERRORS:
                if attempt == PART_ATTEMPTS:
                    raise
                time.sleep(0.2 * 2 ** attempt)
        self.on_bytes(len(view))
        if zlib.crc32(view) != entry.part_crc32[part]:
            raise ChecksumError(f"{entry.key}: crc32 mismatch in part {part}")

    def _read_range(self, entry: FileEntry, view: memoryview, start: int) -> None:
        body = self.s3.get_object(Bucket=self.bucket, Key=self.prefix + entry.key,
                                  Range=f"bytes={start}-{start + len(view) - 1}")["Body"]
        filled = 0
        while filled < len(view):
            # urllib3's readinto reads into a temporary bytes of the size asked for: 1 MiB
            # at a time keeps those temporaries small, where a whole 8 MiB part per load
            # thread stayed resident after the load (bench/RESULTS.md, memory per row).
            n = body.readinto(view[filled:filled + READ_CHUNK])
            if not n:
                raise IncompleteBody(f"{entry.key}: body ended at {start + filled}")
            filled += n
