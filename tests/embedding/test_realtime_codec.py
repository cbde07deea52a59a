"""Unit tests of the real-time delta wire format and its application to a shard."""

import contextlib
import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from embedding import stream_positions
from embedding.partition import shard_of
from embedding.realtime import MalformedDelta, decode, encode_delete, encode_upsert
from embedding.store import ShardStore, Table
from embedding.stream_positions import Entry, apply_records

_offsets = itertools.count()


def apply_deltas(store: ShardStore, deltas: list) -> None:
    """The deltas as the next records of one partition."""
    entries = [Entry(0, next(_offsets), d) for d in deltas]
    apply_records(store, entries, {0: entries[0].offset})


def test_roundtrip():
    ids = np.array([3, -4], np.int64)
    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    delta = decode(encode_upsert("user", ids, values))
    assert delta.table == "user" and delta.ids.tolist() == [3, -4]
    np.testing.assert_array_equal(delta.values, values)
    gone = decode(encode_delete("user", ids))
    assert gone.values is None and gone.ids.tolist() == [3, -4]


@pytest.mark.parametrize("payload", [
    None, b"", b"XXXX" + bytes(20),
    encode_upsert("t", np.array([1]), np.ones((1, 2)))[:-1],
    encode_upsert("t", np.array([1]), np.ones((1, 2))) + b"x",
    encode_upsert("t", np.array([1]), np.array([[np.nan, 1.0]])),
    b"RCD1" + bytes([9]) + bytes(8),
])
def test_malformed(payload):
    with pytest.raises(MalformedDelta):
        decode(payload)


@given(st.binary(max_size=200))
def test_random_bytes_never_crash(payload):
    with contextlib.suppress(MalformedDelta):
        decode(payload)


def test_apply_keeps_only_own_shard_ids():
    store = ShardStore(shard_index=1, shard_count=2)
    ids = np.arange(100, dtype=np.int64)
    mine = ids[shard_of(ids, 2) == 1]
    v = store.begin(1, "s3://b/v1")
    store.finish(v, {"t": Table("t", 2, "fp32", mine, np.zeros((len(mine), 2), np.float32))})
    store.activate(1)
    apply_deltas(store, [decode(encode_upsert("t", ids, np.ones((100, 2))))])
    overlay = store.snapshot().overlays["t"]
    assert overlay.ids.tolist() == mine.tolist()


def test_overlay_is_compacted_into_the_base(monkeypatch):
    monkeypatch.setattr(stream_positions, "COMPACT_ROWS", 4)
    store = ShardStore(shard_index=0, shard_count=1)
    v = store.begin(1, "s3://b/v1")
    store.finish(v, {"t": Table("t", 2, "fp32", np.arange(10), np.zeros((10, 2), np.float32))})
    store.activate(1)
    apply_deltas(store, [decode(encode_upsert("t", np.array([1, 2, 3]), np.ones((3, 2))))])
    assert len(store.snapshot().overlays["t"].ids) == 3  # under the limit: still an overlay
    apply_deltas(store, [decode(encode_upsert("t", np.array([20, 21]), np.full((2, 2), 2.0))),
                         decode(encode_delete("t", np.array([5])))])
    snap = store.snapshot()
    assert len(snap.overlays["t"].ids) == 0
    out = np.empty((4, 2), np.float32)
    assert snap.lookup("t", np.array([1, 5, 21, 9]), out) == 1
    assert out.tolist() == [[1, 1], [0, 0], [2, 2], [0, 0]]
    assert 5 not in snap.tables["t"].ids
