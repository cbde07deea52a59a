"""Unit tests (no broker) of per-version stream positions: which records each version
absorbs, where the consumer seeks back to, and the checkpoint's stream offsets."""

import asyncio
import io
import json

import numpy as np
import pytest

from embedding.checkpoint import CheckpointWriter, StreamPosition, read_manifest
from embedding.manifest import Manifest
from embedding.metrics import ServerMetrics
from embedding.realtime import RealtimeConsumer, decode, encode_upsert
from embedding.store import ShardStore, Table
from embedding.stream_positions import Entry, adopted, advanced, apply_records, rewind_to, taken


def upsert(partition: int, offset: int, row_id: int, value: float) -> Entry:
    """A record setting one row to `value` (one shard, so every id is this shard's)."""
    return Entry(partition, offset, decode(encode_upsert(
        "t", np.array([row_id]), np.full((1, 2), value, np.float32))))


def loaded(store: ShardStore, number: int, position=None, active=False):
    version = store.begin(number, f"s3://b/v{number}")
    store.finish(version, {"t": Table("t", 2, "fp32", np.arange(10),
                                      np.zeros((10, 2), np.float32))}, stream_offsets=position)
    if active:
        store.activate(number)
    return version


def row(store: ShardStore, number: int, row_id: int) -> float:
    out = np.empty((1, 2), np.float32)
    store.snapshot(number).lookup("t", np.array([row_id]), out)
    return float(out[0, 0])


def offsets(entries: list[Entry]) -> list[tuple[int, int]]:
    return [(e.partition, e.offset) for e in entries]


def test_a_version_takes_records_at_or_past_its_position():
    batch = [Entry(0, o, None) for o in (3, 4, 5, 6)] + [Entry(1, o, None) for o in (9, 10)]
    fetched_from = {0: 3, 1: 9}
    assert offsets(taken({0: 5, 1: 9}, fetched_from, batch)) == [(0, 5), (0, 6), (1, 9), (1, 10)]
    assert offsets(taken({0: 3, 1: 11}, fetched_from, batch)) == [(0, 3), (0, 4), (0, 5), (0, 6)]


def test_a_version_behind_the_batch_waits_for_the_replay():
    """Taking a batch that starts past its position would skip the records between."""
    batch = [Entry(0, 50, None), Entry(0, 51, None), Entry(1, 7, None)]
    assert offsets(taken({0: 10, 1: 7}, {0: 50, 1: 7}, batch)) == [(1, 7)]


def test_offset_gaps_do_not_hold_a_current_version_back():
    """Kafka offsets skip (transaction markers, compaction): a current version is one at
    the batch's start, not one whose position equals the first record's offset."""
    batch = [Entry(0, 103, None), Entry(0, 107, None)]
    assert offsets(taken({0: 100}, {0: 100}, batch)) == [(0, 103), (0, 107)]
    assert advanced({0: 100}, batch) == {0: 108}


def test_positions_only_move_forward():
    entries = [Entry(0, 7, None), Entry(0, 8, None), Entry(1, 3, None)]
    assert advanced({0: 5, 1: 10}, entries) == {0: 9, 1: 10}
    assert advanced({}, entries) == {0: 9, 1: 4}


def test_a_version_without_offsets_starts_at_the_consumer():
    assert adopted(None, {0: 40}) == {0: 40}
    assert adopted({0: 12}, {0: 40, 1: 7}) == {0: 12, 1: 7}
    store = ShardStore(0, 1)
    version = loaded(store, 1, active=True)
    assert apply_records(store, [upsert(0, 40, 1, 4.0)], {0: 40}) == {(0, 40)}
    assert version.stream_offsets == {0: 41}


def test_seek_back_to_the_oldest_offset_a_version_still_needs():
    fetch = {0: 100, 1: 50}
    assert rewind_to(fetch, [{0: 100, 1: 50}]) == {}
    assert rewind_to(fetch, [{0: 100, 1: 50}, {0: 40, 1: 60}, {0: 70}]) == {0: 40}
    assert rewind_to(fetch, [{0: 120, 1: 10}]) == {1: 10}  # ahead: no seek on 0
    assert rewind_to({0: 100}, [{0: 100, 1: 0}]) == {}  # partition 1 is not read here


def test_replay_reaches_the_new_version_and_skips_the_current_one():
    store = ShardStore(0, 1)
    active = loaded(store, 1, {0: 10}, active=True)
    apply_records(store, [upsert(0, 10, 3, 10.0)], {0: 10})
    new = loaded(store, 2, {0: 5})
    live = [upsert(0, 11, 4, 11.0)]
    assert apply_records(store, live, {0: 11}) == {(0, 11)}  # version 2 waits for the replay
    assert new.stream_offsets == {0: 5}
    replay = [upsert(0, 5, 3, 5.0), upsert(0, 7, 4, 7.0), upsert(0, 10, 3, 10.0),
              upsert(0, 11, 4, 11.0)]
    assert apply_records(store, replay, {0: 5}) == {(0, 5), (0, 7), (0, 10), (0, 11)}
    assert row(store, 1, 3) == 10.0  # never back to the replayed 5.0
    assert row(store, 1, 4) == 11.0
    assert (row(store, 2, 3), row(store, 2, 4)) == (10.0, 11.0)
    assert active.stream_offsets == new.stream_offsets == {0: 12}


def test_skipped_records_are_not_absorbed():
    store = ShardStore(0, 1)
    loaded(store, 1, {0: 20}, active=True)
    snapshot = store.snapshot()
    batch = [upsert(0, 18, 1, 1.0), upsert(0, 19, 1, 2.0)]
    assert apply_records(store, batch, {0: 18}) == set()
    assert store.snapshot() is snapshot  # nothing taken: no new snapshot either


def test_malformed_records_move_positions_without_touching_rows():
    store = ShardStore(0, 1)
    version = loaded(store, 1, {0: 0}, active=True)
    assert apply_records(store, [Entry(0, 0, None), upsert(0, 1, 2, 9.0)], {0: 0}) == {(0, 1)}
    assert version.stream_offsets == {0: 2}
    assert row(store, 1, 2) == 9.0


def test_one_snapshot_per_batch_per_version():
    store = ShardStore(0, 1)
    loaded(store, 1, {0: 0}, active=True)
    loaded(store, 2, {0: 0})
    before = {v.number: v.snapshot for v in store.versions.values()}
    apply_records(store, [upsert(0, i, i, float(i)) for i in range(5)], {0: 0})
    for version in store.versions.values():
        assert version.snapshot is not before[version.number]
        assert version.snapshot.overlays["t"].ids.tolist() == [0, 1, 2, 3, 4]


def test_a_loading_version_keeps_its_checkpoint_position():
    store = ShardStore(0, 1)
    loaded(store, 1, {0: 0}, active=True)
    loading = store.begin(2, "s3://b/v2")
    apply_records(store, [upsert(0, 0, 1, 1.0)], {0: 0})
    assert loading.stream_offsets is None
    store.finish(loading, {"t": Table("t", 2, "fp32", np.arange(10),
                                      np.zeros((10, 2), np.float32))}, stream_offsets={0: 0})
    assert rewind_to({0: 1}, [v.stream_offsets for v in store.realtime_targets()]) == {0: 0}


class FakeConsumer:
    """The two calls _catch_up makes, against a partition that holds offsets >= `held`."""

    def __init__(self, topic: str, held: int):
        self.topic, self.held = topic, held
        self.seeks: dict[int, int] = {}

    async def beginning_offsets(self, partitions):
        return {tp: self.held for tp in partitions}

    def seek(self, tp, offset):
        self.seeks[tp.partition] = offset


def consumer_at(store: ShardStore, fetch: int) -> RealtimeConsumer:
    consumer = RealtimeConsumer(store, ServerMetrics(0), "unused:9092", "deltas")
    consumer._fetch = {0: fetch}
    return consumer


def test_catch_up_seeks_back_for_a_version_behind():
    store = ShardStore(0, 1)
    loaded(store, 1, active=True)  # no offsets: takes the consumer's position
    loaded(store, 2, {0: 40})
    consumer, kafka = consumer_at(store, 100), FakeConsumer("deltas", held=0)
    asyncio.run(consumer._catch_up(kafka))
    assert kafka.seeks == {0: 40} and consumer._fetch == {0: 40}
    assert store.versions[1].stream_offsets == {0: 100}


def test_catch_up_from_expired_offsets_starts_at_the_earliest_held():
    store = ShardStore(0, 1)
    loaded(store, 1, {0: 10}, active=True)
    consumer, kafka = consumer_at(store, 100), FakeConsumer("deltas", held=60)
    asyncio.run(consumer._catch_up(kafka))
    assert kafka.seeks == {0: 60}
    assert store.versions[1].stream_offsets == {0: 60}
    assert consumer.metrics.registry.get_sample_value(
        "recop_embedding_realtime_offsets_expired_total", {"shard": "0"}) == 1
    kafka.seeks.clear()
    asyncio.run(consumer._catch_up(kafka))  # satisfied: no second seek
    assert kafka.seeks == {}


class FakeS3:
    def __init__(self):
        self.objects: dict[str, bytes] = {}

    def put_object(self, Bucket, Key, Body, **_):
        self.objects[Key] = bytes(Body)

    def get_object(self, Bucket, Key):
        return {"Body": io.BytesIO(self.objects[Key])}


def test_manifest_records_the_stream_offsets_it_includes():
    s3 = FakeS3()
    ids = np.arange(4, dtype=np.int64)
    CheckpointWriter(s3, "s3://b/v1", 2).write_full(
        1, {"t": (ids, np.ones((4, 2), np.float32))},
        stream=StreamPosition("deltas", {0: 17, 1: 3}))
    manifest = read_manifest(s3, "s3://b/v1")
    assert manifest.stream_offsets == {0: 17, 1: 3}
    assert manifest.offsets_on("deltas") == {0: 17, 1: 3}
    assert manifest.offsets_on("other-topic") is None


@pytest.mark.parametrize("extra", [{}, {"stream_offsets": {"0": 5}}])
def test_manifests_without_a_topic_or_offsets_stay_valid(extra):
    manifest = Manifest.from_json(json.dumps({
        "kind": "full", "version": 1, "shard_count": 1, "created_at": 0.0, "tables": {},
        **extra}))
    assert manifest.offsets_on("deltas") == ({0: 5} if extra else None)


def test_a_duplicated_message_leaves_the_rows_as_one_copy_does():
    # At-least-once producers resend: an upsert sets absolute values, so a copy is harmless.
    once, twice = ShardStore(0, 1), ShardStore(0, 1)
    loaded(once, 1, {0: 0}, active=True)
    loaded(twice, 1, {0: 0}, active=True)
    apply_records(once, [upsert(0, 0, 3, 1.0), upsert(0, 1, 4, 2.0)], {0: 0})
    apply_records(twice, [upsert(0, 0, 3, 1.0), upsert(0, 1, 3, 1.0), upsert(0, 2, 4, 2.0)],
                  {0: 0})
    assert [row(once, 1, i) for i in (3, 4)] == [row(twice, 1, i) for i in (3, 4)] == [1.0, 2.0]


def test_deltas_of_one_row_apply_in_partition_order_last_one_wins():
    # Kafka orders a partition, nothing more: a producer that sends an older value after a
    # newer one has that older value served (keep a row's deltas in order on one partition).
    store = ShardStore(0, 1)
    loaded(store, 1, {0: 0}, active=True)
    apply_records(store, [upsert(0, 0, 5, 2.0), upsert(0, 1, 5, 1.0)], {0: 0})
    assert row(store, 1, 5) == 1.0
    apply_records(store, [upsert(0, 2, 5, 3.0)], {0: 2})
    assert row(store, 1, 5) == 3.0
