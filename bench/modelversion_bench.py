"""ModelVersion updates through the operator, side by side with the admin API alone.

On the real local control plane, MinIO, Prometheus and two embedding server processes
(one per shard) registered as the model's endpoints, for each repeat:

- a full checkpoint (default 1 GiB) and an incremental one (default 100 MiB on top of
  it): the time from `ModelVersion` applied to phase Active, against the same load and
  commit driven straight through the servers' admin API on a second, identical pair of
  server processes (what a script without RecOp does; it validates nothing);
- a metric breach: a version the rollback policy condemns, from the moment it is Active to
  the rollback complete on every replica (detection included: Prometheus scrapes every
  second, the operator polls every 0.5 s), against restoring the previous version on the
  peer by reloading it from S3 (what a rollback without a kept version costs).

The two paths alternate within each repeat so machine noise hits both.

    python bench/modelversion_bench.py [--full-gib 1] [--incremental-mib 100] [--repeats 3]

Runs its own control plane and servers in a state dir of its own and stops them at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
NS = "bench-mv"
BUCKET = "bench-mv"
SHARDS = 2
DIM = 64
ROW_BYTES = DIM * 4


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def clone(client, source: str, target: str, version: int) -> str:
    """A copy of checkpoint `source` numbered `version` (the server refuses a manifest
    whose number differs from the one it is asked to load)."""
    from embedding.manifest import MANIFEST, Manifest

    listing = client.list_objects_v2(Bucket=BUCKET, Prefix=f"{source}/tables/")
    for item in listing.get("Contents", []):
        key = item["Key"][len(source) + 1:]
        client.copy_object(Bucket=BUCKET, Key=f"{target}/{key}",
                           CopySource={"Bucket": BUCKET, "Key": item["Key"]})
    body = client.get_object(Bucket=BUCKET, Key=f"{source}/{MANIFEST}")["Body"].read()
    manifest = dataclasses.replace(Manifest.from_json(body), version=version)
    client.put_object(Bucket=BUCKET, Key=f"{target}/{MANIFEST}",
                      Body=manifest.to_json().encode())
    return warm(client, target)


def warm(client, prefix: str) -> str:
    """Read a checkpoint once so neither side pays for cold storage: MinIO writes large
    objects past the page cache, so whoever read first would read from disk."""
    for item in client.list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/").get("Contents", []):
        body = client.get_object(Bucket=BUCKET, Key=item["Key"])["Body"]
        while body.read(8 << 20):
            pass
    return f"s3://{BUCKET}/{prefix}"


class Harness:
    """The operator side: apply ModelVersions and time their phases through the API."""

    def __init__(self, info, kube):
        self.info = info
        self.kube = kube
        self.active: str | None = None

    def apply(self, obj: dict) -> None:
        self.info.kubectl("apply", "--server-side", "--field-manager=bench", "-f", "-",
                          input=json.dumps(obj))

    async def _wait(self, name: str, done, timeout: float = 900) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            body = await self.kube.get("serving.recop.dev/v1alpha1", "ModelVersion", NS, name)
            status = (body or {}).get("status") or {}
            if status.get("phase") in ("Failed",) or done(status):
                if status.get("phase") == "Failed":
                    raise RuntimeError(f"{name} failed: {status.get('message')}")
                return time.monotonic()
            await asyncio.sleep(0.05)
        raise TimeoutError(f"{name} did not settle in {timeout}s")

    def update(self, name: str, spec: dict, done=lambda s: s.get("verifiedAt")) -> float:
        """Seconds from applied to `done` (default: Active and the window passed, so the
        next update is not queued behind it; without a rollback policy that is at once)."""
        started = time.monotonic()
        self.apply({"apiVersion": "serving.recop.dev/v1alpha1", "kind": "ModelVersion",
                    "metadata": {"name": name, "namespace": NS},
                    "spec": {"model": "bench"} | spec})
        ended = asyncio.get_event_loop().run_until_complete(self._wait(name, done))
        self.active = name
        return ended - started

    def breach(self, name: str, uri: str) -> float:
        """Seconds from the version Active to its rollback complete everywhere."""
        loop = asyncio.get_event_loop()
        self.apply({"apiVersion": "serving.recop.dev/v1alpha1", "kind": "ModelVersion",
                    "metadata": {"name": name, "namespace": NS},
                    "spec": {"model": "bench", "kind": "full", "source": uri}})
        active = loop.run_until_complete(self._wait(
            name, lambda s: s.get("phase") in ("Active", "RolledBack")))
        restored = loop.run_until_complete(self._wait(name, lambda s: s.get("completedAt")))
        body = loop.run_until_complete(self.kube.get(
            "serving.recop.dev/v1alpha1", "ModelVersion", NS, name))
        if body["status"]["phase"] != "RolledBack":
            raise RuntimeError(f"{name} was not rolled back: {body['status']}")
        return restored - active


def peer_update(peer, number: int, uri: str, base: int | None, drop: int | None) -> float:
    started = time.monotonic()
    if base is None:
        peer.prepare_full(number, uri, timeout=900)
    else:
        peer.prepare_incremental(number, base, uri, timeout=900)
    peer.commit(number)
    elapsed = time.monotonic() - started
    if drop is not None:
        for admin in peer.admins():
            admin.drop(drop)
    return elapsed


def setup(info, s3, servers, prometheus) -> None:
    from devstack.external import external_model, s3_secret, shard_slice

    harness_apply = Harness(info, None).apply
    harness_apply(s3_secret(NS, s3.access_key, s3.secret_key))
    harness_apply(external_model(NS, "bench", [{"name": "emb", "dimension": DIM,
                                                "rows": 1000}], SHARDS, BUCKET, s3.endpoint))
    for proc in servers.processes:
        harness_apply(shard_slice(NS, "bench", proc.shard_index, {
            "lookup": proc.lookup_port, "admin": proc.admin_port}))
    prometheus.set_targets("bench", [f"127.0.0.1:{p.metrics_port}"
                                     for p in servers.processes], {"job_kind": "emb"})


async def connect(kubeconfig: Path):
    from kubernetes_asyncio import client, config

    from controllers.common.kube import Kube

    await config.load_kube_config(config_file=str(kubeconfig))
    return Kube(client.ApiClient())


def set_policy(info, metric: str | None) -> None:
    policy = {"metric": metric, "threshold": 0.5, "window": "300s"} if metric else None
    info.kubectl("-n", NS, "patch", "recmodel", "bench", "--type=merge",
                 "-p", json.dumps({"spec": {"rollbackPolicy": policy}}))


def run(args, info, s3, servers, peer, prometheus) -> dict[str, list[float]]:
    from embedding.checkpoint import CheckpointWriter

    client = s3.client()
    client.create_bucket(Bucket=BUCKET)
    rows = int(args.full_gib * 2**30 / ROW_BYTES)
    changed = int(args.incremental_mib * 2**20 / ROW_BYTES)
    say(f"writing the full checkpoint: {rows:,} rows x {DIM} fp32 "
        f"({rows * ROW_BYTES / 2**30:.2f} GiB)")
    rng = np.random.default_rng(1)
    ids = np.arange(rows, dtype=np.int64)
    CheckpointWriter(client, f"s3://{BUCKET}/base", SHARDS).write_full(
        1, {"emb": (ids, rng.standard_normal((rows, DIM), np.float32))})
    setup(info, s3, servers, prometheus)
    kube = asyncio.get_event_loop().run_until_complete(connect(info.kubeconfig))
    harness = Harness(info, kube)
    results: dict[str, list[float]] = {k: [] for k in (
        "full", "full_peer", "incremental", "incremental_peer", "rollback", "rollback_peer")}
    peer_active: int | None = None
    for rep in range(args.repeats):
        full, inc = 10 * rep + 2, 10 * rep + 3
        say(f"repeat {rep + 1}/{args.repeats}: full version {full}")
        uri = clone(client, "base", f"full-{full}", full)
        results["full"].append(harness.update(f"full-{full}", {"kind": "full", "source": uri}))
        results["full_peer"].append(peer_update(peer, full, uri, None, peer_active))
        peer_active = full
        say(f"  full: operator {results['full'][-1]:.2f}s, admin API alone "
            f"{results['full_peer'][-1]:.2f}s")
        pick = rng.choice(rows, changed, replace=False).astype(np.int64)
        CheckpointWriter(client, f"s3://{BUCKET}/inc-{inc}", SHARDS).write_incremental(
            inc, full, {"emb": (pick, rng.standard_normal((changed, DIM), np.float32))}, {},
            {"emb": DIM})
        uri = warm(client, f"inc-{inc}")
        results["incremental"].append(harness.update(
            f"inc-{inc}", {"kind": "incremental", "source": uri, "baseVersion": f"full-{full}"}))
        results["incremental_peer"].append(peer_update(peer, inc, uri, full, peer_active))
        peer_active = inc
        say(f"  incremental: operator {results['incremental'][-1]:.2f}s, admin API alone "
            f"{results['incremental_peer'][-1]:.2f}s")
        bad = 10 * rep + 4
        uri = clone(client, "base", f"bad-{bad}", bad)
        set_policy(info, f"max(recop_embedding_active_version) == {bad}")
        results["rollback"].append(harness.breach(f"bad-{bad}", uri))
        set_policy(info, None)
        # The peer's rollback: the previous version reloaded from S3 (a full one: the
        # incremental's base plus the incremental would cost more still).
        peer.prepare_full(bad, uri, timeout=900)
        peer.commit(bad)
        for admin in peer.admins():
            admin.drop(peer_active)
        restore = 10 * rep + 5
        restore_uri = clone(client, "base", f"restore-{restore}", restore)
        started = time.monotonic()
        peer.prepare_full(restore, restore_uri, timeout=900)
        peer.commit(restore)
        results["rollback_peer"].append(time.monotonic() - started)
        for admin in peer.admins():
            admin.drop(bad)
        peer_active = restore
        say(f"  breach to restored: operator {results['rollback'][-1]:.2f}s (from memory), "
            f"reload from S3 {results['rollback_peer'][-1]:.2f}s")
    asyncio.get_event_loop().run_until_complete(kube.close())
    return results


def report(args, results: dict[str, list[float]], started: float) -> str:
    def med(key: str) -> float:
        return statistics.median(results[key])

    def row(what: str, key: str, peer: str, note: str) -> str:
        return (f"| {what} | {med(key):.2f} s | {med(peer):.2f} s | "
                f"{med(key) / med(peer):.2f} | {note} |")

    all_runs = ", ".join(f"{k}: {' / '.join(f'{v:.2f}' for v in vs)}"
                         for k, vs in results.items())
    return "\n".join([
        "# ModelVersion updates and rollback",
        "",
        f"Produced by `python bench/modelversion_bench.py --full-gib {args.full_gib:g} "
        f"--incremental-mib {args.incremental_mib:g} --repeats {args.repeats}` on "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC ({platform.machine()}, {os.cpu_count()} "
        f"cores, load average {os.getloadavg()[0]:.1f} at the end, "
        f"{time.monotonic() - started:.0f} s in all). Two shards, one server process each, "
        "on loopback with MinIO; the peer is a second identical pair of processes driven "
        "through the admin API alone, loading the same checkpoints (read once beforehand, so "
        "both find them in the page cache). Medians of the repeats; ratio = operator / peer.",
        "",
        "| update | RecOp (ModelVersion applied to Active) | admin API alone | ratio | "
        "what RecOp adds |",
        "|---|---|---|---|---|",
        row(f"full, {args.full_gib:g} GiB", "full", "full_peer",
            "manifest and file-size checks, discovery, status writes, commit on every "
            "shard (the servers' checksum and value scan runs in both columns)"),
        row(f"incremental, {args.incremental_mib:g} MiB", "incremental", "incremental_peer",
            "the same checks on the changed rows; refused unless its base is active"),
        row("metric breach to rollback complete", "rollback", "rollback_peer",
            "RecOp: detection included, restored from memory; peer: reload from S3 only"),
        "",
        f"Every run (s): {all_runs}.",
        "",
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full-gib", type=float, default=1.0)
    parser.add_argument("--incremental-mib", type=float, default=100.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "MODELVERSION.md")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    os.environ["RECOP_STATE"] = tempfile.mkdtemp(prefix="recop-bench-mv-")
    from devstack import cluster, minio, prometheus
    from devstack.shards import LocalCluster
    from e2e.support import OperatorProcess
    from recop import crdgen

    asyncio.set_event_loop(asyncio.new_event_loop())
    started = time.monotonic()
    info = cluster.ensure_up()
    s3 = minio.start()
    prom = prometheus.start()
    servers = peer = operator = None
    try:
        for path in sorted(crdgen.CRD_DIR.glob("*.yaml")):
            info.kubectl("apply", "--server-side", "-f", str(path))
        info.kubectl("wait", "--for=condition=Established", "--all", "crd", "--timeout=60s")
        info.kubectl("create", "namespace", NS)
        servers = LocalCluster(SHARDS, env=s3.env)
        peer = LocalCluster(SHARDS, env=s3.env)
        operator = OperatorProcess(info.kubeconfig, NS, name="bench-operator",
                                   env={"RECOP_PROMETHEUS_URL": prom.url})
        results = run(args, info, s3, servers, peer, prom)
    finally:
        for part in (operator, servers, peer, prom, s3):
            if part is not None:
                part.stop()
        cluster.down()
    text = report(args, results, started)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
