"""Real-time deltas through a real Kafka broker into shard server processes."""

from __future__ import annotations

import asyncio
import time
import uuid

import numpy as np
import pytest
from aiokafka import AIOKafkaProducer

from devstack import kafka as local_kafka
from devstack.shards import LocalCluster
from embedding.checkpoint import CheckpointWriter
from embedding.client import EmbeddingClient
from embedding.realtime import encode_by_shard, encode_upsert

# The fixtures run on the session loop (pyproject), so the tests must too.
pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

DIM = 8


async def wait_for(predicate, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await asyncio.to_thread(predicate):
            return
        await asyncio.sleep(0.02)
    raise TimeoutError(f"{what} not met within {timeout}s")


@pytest.fixture
async def realtime_cluster(s3, kafka, request):
    """Two shards reading a topic with `request.param` partitions (default 2: one per
    shard, the shard-partitioned layout; another count makes every server read all)."""
    topic = f"deltas-{uuid.uuid4().hex[:8]}"
    partitions = getattr(request, "param", 2)
    await local_kafka.create_topic(kafka.bootstrap, topic, partitions)
    cluster = await asyncio.to_thread(LocalCluster, 2, 1, s3.env, kafka.bootstrap, topic)
    try:
        ids = np.arange(1000, dtype=np.int64)
        uri = s3.uri("realtime")
        CheckpointWriter(s3.client, uri, 2).write_full(
            1, {"t": (ids, np.ones((1000, DIM), np.float32))})
        await asyncio.to_thread(cluster.prepare_full, 1, uri)
        await asyncio.to_thread(cluster.commit, 1)
        for a in cluster.admins():
            await wait_for(lambda a=a: a.status().realtime.assigned, what="consumer assigned")
        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, linger_ms=0)
        await producer.start()
        try:
            yield cluster, producer, topic
        finally:
            await producer.stop()
    finally:
        await asyncio.to_thread(cluster.stop)


async def test_deltas_become_visible_in_order(realtime_cluster):
    cluster, producer, topic = realtime_cluster
    client = EmbeddingClient(cluster.lookup_addresses)
    ids = np.array([3, 4, 5000], dtype=np.int64)  # 5000 is a new id
    # Each shard's partition is applied in publish order: the last value wins.
    for value in (2.0, 3.0, 4.0):
        for partition, payload in encode_by_shard("t", ids, np.full((3, DIM), value), 2):
            await producer.send(topic, payload, partition=partition)
    await producer.flush()

    def visible():
        got = client.lookup({"t": ids})
        return got.version == 1 and (got.values["t"] == 4.0).all()

    await wait_for(visible, what="upserts visible")
    for partition, payload in encode_by_shard("t", ids[:1], None, 2):
        await producer.send_and_wait(topic, payload, partition=partition)
    await wait_for(lambda: (client.lookup({"t": ids[:1]}).values["t"] == 0).all(),
                   what="delete visible")
    statuses = [a.status() for a in cluster.admins()]
    assert sum(s.realtime.applied for s in statuses) >= 7  # 3 x 2 shards' upserts + delete
    assert all(s.realtime.lag == 0 for s in statuses)
    assert any(s.versions[0].tables[0].overlay_rows > 0 for s in statuses)
    assert all(s.realtime.freshness_p99_seconds > 0 for s in statuses)
    client.close()


@pytest.mark.parametrize("realtime_cluster", [1], indirect=True)
async def test_malformed_deltas_are_counted_and_skipped(realtime_cluster):
    """One partition for two shards: both servers read everything, keyed for order."""
    cluster, producer, topic = realtime_cluster
    client = EmbeddingClient(cluster.lookup_addresses)
    ids = np.arange(10, dtype=np.int64)
    bad = [
        b"garbage",
        encode_upsert("t", ids, np.full((10, DIM), 9.0))[:-3],  # truncated
        encode_upsert("t", ids, np.full((10, DIM + 1), 9.0)),  # wrong dim
        encode_upsert("nope", ids, np.full((10, DIM), 9.0)),  # unknown table
        encode_upsert("t", ids, np.full((10, DIM), np.nan)),  # non-finite
    ]
    for payload in bad:
        await producer.send(topic, payload, key=b"k")
    await producer.send(topic, encode_upsert("t", ids, np.full((10, DIM), 7.0)), key=b"k")
    await producer.flush()
    await wait_for(lambda: (client.lookup({"t": ids}).values["t"] == 7.0).all(),
                   what="good delta after bad ones")
    # Every replica counts every bad message; no row was touched by them.
    for admin in cluster.admins():
        assert admin.status().realtime.malformed == len(bad)
    others = np.arange(10, 1000, dtype=np.int64)
    assert (client.lookup({"t": others}).values["t"] == 1.0).all()
    client.close()
