"""Unit tests of the partition function, quantisation and the versioned shard store."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embedding.checkpoint import ShardData, dequantize, quantize
from embedding.partition import shard_of
from embedding.store import Overlay, ShardStore, Snapshot, StateError, Table, VersionError


def make_table(ids, dim=4, dtype="fp32", seed=0):
    ids = np.sort(np.asarray(ids, np.int64))
    values = np.random.default_rng(seed).standard_normal((len(ids), dim)).astype(np.float32)
    stored, scales, _ = quantize(values, dtype)
    return Table("t", dim, dtype, ids, stored, scales), dict(zip(ids.tolist(), values, strict=True))


def test_partition_is_stable_and_even():
    # Pinned values: changing the function would silently re-shard every checkpoint.
    assert shard_of(np.array([0, 1, -1, 2**62, 12345]), 7).tolist() == [2, 2, 0, 4, 5]
    counts = np.bincount(shard_of(np.arange(100_000), 4), minlength=4)
    assert counts.min() > 24_000


def _splitmix64_reference(x: int) -> int:
    """The documented function in plain Python integers (docs/checkpoint-format.md)."""
    m = (1 << 64) - 1
    z = (x + 0x9E3779B97F4A7C15) & m
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    return z ^ (z >> 31)


@given(st.lists(st.integers(-2**63, 2**63 - 1), max_size=50), st.integers(1, 64))
def test_partition_matches_reference(ids, n):
    shards = shard_of(np.array(ids, dtype=np.int64), n)
    assert shards.tolist() == [_splitmix64_reference(i & ((1 << 64) - 1)) % n for i in ids]


@pytest.mark.parametrize(("dtype", "tol"), [("fp32", 0), ("fp16", 1e-2), ("int8", 2e-2)])
def test_quantize_roundtrip(dtype, tol):
    values = np.random.default_rng(1).standard_normal((100, 16)).astype(np.float32)
    values[3] = 0.0  # an all-zero row must not divide by zero
    stored, scales, _ = quantize(values, dtype)
    out = np.empty_like(values)
    dequantize(stored, scales, out)
    assert np.abs(out - values).max() <= tol * np.abs(values).max() + 1e-6


@pytest.mark.parametrize("dtype", ["fp32", "fp16", "int8"])
def test_gather_in_order_with_zero_default(dtype):
    table, ref = make_table([5, 1, 9, 3], dtype=dtype)
    query = np.array([9, 2, 5, 5, 100, -7], np.int64)
    out = np.full((len(query), 4), np.nan, np.float32)
    found = table.gather(query, out)
    assert found.tolist() == [True, False, True, True, False, False]
    np.testing.assert_allclose(out[0], ref[9], atol=0.05)
    np.testing.assert_allclose(out[2], ref[5], atol=0.05)
    assert (out[[1, 4, 5]] == 0).all()


def test_gather_empty_table():
    table = Table("t", 3, "fp32", np.zeros(0, np.int64), np.zeros((0, 3), np.float32))
    out = np.ones((2, 3), np.float32)
    assert not table.gather(np.array([1, 2]), out).any()
    assert (out == 0).all()


@settings(max_examples=60, deadline=None)
@given(base=st.sets(st.integers(-1000, 1000), max_size=60),
       upsert=st.sets(st.integers(-1000, 1000), max_size=30),
       delete=st.sets(st.integers(-1000, 1000), max_size=30))
def test_incremental_merge_matches_dict_model(base, upsert, delete):
    delete = delete - upsert
    table, ref = make_table(sorted(base))
    up_ids = np.array(sorted(upsert), np.int64)
    up_values = np.random.default_rng(2).standard_normal((len(up_ids), 4)).astype(np.float32)
    merged = table.merged(ShardData(up_ids, up_values, None, np.array(sorted(delete), np.int64)))
    expected = {k: v for k, v in ref.items() if k not in delete}
    expected.update(zip(up_ids.tolist(), up_values, strict=True))
    assert merged.ids.tolist() == sorted(expected)
    for i, k in enumerate(merged.ids.tolist()):
        np.testing.assert_array_equal(merged.values[i], expected[k])
    # The base is immutable: readers of the old version are unaffected.
    assert table.ids.tolist() == sorted(base)


@pytest.mark.parametrize("dtype", ["fp32", "int8"])
def test_incremental_changing_only_existing_rows_shares_ids(dtype):
    table, ref = make_table([2, 4, 6, 8], dtype=dtype)
    new = np.array([[9.0, 9.0, 9.0, 9.0], [1.0, 2.0, 3.0, 4.0]], np.float32)
    stored, scales, _ = quantize(new, dtype)
    merged = table.merged(ShardData(np.array([4, 8]), stored, scales, None))
    assert merged.ids is table.ids  # shared, not copied
    out = np.empty((4, 4), np.float32)
    merged.gather(np.array([2, 4, 6, 8]), out)
    np.testing.assert_allclose(out[[1, 3]], new, atol=0.05)
    np.testing.assert_allclose(out[[0, 2]], [ref[2], ref[6]], atol=0.05)
    table.gather(np.array([4]), out[:1])
    np.testing.assert_allclose(out[0], ref[4], atol=0.05)  # the base is untouched


def test_overlay_later_delta_wins_and_deletes():
    overlay = Overlay.empty(2)
    overlay = overlay.updated(np.array([1, 2, 1]), np.array([[1, 1], [2, 2], [3, 3]], np.float32),
                              np.zeros(3, bool))
    overlay = overlay.updated(np.array([2]), np.zeros((1, 2), np.float32), np.array([True]))
    table, _ = make_table([1, 2, 3], dim=2)
    snap = Snapshot(1, {"t": table}, {"t": overlay})
    out = np.empty((3, 2), np.float32)
    assert snap.lookup("t", np.array([1, 2, 3]), out) == 1
    assert out[0].tolist() == [3, 3]
    assert out[1].tolist() == [0, 0]


def test_version_lifecycle():
    store = ShardStore(0, 1)
    with pytest.raises(VersionError):
        store.snapshot()
    v1 = store.begin(1, "s3://b/v1")
    with pytest.raises(VersionError):
        store.snapshot(1)  # still loading
    table, _ = make_table([1, 2])
    store.finish(v1, {"t": table})
    assert store.activate(1) == 0
    v2 = store.begin(2, "s3://b/v2")
    with pytest.raises(StateError):
        store.begin(2, "s3://b/v2")
    store.finish(v2, {"t": table})
    assert store.snapshot().version == 1
    assert store.snapshot(2).version == 2  # pinned read of a ready version
    store.activate(2)
    assert store.snapshot().version == 2 and store.snapshot(1).version == 1
    with pytest.raises(StateError):
        store.drop(2)
    store.activate(1)  # rollback
    store.drop(2)
    with pytest.raises(VersionError):
        store.snapshot(2)
    assert [v.number for v in store.realtime_targets()] == [1]
