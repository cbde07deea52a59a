"""Real-time updates through a real Kafka broker, driven and watched by the operator.

Embedding server processes read the RecModel's topic (one partition per shard) on top of
the active full version; a realtime ModelVersion reports the stream's lag, applied and
malformed counts and freshness in its status, and turns Degraded (with an Event) when
malformed messages flood the stream, then healthy again when they stop. Deltas published
long before they land break the RecModel's freshness objective: the model turns Degraded
for its window, and healthy again once fresh deltas flow.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import numpy as np
import pytest
from aiokafka import AIOKafkaProducer

from devstack import kafka as local_kafka
from devstack import minio as local_minio
from devstack.external import external_model, s3_secret, shard_slice
from devstack.shards import LocalCluster
from e2e.support import OperatorProcess, get_json, wait_for
from embedding.checkpoint import CheckpointWriter
from embedding.client import EmbeddingClient
from embedding.realtime import encode_by_shard

NS = "e2e-realtime"
BUCKET = "recop-e2e-rt"
SHARDS = 2
DIM = 8
# The realtime version looks every 5 s: a 5 s window breaches on its second look.
OBJECTIVE = {"p99": "2s", "window": "5s"}


def apply(cluster, obj: dict) -> None:
    cluster.kubectl("apply", "--server-side", "--field-manager=e2e", "-f", "-",
                    input=json.dumps(obj))


def produce(bootstrap: str, topic: str, messages: list[tuple[int, bytes]],
            published_ms: int | None = None) -> None:
    """Send `messages`; `published_ms` backdates their publish time (Kafka's CreateTime),
    which is what freshness is measured from."""
    async def send():
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
        await producer.start()
        try:
            for partition, payload in messages:
                await producer.send(topic, payload, partition=partition,
                                    timestamp_ms=published_ms)
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(send())


@pytest.fixture(scope="module")
def stream(cluster):
    cluster.kubectl("delete", "namespace", NS, "--wait=true", "--ignore-not-found",
                    timeout=180)
    cluster.kubectl("create", "namespace", NS)
    s3 = local_minio.start()
    kafka = local_kafka.start()
    servers = operator = None
    try:
        topic = f"deltas-{uuid.uuid4().hex[:8]}"
        asyncio.run(local_kafka.create_topic(kafka.bootstrap, topic, SHARDS))
        client = s3.client()
        client.create_bucket(Bucket=BUCKET)
        ids = np.arange(1000, dtype=np.int64)
        CheckpointWriter(client, f"s3://{BUCKET}/v1", SHARDS).write_full(
            1, {"user": (ids, np.ones((1000, DIM), np.float32))})
        servers = LocalCluster(SHARDS, env=s3.env, kafka_bootstrap=kafka.bootstrap,
                               topic=topic)
        apply(cluster, s3_secret(NS, s3.access_key, s3.secret_key))
        apply(cluster, external_model(
            NS, "feed", [{"name": "user", "dimension": DIM, "rows": 1000}], SHARDS, BUCKET,
            s3.endpoint, stream={"brokers": [kafka.bootstrap], "topic": topic,
                                 "freshnessObjective": OBJECTIVE}))
        for proc in servers.processes:
            apply(cluster, shard_slice(NS, "feed", proc.shard_index, {
                "lookup": proc.lookup_port, "admin": proc.admin_port}))
        operator = OperatorProcess(cluster.kubeconfig, NS)
        yield cluster, servers, kafka, topic
    finally:
        if operator is not None:
            operator.stop()
        if servers is not None:
            servers.stop()
        kafka.stop()
        s3.stop()
        cluster.kubectl("delete", "namespace", NS, "--wait=false")


def status(cluster, name: str) -> dict:
    return get_json(cluster, "-n", NS, "modelversion", name).get("status", {})


def degraded(cluster, name: str) -> dict:
    return next((c for c in status(cluster, name).get("conditions", [])
                 if c["type"] == "Degraded"), {})


def test_realtime_deltas_land_and_the_stream_is_reported(stream):
    cluster, servers, kafka, topic = stream
    apply(cluster, {"apiVersion": "serving.recop.dev/v1alpha1", "kind": "ModelVersion",
                    "metadata": {"name": "v1", "namespace": NS},
                    "spec": {"model": "feed", "kind": "full", "source": f"s3://{BUCKET}/v1"}})
    wait_for(lambda: status(cluster, "v1").get("verifiedAt"), timeout=60, what="v1 Active")
    apply(cluster, {"apiVersion": "serving.recop.dev/v1alpha1", "kind": "ModelVersion",
                    "metadata": {"name": "v1-live", "namespace": NS},
                    "spec": {"model": "feed", "kind": "realtime", "baseVersion": "v1"}})
    wait_for(lambda: status(cluster, "v1-live").get("phase") == "Active", timeout=30,
             what="the realtime version Active")
    ids = np.arange(0, 1000, 7, dtype=np.int64)
    with EmbeddingClient(servers.lookup_addresses) as client:
        sent = time.monotonic()
        produce(kafka.bootstrap, topic,
                encode_by_shard("user", ids, np.full((len(ids), DIM), 5.0), SHARDS))
        wait_for(lambda: (client.lookup({"user": ids}).values["user"] == 5.0).all(),
                 timeout=30, interval=0.01, what="the deltas visible to lookups")
        print(f"produce to visible through the operator-configured stream: "
              f"{(time.monotonic() - sent) * 1000:.0f} ms")
        result = client.lookup({"user": ids})
    assert result.version == 1  # real-time rows land on the active version
    report = wait_for(lambda: (status(cluster, "v1-live").get("realtime") or {}).get(
        "applied", 0) >= SHARDS and status(cluster, "v1-live")["realtime"], timeout=30,
        what="the stream reported in status")
    print(f"stream in status: {report}")
    assert report["lag"] == 0 and report["malformed"] == 0
    assert degraded(cluster, "v1-live").get("status") == "False"


def test_a_malformed_flood_sets_degraded_and_clears_when_it_stops(stream):
    cluster, servers, kafka, topic = stream
    produce(kafka.bootstrap, topic, [(i % SHARDS, b"not a delta %d" % i) for i in range(200)])
    condition = wait_for(lambda: degraded(cluster, "v1-live").get("status") == "True"
                         and degraded(cluster, "v1-live"), timeout=60,
                         what="Degraded after a malformed flood")
    assert condition["reason"] == "StreamUnhealthy" and "malformed" in condition["message"]
    events = get_json(cluster, "-n", NS, "events", "--field-selector",
                      "involvedObject.name=v1-live")["items"]
    assert any(e["reason"] == "StreamUnhealthy" and e["type"] == "Warning" for e in events)
    ids = np.arange(1, 1000, 11, dtype=np.int64)
    produce(kafka.bootstrap, topic,
            encode_by_shard("user", ids, np.full((len(ids), DIM), 6.0), SHARDS))
    wait_for(lambda: degraded(cluster, "v1-live").get("status") == "False", timeout=60,
             what="healthy again once only good deltas flow")
    assert sum(p.admin.status().realtime.malformed for p in servers.processes) == 200


def model_status(cluster) -> dict:
    return get_json(cluster, "-n", NS, "recmodel", "feed").get("status", {})


def model_degraded(cluster) -> dict:
    return next((c for c in model_status(cluster).get("conditions", [])
                 if c["type"] == "Degraded"), {})


def test_stale_deltas_break_the_freshness_objective_and_it_recovers(stream):
    cluster, _, kafka, topic = stream
    wait_for(lambda: model_status(cluster).get("freshness"), timeout=30,
             what="freshness reported on the RecModel")
    assert model_degraded(cluster).get("status") == "False", model_status(cluster)
    ids = np.arange(2, 1000, 13, dtype=np.int64)
    produce(kafka.bootstrap, topic,
            encode_by_shard("user", ids, np.full((len(ids), DIM), 7.0), SHARDS),
            published_ms=int(time.time() * 1000) - 20_000)
    condition = wait_for(lambda: model_degraded(cluster).get("status") == "True"
                         and model_degraded(cluster), timeout=60,
                         what="the RecModel Degraded for its freshness")
    assert condition["reason"] == "FreshnessObjectiveBreached", condition
    freshness = model_status(cluster)["freshness"]
    print(f"freshness in the RecModel's status: {freshness}")
    assert freshness["breached"] and freshness["p99Seconds"] >= 19
    assert freshness["objectiveP99Seconds"] == 2 and freshness["version"] == "v1-live"
    assert model_status(cluster)["phase"] == "Degraded"
    assert degraded(cluster, "v1-live")["reason"] == "FreshnessObjectiveBreached"
    warnings = {(e["involvedObject"]["kind"], e["reason"]) for e in get_json(
        cluster, "-n", NS, "events")["items"] if e["type"] == "Warning"}
    assert {("RecModel", "Degraded"),
            ("ModelVersion", "FreshnessObjectiveBreached")} <= warnings, warnings
    # The stale deltas age out of what the replicas report; fresh ones keep flowing.
    deadline = time.monotonic() + 90
    while model_degraded(cluster).get("status") != "False":
        assert time.monotonic() < deadline, model_status(cluster)
        produce(kafka.bootstrap, topic,
                encode_by_shard("user", ids, np.full((len(ids), DIM), 8.0), SHARDS))
        time.sleep(2)
    assert not model_status(cluster)["freshness"]["breached"]
    assert model_status(cluster)["phase"] == "Ready"
