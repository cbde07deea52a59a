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

from bench.limit_probe import Probe  # noqa: E402
from devstack import kafka as local_kafka  # noqa: E402
from devstack import minio as local_minio  # noqa: E402
from devstack import redis as local_redis  # noqa: E402
from devstack.shards import LocalCluster  # noqa: E402
from embedding.checkpoint import CheckpointWriter, read_manifest, split_uri  # noqa: E402
from embedding.client import EmbeddingClient  # noqa: E402
from embedding.partition import shard_of  # noqa: E402
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


# ---------------------------------------------------------------- 1. lookup vs Redis and the limit


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms" if seconds >= 0.01 else f"{seconds * 1e3:.2f} ms"


def run_stats(runs: list[list[float]]) -> dict[str, float]:
    """p50 and p99 of each run, then the median over the runs."""
    return {"p50": statistics.median(pct(r, 50) for r in runs),
            "p99": statistics.median(pct(r, 99) for r in runs)}


class RedisTable:
    """The same rows in redis-server as packed fp32 strings, read with pipelined MGETs of
    10,000 keys through redis-py with hiredis: the fastest plain-Redis read."""

    def __init__(self, handle, ids: np.ndarray, values: np.ndarray):
        import redis

        self.r = redis.Redis(port=handle.port)
        self.dim = values.shape[1]
        self.keys = [f"e:{i}".encode() for i in ids.tolist()]
        for start in range(0, len(ids), 10_000):
            end = start + 10_000
            self.r.mset(dict(zip(self.keys[start:end],
                                 (v.tobytes() for v in values[start:end]), strict=True)))

    def lookup(self, rows: np.ndarray) -> np.ndarray:
        pipe = self.r.pipeline(transaction=False)
        for start in range(0, len(rows), 10_000):
            pipe.mget([self.keys[i] for i in rows[start:start + 10_000].tolist()])
        blobs = [b for chunk in pipe.execute() for b in chunk]
        return np.frombuffer(b"".join(blobs), np.float32).reshape(len(rows), self.dim)


def bench_lookup(s3, results: Results, rows: int, iters: int, runs: int) -> None:
    dim, batch, shards = 64, 150_000, 4
    rng = np.random.default_rng(1)
    ids = rng.choice(np.int64(1) << 40, rows, replace=False).astype(np.int64)
    values = rng.standard_normal((rows, dim), dtype=np.float32)
    uri = f"s3://{BUCKET}/lookup-{uuid.uuid4().hex[:6]}"
    say(f"lookup: writing {rows:,} x {dim} fp32 rows ({values.nbytes / 2**20:.0f} MiB)")
    CheckpointWriter(s3.client(), uri, shards).write_full(1, {"emb": (ids, values)})

    redis_handle = local_redis.start()
    cluster = LocalCluster(shards, 1, env=s3.env)
    probes = {4: Probe(shards, rows // shards, dim * 4), 2: Probe(shards, rows // shards, dim * 2)}
    names = ("recop", "recop fp16", "redis", "limit", "limit fp16")
    lat = {name: [] for name in names}
    try:
        cluster.prepare_full(1, uri)
        cluster.commit(1)
        say("lookup: filling redis with the same rows (packed fp32 strings)")
        red = RedisTable(redis_handle, ids, values)
        client = EmbeddingClient(cluster.lookup_addresses)
        for run in range(runs):
            say(f"lookup: run {run + 1} of {runs} ({iters} requests each way, interleaved)")
            per = {name: [] for name in names}
            for i in range(iters + 3):  # the first 3 rounds are warm-up
                q = rng.integers(0, rows, batch)
                # The probe gets the same split: as many rows per shard as RecOp's shards.
                share = np.bincount(shard_of(ids[q], shards), minlength=shards)
                positions = [rng.integers(0, rows // shards, n).astype(np.uint64) for n in share]
                t = [time.perf_counter()]
                got = client.lookup({"emb": ids[q]})
                t.append(time.perf_counter())
                half = client.lookup({"emb": ids[q]}, wire_dtype="fp16")
                t.append(time.perf_counter())
                from_redis = red.lookup(q)
                t.append(time.perf_counter())
                probes[4].lookup(positions)
                t.append(time.perf_counter())
                probes[2].lookup(positions)
                t.append(time.perf_counter())
                if i == 0:
                    assert np.array_equal(got.values["emb"], values[q]), "recop: wrong rows"
                    assert np.array_equal(half.values["emb"],
                                          values[q].astype(np.float16).astype(np.float32))
                    assert np.array_equal(from_redis, values[q]), "redis returned wrong rows"
                if i >= 3:
                    for name, a, b in zip(names, t, t[1:], strict=False):
                        per[name].append(b - a)
            for name in names:
                lat[name].append(per[name])
        client.close()
    finally:
        for probe in probes.values():
            probe.close()
        cluster.stop()
        redis_handle.stop()
    st = {name: run_stats(lat[name]) for name in names}
    kps = {name: batch / st[name]["p50"] for name in names}
    title = f"1. lookup 150k ids, dim 64, 4 shards ({runs} runs x {iters})"
    for wire, (ours, limit) in (("fp32", ("recop", "limit")),
                                ("fp16 on the wire", ("recop fp16", "limit fp16"))):
        goal_p50 = "goal <= 1.3x" if wire == "fp32" else ""
        results.add(title, f"{wire}: p50 vs the limit", ms(st[ours]["p50"]),
                    ms(st[limit]["p50"]) + " (C gather + TCP)",
                    f"{st[ours]['p50'] / st[limit]['p50']:.2f}x the limit", goal_p50)
        results.add("", f"{wire}: p99 vs the limit", ms(st[ours]["p99"]),
                    ms(st[limit]["p99"]), f"{st[ours]['p99'] / st[limit]['p99']:.2f}x the limit",
                    "goal <= 1.5x")
        title = ""
    results.add("", "fp32: p50 / p99 vs Redis", f"{ms(st['recop']['p50'])} / "
                f"{ms(st['recop']['p99'])}", f"{ms(st['redis']['p50'])} / "
                f"{ms(st['redis']['p99'])} (Redis MGET)",
                f"{st['redis']['p50'] / st['recop']['p50']:.1f}x faster at p50")
    results.add("", "keys/s at p50: RecOp fp32 / fp16, Redis, limit fp32",
                f"{kps['recop'] / 1e6:.2f} M / {kps['recop fp16'] / 1e6:.2f} M",
                f"{kps['redis'] / 1e6:.2f} M / {kps['limit'] / 1e6:.2f} M",
                f"{kps['recop'] / kps['redis']:.1f}x Redis", "goal >= 10x Redis")


# ---------------------------------------------------------------- 1b. HPS's profile


def bench_hps(s3, results: Results, rows: int, queries: int, runs: int) -> None:
    """HugeCTR HPS's published profile: 2,000 keys per query, power-law ids (alpha 1.2),
    dim 64, concurrency 1 and 8; Redis reads the same keys."""
    dim, keys, shards = 64, 2000, 4
    rng = np.random.default_rng(6)
    ids = rng.choice(np.int64(1) << 40, rows, replace=False).astype(np.int64)
    values = rng.standard_normal((rows, dim), dtype=np.float32)
    uri = f"s3://{BUCKET}/hps-{uuid.uuid4().hex[:6]}"
    CheckpointWriter(s3.client(), uri, shards).write_full(1, {"emb": (ids, values)})
    # Rank r (1 = hottest) with probability r^-1.2; ranks land on ids at random.
    cdf = np.cumsum(np.arange(1, rows + 1, dtype=np.float64) ** -1.2)
    cdf /= cdf[-1]
    hot = rng.permutation(rows)

    def draw(r: np.random.Generator) -> np.ndarray:
        return hot[np.minimum(np.searchsorted(cdf, r.random(keys)), rows - 1)]

    redis_handle = local_redis.start()
    cluster = LocalCluster(shards, 1, env=s3.env)
    try:
        cluster.prepare_full(1, uri)
        cluster.commit(1)
        red = RedisTable(redis_handle, ids, values)
        client = EmbeddingClient(cluster.lookup_addresses)
        for concurrency in (1, 8):
            ours, theirs, qps = [], [], []
            for run in range(runs):
                say(f"hps: concurrency {concurrency}, run {run + 1} of {runs}")
                lat, took = _concurrent(lambda r: client.lookup({"emb": ids[draw(r)]}),
                                        concurrency, queries)
                ours.append(lat)
                qps.append(len(lat) / took)
                theirs.append(_concurrent(lambda r: red.lookup(draw(r)), concurrency,
                                          queries // 4)[0])
            a, b = run_stats(ours), run_stats(theirs)
            results.add("1b. HPS profile: 2,000 keys/query, power law 1.2, dim 64, 4 shards"
                        if concurrency == 1 else "",
                        f"concurrency {concurrency}: p50 / p99",
                        f"{ms(a['p50'])} / {ms(a['p99'])}",
                        f"{ms(b['p50'])} / {ms(b['p99'])} (Redis MGET)",
                        f"{b['p99'] / a['p99']:.1f}x faster at p99",
                        "goal: p99 < 1 ms (HPS: 0.35 ms on a GPU)" if concurrency == 1 else "")
            results.add("", f"concurrency {concurrency}: queries/s (median of runs)",
                        f"{statistics.median(qps):,.0f}", "-", "-")
        client.close()
    finally:
        cluster.stop()
        redis_handle.stop()


def _concurrent(call, concurrency: int, queries: int) -> tuple[list[float], float]:
    """`queries` calls spread over `concurrency` threads; per-call latency (the first 20
    per thread are warm-up) and the wall time of the whole."""
    lat: list[float] = []
    lock = threading.Lock()

    def worker(seed: int):
        r = np.random.default_rng(seed)
        mine = []
        for i in range(queries // concurrency + 20):
            t0 = time.perf_counter()
            call(r)
            if i >= 20:
                mine.append(time.perf_counter() - t0)
        with lock:
            lat.extend(mine)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return lat, time.perf_counter() - t0


# ---------------------------------------------------------------- 1c. memory per row


def bench_memory(s3, results: Results, rows: int) -> None:
    """Resident memory a shard server gains by serving a table, against the checkpoint's
    bytes for that shard (ids, rows, scales, bias), per storage dtype."""
    dim = 64
    rng = np.random.default_rng(7)
    ids = rng.choice(np.int64(1) << 40, rows, replace=False).astype(np.int64)
    values = rng.standard_normal((rows, dim), dtype=np.float32)
    for dtype in ("fp32", "fp16", "int8", "int4"):
        uri = f"s3://{BUCKET}/mem-{dtype}-{uuid.uuid4().hex[:6]}"
        writer = CheckpointWriter(s3.client(), uri, 1)
        # A tiny version first: the baseline then includes the S3 client and the threads
        # every loaded server has, and the figure is what the table itself costs.
        writer.write_full(1, {"emb": (ids[:10], values[:10])}, dtypes={"emb": dtype})
        tiny = uri
        uri = f"{uri}-full"
        manifest = CheckpointWriter(s3.client(), uri, 1).write_full(
            2, {"emb": (ids, values)}, dtypes={"emb": dtype})
        checkpoint = manifest.shard_bytes(0)
        cluster = LocalCluster(1, 1, env=s3.env)
        try:
            pid = cluster.processes[0].process.proc.pid
            cluster.prepare_full(1, tiny)
            cluster.commit(1)
            before = _rss(pid)
            cluster.prepare_full(2, uri)
            cluster.commit(2)
            cluster.admins()[0].drop(1)
            time.sleep(0.5)
            gained = _rss(pid) - before
        finally:
            cluster.stop()
        results.add("1c. memory per row, dim 64, 1 shard" if dtype == "fp32" else "",
                    f"{dtype}: resident bytes gained / checkpoint bytes",
                    f"{gained / rows:.1f} B/row", f"{checkpoint / rows:.1f} B/row",
                    f"{gained / checkpoint:.2f}x", "goal <= 1.15x")


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


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
        "MGETs of 10,000 packed fp32 vectors through redis-py with hiredis. The limit is "
        "bench/limit_probe.py: 4 processes gathering the same number of rows per shard with "
        "C memcpy and writing them on loopback TCP to one Python client that reads the four "
        "sockets into one buffer (no index, no framing, no reassembly into request order). "
        "RecOp, RecOp with fp16 rows on the wire, Redis and the probe for 256- and 128-byte "
        "rows take turns request by request; p50 and p99 are taken per run and the median "
        "over the runs is shown. Where the phases of a RecOp lookup go: "
        "bench/LOOKUP-BREAKDOWN.md. Memory per row is the resident memory (VmRSS) a shard "
        "server gains by loading and committing the table (after a tiny version, so that "
        "the S3 client and load threads are in the baseline), against the shard's checkpoint "
        "bytes (ids, rows, per-row scales and bias). Full load is "
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
        "--only", choices=["lookup", "hps", "memory", "freshness", "load", "incremental"],
        action="append")
    parser.add_argument("--lookup-rows", type=int, default=1_000_000)
    parser.add_argument("--lookup-iters", type=int, default=30)
    parser.add_argument("--runs", type=int, default=3, help="medians over this many runs")
    parser.add_argument("--hps-queries", type=int, default=2000)
    parser.add_argument("--memory-rows", type=int, default=1_000_000)
    parser.add_argument("--fresh-samples", type=int, default=300)
    parser.add_argument("--load-rows", type=int, default=1_000_000)
    parser.add_argument("--load-reps", type=int, default=3)
    parser.add_argument("--inc-rows", type=int, default=10_000_000)
    parser.add_argument("--inc-changed", type=int, default=1_000_000)
    parser.add_argument("--no-write", action="store_true", help="do not write RESULTS.md")
    args = parser.parse_args()
    only = set(args.only or ["lookup", "hps", "memory", "freshness", "load", "incremental"])
    started = time.time()
    results = Results()
    s3 = local_minio.start()
    s3.client().create_bucket(Bucket=BUCKET)
    kafka = local_kafka.start() if "freshness" in only else None
    try:
        if "lookup" in only:
            bench_lookup(s3, results, args.lookup_rows, args.lookup_iters, args.runs)
        if "hps" in only:
            bench_hps(s3, results, args.lookup_rows, args.hps_queries, args.runs)
        if "memory" in only:
            bench_memory(s3, results, args.memory_rows)
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
