"""Real-time deltas under faults, at the server level: a real Kafka broker feeds shard
server processes while a producer publishes upserts whose values are their sequence
numbers, so every row says which delta it last took and a lost delta shows as a stale row.

- A replica killed (SIGKILL) while deltas flow, restarted on the same ports and given the
  active version again, as the operator would: its checkpoint records the topic offsets it
  includes (as a trainer's would), so the replica replays from there and loses no delta;
  its peers lose none either.
- The broker killed and restarted on its own log dir while deltas are published: the
  consumers reconnect, the lag drains, and every acknowledged delta is applied.

No operator or API server is involved: these are properties of embedding/realtime.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
import uuid

import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from devstack import kafka as local_kafka
from devstack import minio as local_minio
from devstack.common import ManagedProcess
from devstack.shards import ShardProcess, start_shard
from e2e.reliability import Figures
from e2e.support import wait_for
from embedding.checkpoint import CheckpointWriter, StreamPosition
from embedding.client import EmbeddingClient
from embedding.partition import shard_of
from embedding.realtime import encode_by_shard

SHARDS = 2
ROWS = 5000
DIM = 8
HOT = 2000  # the deltas touch ids [0, HOT)
BUCKET = "recop-e2e-faults-stream"


class Producer:
    """Publishes one upsert of 20 random hot ids every `interval` s from its own thread
    and event loop; message k sets its rows to k. Keeps what the broker acknowledged."""

    def __init__(self, bootstrap: str, topic: str, interval: float = 0.02, seed: int = 1):
        self.bootstrap, self.topic, self.interval = bootstrap, topic, interval
        self.rng = np.random.default_rng(seed)
        self.sent: list[tuple[int, float, np.ndarray]] = []  # (k, wall time, ids)
        self.acked: set[int] = set()
        self.failed = 0
        self.paused = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()

    async def _run(self):
        # Idempotent: a retry after a broker restart neither duplicates nor reorders.
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=0,
                                    enable_idempotence=True, acks="all",
                                    request_timeout_ms=120_000)
        await producer.start()
        pending = []
        try:
            k = 0
            while not self._stop.is_set():
                if self.paused.is_set():
                    await asyncio.sleep(0.05)
                    continue
                k += 1
                ids = self.rng.choice(HOT, 20, replace=False).astype(np.int64)
                self.sent.append((k, time.time(), ids))
                for partition, payload in encode_by_shard(
                        "t", ids, np.full((len(ids), DIM), k, np.float32), SHARDS):
                    future = await producer.send(self.topic, payload, partition=partition)
                    pending.append((k, future))
                await asyncio.sleep(self.interval)
                pending = await self._settle(pending)
            for k, future in pending:
                await self._wait(k, future)
        finally:
            await producer.stop()

    async def _settle(self, pending):
        left = []
        for k, future in pending:
            if future.done():
                await self._wait(k, future)
            else:
                left.append((k, future))
        return left

    async def _wait(self, k, future):
        try:
            await future
            self.acked.add(k)
        except Exception:
            self.failed += 1

    def stop(self):
        self._stop.set()
        self._thread.join(180)

    def expected(self, base: float = 1.0, upto: float | None = None) -> np.ndarray:
        """Each row's value after every acknowledged message (sent before `upto`)."""
        out = np.full(ROWS, base, np.float32)
        for k, at, ids in self.sent:
            if k in self.acked and (upto is None or at <= upto):
                out[ids] = k
        return out

    def between(self, start: float, end: float) -> list[int]:
        return [k for k, at, _ in self.sent if start <= at <= end]


@pytest.fixture(scope="module")
def parts():
    s3 = local_minio.start()
    kafka = local_kafka.start()
    try:
        client = s3.client()
        client.create_bucket(Bucket=BUCKET)
        ids = np.arange(ROWS, dtype=np.int64)
        CheckpointWriter(client, f"s3://{BUCKET}/v1", SHARDS).write_full(
            1, {"t": (ids, np.ones((ROWS, DIM), np.float32))})
        yield s3, kafka
    finally:
        kafka.stop()
        s3.stop()


def new_topic(kafka) -> str:
    topic = f"deltas-{uuid.uuid4().hex[:8]}"
    asyncio.run(local_kafka.create_topic(kafka.bootstrap, topic, SHARDS))
    return topic


def end_offsets(kafka, topic: str) -> dict[int, int]:
    """The topic's next offset per partition: what a checkpoint taken now includes."""

    async def query():
        consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap)
        await consumer.start()
        try:
            ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(SHARDS)])
        finally:
            await consumer.stop()
        return {tp.partition: offset for tp, offset in ends.items()}

    return asyncio.run(query())


def checkpoint_at_stream(s3, kafka, topic: str) -> str:
    """Version 1 written as a trainer would: its rows with the topic offsets they include."""
    uri = f"s3://{BUCKET}/v1-{topic}"
    ids = np.arange(ROWS, dtype=np.int64)
    CheckpointWriter(s3.client(), uri, SHARDS).write_full(
        1, {"t": (ids, np.ones((ROWS, DIM), np.float32))},
        stream=StreamPosition(topic, end_offsets(kafka, topic)))
    return uri


def serve_v1(proc: ShardProcess, uri: str = f"s3://{BUCKET}/v1") -> None:
    proc.admin.load_full(1, uri)
    proc.admin.wait_ready(1, timeout=60)
    proc.admin.commit(1)


def rows_of(proc: ShardProcess, ids: np.ndarray) -> np.ndarray:
    """What this one replica serves for its own shard's ids (first column)."""
    shards = [[proc.lookup_address]] * SHARDS
    mine = ids[shard_of(ids, SHARDS) == proc.shard_index]
    with EmbeddingClient(shards, timeout=10) as client:
        return client.lookup({"t": mine}).values["t"][:, 0]


def drained(procs: list[ShardProcess]) -> bool:
    statuses = [p.admin.status() for p in procs]
    return all(s.realtime.assigned and s.realtime.lag == 0 for s in statuses)


_restarts: dict[str, dict] = {}


def restart_scenario(parts, start: str) -> dict:
    """Shard 0 has replicas A and B, shard 1 has C; A is killed while deltas flow,
    restarted with `--realtime-start start` and given version 1 (whose manifest records the
    topic's offsets) again."""
    if start in _restarts:
        return _restarts[start]
    s3, kafka = parts
    topic = new_topic(kafka)
    uri = checkpoint_at_stream(s3, kafka, topic)
    env = s3.env
    procs = [start_shard(0, SHARDS, env, kafka.bootstrap, topic),
             start_shard(0, SHARDS, env, kafka.bootstrap, topic),
             start_shard(1, SHARDS, env, kafka.bootstrap, topic)]
    a, b, c = procs
    producer = None
    try:
        for proc in procs:
            serve_v1(proc, uri)
        wait_for(lambda: all(p.admin.status().realtime.assigned for p in procs), timeout=60,
                 what="consumers assigned")
        producer = Producer(kafka.bootstrap, topic)
        time.sleep(3)
        killed_at = time.time()
        os.killpg(a.process.proc.pid, signal.SIGKILL)
        a.process.proc.wait()
        time.sleep(3)
        restarted_at = time.time()
        argv = [x for x in a.process.proc.args if not x.startswith("--realtime-start")]
        a.process = ManagedProcess(a.process.name, [*argv, f"--realtime-start={start}"],
                                   env=env)
        a.process.wait_listening(a.lookup_port, a.admin_port, timeout=60, what="restarted A")
        serve_v1(a, uri)
        reloaded_at = time.time()
        time.sleep(3)
        producer.stop()
        wait_for(lambda: drained(procs), timeout=120, what="lag drained")
        ids = np.arange(ROWS, dtype=np.int64)
        want = producer.expected()
        shard0 = ids[shard_of(ids, SHARDS) == 0]
        got_a, got_b, got_c = rows_of(a, ids), rows_of(b, ids), rows_of(c, ids)
        stale_a = shard0[got_a != want[shard0]]
        # Why each stale row is stale: its last delta came while A was down or reloading.
        last = {}
        for _, at, rows in producer.sent:
            for i in rows.tolist():
                last[i] = at
        result = {
            "messages_acked": len(producer.acked), "producer_failures": producer.failed,
            "messages_while_down": len(producer.between(killed_at, restarted_at)),
            "messages_while_reloading": len(producer.between(restarted_at, reloaded_at)),
            "rows_lost_on_restarted": len(stale_a),
            "rows_lost_on_peer": int((got_b != want[shard0]).sum()),
            "rows_lost_other_shard": int((got_c != want[ids[shard_of(ids, SHARDS) == 1]]).sum()),
            "stale_rows_last_touched_in_gap": sum(
                1 for i in stale_a.tolist() if killed_at <= last.get(i, 0) <= reloaded_at),
            "restart_to_serving_s": reloaded_at - restarted_at,
            "applied_by_restarted": a.admin.status().realtime.applied,
            "active": [p.admin.status().active_version for p in procs],
        }
        _restarts[start] = result
        return result
    finally:
        if producer is not None:
            producer.stop()
        for proc in procs:
            proc.stop()


@pytest.mark.parametrize("start", ["latest", "earliest"])
def test_replica_killed_during_realtime_updates(parts, start, record_property):
    figures = Figures(record_property,
                      f"SIGKILL one of shard 0's two replicas while 50 deltas/s flow; restart "
                      f"it 3 s later (--realtime-start {start}) and load the active version "
                      "into it again",
                      "all serve version 1; the surviving replica and the other shard lost "
                      "no delta; which deltas the restarted replica lost")
    result = restart_scenario(parts, start)
    figures.update(result)
    figures.note(
        f"restarted with --realtime-start {start}, the replica replayed its partition from "
        "the offsets v1's manifest records (stream_offsets) and lost "
        f"{result['rows_lost_on_restarted']} rows' latest deltas "
        f"({result['messages_while_down']} messages published while it was down, "
        f"{result['messages_while_reloading']} while it reloaded)")
    assert result["active"] == [1, 1, 1]
    assert result["producer_failures"] == 0
    assert result["rows_lost_on_peer"] == 0 and result["rows_lost_other_shard"] == 0


@pytest.mark.parametrize("start", ["latest", "earliest"])
def test_restarted_replica_loses_no_deltas(parts, start, record_property):
    """A replica restarted during real-time updates ends with the same rows as its peer.

    The consumer's start position decides only where versions without stream offsets
    begin; both are kept to show it no longer matters for one whose checkpoint names
    them: from `latest` the consumer seeks back to the checkpoint's offsets, from
    `earliest` it has read past them by the time the version is ready and seeks back too
    (the records it read while nothing was loaded were taken by no version)."""
    result = restart_scenario(parts, start)
    record_property("rows_lost_on_restarted", result["rows_lost_on_restarted"])
    assert result["rows_lost_on_restarted"] == 0


def test_broker_down_and_back(parts, record_property):
    figures = Figures(record_property,
                      "SIGKILL the Kafka broker while deltas are published; 10 s later restart "
                      "it on the same port and log dir",
                      "lookups keep working while it is down; consumers reconnect by "
                      "themselves, lag drains, every acknowledged delta is applied (counted "
                      "per row and per message)")
    s3, kafka = parts
    topic = new_topic(kafka)
    procs = [start_shard(s, SHARDS, s3.env, kafka.bootstrap, topic) for s in range(SHARDS)]
    producer = None
    try:
        for proc in procs:
            serve_v1(proc)
        wait_for(lambda: all(p.admin.status().realtime.assigned for p in procs), timeout=60,
                 what="consumers assigned")
        producer = Producer(kafka.bootstrap, topic)
        time.sleep(3)
        argv = kafka.process.proc.args
        os.killpg(kafka.process.proc.pid, signal.SIGKILL)
        kafka.process.proc.wait()
        down_at = time.monotonic()
        ok = failed = 0
        ids = np.arange(ROWS, dtype=np.int64)
        with EmbeddingClient([[p.lookup_address] for p in procs], timeout=10) as client:
            while time.monotonic() - down_at < 10:
                try:
                    client.lookup({"t": ids[:500]})
                    ok += 1
                except Exception:
                    failed += 1
                time.sleep(0.05)
        kafka.process = ManagedProcess("kafka", list(argv))
        kafka.process.wait_listening(kafka.port, timeout=120, what="kafka restarted")
        back_at = time.monotonic()
        time.sleep(2)
        producer.stop()
        wait_for(lambda: drained(procs), timeout=180, what="lag drained after the restart")
        figures["reconnect_and_drain_s"] = time.monotonic() - back_at - 2
        figures["broker_down_s"] = back_at - down_at
        want = producer.expected()
        got = np.concatenate([rows_of(p, ids) for p in procs])
        mine = np.concatenate([ids[shard_of(ids, SHARDS) == p.shard_index] for p in procs])
        applied = sum(p.admin.status().realtime.applied for p in procs)
        published = sum(len(encode_by_shard("t", rows, None, SHARDS))
                        for k, _, rows in producer.sent if k in producer.acked)
        figures.update({"lookups_ok_while_down": ok, "lookups_failed_while_down": failed,
                        "messages_sent": len(producer.sent),
                        "messages_acked": len(producer.acked),
                        "producer_failures": producer.failed,
                        "deltas_published": published, "deltas_applied": applied,
                        "rows_lost": int((got != want[mine]).sum())})
        assert failed == 0
        assert producer.failed == 0 and len(producer.acked) == len(producer.sent)
        assert applied == published
        assert (got == want[mine]).all()
    finally:
        if producer is not None:
            producer.stop()
        for proc in procs:
            with contextlib.suppress(Exception):
                proc.stop()
