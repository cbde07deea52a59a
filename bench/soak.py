"""Soak: continuous lookups while full, incremental and real-time updates land.

    python bench/soak.py --minutes 2        # brings up what it needs, on loopback only

Everything real (e2e/reliability.py's Stack): the local control plane, the operator
process, MinIO, a Kafka broker and two shard server processes. One thread looks up 512
random ids in a loop through embedding.client.EmbeddingClient; the main thread has the
operator land a full version, then alternately incremental and full ones, plus a realtime
ModelVersion over the first full one, while a producer publishes row deltas at ~50/s.

Checkpoint rows hold their version number (an incremental sets its changed rows to its
own), so every answer is checked against the version it claims: a row of another version
is a mixed-version read (must be 0). Deltas touch only ids below HOT, which the check
skips. Reported: lookups, errors, p50/p99 latency, mixed reads, updates landed by kind,
deltas published and applied, and each server's RSS at the start and the end.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from devstack import kafka as local_kafka  # noqa: E402
from e2e.reliability import DIM, ROWS, TABLE, Stack  # noqa: E402
from embedding.client import EmbeddingClient  # noqa: E402
from embedding.realtime import encode_by_shard  # noqa: E402

HOT = 2000
BATCH = 512
NS = "soak"


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class Lookups:
    def __init__(self, stack: Stack, expected: dict[int, np.ndarray]):
        self.stack, self.expected = stack, expected
        self.latencies: list[float] = []
        self.errors = self.mixed = 0
        self.error_kinds: dict[str, int] = {}
        self.versions: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        rng = np.random.default_rng(3)
        with EmbeddingClient(self.stack.lookup_addresses, timeout=10) as client:
            while not self._stop.is_set():
                ids = rng.integers(0, ROWS, BATCH).astype(np.int64)
                started = time.perf_counter()
                try:
                    result = client.lookup({TABLE: ids})
                except Exception as err:
                    self.errors += 1
                    kind = type(err).__name__
                    self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1
                    time.sleep(0.01)
                    continue
                self.latencies.append(time.perf_counter() - started)
                self.versions.add(result.version)
                want = self.expected.get(result.version)
                cold = ids >= HOT
                if want is None or not (result.values[TABLE][cold, 0] == want[ids[cold]]).all():
                    self.mixed += 1

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join(30)
        lat = np.array(self.latencies or [0.0]) * 1000
        return {"lookups": len(self.latencies), "lookup_errors": self.errors,
                "error_kinds": dict(self.error_kinds), "mixed_version_reads": self.mixed,
                "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
                "versions_read": len(self.versions)}


class DeltaProducer:
    def __init__(self, bootstrap: str, topic: str, shards: int, rate: float = 50):
        self.bootstrap, self.topic, self.shards, self.rate = bootstrap, topic, shards, rate
        self.published = self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()

    async def _run(self):
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=0)
        await producer.start()
        rng = np.random.default_rng(5)
        try:
            while not self._stop.is_set():
                ids = rng.choice(HOT, 16, replace=False).astype(np.int64)
                values = rng.random((16, DIM), dtype=np.float32)
                for partition, payload in encode_by_shard(TABLE, ids, values, self.shards):
                    try:
                        await producer.send_and_wait(self.topic, payload, partition=partition)
                        self.published += 1
                    except Exception:
                        self.failed += 1
                await asyncio.sleep(1 / self.rate)
        finally:
            await producer.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)


def run(cluster, kafka, seconds: float, log=print) -> dict:
    """The soak on a running cluster and broker; returns its figures."""
    topic = f"soak-{uuid.uuid4().hex[:8]}"
    asyncio.run(local_kafka.create_topic(kafka.bootstrap, topic, 2))
    stack = Stack(cluster, NS, kafka=kafka, topic=topic)
    expected: dict[int, np.ndarray] = {}
    landed = {"full": 0, "incremental": 0, "realtime": 0}
    failed_updates: list[str] = []
    lookups = producer = None
    try:
        stack.version("v1", stack.write_full(1))
        expected[1] = np.full(ROWS, 1, np.float32)
        stack.wait_phase("v1", "Active", timeout=180)
        landed["full"] += 1
        stack.version("rt1", None, kind="realtime", base="v1")
        landed["realtime"] += 1
        rng = np.random.default_rng(11)
        lookups = Lookups(stack, expected)
        producer = DeltaProducer(kafka.bootstrap, topic, stack.shard_count)
        time.sleep(2)  # the baseline: loaded, serving, deltas flowing
        rss_start = {p.lookup_port: rss_bytes(p.process.proc.pid) for p in stack.servers}
        started = time.monotonic()
        number = 1
        while time.monotonic() - started < seconds:
            base, number = number, number + 1
            if number % 2 == 0:
                changed = np.sort(rng.choice(np.arange(HOT, ROWS), ROWS // 10, replace=False))
                want = expected[base].copy()
                want[changed] = number
                expected[number] = want
                uri = stack.write_incremental(number, base, changed.astype(np.int64))
                stack.version(f"v{number}", uri, kind="incremental", base=f"v{base}")
                kind = "incremental"
            else:
                expected[number] = np.full(ROWS, number, np.float32)
                stack.version(f"v{number}", stack.write_full(number))
                kind = "full"
            final = stack.wait_phase(f"v{number}", "Active", "Failed", "RolledBack",
                                     timeout=240)
            if final["phase"] == "Active":
                landed[kind] += 1
                log(f"  v{number} ({kind}) Active after {time.monotonic() - started:.0f}s")
            else:
                failed_updates.append(f"v{number}: {final.get('reason')} "
                                      f"{final.get('message', '')}")
                number = base
            time.sleep(1)
        elapsed = time.monotonic() - started
        producer.stop()
        figures = lookups.stop()
        statuses = [stack.server_status(p) for p in stack.servers]
        rss_end = {p.lookup_port: rss_bytes(p.process.proc.pid) for p in stack.servers}
        figures.update({
            "seconds": elapsed,
            "updates_full": landed["full"], "updates_incremental": landed["incremental"],
            "updates_realtime": landed["realtime"], "updates_failed": len(failed_updates),
            "deltas_published": producer.published, "deltas_failed": producer.failed,
            "deltas_applied": sum(s.realtime.applied for s in statuses if s),
            "lag_at_end": sum(s.realtime.lag for s in statuses if s),
            "rss_start_mib": [round(v / 2**20, 1) for v in rss_start.values()],
            "rss_end_mib": [round(v / 2**20, 1) for v in rss_end.values()],
            "rss_growth_mib": round(max(rss_end[k] - rss_start[k] for k in rss_end) / 2**20, 1),
            "failures": failed_updates,
        })
        return figures
    finally:
        if producer is not None:
            producer.stop()
        if lookups is not None:
            lookups.stop()
        stack.stop()


def table(figures: dict) -> str:
    rows = [(k, v) for k, v in figures.items()]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {round(v, 2) if isinstance(v, float) else v}"
                     for k, v in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/soak.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=2.0)
    args = parser.parse_args(argv)
    from devstack import cluster as local_cluster
    from e2e.conftest import install_crds

    started_here = local_cluster.running() is None
    cluster = local_cluster.ensure_up()
    kafka = None
    try:
        install_crds(cluster)
        kafka = local_kafka.start()
        figures = run(cluster, kafka, args.minutes * 60)
    finally:
        if kafka is not None:
            kafka.stop()
        if started_here:
            local_cluster.down()
    print(table(figures))
    bad = figures["lookup_errors"] or figures["mixed_version_reads"] or figures["updates_failed"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
