"""Oversized lookups on a real server process: refused with an error that names the limit
and how to change it, and the server keeps serving."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from devstack.shards import LocalCluster
from embedding.checkpoint import CheckpointWriter
from embedding.proto import GRPC_OPTIONS
from embedding.proto import embedding_pb2 as pb
from embedding.proto import embedding_pb2_grpc as rpc
from embedding.server import parse_args

pytestmark = pytest.mark.integration

MAX_IDS = 1000
MAX_BYTES = 1 << 16


@pytest.fixture(scope="module")
def stub(s3):
    uri = s3.uri("limits")
    ids = np.arange(5000, dtype=np.int64)
    CheckpointWriter(s3.client, uri, 1).write_full(1, {"t": (ids, np.ones((5000, 8)))})
    cluster = LocalCluster(1, env=s3.env, extra=("--max-ids", str(MAX_IDS),
                                                 "--max-request-bytes", str(MAX_BYTES)))
    try:
        cluster.prepare_full(1, uri)
        cluster.commit(1)
        with grpc.insecure_channel(cluster.processes[0].lookup_address,
                                   options=GRPC_OPTIONS) as channel:
            yield rpc.EmbeddingLookupStub(channel)
    finally:
        cluster.stop()


def request(*counts: int) -> pb.LookupRequest:
    return pb.LookupRequest(tables=[pb.TableIds(table="t", ids=np.arange(n).tobytes())
                                    for n in counts])


def test_at_the_limit_is_served(stub):
    reply = stub.Lookup(request(600, 400), timeout=10)
    assert sum(t.rows for t in reply.tables) == MAX_IDS


def test_too_many_ids_is_refused_naming_the_limit_and_the_knob(stub):
    # Over several tables: the limit counts ids of the whole request.
    with pytest.raises(grpc.RpcError) as err:
        stub.Lookup(request(600, 401), timeout=10)
    # INVALID_ARGUMENT: the same on every replica, so clients do not fail over.
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = err.value.details()
    assert "1001 ids" in details and "limit of 1000" in details
    assert "maxIdsPerRequest" in details and "--max-ids" in details


def test_a_message_over_the_size_limit_is_refused_before_it_is_read(stub):
    with pytest.raises(grpc.RpcError) as err:
        stub.Lookup(request(3 * MAX_BYTES // 8), timeout=10)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # gRPC's own words: "SERVER: Received message larger than max (196619 vs. 65536)".
    assert str(MAX_BYTES) in err.value.details()


def test_the_server_still_serves_after_refusals(stub):
    assert stub.Lookup(request(5), timeout=10).version == 1


@pytest.mark.parametrize("argv", [
    ["--max-ids", "0"],
    ["--max-ids", "10000", "--max-request-bytes", "65536"],  # cannot hold 10000 ids
    ["--max-request-bytes", str(2 << 30)],
])
def test_inconsistent_limits_are_refused_at_start(argv, capsys):
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert "lookup limits" in capsys.readouterr().err
