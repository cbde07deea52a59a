"""Stream positions: every version that takes deltas remembers, per partition, the next
offset it has not absorbed, and takes a record only at or past it. A version loaded from a
checkpoint that names the offsets it includes starts there; when that is behind what the
consumer (embedding/realtime.py) has fetched, the consumer seeks back and replays, and
versions already past a replayed record skip it. So a replica restarted (or a version
loaded) mid-stream ends with every delta published since its checkpoint, and no row of a
version ever goes back.
"""

from __future__ import annotations

import collections
import dataclasses
import typing
from dataclasses import dataclass

import numpy as np

from embedding.checkpoint import ShardData, quantize
from embedding.partition import shard_of
from embedding.store import Overlay, ShardStore, Table, Version

if typing.TYPE_CHECKING:
    from embedding.realtime import Delta

# Above this many overlay rows a table's overlay is merged into its base arrays, so that
# copy-on-write of the overlay stays cheap.
COMPACT_ROWS = 1 << 18


@dataclass(frozen=True)
class Entry:
    """One record of the topic: where it sits and its delta (None when malformed, which
    still moves positions past it)."""

    partition: int
    offset: int
    delta: Delta | None


Position = dict[int, int]  # partition -> next offset not yet absorbed


def taken(position: Position, fetched_from: Position, entries: list[Entry]) -> list[Entry]:
    """The records of a batch read from `fetched_from` that a version at `position` absorbs:
    those at or past its position, on partitions where it is not behind the batch's start
    (there it lacks records before the batch, and waits for their replay)."""
    return [e for e in entries
            if fetched_from.get(e.partition, 0) <= position.get(e.partition, 0) <= e.offset]


def advanced(position: Position, entries: list[Entry]) -> Position:
    """The position past `entries`; it never moves back."""
    out = dict(position)
    for entry in entries:
        out[entry.partition] = max(out.get(entry.partition, 0), entry.offset + 1)
    return out


def adopted(position: Position | None, fetch: Position) -> Position:
    """A version's position on every partition read: where it names none, the consumer's
    (it takes deltas from now on, as a version loaded without stream offsets does)."""
    return {**fetch, **(position or {})}


def rewind_to(fetch: Position, positions: list[Position]) -> Position:
    """Partitions the consumer must seek back on, and to where: the oldest offset some
    version has yet to absorb, where that is behind the consumer's fetch position."""
    out = {}
    for partition, at in fetch.items():
        oldest = min((p[partition] for p in positions if partition in p), default=at)
        if oldest < at:
            out[partition] = oldest
    return out


def apply_records(store: ShardStore, entries: list[Entry],
                  fetched_from: Position) -> set[tuple[int, int]]:
    """Apply a batch (in order; read from offsets `fetched_from`) to every version that
    takes real-time updates, each the records it has yet to absorb (`taken`); returns
    (partition, offset) of the records that some version absorbed. A version new to the
    stream (no position yet) starts at the batch.

    Each version gets one new snapshot per call: readers see all of its part or none.
    """
    absorbed = set()
    for version in store.realtime_targets():
        position = adopted(version.stream_offsets, fetched_from)
        mine = taken(position, fetched_from, entries)
        deltas = [e for e in mine if e.delta is not None]
        _apply_to_version(store, version, [e.delta for e in deltas])
        version.stream_offsets = advanced(position, mine)
        absorbed.update((e.partition, e.offset) for e in deltas)
    return absorbed


def _apply_to_version(store: ShardStore, version: Version, deltas: list[Delta]) -> None:
    snap = version.snapshot
    by_table: dict[str, list[Delta]] = collections.defaultdict(list)
    for delta in deltas:
        if fits(snap.tables, delta):
            by_table[delta.table].append(delta)
    if not by_table:
        return
    tables = dict(snap.tables)
    overlays = dict(snap.overlays)
    for name, items in by_table.items():
        dim = tables[name].dim
        ids = np.concatenate([d.ids for d in items])
        values = np.concatenate([d.values if d.values is not None
                                 else np.zeros((len(d.ids), dim), np.float32) for d in items])
        deleted = np.concatenate([np.full(len(d.ids), d.values is None) for d in items])
        mine = shard_of(ids, store.shard_count) == store.shard_index
        if not mine.any():
            continue
        overlay = overlays[name].updated(ids[mine], values[mine], deleted[mine])
        if len(overlay.ids) > COMPACT_ROWS:
            tables[name], overlay = _compact(tables[name], overlay)
        overlays[name] = overlay
    version.snapshot = dataclasses.replace(snap, tables=tables, overlays=overlays)


def fits(tables: dict[str, Table], delta: Delta) -> bool:
    table = tables.get(delta.table)
    return table is not None and (delta.values is None or delta.dim == table.dim)


def _compact(table: Table, overlay: Overlay) -> tuple[Table, Overlay]:
    """Fold an overlay into its table's base arrays (same version, new arrays)."""
    live = ~overlay.deleted
    stored = quantize(overlay.values[live], table.dtype)
    merged = table.merged(ShardData(ids=overlay.ids[live], values=stored.values,
                                    scales=stored.scales, deleted=overlay.ids[overlay.deleted],
                                    bias=stored.bias))
    return merged, Overlay.empty(table.dim)
