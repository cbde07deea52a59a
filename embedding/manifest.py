"""A checkpoint's manifest (manifest.json, docs/checkpoint-format.md): plain dataclasses,
read with a strict parser of their own, so the data plane needs no validation library.

Parsing refuses what the format does not allow with a ValueError that names the field,
and ignores fields it does not know (a newer writer may add some).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Literal

from embedding.partition import PARTITION_FUNCTION

FORMAT = "recop-embedding/1"
MANIFEST = "manifest.json"
# Files are checksummed per part so that parts can be fetched and verified in parallel.
PART_SIZE = 8 << 20

DType = Literal["fp32", "fp16", "int8", "int4"]
DTYPES = ("fp32", "fp16", "int8", "int4")
KINDS = ("full", "incremental")
_REQUIRED = object()


def _get(doc: dict, where: str, name: str, kind: type, default=_REQUIRED,
         minimum: int | None = None):
    """doc[name], of `kind` (None allowed where the default is None)."""
    value = doc.get(name, default)
    if value is _REQUIRED:
        raise ValueError(f"{where}{name}: missing")
    if value is None and default is None:
        return None
    number = kind in (int, float)
    if (isinstance(value, bool) and number) or not isinstance(
            value, (int, float) if kind is float else kind):
        raise ValueError(f"{where}{name}: expected {kind.__name__}, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{where}{name}: {value} is below {minimum}")
    return float(value) if kind is float else value


def _object(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected an object")
    return value


def _ints(values, where: str) -> list[int]:
    if not isinstance(values, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ValueError(f"{where}: expected a list of integers")
    return values


def _mapping(doc: dict, where: str, name: str) -> dict:
    value = _get(doc, where, name, dict)
    if not all(isinstance(k, str) for k in value):
        raise ValueError(f"{where}{name}: keys must be strings")
    return value


def _one_of(value, allowed: tuple[str, ...], where: str) -> str:
    if value not in allowed:
        raise ValueError(f"{where}: {value!r} is none of {', '.join(allowed)}")
    return value


@dataclass(kw_only=True)
class FileEntry:
    key: str  # relative to the checkpoint prefix
    size: int
    part_size: int = PART_SIZE
    part_crc32: list[int]

    @classmethod
    def from_dict(cls, doc: dict, where: str) -> FileEntry:
        return cls(key=_get(doc, where, "key", str),
                   size=_get(doc, where, "size", int),
                   part_size=_get(doc, where, "part_size", int, PART_SIZE),
                   part_crc32=_ints(_get(doc, where, "part_crc32", list),
                                    f"{where}part_crc32"))


@dataclass(kw_only=True)
class ShardEntry:
    rows: int  # full: rows in the shard; incremental: upserted rows
    deleted: int = 0  # incremental only: deleted ids
    # ids, values, scales (int8, int4), bias (int4), deleted (incremental)
    files: dict[str, FileEntry]

    @classmethod
    def from_dict(cls, doc: dict, where: str) -> ShardEntry:
        files = _mapping(doc, where, "files")
        return cls(rows=_get(doc, where, "rows", int),
                   deleted=_get(doc, where, "deleted", int, 0),
                   files={k: FileEntry.from_dict(_object(v, f"{where}files.{k}"),
                                                 f"{where}files.{k}.")
                          for k, v in files.items()})


@dataclass(kw_only=True)
class TableEntry:
    dim: int
    dtype: DType
    rows: int
    shards: list[ShardEntry]

    @classmethod
    def from_dict(cls, doc: dict, where: str) -> TableEntry:
        shards = _get(doc, where, "shards", list)
        return cls(dim=_get(doc, where, "dim", int, minimum=1),
                   dtype=_one_of(doc.get("dtype"), DTYPES, f"{where}dtype"),
                   rows=_get(doc, where, "rows", int),
                   shards=[ShardEntry.from_dict(_object(s, f"{where}shards.{i}"),
                                                f"{where}shards.{i}.")
                           for i, s in enumerate(shards)])


@dataclass(kw_only=True)
class Manifest:
    format: str = FORMAT
    kind: Literal["full", "incremental"]
    version: int
    base_version: int | None = None
    shard_count: int
    partition: str = PARTITION_FUNCTION
    created_at: float
    tables: dict[str, TableEntry]
    # The real-time stream this checkpoint already contains: partition -> next offset not
    # included. A server replays from here, so deltas published after the snapshot (while it
    # was written, or while a replica was down) are not lost. None: no tie to the stream.
    stream_topic: str | None = None
    stream_offsets: dict[int, int] | None = None

    @classmethod
    def from_json(cls, body: bytes | str) -> Manifest:
        return cls.from_dict(_object(json.loads(body), "manifest"))

    @classmethod
    def from_dict(cls, doc: dict) -> Manifest:
        tables = _mapping(doc, "", "tables")
        return cls(
            format=_get(doc, "", "format", str, FORMAT),
            kind=_one_of(doc.get("kind"), KINDS, "kind"),
            version=_get(doc, "", "version", int, minimum=1),
            base_version=_get(doc, "", "base_version", int, None),
            shard_count=_get(doc, "", "shard_count", int, minimum=1),
            partition=_get(doc, "", "partition", str, PARTITION_FUNCTION),
            created_at=_get(doc, "", "created_at", float),
            tables={name: TableEntry.from_dict(_object(t, f"tables.{name}"), f"tables.{name}.")
                    for name, t in tables.items()},
            stream_topic=_get(doc, "", "stream_topic", str, None),
            stream_offsets=_offsets(doc.get("stream_offsets")))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)

    def offsets_on(self, topic: str) -> dict[int, int] | None:
        """The stream offsets this checkpoint includes of `topic` (None: none known, or
        they are another topic's, which say nothing about this one)."""
        return self.stream_offsets if self.stream_topic in (None, topic) else None

    def shard_bytes(self, shard: int) -> int:
        return sum(f.size for t in self.tables.values() for f in t.shards[shard].files.values())


def _offsets(value) -> dict[int, int] | None:
    """JSON keys are strings: partition numbers come back as "0", "1", ..."""
    if value is None:
        return None
    try:
        offsets = {int(k): v for k, v in value.items()}
    except (AttributeError, ValueError) as err:
        raise ValueError("stream_offsets: expected partition -> offset") from err
    _ints(list(offsets.values()), "stream_offsets")
    return offsets
