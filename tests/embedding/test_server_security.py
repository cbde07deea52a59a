"""The embedding server's health service, admin token and admin TLS, on real server
processes (and a real MinIO for the version that makes them ready)."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devstack.shards import AdminClient, LocalAdminAuth, LocalCluster
from embedding.admin_channel import admin_stub
from embedding.checkpoint import CheckpointWriter
from embedding.config import LIVENESS_HEALTH_SERVICE, LOOKUP_HEALTH_SERVICE
from embedding.proto import embedding_pb2 as pb
from tests.certs import self_signed

pytestmark = pytest.mark.integration

TOKEN = "s3cr3t-admin-token-for-tests"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_NAME = "ranker-emb-0.models.svc"


def health_of(address: str, service: str) -> int:
    with grpc.insecure_channel(address) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5).status


@pytest.fixture(scope="module")
def checkpoint(s3):
    uri = s3.uri("security")
    ids = np.arange(100, dtype=np.int64)
    CheckpointWriter(s3.client, uri, 1).write_full(1, {"t": (ids, np.ones((100, 4)))})
    return uri


@pytest.fixture(scope="module")
def guarded(s3):
    cluster = LocalCluster(1, env=s3.env, auth=LocalAdminAuth(token=TOKEN))
    yield cluster.processes[0]
    cluster.stop()


def test_health_follows_the_active_version_and_liveness_always_serves(guarded, checkpoint):
    lookup = guarded.lookup_address
    # Nothing loaded: not ready (lookups would fail), but alive (no restart for it).
    assert health_of(lookup, "") == NOT_SERVING
    assert health_of(lookup, LOOKUP_HEALTH_SERVICE) == NOT_SERVING
    assert health_of(lookup, LIVENESS_HEALTH_SERVICE) == SERVING
    guarded.admin.load_full(1, checkpoint)
    guarded.admin.wait_ready(1, timeout=60)
    assert health_of(lookup, LOOKUP_HEALTH_SERVICE) == NOT_SERVING  # loaded, not yet committed
    guarded.admin.commit(1)
    assert health_of(lookup, "") == SERVING
    assert health_of(lookup, LOOKUP_HEALTH_SERVICE) == SERVING
    assert health_of(lookup, LIVENESS_HEALTH_SERVICE) == SERVING
    with pytest.raises(grpc.RpcError) as err:
        health_of(lookup, "no.such.Service")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_admin_calls_need_the_token(guarded):
    address = f"127.0.0.1:{guarded.admin_port}"
    for token, says in ((None, "missing `authorization: Bearer <token>`"),
                        ("wrong-token", "wrong bearer token")):
        client = AdminClient(address, token)
        try:
            with pytest.raises(grpc.RpcError) as err:
                client.status()
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert says in err.value.details()
            with pytest.raises(grpc.RpcError) as err:
                client.commit(1)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        finally:
            client.close()
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary("/recop.embedding.v1.EmbeddingAdmin/Status",
                                   request_serializer=pb.StatusRequest.SerializeToString,
                                   response_deserializer=pb.StatusReply.FromString)
        with pytest.raises(grpc.RpcError) as err:
            call(pb.StatusRequest(), metadata=(("authorization", f"Basic {TOKEN}"),))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert call(pb.StatusRequest(), metadata=(("authorization", f"bearer {TOKEN}"),))
    assert guarded.admin.status().shard_count == 1
    # The token is never logged, refused or accepted.
    log = guarded.process.log_path.read_text()
    assert "refused admin call" in log and TOKEN not in log and "wrong-token" not in log


def test_a_rotated_token_takes_effect_without_a_restart(s3):
    cluster = LocalCluster(1, env=s3.env, auth=LocalAdminAuth(token="first"))
    try:
        proc = cluster.processes[0]
        (proc.process.dir / "admin-token").write_text("second\n")
        address = f"127.0.0.1:{proc.admin_port}"
        with pytest.raises(grpc.RpcError) as err:
            proc.admin.status()
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        rotated = AdminClient(address, "second")
        assert rotated.status().shard_count == 1
        rotated.close()
    finally:
        cluster.stop()


def test_a_server_without_its_token_file_refuses_to_start(s3, tmp_path):
    from devstack.shards import start_shard

    with pytest.raises(RuntimeError, match="admin token"):
        start_shard(0, 1, env=s3.env, timeout=15,
                    extra=("--admin-token-file", str(tmp_path / "absent")))


async def test_tls_admin_port_with_the_operators_channel(s3):
    # Valid for loopback (what the sync helper checks) and for a shard Service's name.
    cert, key = self_signed("127.0.0.1", SERVICE_NAME)
    cluster = LocalCluster(1, env=s3.env,
                           auth=LocalAdminAuth(token=TOKEN, tls_cert=cert, tls_key=key))
    try:
        proc = cluster.processes[0]
        address = f"127.0.0.1:{proc.admin_port}"
        assert proc.admin.status().shard_count == 1  # the sync helper, over TLS
        stub = admin_stub(address, token=TOKEN, ca_pem=cert)
        reply = await stub.Status(pb.StatusRequest(), timeout=10)
        assert reply.shard_count == 1 and reply.active_version == 0
        # The token alone is not enough without TLS, nor TLS without the token.
        for wrong, code in ((admin_stub(address, token=TOKEN), grpc.StatusCode.UNAVAILABLE),
                            (admin_stub(address, ca_pem=cert), grpc.StatusCode.UNAUTHENTICATED)):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await wrong.Status(pb.StatusRequest(), timeout=10)
            assert err.value.code() == code
            await wrong.channel.close()
        # Another CA's certificate, or a name the certificate does not hold, is refused:
        # the server is checked against `server_name` when given, not the address.
        other, _ = self_signed("127.0.0.1", SERVICE_NAME)
        by_name = admin_stub(address, token=TOKEN, ca_pem=cert, server_name=SERVICE_NAME)
        assert (await by_name.Status(pb.StatusRequest(), timeout=10)).shard_count == 1
        for stranger in (admin_stub(address, token=TOKEN, ca_pem=other),
                         admin_stub(address, token=TOKEN, ca_pem=cert,
                                    server_name="ranker-emb-1.models.svc")):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stranger.Status(pb.StatusRequest(), timeout=10)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            await stranger.channel.close()
        await stub.channel.close()
        await by_name.channel.close()
        # The lookup port stays plaintext and open: clients need no credentials.
        assert health_of(proc.lookup_address, LIVENESS_HEALTH_SERVICE) == SERVING
    finally:
        cluster.stop()


async def test_operator_channel_sends_the_token_in_plaintext_too(guarded):
    stub = admin_stub(f"127.0.0.1:{guarded.admin_port}", token=TOKEN)
    assert (await stub.Status(pb.StatusRequest(), timeout=10)).shard_count == 1
    await stub.channel.close()
