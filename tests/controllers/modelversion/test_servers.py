"""The update plan driven through the real admin API of real embedding server processes,
with checkpoints validated and loaded from a real MinIO: a full update, an incremental
on top of it, a checkpoint with an Inf refused by the servers' value checks as they load
it, and a rollback served from memory (S3 is stopped first, so a reload would fail)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from controllers.modelversion import drivers
from controllers.modelversion.actions import Commit, Drop, Rollback
from controllers.modelversion.drivers import Admin
from controllers.modelversion.executor import Executor
from controllers.modelversion.plan import Observed, Target, plan
from controllers.modelversion.validate import Invalid, validate_uri
from devstack import minio as local_minio
from devstack.shards import LocalCluster
from embedding.checkpoint import CheckpointWriter
from recop.api.modelversion import Phase, Validation
from recop.api.recmodel import RecModelSpec

BUCKET = "recop-mv-tests"
SHARDS = 2
MODEL = RecModelSpec.model_validate({
    "tables": [{"name": "user", "dimension": 8, "rows": 2000}],
    "sharding": {"shards": SHARDS}, "dense": {"modelName": "mlp"},
    "storage": {"bucket": BUCKET}})


@pytest.fixture(scope="module")
def parts():
    handle = local_minio.start()
    s3 = handle.client()
    s3.create_bucket(Bucket=BUCKET)
    ids = np.arange(2000, dtype=np.int64)
    for number, scale in ((1, 1.0), (2, 2.0)):
        CheckpointWriter(s3, f"s3://{BUCKET}/v{number}", SHARDS).write_full(
            number, {"user": (ids, np.full((2000, 8), scale, np.float32))})
    CheckpointWriter(s3, f"s3://{BUCKET}/v3", SHARDS).write_incremental(
        3, 2, {"user": (ids[:10], np.full((10, 8), 3.0, np.float32))}, {}, {"user": 8})
    bad = np.ones((2000, 8), np.float32)
    bad[5, 3] = np.inf
    CheckpointWriter(s3, f"s3://{BUCKET}/bad", SHARDS).write_full(4, {"user": (ids, bad)})
    cluster = LocalCluster(SHARDS, replicas=2, env=handle.env)
    try:
        yield handle, s3, cluster
    finally:
        cluster.stop()
        handle.stop()


def drive(cluster, me: Target, previous: Target | None, phase=Phase.LOADING,
          timeout: float = 60, **kw) -> tuple[Phase, list]:
    """Run plan passes until the phase changes or the plan is done; every action taken."""
    shards = {s: [f"127.0.0.1:{p.admin_port}" for p in cluster.processes if p.shard_index == s]
              for s in range(SHARDS)}
    taken = []

    async def loop():
        admin = Admin()
        executor = Executor(admin, CHECKS)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            replicas, _ = await admin.observe(shards)
            step = plan(Observed(phase=phase, me=me, shard_count=SHARDS, replicas=replicas,
                                 now=datetime.now(UTC), previous=previous, **kw))
            for action in step.actions:
                await executor.run(action)
            taken.extend(step.actions)
            if step.phase is not None or step.done:
                return step.phase or phase
            await asyncio.sleep(0.05)
        raise TimeoutError(f"{me.name} did not settle")

    return asyncio.run(loop()), taken


def actives(cluster) -> set[int]:
    return {p.admin.status().active_version for p in cluster.processes}


CHECKS = {n: (Validation().max_abs_value, False) for n in (1, 2, 3, 4)}
V1 = Target("v1", 1, "full", f"s3://{BUCKET}/v1")
V2 = Target("v2", 2, "full", f"s3://{BUCKET}/v2")
V3 = Target("v3", 3, "incremental", f"s3://{BUCKET}/v3", base=V2)


def test_a_non_finite_checkpoint_is_refused_by_the_servers_as_they_load_it(parts):
    _, s3, cluster = parts
    validate_uri(s3, f"s3://{BUCKET}/bad", MODEL, "full", None, None, Validation(), None)
    bad = Target("bad", 4, "full", f"s3://{BUCKET}/bad")
    phase, _ = drive(cluster, bad, None)
    assert phase == Phase.FAILED
    # The Inf is in one shard: its replicas fail, which fails the version; the other
    # shard's may hold it, never serving it.
    replicas = [p.admin.version(4) for p in cluster.processes]
    assert all(v.state != "active" for v in replicas)
    assert any("InvalidValues" in v.error and "NaN/Inf" in v.error for v in replicas)
    assert actives(cluster) == {0}
    drive(cluster, bad, None, phase=Phase.FAILED)  # frees it everywhere
    assert all(p.admin.version(4) is None for p in cluster.processes)


def test_full_then_incremental_then_rollback_from_memory(parts):
    handle, s3, cluster = parts
    manifest = validate_uri(s3, V2.uri, MODEL, "full", None, None, Validation(), None)
    assert manifest.version == 2
    assert drive(cluster, V1, None)[0] == Phase.ACTIVE
    started = time.monotonic()
    phase, taken = drive(cluster, V2, V1)
    print(f"full update of v2 on {len(cluster.processes)} replicas: "
          f"{time.monotonic() - started:.2f}s")
    assert phase == Phase.ACTIVE and actives(cluster) == {2}
    assert sum(isinstance(a, Commit) for a in taken) == 4
    phase, _ = drive(cluster, V3, V2)
    assert phase == Phase.ACTIVE and actives(cluster) == {3}
    with pytest.raises(Invalid, match="applies to version 2"):
        validate_uri(s3, V3.uri, MODEL, "incremental", 1, None, Validation(), None)

    handle.stop()  # from here on, any reload from S3 would fail
    breach = Observed(phase=Phase.ACTIVE, me=V3, shard_count=SHARDS, replicas=[],
                      now=datetime.now(UTC), previous=V2, breach="p99 too high",
                      watch_until=datetime.now(UTC) + timedelta(minutes=1))
    assert plan(breach).phase == Phase.ROLLED_BACK
    started = time.monotonic()
    phase, taken = drive(cluster, V3, V2, phase=Phase.ROLLED_BACK)
    print(f"rollback to v2 without S3: {time.monotonic() - started:.3f}s")
    assert actives(cluster) == {2}
    assert {type(a) for a in taken} == {Rollback, Drop}
    assert all(3 not in {v.version for v in p.admin.status().versions}
               for p in cluster.processes)


def test_hung_replicas_cost_one_deadline_not_one_each(parts, monkeypatch):
    """Replicas are asked at once: three that do not answer (SIGSTOPped) hold the pass
    for one deadline, not three, and the one that answers is still seen."""
    _, _, cluster = parts
    monkeypatch.setattr(drivers, "STATUS_DEADLINE_SECONDS", 1)
    shards = {s: [f"127.0.0.1:{p.admin_port}" for p in cluster.processes if p.shard_index == s]
              for s in range(SHARDS)}
    hung = [p.process.proc.pid for p in cluster.processes[1:]]
    for pid in hung:
        os.kill(pid, signal.SIGSTOP)
    try:
        async def observe():
            admin = Admin()
            try:
                started = time.monotonic()
                replicas, _ = await admin.observe(shards)
                return replicas, time.monotonic() - started
            finally:
                await admin.close()

        replicas, took = asyncio.run(observe())
    finally:
        for pid in hung:
            os.kill(pid, signal.SIGCONT)
    assert [r.key for r in replicas] == [f"127.0.0.1:{cluster.processes[0].admin_port}"]
    assert took < 2.5, took  # asked one after another, it would take 3 s
