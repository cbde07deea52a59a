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

Stream positions (what each version has absorbed): embedding/stream_positions.py.
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
from aiokafka.helpers import create_ssl_context

from embedding.config import StreamAuth
from embedding.metrics import ServerMetrics
from embedding.partition import shard_of
from embedding.store import ShardStore, Version
from embedding.stream_positions import (
    Entry,
    Position,
    adopted,
    advanced,
    apply_records,
    fits,
    rewind_to,
)

log = logging.getLogger(__name__)

MAGIC = b"RCD1"
OP_UPSERT = 1
OP_DELETE = 2
_HEADER = struct.Struct("<4sBBHI")


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


def _sasl_options(auth: StreamAuth) -> dict:
    # SASL_SSL verifies the brokers against the system CAs.
    tls = create_ssl_context() if auth.security_protocol == "SASL_SSL" else None
    return {"security_protocol": auth.security_protocol, "ssl_context": tls,
            "sasl_mechanism": auth.mechanism, "sasl_plain_username": auth.username,
            "sasl_plain_password": auth.password}


# A replica reports freshness over the deltas it applied this recently, so a burst of
# late deltas ages out instead of holding the p99 up until thousands of newer ones came.
FRESHNESS_SPAN_SECONDS = 30.0


class RecentFreshness:
    """Publish-to-visible times of the deltas applied in the last `span` seconds."""

    def __init__(self, span: float = FRESHNESS_SPAN_SECONDS, limit: int = 10_000) -> None:
        self.span = span
        self._samples: collections.deque[tuple[float, float]] = collections.deque(
            maxlen=limit)

    def add(self, seconds: float, now: float | None = None) -> None:
        self._samples.append((time.monotonic() if now is None else now, seconds))

    def quantiles(self, now: float | None = None) -> tuple[float, float]:
        """(p50, p99) of the recent deltas; (0, 0) when none arrived recently."""
        horizon = (time.monotonic() if now is None else now) - self.span
        while self._samples and self._samples[0][0] < horizon:
            self._samples.popleft()
        if not self._samples:
            return 0.0, 0.0
        p50, p99 = np.percentile(np.fromiter((s for _, s in self._samples), float), [50, 99])
        return float(p50), float(p99)


class RealtimeConsumer:
    """Consumes the delta topic and applies batches in order, off the event loop."""

    def __init__(self, store: ShardStore, metrics: ServerMetrics, bootstrap: str, topic: str,
                 start: str = "latest", auth: StreamAuth | None = None):
        self.store = store
        self.metrics = metrics
        self.bootstrap = bootstrap
        self.topic = topic
        self.start_from = start
        self.auth = auth
        self.assigned = False
        self.lag = 0
        self.applied = 0
        self.malformed = 0
        self._fetch: Position = {}  # next offset handed to the store
        # Past these, a record is new to this process: replays neither recount nor re-log.
        self._seen: Position = {}
        self._counted: Position = {}
        self.freshness = RecentFreshness()

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
            # An offset Kafka no longer holds (retention) resumes at the oldest it holds,
            # which loses the fewest deltas; `start` is applied explicitly in _assign.
            auto_offset_reset="earliest", max_partition_fetch_bytes=8 << 20,
            # The broker answers a waiting fetch as soon as a delta arrives, so a long wait
            # costs no freshness and saves idle round trips on a busy machine.
            fetch_max_wait_ms=100,
            **(_sasl_options(self.auth) if self.auth else {}),
        )
        log.info("real-time consumer: %s, %s", self.bootstrap,
                 self.auth.describe() if self.auth else "PLAINTEXT")
        await consumer.start()
        try:
            await self._assign(consumer)
            while True:
                await self._catch_up(consumer)
                batches = await consumer.getmany(timeout_ms=100, max_records=20_000)
                records = [r for tp in sorted(batches, key=lambda t: t.partition)
                           for r in batches[tp]]
                if records:
                    await asyncio.to_thread(self._apply, records)
                    for r in records:
                        self._fetch[r.partition] = r.offset + 1
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
        if self.start_from == "latest":
            await consumer.seek_to_end(*parts)
        # Resolving positions pins the start offset: deltas published after this are seen.
        for tp in parts:
            self._fetch[tp.partition] = await consumer.position(tp)
        self.assigned = True
        log.info("real-time consumer assigned partitions %s of %s",
                 [p.partition for p in parts], self.topic)

    async def _catch_up(self, consumer: AIOKafkaConsumer) -> None:
        """Give versions new to the stream the consumer's position, and seek back where a
        version (loaded from a checkpoint with stream offsets) is behind it."""
        targets = self.store.realtime_targets()
        for version in targets:
            version.stream_offsets = adopted(version.stream_offsets, self._fetch)
        wanted = rewind_to(self._fetch, [v.stream_offsets for v in targets])
        if not wanted:
            return
        held = await consumer.beginning_offsets([self._tp(p) for p in wanted])
        for partition, offset in wanted.items():
            oldest = held[self._tp(partition)]
            if offset < oldest:
                self._expired(targets, partition, offset, oldest)
                offset = oldest
            if offset < self._fetch[partition]:
                log.info("replaying partition %d of %s from offset %d (fetched up to %d)",
                         partition, self.topic, offset, self._fetch[partition])
                consumer.seek(self._tp(partition), offset)
                self._fetch[partition] = offset

    def _expired(self, targets: list[Version], partition: int, offset: int,
                 oldest: int) -> None:
        log.warning("partition %d of %s: offset %d is no longer held (oldest %d); the "
                    "deltas between are lost to the versions that needed them", partition,
                    self.topic, offset, oldest)
        self.metrics.realtime_offsets_expired.inc()
        # Raised to what Kafka holds, so that they do not ask for the lost offsets again.
        for version in targets:
            position = version.stream_offsets
            version.stream_offsets = {**position, partition: max(position[partition], oldest)}

    def _tp(self, partition: int) -> TopicPartition:
        return TopicPartition(self.topic, partition)

    def _apply(self, records) -> None:
        entries = self._known([Entry(r.partition, r.offset, self._decode(r)) for r in records])
        absorbed = apply_records(self.store, entries, dict(self._fetch))
        new = [e for e in entries if (e.partition, e.offset) in absorbed
               and e.offset >= self._counted.get(e.partition, 0)]
        self._seen = advanced(self._seen, entries)
        self._counted = advanced(self._counted, new)
        counted = {(e.partition, e.offset) for e in new}
        now_ms = time.time() * 1000.0
        for record in records:
            if (record.partition, record.offset) in counted:
                fresh = max(0.0, (now_ms - record.timestamp) / 1000.0)
                self.freshness.add(fresh)
                self.metrics.realtime_freshness.observe(fresh)
        self.applied += len(new)
        self.metrics.realtime_applied.inc(len(new))

    def _first_seen(self, partition: int, offset: int) -> bool:
        return offset >= self._seen.get(partition, 0)

    def _malformed(self) -> None:
        self.malformed += 1
        self.metrics.realtime_malformed.inc()

    def _decode(self, record) -> Delta | None:
        try:
            return decode(record.value)
        except MalformedDelta as err:
            if self._first_seen(record.partition, record.offset):
                self._malformed()
                log.warning("skipping malformed delta at %s/%d@%d: %s", record.topic,
                            record.partition, record.offset, err)
            return None

    def _known(self, entries: list[Entry]) -> list[Entry]:
        """Deltas for a table the active version lacks, or of the wrong dim, are malformed."""
        try:
            tables = self.store.snapshot().tables
        except LookupError:
            return entries  # nothing active yet: ready versions still take them
        out = []
        for entry in entries:
            if entry.delta is not None and not fits(tables, entry.delta):
                if self._first_seen(entry.partition, entry.offset):
                    self._malformed()
                entry = Entry(entry.partition, entry.offset, None)
            out.append(entry)
        return out

    def _update_lag(self, consumer: AIOKafkaConsumer) -> None:
        """Deltas published that some version taking deltas has not absorbed."""
        positions = [v.stream_offsets for v in self.store.realtime_targets()
                     if v.stream_offsets is not None]
        needed = {**self._fetch, **rewind_to(self._fetch, positions)}
        lag = 0
        for partition, at in needed.items():
            high = consumer.highwater(self._tp(partition))
            if high is not None:
                lag += max(0, high - at)
        self.lag = lag
        self.metrics.realtime_lag.set(lag)
