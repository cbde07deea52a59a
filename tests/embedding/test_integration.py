"""Integration tests: shard server processes, a real MinIO and a real Kafka broker."""

from __future__ import annotations

import threading
import time
import urllib.request

import grpc
import numpy as np
import pytest

from devstack.shards import LocalCluster
from embedding.checkpoint import (
    CheckpointWriter,
    ChecksumError,
    ShardReader,
    read_manifest,
    split_uri,
)
from embedding.client import EmbeddingClient, NoHealthyReplica
from embedding.partition import shard_of

pytestmark = pytest.mark.integration


def rows(ids: np.ndarray, dim: int, version: int) -> np.ndarray:
    """Row values that encode (version, id): a mixed-version read cannot go unnoticed."""
    return (version * 1000.0 + (ids[:, None] % 997) + np.arange(dim) / 100.0).astype(np.float32)


@pytest.fixture
def cluster(s3):
    clusters = []

    def make(shards=2, replicas=1, **kw):
        c = LocalCluster(shards, replicas, env=s3.env, **kw)
        clusters.append(c)
        return c

    yield make
    for c in clusters:
        c.stop()


def test_checkpoint_roundtrip_and_checksum(s3):
    uri = s3.uri("roundtrip")
    ids = np.arange(0, 5000, 3, dtype=np.int64)
    CheckpointWriter(s3.client, uri, shard_count=3).write_full(
        1, {"items": (ids, rows(ids, 8, 1))}, dtypes={"items": "fp16"})
    manifest = read_manifest(s3.client, uri)
    assert manifest.tables["items"].rows == len(ids)
    assert sum(s.rows for s in manifest.tables["items"].shards) == len(ids)
    for shard in range(3):
        data = ShardReader(s3.client, uri, manifest, shard).read_all()["items"]
        assert (shard_of(data.ids, 3) == shard).all() and (np.diff(data.ids) > 0).all()
        np.testing.assert_allclose(data.values.astype(np.float32), rows(data.ids, 8, 1),
                                   rtol=1e-3)
    # Corrupt one byte of one file: the reader must refuse it.
    bucket, prefix = split_uri(uri)
    key = prefix + manifest.tables["items"].shards[0].files["values"].key
    body = bytearray(s3.client.get_object(Bucket=bucket, Key=key)["Body"].read())
    body[7] ^= 0xFF
    s3.client.put_object(Bucket=bucket, Key=key, Body=bytes(body))
    with pytest.raises(ChecksumError):
        ShardReader(s3.client, uri, manifest, 0).read_all()


def test_full_incremental_commit_rollback_drop(s3, cluster):
    c = cluster(shards=2)
    ids = np.arange(1, 20_001, dtype=np.int64) * 7
    users = np.arange(500, dtype=np.int64)
    v1 = s3.uri("v1")
    CheckpointWriter(s3.client, v1, 2).write_full(
        1, {"items": (ids, rows(ids, 16, 1)), "users": (users, rows(users, 4, 1))},
        dtypes={"users": "int8"})
    c.prepare_full(1, v1, dense=5)
    c.commit(1)
    query = np.array([7, 3, 140_000, 14, -5, 7], dtype=np.int64)  # repeats and misses
    with EmbeddingClient(c.lookup_addresses) as client:
        got = client.lookup({"items": query, "users": users[::-1]})
        assert got.version == 1 and got.missing == {"items": 2, "users": 0}
        assert got.dense_version == 5  # the pairing the operator named at load
        np.testing.assert_array_equal(got.values["items"][[0, 2, 3, 5]],
                                      rows(query[[0, 2, 3, 5]], 16, 1))
        assert (got.values["items"][[1, 4]] == 0).all()
        np.testing.assert_allclose(got.values["users"], rows(users[::-1], 4, 1), rtol=1e-2)

        # Incremental v2 against v1: upsert existing and new ids, delete some.
        up = np.array([7, 14, 999_999], dtype=np.int64)
        v2 = s3.uri("v2")
        CheckpointWriter(s3.client, v2, 2).write_incremental(
            2, 1, upserts={"items": (up, rows(up, 16, 2))}, deletes={"items": np.array([21])},
            dims={"items": 16})
        c.prepare_incremental(2, 1, v2)
        assert client.lookup({"items": up}).version == 1  # prepared, not committed
        c.commit(2)
        got = client.lookup({"items": np.array([7, 21, 28, 999_999]), "users": users[:3]})
        assert got.version == 2
        assert got.dense_version == 5  # an incremental naming none keeps its base's
        np.testing.assert_array_equal(got.values["items"][0], rows(up[:1], 16, 2)[0])
        assert (got.values["items"][1] == 0).all()  # deleted
        np.testing.assert_array_equal(got.values["items"][2], rows(np.array([28]), 16, 1)[0])
        np.testing.assert_array_equal(got.values["items"][3], rows(up[2:], 16, 2)[0])
        # The previous version stays readable by pinning until it is dropped.
        assert (client.lookup({"items": np.array([21])}, version=1).values["items"] != 0).all()

        c.admins()[0].rollback(1)
        c.admins()[1].rollback(1)
        assert client.lookup({"items": np.array([21])}).version == 1
        c.commit(2)
        for admin in c.admins():
            admin.drop(1)
            with pytest.raises(grpc.RpcError) as err:
                admin.drop(2)  # active
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        with pytest.raises(grpc.RpcError) as err:
            client.lookup({"items": up}, version=1)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND

    status = c.admins()[0].status()
    assert status.active_version == 2 and [v.state for v in status.versions] == ["active"]
    assert {t.name for t in status.versions[0].tables} == {"items", "users"}
    assert status.memory_bytes > 0
    metrics = urllib.request.urlopen(
        f"http://127.0.0.1:{c.processes[0].metrics_port}/metrics").read().decode()
    for name in ("recop_embedding_lookup_seconds_bucket", "recop_embedding_lookup_keys_total",
                 "recop_embedding_active_version", "recop_embedding_table_memory_bytes",
                 "recop_embedding_load_progress"):
        assert name in metrics


def test_load_failures_are_reported(s3, cluster):
    c = cluster(shards=1)
    admin = c.admins()[0]
    admin.load_full(5, s3.uri("nothing-here"))
    with pytest.raises(RuntimeError, match="failed"):
        admin.wait_ready(5, timeout=30)
    uri = s3.uri("wrong-shards")
    CheckpointWriter(s3.client, uri, 3).write_full(6, {"t": (np.arange(3), np.ones((3, 2)))})
    admin.load_full(6, uri)
    with pytest.raises(RuntimeError, match="3 shards"):
        admin.wait_ready(6, timeout=30)
    with pytest.raises(grpc.RpcError) as err:
        admin.commit(6)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_progress_is_observable_during_a_load(s3, cluster):
    c = cluster(shards=1, extra=["--load-threads", "1"])
    ids = np.arange(400_000, dtype=np.int64)
    uri = s3.uri("progress")
    CheckpointWriter(s3.client, uri, 1).write_full(1, {"t": (ids, rows(ids, 64, 1))})
    admin = c.admins()[0]
    admin.load_full(1, uri)
    seen = set()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        v = admin.version(1)
        if v.state == "loading":
            seen.add(round(v.progress, 2))
            # Zero until the manifest is read, then the shard's exact size.
            assert v.bytes_total in (0, 400_000 * (64 * 4 + 8))
        if v.state == "ready":
            break
    assert v.state == "ready" and v.progress == 1.0
    assert any(0 < p < 1 for p in seen), seen


def test_replica_failover(s3, cluster):
    c = cluster(shards=1, replicas=2)
    ids = np.arange(1000, dtype=np.int64)
    uri = s3.uri("replicas")
    CheckpointWriter(s3.client, uri, 1).write_full(1, {"t": (ids, rows(ids, 4, 1))})
    c.prepare_full(1, uri)
    c.commit(1)
    with EmbeddingClient(c.lookup_addresses, timeout=2) as client:
        c.processes[0].stop()
        for _ in range(5):  # whichever replica the rotation picks first
            got = client.lookup({"t": ids})
            np.testing.assert_array_equal(got.values["t"], rows(ids, 4, 1))


def test_a_shard_with_no_replica_gives_zero_rows_only_when_asked(s3, cluster):
    c = cluster(shards=2, replicas=1)
    ids = np.arange(1000, dtype=np.int64)
    uri = s3.uri("defaults")
    CheckpointWriter(s3.client, uri, 2).write_full(1, {"t": (ids, rows(ids, 4, 1)),
                                                       "u": (ids, rows(ids, 2, 1))})
    c.prepare_full(1, uri, dense=3)
    c.commit(1)
    down = c.processes[1]  # shard 1's only replica
    on_down = shard_of(ids, 2) == 1
    with EmbeddingClient(c.lookup_addresses, timeout=2) as client:
        down.stop()
        with pytest.raises(NoHealthyReplica, match="shard 1"):
            client.lookup({"t": ids})
        got = client.lookup({"t": ids, "u": ids[on_down]}, default_rows={"t": 4, "u": 2})
    assert got.defaulted_shards == [1] and (got.version, got.dense_version) == (1, 3)
    np.testing.assert_array_equal(got.values["t"][~on_down], rows(ids[~on_down], 4, 1))
    assert not got.values["t"][on_down].any()
    # A table all of whose ids are on the missing shard: zero rows of its own width.
    assert got.values["u"].shape == (int(on_down.sum()), 2) and not got.values["u"].any()


def test_readers_never_see_mixed_versions(s3, cluster):
    """Hammer lookups while a full load and then an incremental update roll across the
    shards one by one; every response must match exactly one version's rows."""
    c = cluster(shards=2)
    ids = np.arange(30_000, dtype=np.int64)
    dim = 16
    expected = {1: rows(ids, dim, 1), 2: rows(ids, dim, 2)}
    changed = ids[::3]
    expected[3] = expected[2].copy()
    expected[3][changed] = rows(changed, dim, 3)
    uris = {v: s3.uri(f"mixed-v{v}") for v in (1, 2, 3)}
    for v in (1, 2):
        CheckpointWriter(s3.client, uris[v], 2).write_full(v, {"t": (ids, expected[v])})
    CheckpointWriter(s3.client, uris[3], 2).write_incremental(
        3, 2, {"t": (changed, rows(changed, dim, 3))}, {}, dims={"t": dim})
    c.prepare_full(1, uris[1])
    c.commit(1)

    stop = threading.Event()
    seen: dict[int, int] = {}
    failures: list[str] = []

    def hammer():
        rng = np.random.default_rng(0)
        with EmbeddingClient(c.lookup_addresses) as client:
            while not stop.is_set():
                query = rng.choice(ids, 2000)
                got = client.lookup({"t": query})
                seen[got.version] = seen.get(got.version, 0) + 1
                if not np.array_equal(got.values["t"], expected[got.version][query]):
                    failures.append(f"mixed rows in a version {got.version} response")

    readers = [threading.Thread(target=hammer) for _ in range(2)]
    for r in readers:
        r.start()
    try:
        c.prepare_full(2, uris[2])
        for admin in c.admins():  # a rolling commit: shards flip at different times
            admin.commit(2)
            time.sleep(0.3)
        c.prepare_incremental(3, 2, uris[3])
        for admin in c.admins():
            admin.commit(3)
            time.sleep(0.3)
        for admin in c.admins():
            admin.drop(1)
        time.sleep(0.3)
    finally:
        stop.set()
        for r in readers:
            r.join()
    assert not failures, failures[:3]
    assert set(seen) == {1, 2, 3}, seen


def test_150k_ids_over_several_tables_in_one_request(s3, cluster):
    c = cluster(shards=2)
    ids = np.arange(200_000, dtype=np.int64)
    uri = s3.uri("wide")
    CheckpointWriter(s3.client, uri, 2).write_full(
        1, {"a": (ids, rows(ids, 8, 1)), "b": (ids[:1000], rows(ids[:1000], 3, 1))})
    c.prepare_full(1, uri)
    c.commit(1)
    query = np.random.default_rng(5).permutation(ids)[:150_000]
    with EmbeddingClient(c.lookup_addresses) as client:
        got = client.lookup({"a": query, "b": query[:10]})
    np.testing.assert_array_equal(got.values["a"], rows(query, 8, 1))
    assert got.values["b"].shape == (10, 3)
    assert got.missing["b"] == int((query[:10] >= 1000).sum())
