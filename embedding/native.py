"""The lookup hot path, in the Rust extension `embedding_native` (native/ in the repository).

Why native: a 150,000-id request spent its time in Python-driven numpy and protobuf steps
(argsort + binary search, numpy's gather, `tobytes`, protobuf copies of the reply on both
ends: bench/LOOKUP-BREAKDOWN.md). Here the index is an open-addressing hash (O(1) per id),
the server writes each row once, converted to the wire dtype, into the bytes object gRPC
sends (a valid serialised LookupResponse), and the client reads the rows in place from the
bytes it received, scattering them into the result in request order.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import NamedTuple

import embedding_native as _native
import numpy as np

from embedding.proto import embedding_pb2 as pb

# dtype codes the extension uses, for storage and for the wire; the proto's WireDtype
# numbers are the same for the three wire dtypes.
FP32, FP16, INT8, INT4 = 0, 1, 2, 3
STORAGE_CODES = {"fp32": FP32, "fp16": FP16, "int8": INT8, "int4": INT4}
WIRE_NAMES = {FP32: "fp32", FP16: "fp16", INT8: "int8"}
WIRE_BYTES = {FP32: 4, FP16: 2, INT8: 1}

route = _native.route  # (request positions grouped by shard, group starts, ids per shard)


class Index:
    """O(1) row lookup over one array of unique int64 ids (4 bytes per slot, load <= 0.7)."""

    __slots__ = ("ids", "slots")

    def __init__(self, ids: np.ndarray):
        self.ids = np.ascontiguousarray(ids, dtype=np.int64)
        self.slots = _native.build_index(self.ids)

    @property
    def nbytes(self) -> int:
        return self.slots.nbytes

    def positions(self, query: np.ndarray) -> tuple[np.ndarray, int]:
        """(row of each query id, -1 where absent; number absent)."""
        return _native.positions(self.slots, self.ids, np.ascontiguousarray(query, np.int64))


class Job(NamedTuple):
    """Rows of one table into the reply, as the extension takes them (a plain tuple).
    positions: >= 0 a stored row, -1 zeros (absent), -2 keep what an earlier job wrote."""

    rows: np.ndarray  # stored rows viewed as bytes [n, row bytes]
    dtype: int
    scales: np.ndarray | None
    bias: np.ndarray | None
    positions: np.ndarray
    dim: int
    values_offset: int  # bytes, within the values region
    row_offset: int  # rows, within the scales region


def job(values: np.ndarray, dtype: int, scales, bias, positions: np.ndarray, dim: int,
        values_offset: int, row_offset: int) -> Job:
    values = np.ascontiguousarray(values)
    rows = values.view(np.uint8).reshape(len(values), values.shape[1] * values.itemsize)
    return Job(rows, dtype, scales, bias, np.ascontiguousarray(positions, np.int64), dim,
               values_offset, row_offset)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


_VALUES_TAG = bytes([2 << 3 | 2])  # field 2, length-delimited
_SCALES_TAG = bytes([5 << 3 | 2])  # field 5


def reply_bytes(version: int, tables: list[tuple[str, int, int, int]], wire: int,
                jobs: list[Job], dense_version: int = 0) -> bytes:
    """A serialised LookupResponse: `tables` are (name, dim, rows, missing) in request
    order; the jobs fill the values (and, for int8, scales) regions in place."""
    rows = sum(t[2] for t in tables)
    values_len = sum(t[1] * t[2] for t in tables) * WIRE_BYTES[wire]
    scales_len = 4 * rows if wire == INT8 else 0
    head = pb.LookupResponse(
        version=version, dense_version=dense_version, wire_dtype=wire,
        tables=[pb.TableValues(table=n, dim=d, rows=r, missing=m) for n, d, r, m in tables],
    ).SerializeToString() + _VALUES_TAG + _varint(values_len)
    mid = _SCALES_TAG + _varint(scales_len) if wire == INT8 else b""
    return _native.reply(head, values_len, mid, scales_len, wire, jobs)


@dataclass(frozen=True)
class ParsedReply:
    """A LookupResponse located in its bytes, values and scales not copied out."""

    version: int
    wire: int
    tables: list[pb.TableValues]
    values_offset: int  # of the values region in the raw bytes
    values_len: int
    scales_offset: int
    dense_version: int = 0

    def table_offsets(self) -> list[tuple[int, int]]:
        """(values byte offset, scales byte offset) of each table's first row."""
        out, values, scales = [], self.values_offset, self.scales_offset
        for t in self.tables:
            out.append((values, scales))
            values += t.rows * t.dim * WIRE_BYTES[self.wire]
            scales += 4 * t.rows
        return out


class MalformedReply(ValueError):
    pass


def _read_varint(raw: bytes, at: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if at >= len(raw) or shift > 63:
            raise MalformedReply("truncated varint")
        byte = raw[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7


def parse_reply(raw: bytes) -> ParsedReply:
    """Walks the top-level fields of a serialised LookupResponse; only the small TableValues
    messages are decoded, the rows stay where they arrived."""
    version, dense_version, wire, tables = 0, 0, FP32, []
    values = (0, 0)
    scales = 0
    at = 0
    while at < len(raw):
        key, at = _read_varint(raw, at)
        field, kind = key >> 3, key & 7
        if kind == 0:
            value, at = _read_varint(raw, at)
            if field == 1:
                version = value
            elif field == 4:
                wire = value
            elif field == 6:
                dense_version = value
        elif kind == 2:
            size, end = _read_varint(raw, at)
            at = end + size
            if at > len(raw):
                raise MalformedReply("field runs past the end")
            if field == 2:
                values = (end, size)
            elif field == 3:
                tables.append(pb.TableValues.FromString(raw[end:at]))
            elif field == 5:
                scales = end
        elif kind in (1, 5):
            at += 8 if kind == 1 else 4
        else:
            raise MalformedReply(f"wire type {kind}")
    if wire not in WIRE_BYTES:
        raise MalformedReply(f"unknown wire dtype {wire}")
    reply = ParsedReply(version, wire, tables, values[0], values[1], scales, dense_version)
    need = sum(t.rows * t.dim for t in tables) * WIRE_BYTES[wire]
    if need != values[1]:
        raise MalformedReply(f"{values[1]} bytes of values for {need} expected")
    return reply


def scatter_rows(out: np.ndarray, index: np.ndarray, raw: bytes, reply: ParsedReply,
                 table: int) -> None:
    """out[index[i]] = row i of table number `table` of the reply, dequantised to fp32."""
    values_at, scales_at = reply.table_offsets()[table]
    _native.scatter(out, np.ascontiguousarray(index, np.int64), raw, values_at, reply.wire,
                    scales_at)


def keep_freed_memory(largest: int = 1 << 30) -> None:
    """Reuse freed blocks up to `largest` bytes instead of unmapping them and faulting
    fresh pages in.

    glibc serves blocks above its mmap threshold (dynamic, at most 32 MiB) with fresh
    mappings and unmaps them when freed, so each reply buffer of the next request is
    faulted in page by page, which on these machines costs several times writing the bytes
    (bench/LOOKUP-BREAKDOWN.md). The servers and the client allocate buffers of the same
    few sizes request after request: from the heap, they are reused. Up to
    min(`largest`, 128 MiB) of free heap stays mapped; beyond that glibc trims it as usual.
    Blocks above `largest` are still mapped apart: a server passes its largest reply
    buffer, so that a load's big arrays and temporaries never land in the heap. No-op where
    libc is not glibc.
    """
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, largest) or mallopt(m_mmap_threshold, 32 << 20)
    mallopt(m_trim_threshold, min(largest, 128 << 20))


def release_freed_memory() -> None:
    """Hand free heap pages back to the kernel (glibc malloc_trim), in every arena: after a
    load or a dropped version, whose temporaries and old arrays would otherwise stay
    resident under keep_freed_memory. No-op where libc is not glibc."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        return
