"""Real-time row deltas from a Kafka topic: the wire format and the consumer.

Wire format of one message (little-endian):
    magic "RCD1" | op u8 (1 upsert, 2 delete) | name_len u8 | dim u16 | count u32 |
    table name (utf-8) | ids int64[count] | values fp32[count * dim] (upsert only)
Kafka orders a partition, not a topic, so all deltas of an id must land on one partition.
Two topic layouts work:
- shard-partitioned (preferred): the topic has exactly `shard_count` partitions and
  partition p carries the ids of shard p (`encode_by_shard` splits a delta that way); each
  server reads only its shard's partition.
- any other partition count: producers key messages so that an id stays on one partition;
  each server reads every partition and keeps the ids of its shard.
There is no consumer group: replicas are interchangeable and each needs all its deltas.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import struct
import time
from dataclasses import dataclass

import numpy as np
from aiokafka import AIOKafkaConsumer, TopicPartition

from embedding.checkpoint import ShardData, quantize
from embedding.metrics import ServerMetrics
from embedding.partition import shard_of
from embedding.store import Overlay, ShardStore, Snapshot, Table, Version

log = logging.getLogger(__name__)

MAGIC = b"RCD1"
OP_UPSERT = 1
OP_DELETE = 2
_HEADER = struct.Struct("<4sBBHI")
# Above this many overlay rows a table's overlay is merged into its base arrays, so that
# copy-on-write of the overlay stays cheap.
COMPACT_ROWS = 1 << 18


class MalformedDelta(ValueError):
    pass


@dataclass
class Delta:
    table: str
    ids: np.ndarray
    values: np.ndarray | None  # None for deletes

    @property
    def dim(self) -> int:
        return 0 if self.values is None else self.values.shape[1]


def encode_upsert(table: str, ids: np.ndarray, values: np.ndarray) -> bytes:
    ids = np.ascontiguousarray(ids, dtype="<i8")
    values = np.ascontiguousarray(values, dtype="<f4")
    name = table.encode()
    return (_HEADER.pack(MAGIC, OP_UPSERT, len(name), values.shape[1], len(ids)) + name
            + ids.tobytes() + values.tobytes())


def encode_delete(table: str, ids: np.ndarray) -> bytes:
    ids = np.ascontiguousarray(ids, dtype="<i8")
    name = table.encode()
    return _HEADER.pack(MAGIC, OP_DELETE, len(name), 0, len(ids)) + name + ids.tobytes()


def encode_by_shard(table: str, ids: np.ndarray, values: np.ndarray | None,
                    shard_count: int) -> list[tuple[int, bytes]]:
    """Split an upsert (or, with values None, a delete) into one message per owning shard:
    [(partition, payload)] for a shard-partitioned topic."""
    ids = np.asarray(ids, dtype=np.int64)
    owner = shard_of(ids, shard_count)
    messages = []
    for shard in np.unique(owner).tolist():
        mine = owner == shard
        payload = (encode_delete(table, ids[mine]) if values is None
                   else encode_upsert(table, ids[mine], np.asarray(values)[mine]))
        messages.append((shard, payload))
    return messages


def decode(payload: bytes | None) -> Delta:
    """Parse one message; any deviation from the format raises MalformedDelta."""
    if payload is None or len(payload) < _HEADER.size:
        raise MalformedDelta("short message")
    magic, op, name_len, dim, count = _HEADER.unpack_from(payload)
    if magic != MAGIC:
        raise MalformedDelta("bad magic")
    if op not in (OP_UPSERT, OP_DELETE):
        raise MalformedDelta(f"unknown op {op}")
    ids_at = _HEADER.size + name_len
    values_at = ids_at + 8 * count
    expected = values_at + (4 * count * dim if op == OP_UPSERT else 0)
    if len(payload) != expected or (op == OP_UPSERT and dim == 0):
        raise MalformedDelta("size does not match header")
    try:
        table = payload[_HEADER.size:ids_at].decode()
    except UnicodeDecodeError as err:
        raise MalformedDelta("table name is not utf-8") from err
    ids = np.frombuffer(payload, "<i8", count, ids_at)
    if op == OP_DELETE:
        return Delta(table, ids, None)
    values = np.frombuffer(payload, "<f4", count * dim, values_at).reshape(count, dim)
    if not np.isfinite(values).all():
        raise MalformedDelta("non-finite values")
    return Delta(table, ids, values)


def apply_deltas(store: ShardStore, deltas: list[Delta]) -> None:
    """Apply deltas (in order) to every version that takes real-time updates.

    Each version gets one new snapshot per call: readers see all of this batch or none.
    """
    for version in store.realtime_targets():
        _apply_to_version(store, version, deltas)


def _apply_to_version(store: ShardStore, version: Version, deltas: list[Delta]) -> None:
    snap = version.snapshot
    by_table: dict[str, list[Delta]] = collections.defaultdict(list)
    for delta in deltas:
        table = snap.tables.get(delta.table)
        if table is not None and (delta.values is None or delta.dim == table.dim):
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
    version.snapshot = Snapshot(snap.version, tables, overlays)


def _compact(table: Table, overlay: Overlay) -> tuple[Table, Overlay]:
    """Fold an overlay into its table's base arrays (same version, new arrays)."""
    live = ~overlay.deleted
    stored, scales = quantize(overlay.values[live], table.dtype)
    merged = table.merged(ShardData(ids=overlay.ids[live], values=stored, scales=scales,
                                    deleted=overlay.ids[overlay.deleted]))
    return merged, Overlay.empty(table.dim)


class RealtimeConsumer:
    """Consumes the delta topic and applies batches in order, off the event loop."""

    def __init__(self, store: ShardStore, metrics: ServerMetrics, bootstrap: str, topic: str,
                 start: str = "latest"):
        self.store = store
        self.metrics = metrics
        self.bootstrap = bootstrap
        self.topic = topic
        self.start_from = start
        self.assigned = False
        self.lag = 0
        self.applied = 0
        self.malformed = 0
        self._next_offset: dict = {}
        self._freshness: collections.deque[float] = collections.deque(maxlen=10_000)

    def freshness_quantiles(self) -> tuple[float, float]:
        if not self._freshness:
            return 0.0, 0.0
        p50, p99 = np.percentile(np.fromiter(self._freshness, float), [50, 99])
        return float(p50), float(p99)

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
            auto_offset_reset=self.start_from, max_partition_fetch_bytes=8 << 20,
            # The broker answers a waiting fetch as soon as a delta arrives, so a long wait
            # costs no freshness and saves idle round trips on a busy machine.
            fetch_max_wait_ms=100,
        )
        await consumer.start()
        try:
            await self._assign(consumer)
            while True:
                batches = await consumer.getmany(timeout_ms=100, max_records=20_000)
                records = [r for tp in sorted(batches, key=lambda t: t.partition)
                           for r in batches[tp]]
                if records:
                    await asyncio.to_thread(self._apply, records)
                    for r in records:
                        self._next_offset[(r.topic, r.partition)] = r.offset + 1
                self._update_lag(consumer)
        finally:
            await consumer.stop()

    async def _assign(self, consumer: AIOKafkaConsumer) -> None:
        """Take this shard's partition of a shard-partitioned topic, else all partitions;
        wait for the topic to exist (the operator or a producer creates it)."""
        # Without a group, subscribing assigns every partition once the client's background
        # metadata refresh sees the topic; nothing is fetched until getmany.
        consumer.subscribe([self.topic])
        while not consumer.assignment():
            await asyncio.sleep(0.05)
        parts = sorted(consumer.assignment(), key=lambda tp: tp.partition)
        if len(parts) == self.store.shard_count:
            consumer.unsubscribe()
            parts = [TopicPartition(self.topic, self.store.shard_index)]
            consumer.assign(parts)
        # Resolving positions pins the start offset: deltas published after this are seen.
        for tp in parts:
            self._next_offset[(tp.topic, tp.partition)] = await consumer.position(tp)
        self.assigned = True
        log.info("real-time consumer assigned partitions %s of %s",
                 [p.partition for p in parts], self.topic)

    def _apply(self, records) -> None:
        deltas = []
        for record in records:
            try:
                deltas.append(decode(record.value))
            except MalformedDelta as err:
                self.malformed += 1
                self.metrics.realtime_malformed.inc()
                log.warning("skipping malformed delta at %s/%d@%d: %s", record.topic,
                            record.partition, record.offset, err)
        deltas = self._known(deltas)
        if deltas:
            apply_deltas(self.store, deltas)
        now_ms = time.time() * 1000.0
        for record in records:
            fresh = max(0.0, (now_ms - record.timestamp) / 1000.0)
            self._freshness.append(fresh)
            self.metrics.realtime_freshness.observe(fresh)
        self.applied += len(deltas)
        self.metrics.realtime_applied.inc(len(deltas))

    def _known(self, deltas: list[Delta]) -> list[Delta]:
        """Deltas for a table the active version lacks, or of the wrong dim, are malformed."""
        try:
            tables = self.store.snapshot().tables
        except LookupError:
            return deltas  # nothing active yet: ready versions still take them
        good = []
        for delta in deltas:
            table = tables.get(delta.table)
            if table is None or (delta.values is not None and delta.dim != table.dim):
                self.malformed += 1
                self.metrics.realtime_malformed.inc()
                continue
            good.append(delta)
        return good

    def _update_lag(self, consumer: AIOKafkaConsumer) -> None:
        lag = 0
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            nxt = self._next_offset.get((tp.topic, tp.partition))
            if high is not None and nxt is not None:
                lag += max(0, high - nxt)
        self.lag = lag
        self.metrics.realtime_lag.set(lag)
