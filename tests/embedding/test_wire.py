"""The lookup wire on real server processes: compact rows (fp16, int8) dequantised by the
client, int4 storage end to end, and bad input answered with INVALID_ARGUMENT and a
message for users (fuzzed), never UNKNOWN or a Python class name."""

from __future__ import annotations

import re

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devstack.shards import LocalCluster
from embedding.checkpoint import CheckpointWriter
from embedding.client import LOOKUP_METHOD, EmbeddingClient
from embedding.proto import GRPC_OPTIONS
from embedding.proto import embedding_pb2 as pb

pytestmark = pytest.mark.integration

ROWS, DIM = 4000, 16
INTERNAL_NAME = re.compile(r"\b\w*(Error|Exception)\b|Traceback|DecodeError")


@pytest.fixture(scope="module")
def served(s3):
    uri = s3.uri("wire")
    rng = np.random.default_rng(11)
    ids = np.arange(ROWS, dtype=np.int64) * 7
    values = rng.standard_normal((ROWS, DIM)).astype(np.float32)
    CheckpointWriter(s3.client, uri, 2).write_full(
        1, {"f": (ids, values), "q": (ids, values)}, dtypes={"q": "int4"})
    cluster = LocalCluster(2, env=s3.env)
    try:
        cluster.prepare_full(1, uri)
        cluster.commit(1)
        with EmbeddingClient(cluster.lookup_addresses) as client:
            yield cluster, client, ids, values
    finally:
        cluster.stop()


@pytest.mark.parametrize(("wire", "rtol"), [("fp16", 1e-3), ("int8", 1 / 127)])
def test_compact_rows_on_the_wire_are_dequantised_by_the_client(served, wire, rtol):
    _, client, ids, _ = served
    query = np.concatenate([ids[::-3], [1, 2]])  # 1 and 2 are no ids
    exact = client.lookup({"f": query})
    got = client.lookup({"f": query}, wire_dtype=wire)
    assert got.version == exact.version == 1 and got.missing == exact.missing == {"f": 2}
    assert got.values["f"].dtype == np.float32
    bound = rtol * np.abs(exact.values["f"]).max(axis=1, keepdims=True) + 1e-7
    assert (np.abs(got.values["f"] - exact.values["f"]) <= bound).all()
    assert (got.values["f"][-2:] == 0).all()


def test_int4_table_served_within_its_bound(served):
    _, client, ids, values = served
    got = client.lookup({"q": ids[:500]}).values["q"]
    span = values[:500].max(axis=1) - values[:500].min(axis=1)
    assert (np.abs(got - values[:500]).max(axis=1) <= span / 30 + 1e-5).all()


def test_unknown_wire_dtype_is_refused_by_the_client(served):
    _, client, ids, _ = served
    with pytest.raises(ValueError, match="wire_dtype"):
        client.lookup({"f": ids[:3]}, wire_dtype="bf16")


def _raw_call(cluster, payload: bytes):
    with grpc.insecure_channel(cluster.processes[0].lookup_address,
                               options=GRPC_OPTIONS) as channel:
        return channel.unary_unary(LOOKUP_METHOD)(payload, timeout=10)


def test_bytes_that_are_no_protobuf_get_invalid_argument(served):
    cluster = served[0]
    with pytest.raises(grpc.RpcError) as err:
        _raw_call(cluster, b"\xff\xff\xff\xff")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid recop.embedding.v1.LookupRequest" in err.value.details()
    assert not INTERNAL_NAME.search(err.value.details())


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.binary(max_size=64), st.builds(
    lambda table, ids, version, wire: pb.LookupRequest(
        tables=[pb.TableIds(table=table, ids=ids)], version=version,
        wire_dtype=wire).SerializeToString(),
    st.sampled_from(["f", "q", "nope", ""]), st.binary(max_size=40),
    st.integers(0, 3), st.integers(0, 5))))
def test_fuzzed_lookups_get_a_status_for_users(served, payload):
    try:
        raw = _raw_call(served[0], payload)
    except grpc.RpcError as err:
        assert err.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)
        assert not INTERNAL_NAME.search(err.details()), err.details()
    else:
        assert pb.LookupResponse.FromString(raw).version == 1


@pytest.mark.parametrize("uri", ["file:///tmp/checkpoint", "/tmp/checkpoint", "s3://",
                                 "https://bucket.example/x"])
def test_load_full_refuses_a_uri_that_is_not_s3_in_the_call(served, uri):
    admin = served[0].admins()[0]
    with pytest.raises(grpc.RpcError) as err:
        admin.load_full(9, uri)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not an s3:// uri" in err.value.details()
    assert admin.version(9) is None  # nothing was started
