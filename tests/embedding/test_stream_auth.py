"""SASL credentials for the delta stream: a real broker that takes only SASL PLAIN clients,
and embedding server processes given the credentials through the environment, as the
operator's Deployment gives them (from a Secret)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest
from aiokafka import AIOKafkaProducer

from devstack import kafka as local_kafka
from devstack.common import ManagedProcess, free_port, remove_state
from devstack.shards import start_shard
from embedding.checkpoint import CheckpointWriter
from embedding.client import EmbeddingClient
from embedding.realtime import encode_upsert

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

USER = "recop-emb"
PASSWORD = f"pw-{uuid.uuid4().hex}"
DIM = 4


@pytest.fixture(scope="module")
def sasl_kafka():
    handle = local_kafka.start(plain_users={USER: PASSWORD})
    try:
        yield handle
    finally:
        handle.stop()


def server_env(password: str) -> dict[str, str]:
    return {"RECOP_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "RECOP_KAFKA_SASL_MECHANISM": "PLAIN",
            "RECOP_KAFKA_USERNAME": USER, "RECOP_KAFKA_PASSWORD": password}


CLIENT_AUTH = {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN",
               "sasl_plain_username": USER, "sasl_plain_password": PASSWORD}


async def new_topic(bootstrap: str) -> str:
    topic = f"deltas-{uuid.uuid4().hex[:8]}"
    await local_kafka.create_topic(bootstrap, topic, 1, **CLIENT_AUTH)
    return topic


async def wait_for(predicate, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await asyncio.to_thread(predicate):
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{what} not met within {timeout}s")


async def test_a_server_with_the_credentials_applies_deltas(s3, sasl_kafka):
    topic = await new_topic(sasl_kafka.bootstrap)
    server = await asyncio.to_thread(start_shard, 0, 1, {**s3.env, **server_env(PASSWORD)},
                                     sasl_kafka.bootstrap, topic)
    client = EmbeddingClient([[server.lookup_address]])
    try:
        ids = np.arange(100, dtype=np.int64)
        uri = s3.uri("stream-auth")
        CheckpointWriter(s3.client, uri, 1).write_full(
            1, {"t": (ids, np.ones((100, DIM), np.float32))})
        server.admin.load_full(1, uri)
        await asyncio.to_thread(server.admin.wait_ready, 1)
        server.admin.commit(1)
        await wait_for(lambda: server.admin.status().realtime.assigned, what="assigned")
        producer = AIOKafkaProducer(bootstrap_servers=sasl_kafka.bootstrap, **CLIENT_AUTH)
        await producer.start()
        try:
            await producer.send_and_wait(topic, encode_upsert("t", ids[:3],
                                                              np.full((3, DIM), 5.0)))
        finally:
            await producer.stop()
        await wait_for(lambda: (client.lookup({"t": ids[:3]}).values["t"] == 5.0).all(),
                       what="delta applied")
        log = server.process.log_path.read_text()
        assert f"PLAIN as '{USER}'" in log
        assert PASSWORD not in log
    finally:
        client.close()
        await asyncio.to_thread(server.stop)


async def test_a_wrong_password_ends_the_server_without_logging_it(sasl_kafka):
    """A refused login ends the process (in a cluster: a crash-looping pod, whose log
    names the refusal), as an unreachable broker does; nothing is ever applied."""
    topic = await new_topic(sasl_kafka.bootstrap)
    wrong = f"wrong-{uuid.uuid4().hex}"
    name = f"embedding-wrong-{uuid.uuid4().hex[:6]}"
    process = ManagedProcess(name, [
        sys.executable, "-m", "embedding.server", "--lookup-port", str(free_port()),
        "--admin-port", str(free_port()), "--kafka-bootstrap", sasl_kafka.bootstrap,
        "--topic", topic], env=server_env(wrong))
    try:
        code = await asyncio.to_thread(process.proc.wait, 30)
        log = process.log_path.read_text()
    except subprocess.TimeoutExpired:
        pytest.fail(f"the server kept running with a wrong password:\n{process.log_tail()}")
    finally:
        process.stop()
        remove_state(name)
    assert code != 0
    assert "Authentication failed" in log
    assert wrong not in log and PASSWORD not in log
