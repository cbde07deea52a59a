"""Embedding server benchmarks, side by side with their baselines, in one run.

    .venv/bin/python bench/embedding_bench.py            # all four, writes bench/RESULTS.md
    .venv/bin/python bench/embedding_bench.py --only lookup --no-write

Starts its own MinIO, Kafka and redis-server through devstack, and shard servers as
separate processes (`python -m embedding.server`). Prints each figure as it is measured and
writes the table (medians, ratios, the goals) to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import platform
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from devstack import kafka as local_kafka  # noqa: E402
from devstack import minio as local_minio  # noqa: E402
from devstack import redis as local_redis  # noqa: E402
from devstack.shards import LocalCluster  # noqa: E402
from embedding.checkpoint import CheckpointWriter, read_manifest, split_uri  # noqa: E402
from embedding.client import EmbeddingClient  # noqa: E402
from embedding.realtime import encode_by_shard  # noqa: E402

BUCKET = "recop-bench"


def say(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def pct(samples, q) -> float:
    return float(np.percentile(np.asarray(samples), q))


class Results:
    def __init__(self):
        self.rows: list[tuple[str, str, str, str, str]] = []

    def add(
        self, bench: str, metric: str, recop: str, baseline: str, ratio: str, goal: str = ""
    ) -> None:
        self.rows.append((bench, metric, recop, baseline, ratio + (f" ({goal})" if goal else "")))
        say(f"{bench} | {metric}: recop {recop} | baseline {baseline} | {ratio} {goal}")


# ---------------------------------------------------------------- 1. lookup vs Redis


def bench_lookup(s3, results: Results, rows: int, iters: int) -> None:
    dim, batch, shards = 64, 150_000, 4
    rng = np.random.default_rng(1)
    ids = rng.choice(np.int64(1) << 40, rows, replace=False).astype(np.int64)
    values = rng.standard_normal((rows, dim), dtype=np.float32)
    uri = f"s3://{BUCKET}/lookup-{uuid.uuid4().hex[:6]}"
    say(f"lookup: writing {rows:,} x {dim} fp32 rows ({values.nbytes / 2**20:.0f} MiB)")
    CheckpointWriter(s3.client(), uri, shards).write_full(1, {"emb": (ids, values)})

    redis_handle = local_redis.start()
    cluster = LocalCluster(shards, 1, env=s3.env)
    try:
        cluster.prepare_full(1, uri)
        cluster.commit(1)
        import redis

        r = redis.Redis(port=redis_handle.port)
        say("lookup: filling redis with the same rows (packed fp32 strings)")
        keys = [f"e:{i}".encode() for i in ids.tolist()]
        for start in range(0, rows, 10_000):
            end = start + 10_000
            r.mset(
                dict(zip(keys[start:end], (v.tobytes() for v in values[start:end]), strict=True))
            )

        def redis_lookup(query_idx: np.ndarray) -> np.ndarray:
            # The fastest plain-Redis read: pipelined MGETs of packed vectors (hiredis parser).
            pipe = r.pipeline(transaction=False)
            for start in range(0, len(query_idx), 10_000):
                pipe.mget([keys[i] for i in query_idx[start : start + 10_000].tolist()])
            blobs = [b for chunk in pipe.execute() for b in chunk]
            return np.frombuffer(b"".join(blobs), np.float32).reshape(len(query_idx), dim)

        client = EmbeddingClient(cluster.lookup_addresses)
        lat = {"recop": [], "redis": []}
        for i in range(iters + 3):  # interleaved, the first 3 rounds are warm-up
            q = rng.integers(0, rows, batch)
            t0 = time.perf_counter()
            got = client.lookup({"emb": ids[q]})
            t1 = time.perf_counter()
            red = redis_lookup(q)
            t2 = time.perf_counter()
            if i == 0:
                assert np.array_equal(got.values["emb"], values[q]), "recop returned wrong rows"
                assert np.array_equal(red, values[q]), "redis returned wrong rows"
            if i >= 3:
                lat["recop"].append(t1 - t0)
                lat["redis"].append(t2 - t1)
        client.close()
        server_mean = statistics.mean(_server_lookup_mean(p.metrics_port)
                                      for p in cluster.processes)
    finally:
        cluster.stop()
        redis_handle.stop()
    rec, red = lat["recop"], lat["redis"]
    kps = {k: batch / statistics.median(v) for k, v in lat.items()}
    results.add(
        "1. lookup 150k ids, dim 64 fp32, 4 shards",
        "p50 latency",
        f"{pct(rec, 50) * 1e3:.1f} ms",
        f"{pct(red, 50) * 1e3:.1f} ms",
        f"{pct(red, 50) / pct(rec, 50):.2f}x faster",
    )
    results.add(
        "",
        "p99 latency",
        f"{pct(rec, 99) * 1e3:.1f} ms",
        f"{pct(red, 99) * 1e3:.1f} ms",
        f"{pct(red, 99) / pct(rec, 99):.2f}x faster",
        "goal: recop p99 < 10 ms",
    )
    results.add(
        "",
        "keys/s (at median)",
        f"{kps['recop'] / 1e6:.2f} M",
        f"{kps['redis'] / 1e6:.2f} M",
        f"{kps['recop'] / kps['redis']:.2f}x",
        "goal: >= 3x",
    )
    results.add("", "of which: server time per shard request (mean, incl. warm-up)",
                f"{server_mean * 1e3:.1f} ms", "-", "-")


def _server_lookup_mean(metrics_port: int) -> float:
    """Mean server-side lookup time of one shard, from its Prometheus histogram."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read().decode()
    samples = {s.name: s.value for family in text_string_to_metric_families(text)
               for s in family.samples}
    return samples["recop_embedding_lookup_seconds_sum"] / samples[
        "recop_embedding_lookup_seconds_count"]


# ---------------------------------------------------------------- 2. freshness


def bench_freshness(s3, kafka, results: Results, samples: int) -> None:
    dim = 240  # 8-byte id + 960 bytes of fp32 + header: a ~1 KB delta
    shards = 4
    topic = f"bench-deltas-{uuid.uuid4().hex[:6]}"
    ids = np.arange(10_000, dtype=np.int64)
    uri = f"s3://{BUCKET}/fresh-{uuid.uuid4().hex[:6]}"
    CheckpointWriter(s3.client(), uri, shards).write_full(
        1, {"rt": (ids, np.zeros((len(ids), dim), np.float32))}
    )
    asyncio.run(local_kafka.create_topic(kafka.bootstrap, topic, shards))
    cluster = LocalCluster(shards, 1, env=s3.env, kafka_bootstrap=kafka.bootstrap, topic=topic)
    try:
        cluster.prepare_full(1, uri)
        cluster.commit(1)
        for admin in cluster.admins():
            while not admin.status().realtime.assigned:
                time.sleep(0.05)
        client = EmbeddingClient(cluster.lookup_addresses)
        lat, size = asyncio.run(
            _publish_and_watch(kafka.bootstrap, topic, client, dim, samples, shards))
        client.close()
        statuses = [a.status().realtime for a in cluster.admins()]
    finally:
        cluster.stop()
    raw = asyncio.run(_raw_round_trip(kafka.bootstrap, size, samples))
    server_p99 = max(s.freshness_p99_seconds for s in statuses)
    server_p50 = statistics.median(s.freshness_p50_seconds for s in statuses)
    results.add(f"2. real-time freshness, {size} B deltas, 4 shards", "publish-to-visible p50",
                f"{pct(lat, 50) * 1e3:.1f} ms",
                f"{pct(raw, 50) * 1e3:.1f} ms (plain aiokafka publish-to-receive)",
                f"+{(pct(lat, 50) - pct(raw, 50)) * 1e3:.1f} ms")
    results.add("", "publish-to-visible p99", f"{pct(lat, 99) * 1e3:.1f} ms",
                f"{pct(raw, 99) * 1e3:.1f} ms", f"+{(pct(lat, 99) - pct(raw, 99)) * 1e3:.1f} ms",
                "goal: p99 < 50 ms")
    results.add("", "server view: record timestamp to applied, p50 / p99",
                f"{server_p50 * 1e3:.1f} / {server_p99 * 1e3:.1f} ms", "-", "-")


async def _raw_round_trip(bootstrap: str, size: int, samples: int) -> list[float]:
    """The broker's own floor: publish one message, wait until a plain consumer has it."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    topic = f"bench-raw-{uuid.uuid4().hex[:6]}"
    await local_kafka.create_topic(bootstrap, topic, 1)
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest", fetch_max_wait_ms=100)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, acks=1)
    await consumer.start()
    await producer.start()
    lat = []
    try:
        for i in range(samples + 5):
            t0 = time.perf_counter()
            await producer.send_and_wait(topic, bytes(size))
            while not await consumer.getmany(timeout_ms=1000):
                pass
            if i >= 5:
                lat.append(time.perf_counter() - t0)
    finally:
        await producer.stop()
        await consumer.stop()
    return lat


async def _publish_and_watch(bootstrap, topic, client, dim, samples, shard_count):
    """Publish one delta at a time and poll a lookup of its id until the new value shows."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, acks=1)
    await producer.start()
    rng = np.random.default_rng(2)
    lat, size = [], 0
    try:
        for i in range(samples + 5):
            row_id = np.array([rng.integers(0, 10_000)], np.int64)
            marker = float(i + 1)
            # The topic is shard-partitioned: the delta goes to its shard's partition.
            [(partition, payload)] = encode_by_shard(
                "rt", row_id, np.full((1, dim), marker, np.float32), shard_count)
            size = len(payload)
            t0 = time.perf_counter()
            await producer.send_and_wait(topic, payload, partition=partition)
            # Blocking lookups are fine here: the producer has nothing left in flight. The
            # short pause keeps the poll from starving the shard's consumer of CPU.
            while client.lookup({"rt": row_id}).values["rt"][0, 0] != marker:
                time.sleep(0.002)
            if i >= 5:
                lat.append(time.perf_counter() - t0)
    finally:
        await producer.stop()
    return lat, size


# ---------------------------------------------------------------- 3. full load vs boto3


def bench_full_load(s3, results: Results, rows: int, reps: int) -> None:
    dim = 128
    ids = np.arange(rows, dtype=np.int64)
    values = np.random.default_rng(3).standard_normal((rows, dim), dtype=np.float32)
    uri = f"s3://{BUCKET}/load-{uuid.uuid4().hex[:6]}"
    client = s3.client()
    CheckpointWriter(client, uri, 1).write_full(1, {"emb": (ids, values)})
    del values
    manifest = read_manifest(client, uri)
    nbytes = manifest.shard_bytes(0)
    bucket, prefix = split_uri(uri)
    keys = [prefix + f.key for f in manifest.tables["emb"].shards[0].files.values()]
    say(f"full load: {nbytes / 2**20:.0f} MiB in one shard")

    def plain_download() -> float:
        t0 = time.perf_counter()
        for key in keys:  # boto3's managed (multi-threaded) download into memory
            client.download_fileobj(bucket, key, io.BytesIO())
        return time.perf_counter() - t0

    cluster = LocalCluster(1, 1, env=s3.env)
    admin = cluster.admins()[0]
    ours, plain = [], []
    try:
        for _ in range(reps):  # interleaved; each loaded copy is dropped before the next
            t0 = time.perf_counter()
            admin.load_full(1, uri)
            admin.wait_ready(1, timeout=600)
            ours.append(time.perf_counter() - t0)
            admin.drop(1)
            plain.append(plain_download())
    finally:
        cluster.stop()
    gbs = {
        name: nbytes / statistics.median(t) / 1e9 for name, t in (("ours", ours), ("plain", plain))
    }
    results.add(
        f"3. full load {nbytes / 2**20:.0f} MiB from S3 (MinIO)",
        "GB/s (median)",
        f"{gbs['ours']:.2f}",
        f"{gbs['plain']:.2f} (boto3 download_fileobj)",
        f"{gbs['ours'] / gbs['plain']:.2f}",
        "goal: >= 0.8",
    )


# ---------------------------------------------------------------- 4. incremental apply


def bench_incremental(s3, results: Results, rows: int, changed: int) -> None:
    dim = 16
    rng = np.random.default_rng(4)
    ids = np.arange(rows, dtype=np.int64) * 3
    client = s3.client()
    base = f"s3://{BUCKET}/inc-base-{uuid.uuid4().hex[:6]}"
    say(f"incremental: writing a {rows:,}-row base (dim {dim} fp32)")
    values = rng.standard_normal((rows, dim), dtype=np.float32)
    CheckpointWriter(client, base, 1).write_full(1, {"emb": (ids, values)})
    del values
    up = np.sort(rng.choice(ids, changed, replace=False))
    delta = f"s3://{BUCKET}/inc-delta-{uuid.uuid4().hex[:6]}"
    CheckpointWriter(client, delta, 1).write_incremental(
        2, 1, {"emb": (up, np.full((changed, dim), 7.0, np.float32))}, {}, dims={"emb": dim}
    )

    cluster = LocalCluster(1, 1, env=s3.env)
    admin = cluster.admins()[0]
    stop = threading.Event()
    reader_lat: list[float] = []

    def reader():
        with EmbeddingClient(cluster.lookup_addresses) as c:
            r = np.random.default_rng()
            while not stop.is_set():
                t0 = time.perf_counter()
                c.lookup({"emb": ids[r.integers(0, rows, 10_000)]})
                reader_lat.append(time.perf_counter() - t0)

    try:
        admin.load_full(1, base)
        admin.wait_ready(1, timeout=600)
        admin.commit(1)
        threads = [threading.Thread(target=reader) for _ in range(2)]
        for t in threads:
            t.start()
        time.sleep(1)
        before = len(reader_lat)
        t0 = time.perf_counter()
        admin.apply_incremental(2, 1, delta)
        admin.wait_ready(2, timeout=600)
        seconds = time.perf_counter() - t0
        during = reader_lat[before:]
        stop.set()
        for t in threads:
            t.join()
        admin.commit(2)
        with EmbeddingClient(cluster.lookup_addresses) as c:
            assert (c.lookup({"emb": up[:1000]}).values["emb"] == 7.0).all()
    finally:
        stop.set()
        cluster.stop()
    results.add(
        f"4. incremental: {changed:,} changed rows into {rows:,} (dim {dim})",
        "seconds to ready, 2 readers running",
        f"{seconds:.2f} s",
        "-",
        "-",
    )
    results.add(
        "",
        "reader p50 / p99 during the apply (10k ids)",
        f"{pct(during, 50) * 1e3:.1f} / {pct(during, 99) * 1e3:.1f} ms ({len(during)} lookups)",
        "-",
        "-",
    )


# ---------------------------------------------------------------- main


def write_table(results: Results, command: str, started: float) -> str:
    lines = [
        "# Embedding server benchmarks",
        "",
        f"Produced by `{command}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
        f"({platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"run took {time.time() - started:.0f} s). Everything ran on this one machine: "
        "MinIO, Kafka, redis-server, the shard servers and the client share its cores. "
        f"Load average at the end: {os.getloadavg()[0]:.1f} (other work on the machine "
        "counts too; figures from a busy machine are upper bounds).",
        "",
        "Lookup latency is the client's wall time for the whole 150,000-id request (route, "
        "fan-out to 4 processes, reassembly in request order); Redis is read with pipelined "
        "MGETs of 10,000 packed fp32 vectors through redis-py with hiredis. Full load is "
        "LoadFull until the version is ready (fetch, crc32 per part, serving arrays), "
        "against boto3 download_fileobj of the same files into memory, interleaved runs.",
        "",
        "| benchmark | metric | RecOp | baseline | ratio |",
        "|---|---|---|---|---|",
        *(f"| {' | '.join(row)} |" for row in results.rows),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--only", choices=["lookup", "freshness", "load", "incremental"], action="append"
    )
    parser.add_argument("--lookup-rows", type=int, default=1_000_000)
    parser.add_argument("--lookup-iters", type=int, default=40)
    parser.add_argument("--fresh-samples", type=int, default=300)
    parser.add_argument("--load-rows", type=int, default=1_000_000)
    parser.add_argument("--load-reps", type=int, default=3)
    parser.add_argument("--inc-rows", type=int, default=10_000_000)
    parser.add_argument("--inc-changed", type=int, default=1_000_000)
    parser.add_argument("--no-write", action="store_true", help="do not write RESULTS.md")
    args = parser.parse_args()
    only = set(args.only or ["lookup", "freshness", "load", "incremental"])
    started = time.time()
    results = Results()
    s3 = local_minio.start()
    s3.client().create_bucket(Bucket=BUCKET)
    kafka = local_kafka.start() if "freshness" in only else None
    try:
        if "lookup" in only:
            bench_lookup(s3, results, args.lookup_rows, args.lookup_iters)
        if "freshness" in only:
            bench_freshness(s3, kafka, results, args.fresh_samples)
        if "load" in only:
            bench_full_load(s3, results, args.load_rows, args.load_reps)
        if "incremental" in only:
            bench_incremental(s3, results, args.inc_rows, args.inc_changed)
    finally:
        if kafka is not None:
            kafka.stop()
        s3.stop()
    table = write_table(
        results, "python bench/embedding_bench.py " + " ".join(sys.argv[1:]), started
    )
    print(table)
    if not args.no_write:
        (ROOT / "bench" / "RESULTS.md").write_text(table)


if __name__ == "__main__":
    main()
