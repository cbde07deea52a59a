"""The native hot path (embedding/native.py over native/): hash index, replies written in
place for every storage x wire dtype, client routing and scatter, int4's error bound, and
memory per row. Fuzzed where inputs come from outside."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf.message import DecodeError
from hypothesis import given, settings
from hypothesis import strategies as st

from embedding import native
from embedding.checkpoint import STORAGE_DTYPES, dequantize, quantize
from embedding.partition import shard_of
from embedding.proto import embedding_pb2 as pb
from embedding.store import Overlay, Snapshot, Table

ids64 = st.integers(-2**63, 2**63 - 1)


@settings(max_examples=80, deadline=None)
@given(st.sets(ids64, max_size=200), st.lists(ids64, max_size=100))
def test_index_finds_every_id_and_only_those(keys, extra):
    ids = np.array(sorted(keys), np.int64)
    index = native.Index(ids)
    query = np.array(list(keys)[:50] + extra, np.int64)
    pos, missing = index.positions(query)
    where = {k: i for i, k in enumerate(ids.tolist())}
    assert pos.tolist() == [where.get(q, -1) for q in query.tolist()]
    assert missing == sum(q not in where for q in query.tolist())
    assert index.nbytes <= 4 * (len(ids) / 0.7 + 1) + 4


def test_index_refuses_duplicates():
    with pytest.raises(ValueError, match="appears twice"):
        native.Index(np.array([1, 2, 2], np.int64))


@settings(max_examples=60, deadline=None)
@given(st.lists(ids64, max_size=300), st.integers(1, 9))
def test_route_is_the_partition_function(ids, shards):
    ids = np.array(ids, np.int64)
    order, starts, packed = native.route(ids, shards)
    owner = shard_of(ids, shards)
    for s in range(shards):
        expected = np.flatnonzero(owner == s)  # request order within a shard
        assert order[starts[s]:starts[s + 1]].tolist() == expected.tolist()
        assert packed[s] == ids[expected].astype("<i8").tobytes()


def _table(dtype: str, n: int = 300, dim: int = 7, seed: int = 0):
    rng = np.random.default_rng(seed)
    ids = np.sort(rng.choice(1 << 40, n, replace=False)).astype(np.int64)
    values = (rng.standard_normal((n, dim)) * 3).astype(np.float32)
    stored = quantize(values, dtype)
    table = Table("t", dim, dtype, ids, stored.values, stored.scales, stored.bias)
    reference = np.empty_like(values)
    dequantize(stored.values, stored.scales, reference, stored.bias)
    return table, ids, reference


@pytest.mark.parametrize("dtype", ["fp32", "fp16", "int8", "int4"])
@pytest.mark.parametrize("wire", ["fp32", "fp16", "int8"])
def test_reply_rows_match_the_stored_rows_for_every_wire_dtype(dtype, wire):
    table, ids, reference = _table(dtype)
    rng = np.random.default_rng(1)
    pick = rng.integers(0, len(ids), 500)
    query = np.concatenate([ids[pick], [7, -1]])  # two absent ids
    snap = Snapshot(3, {"t": table}, {"t": _empty_overlay(table.dim)})
    code = native.STORAGE_CODES[wire]
    raw = snap.reply([("t", query)], code).data
    parsed = native.parse_reply(raw)
    assert (parsed.version, parsed.wire, parsed.tables[0].missing) == (3, code, 2)
    out = np.full((len(query), table.dim), np.nan, np.float32)
    native.scatter_rows(out, np.arange(len(query)), raw, parsed, 0)
    expected = np.concatenate([reference[pick], np.zeros((2, table.dim), np.float32)])
    if wire == "fp32":
        np.testing.assert_array_equal(out, expected)  # bit for bit, dequantised once
    elif wire == "fp16":
        np.testing.assert_array_equal(out, expected.astype(np.float16).astype(np.float32))
    else:  # int8 on the wire: within half a step of max |row| / 127
        bound = np.abs(expected).max(axis=1, keepdims=True) / 127 / 2 * 1.0001 + 1e-7
        assert (np.abs(out - expected) <= bound).all()
    # The bytes are a valid serialised LookupResponse for any protobuf reader.
    message = pb.LookupResponse.FromString(raw)
    assert message.version == 3 and len(message.values) == parsed.values_len


def _empty_overlay(dim):
    return Overlay.empty(dim)


def test_two_tables_in_one_reply_keep_request_order():
    a, a_ids, a_ref = _table("fp32", dim=3, seed=2)
    b, b_ids, b_ref = _table("int8", dim=5, seed=3)
    b = Table("u", b.dim, b.dtype, b.ids, b.values, b.scales)
    snap = Snapshot(1, {"t": a, "u": b}, {"t": _empty_overlay(3), "u": _empty_overlay(5)})
    raw = snap.reply([("t", a_ids[::-1]), ("u", b_ids[:4])], native.FP16).data
    parsed = native.parse_reply(raw)
    out_a = np.empty((len(a_ids), 3), np.float32)
    out_b = np.empty((4, 5), np.float32)
    native.scatter_rows(out_a, np.arange(len(a_ids)), raw, parsed, 0)
    native.scatter_rows(out_b, np.arange(4), raw, parsed, 1)
    np.testing.assert_allclose(out_a, a_ref[::-1], rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(out_b, b_ref[:4], rtol=1e-3, atol=1e-3)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 40), st.integers(1, 20), st.floats(1e-3, 1e4), st.integers(0, 2**32 - 1))
def test_int4_error_bound(dim, rows, spread, seed):
    """Documented in embedding/checkpoint.py: |x - x'| <= (max(row) - min(row)) / 30."""
    values = np.random.default_rng(seed).uniform(-spread, spread, (rows, dim)).astype(np.float32)
    stored = quantize(values, "int4")
    assert stored.values.shape == (rows, (dim + 1) // 2)
    assert stored.values.dtype == STORAGE_DTYPES["int4"]
    out = np.empty_like(values)
    dequantize(stored.values, stored.scales, out, stored.bias)
    span = values.max(axis=1) - values.min(axis=1)
    # fp32 rounding of q * scale + bias: a few ulps of the row's magnitude.
    slack = 4 * np.finfo(np.float32).eps * np.abs(values).max(axis=1)
    assert (np.abs(out - values).max(axis=1) <= span / 30 + slack).all()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_reply_bytes_never_crash_the_parser(raw):
    try:
        reply = native.parse_reply(raw)
    except (native.MalformedReply, DecodeError):
        return
    out = np.empty((sum(t.rows for t in reply.tables), 1), np.float32)
    for i, t in enumerate(reply.tables):
        if t.dim == 1 and t.rows <= len(out):
            native.scatter_rows(out, np.arange(t.rows), raw, reply, i)


def test_scatter_refuses_indexes_outside_the_result():
    table, ids, _ = _table("fp32", dim=2)
    snap = Snapshot(1, {"t": table}, {"t": _empty_overlay(2)})
    raw = snap.reply([("t", ids[:3])], native.FP32).data
    with pytest.raises(ValueError, match="outside the result"):
        native.scatter_rows(np.empty((3, 2), np.float32), np.array([0, 1, 3]), raw,
                            native.parse_reply(raw), 0)


@pytest.mark.parametrize(("dtype", "ceiling"),
                         [("fp32", 1.15), ("fp16", 1.15), ("int8", 1.15), ("int4", 1.15)])
def test_serving_memory_within_the_checkpoint_bytes(dtype, ceiling):
    """Index included: ids + rows + per-row scale/bias are the checkpoint's own bytes."""
    table, _, _ = _table(dtype, n=100_000, dim=64)
    checkpoint = sum(a.nbytes for a in (table.ids, table.values, table.scales, table.bias)
                     if a is not None)
    assert table.nbytes <= ceiling * checkpoint
