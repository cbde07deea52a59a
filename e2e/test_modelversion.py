"""ModelVersions on the real control plane: the operator (a real process) drives real
embedding server processes (registered through FQDN EndpointSlices) that load checkpoints
from a real MinIO, and a real Triton on the CPU. Shows a full update, a resume after the
operator is killed mid-update, refused checkpoints (out of range, bit flip, truncated,
NaN), a user rollback, full and incremental updates under continuous lookups with no
mixed-version read, a replica that joins late brought to the active version, the golden
set through Triton, and an automatic rollback on a breach of the rollback policy's metric
in a real Prometheus scraping the servers, served from memory.

Every row of version N holds N / 100 (an incremental changes some rows), so a lookup's
values name the version they were read from."""

from __future__ import annotations

import io
import json
import threading
import time

import numpy as np
import pytest

from controllers.common import labels as L
from devstack import minio as local_minio
from devstack import prometheus as local_prometheus
from devstack import triton as local_triton
from devstack.external import external_model, s3_secret, shard_slice, triton_slice
from devstack.shards import LocalCluster, start_shard
from e2e.support import OperatorProcess, get_json, wait_for
from embedding.checkpoint import CheckpointWriter
from embedding.client import EmbeddingClient

NS = "e2e-modelversion"
BUCKET = "recop-e2e-mv"
SHARDS = 2
ROWS = 5000
IDS = np.arange(ROWS, dtype=np.int64)
TABLES = ("user", "item")
# Rows an incremental version (5) changes on top of version 4.
CHANGED = np.arange(1000, dtype=np.int64)


def rows_of(number: int) -> np.ndarray:
    """Every row's value at version `number` (see the module docstring)."""
    values = np.full(ROWS, 0.04 if number == 5 else number / 100, np.float32)
    if number == 5:
        values[CHANGED] = 0.05
    return values


def write_full(client, name: str, number: int, values: np.ndarray | None = None) -> None:
    column = rows_of(number) if values is None else values
    CheckpointWriter(client, f"s3://{BUCKET}/{name}", SHARDS).write_full(
        number, {t: (IDS, np.repeat(column[:, None], 16, axis=1)) for t in TABLES})


def operator_env(prometheus) -> dict[str, str]:
    return {"RECOP_PROMETHEUS_URL": prometheus.url}


def apply(cluster, obj: dict) -> None:
    cluster.kubectl("apply", "--server-side", "--field-manager=e2e", "-f", "-",
                    input=json.dumps(obj))


@pytest.fixture(scope="module")
def parts(cluster):
    cluster.kubectl("delete", "namespace", NS, "--wait=true", "--ignore-not-found",
                    timeout=180)
    cluster.kubectl("create", "namespace", NS)
    s3 = local_minio.start()
    client = s3.client()
    client.create_bucket(Bucket=BUCKET)
    for number in (1, 2, 3, 4):
        write_full(client, f"v{number}", number)
    write_full(client, "bad", 9, np.full(ROWS, 1e9, np.float32))
    servers = LocalCluster(SHARDS, replicas=1, env=s3.env)
    prometheus = local_prometheus.start()
    prometheus.set_targets("mv-servers", [f"127.0.0.1:{p.metrics_port}"
                                          for p in servers.processes], {"job_kind": "emb"})
    triton = local_triton.start(local_triton.TEST_MODELS)
    operator = None
    try:
        apply(cluster, s3_secret(NS, s3.access_key, s3.secret_key))
        apply(cluster, external_model(
            NS, "ranker", [{"name": t, "dimension": 16, "rows": ROWS} for t in TABLES],
            SHARDS, BUCKET, s3.endpoint))
        register(cluster, servers, 0)
        apply(cluster, triton_slice(NS, "ranker", triton.grpc_port))
        operator = OperatorProcess(cluster.kubeconfig, NS, env=operator_env(prometheus))
        yield [cluster, servers, operator, s3, triton, prometheus]
    finally:
        if operator is not None:
            operator.stop()
        servers.stop()
        triton.stop()
        prometheus.stop()
        s3.stop()
        cluster.kubectl("delete", "namespace", NS, "--wait=false")


def register(cluster, servers, shard: int) -> None:
    register_process(cluster, next(p for p in servers.processes if p.shard_index == shard))


def register_process(cluster, proc, suffix: str = "local") -> None:
    """An FQDN slice for a shard server process (the API refuses loopback IPs; see
    devstack.external). A slice's ports are its own, so each process on loopback gets a
    slice."""
    apply(cluster, shard_slice(NS, "ranker", proc.shard_index,
                               {"lookup": proc.lookup_port, "admin": proc.admin_port},
                               suffix=suffix))


def version(name: str, source: str, dense: int | None = None) -> dict:
    return {"apiVersion": "serving.recop.dev/v1alpha1", "kind": "ModelVersion",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"model": "ranker", "kind": "full", "source": source}
            | ({"denseModelVersion": dense} if dense else {})}


def dense_versions(triton) -> set[int]:
    from tritonclient.grpc import InferenceServerClient

    index = InferenceServerClient(triton.grpc_address).get_model_repository_index(
        as_json=True)
    return {int(m["version"]) for m in index.get("models", [])
            if m.get("state") == "READY" and m.get("version")}


def status(cluster, name: str) -> dict:
    return get_json(cluster, "-n", NS, "modelversion", name).get("status", {})


def actives(servers) -> set[int]:
    return {p.admin.status().active_version for p in servers.processes}


def test_operator_killed_mid_update_resumes(parts):
    cluster, servers, operator, *_ = parts
    apply(cluster, version("v1", f"s3://{BUCKET}/v1", dense=1))
    # Shard 1 has no registered server yet: v1 loads on shard 0 and waits.
    wait_for(lambda: status(cluster, "v1").get("phase") == "Loading"
             and any(s["state"] == "Loaded" for s in status(cluster, "v1").get("shards", [])),
             timeout=60, what="v1 loaded on shard 0")
    operator.proc.kill()  # SIGKILL: no cleanup of any kind
    operator.proc.wait()
    register(cluster, servers, 1)
    restarted = OperatorProcess(cluster.kubeconfig, NS, env=operator_env(parts[5]))
    parts[2].proc = restarted.proc
    final = wait_for(lambda: status(cluster, "v1").get("phase") == "Active"
                     and status(cluster, "v1"), timeout=60, what="v1 Active after restart")
    assert final["embeddingVersion"] == 1 and actives(servers) == {1}
    assert dense_versions(parts[4]) == {1}
    model = get_json(cluster, "-n", NS, "recmodel", "ranker")["status"]
    assert model["activeVersion"] == "v1"


def test_full_update_and_a_refused_checkpoint(parts):
    cluster, servers, *_ = parts
    wait_for(lambda: status(cluster, "v1").get("verifiedAt"), timeout=30, what="v1 verified")
    apply(cluster, version("v2", f"s3://{BUCKET}/v2", dense=2))
    # What a pipeline that ships a checkpoint waits on: the standard conditions.
    cluster.kubectl("-n", NS, "wait", "--for=condition=Ready", "mv/v2", "--timeout=60s")
    assert actives(servers) == {2}
    cluster.kubectl("-n", NS, "wait", "--for=condition=Succeeded", "mv/v2", "--timeout=30s")
    wait_for(lambda: status(cluster, "v1")["phase"] == "Superseded", timeout=10,
             what="v1 Superseded")
    wait_for(lambda: dense_versions(parts[4]) == {2}, timeout=10, what="dense 1 released")
    apply(cluster, version("bad", f"s3://{BUCKET}/bad"))
    failed = wait_for(lambda: status(cluster, "bad").get("phase") == "Failed"
                      and status(cluster, "bad"), timeout=60, what="bad refused")
    assert failed["reason"] == "ValidationFailed" and "above" in failed["message"]
    conditions = {c["type"]: c for c in failed["conditions"]}
    assert conditions["Failed"]["status"] == "True", conditions
    assert conditions["Failed"]["reason"] == "ValidationFailed"
    assert conditions["Ready"]["status"] == conditions["Succeeded"]["status"] == "False"
    assert failed["observedGeneration"] == 1
    assert {c["type"]: c["status"] for c in status(cluster, "v1")["conditions"]} == {
        "Ready": "False", "Succeeded": "True", "Failed": "False"}
    assert actives(servers) == {2}


def test_user_rollback_to_a_released_version_reloads_it(parts):
    cluster, servers, *_ = parts
    # Without a rollback window v1 was released as soon as v2 verified: rolling back to
    # it reloads it (a full checkpoint) from S3.
    wait_for(lambda: status(cluster, "v2").get("verifiedAt"), timeout=30, what="v2 verified")
    cluster.kubectl("-n", NS, "patch", "recmodel", "ranker", "--type=merge",
                    "-p", json.dumps({"spec": {"activeVersion": "v1"}}))
    wait_for(lambda: status(cluster, "v2").get("phase") == "RolledBack"
             and status(cluster, "v2").get("completedAt"), timeout=60, what="v2 rolled back")
    assert actives(servers) == {1} and dense_versions(parts[4]) == {1}
    wait_for(lambda: status(cluster, "v1")["phase"] == "Active", timeout=10,
             what="v1 Active again")
    model = get_json(cluster, "-n", NS, "recmodel", "ranker")["status"]
    assert model["activeVersion"] == "v1"


def corrupt(client, prefix: str, how: str) -> None:
    """Damage the first values file of a checkpoint in place."""
    key = next(o["Key"] for o in client.list_objects_v2(
        Bucket=BUCKET, Prefix=prefix)["Contents"] if o["Key"].endswith(".values"))
    data = bytearray(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    if how == "bitflip":
        data[len(data) // 2] ^= 0x10
    else:
        data = data[:len(data) // 2]
    client.put_object(Bucket=BUCKET, Key=key, Body=bytes(data))


@pytest.mark.parametrize("how,message", [("bitflip", "crc32 mismatch"),
                                         ("truncated", "truncated"),
                                         ("nan", "NaN/Inf")])
def test_a_corrupted_checkpoint_is_refused_and_the_active_version_keeps_serving(
        parts, how, message):
    """A truncated file is refused by the operator from the listing; a flipped bit and a
    NaN by the servers' checksum and value checks as they read it beside the active
    version, before anything could commit it."""
    cluster, servers, _, s3, *_ = parts
    client = s3.client()
    name = f"corrupt-{how}"
    values = rows_of(7)
    if how == "nan":
        values[123] = np.nan
    write_full(client, name, 7, values)
    if how != "nan":
        corrupt(client, f"{name}/", how)
    serving = actives(servers)
    apply(cluster, version(name, f"s3://{BUCKET}/{name}"))
    failed = wait_for(lambda: status(cluster, name).get("completedAt")
                      and status(cluster, name), timeout=60, what=f"{name} refused")
    assert failed["phase"] == "Failed" and failed["reason"] == "ValidationFailed", failed
    assert message in failed["message"], failed
    assert actives(servers) == serving
    assert all(7 not in {v.version for v in p.admin.status().versions}
               for p in servers.processes), "a refused checkpoint is freed everywhere"


class Reader(threading.Thread):
    """Continuous lookups of every id through the client, checking each answer against
    the rows of the version it names."""

    def __init__(self, servers):
        super().__init__(daemon=True)
        self.client = EmbeddingClient(servers.lookup_addresses)
        self.stop = threading.Event()
        self.versions: dict[int, int] = {}
        self.mixed: list[str] = []

    def run(self):
        while not self.stop.is_set():
            result = self.client.lookup({"user": IDS})
            got = result.values["user"][:, 0]
            if not np.allclose(got, rows_of(result.version)):
                wrong = int((~np.isclose(got, rows_of(result.version))).sum())
                self.mixed.append(f"version {result.version}: {wrong} rows from another")
            self.versions[result.version] = self.versions.get(result.version, 0) + 1


def test_full_then_incremental_under_continuous_lookups_never_mix_versions(parts):
    cluster, servers, _, s3, *_ = parts
    CheckpointWriter(s3.client(), f"s3://{BUCKET}/v5", SHARDS).write_incremental(
        5, 4, {t: (CHANGED, np.full((len(CHANGED), 16), 0.05, np.float32)) for t in TABLES},
        {}, dict.fromkeys(TABLES, 16))
    reader = Reader(servers)
    reader.start()
    try:
        apply(cluster, version("v4", f"s3://{BUCKET}/v4"))
        wait_for(lambda: status(cluster, "v4").get("verifiedAt"), timeout=60,
                 what="v4 Active and verified")
        apply(cluster, {**version("v5", f"s3://{BUCKET}/v5"), "spec": {
            "model": "ranker", "kind": "incremental", "source": f"s3://{BUCKET}/v5",
            "baseVersion": "v4"}})
        final = wait_for(lambda: status(cluster, "v5").get("verifiedAt")
                         and status(cluster, "v5"), timeout=60, what="v5 Active")
        time.sleep(0.5)
    finally:
        reader.stop.set()
        reader.join(timeout=30)
    print(f"lookups per version while v4 and v5 landed: {reader.versions}")
    assert final["phase"] == "Active" and final["embeddingVersion"] == 5
    assert actives(servers) == {5}
    assert reader.mixed == [], reader.mixed[:5]
    assert {1, 4, 5} <= set(reader.versions), "the lookups must span both updates"


def test_a_replica_that_joins_late_is_brought_to_the_active_version(parts):
    cluster, servers, _, s3, *_ = parts
    # v5 is an incremental on v4: the newcomer loads v4 from S3, applies v5, commits,
    # then frees v4 (v5 passed its window).
    late = start_shard(0, SHARDS, env=s3.env)
    try:
        started = time.monotonic()
        register_process(cluster, late, suffix="late")
        wait_for(lambda: late.admin.status().active_version == 5, timeout=60,
                 what="the late replica serving v5")
        print(f"late replica serving the active version after {time.monotonic() - started:.1f}s")
        wait_for(lambda: {v.version for v in late.admin.status().versions} == {5},
                 timeout=30, what="the base v4 freed on the late replica")
        with EmbeddingClient([[late.lookup_address], *servers.lookup_addresses[1:]]) as c:
            result = c.lookup({"user": IDS})
        assert result.version == 5 and np.allclose(result.values["user"][:, 0], rows_of(5))
        events = get_json(cluster, "-n", NS, "events", "--field-selector",
                          "involvedObject.name=v5")["items"]
        assert any(e["reason"] == "ReplicaCaughtUp" for e in events)
    finally:
        cluster.kubectl("-n", NS, "delete", "endpointslice",
                        f"{L.embedding_name('ranker', 0)}-late", "--ignore-not-found")
        late.stop()


def golden_file(client, key: str, expected: dict | None = None) -> str:
    pick = np.random.default_rng(7).choice(IDS, 200, replace=False)
    arrays = {f"ids.{t}": pick for t in TABLES} | {
        f"expected.{k}": v for k, v in (expected or {}).items()}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    client.put_object(Bucket=BUCKET, Key=key, Body=buffer.getvalue())
    return f"s3://{BUCKET}/{key}"


def test_golden_set_through_triton_admits_a_close_version_and_refuses_a_far_one(parts):
    cluster, servers, _, s3, *_ = parts
    client = s3.client()
    uri = golden_file(client, "golden.npz")
    # v6 is v5 within 1e-4: the dense model's scores move by far less than 1%.
    write_full(client, "v6", 6, rows_of(5) + 1e-4)
    write_full(client, "v7", 7, np.full(ROWS, 0.5, np.float32))
    for name in ("v6", "v7"):
        apply(cluster, {**version(name, f"s3://{BUCKET}/{name}"), "spec": {
            "model": "ranker", "kind": "full", "source": f"s3://{BUCKET}/{name}",
            "validation": {"goldenSet": {"uri": uri, "tolerance": 0.01}}}})
        wait_for(lambda n=name: status(cluster, n).get("phase") in ("Active", "Failed"),
                 timeout=60, what=f"{name} settled")
    good, bad = status(cluster, "v6"), status(cluster, "v7")
    print(f"golden set: v6 {good['goldenSet']}, v7 {bad['message']}")
    assert good["phase"] == "Active" and good["goldenSet"]["rows"] == 200
    assert good["goldenSet"]["comparedWith"] == "version 5"
    assert good["goldenSet"]["relativeDifference"] <= 0.01
    assert bad["phase"] == "Failed" and bad["reason"] == "GoldenSetMismatch", bad
    assert "exceeds 0.01" in bad["message"]
    assert actives(servers) == {6}


def test_metric_breach_rolls_back_by_itself_without_s3(parts):
    cluster, servers, *_ = parts
    # The servers export the version they serve; a policy that calls version 3 bad (the
    # series is empty for any other) makes v3 breach as soon as Prometheus scrapes it.
    cluster.kubectl("-n", NS, "patch", "recmodel", "ranker", "--type=merge", "-p", json.dumps(
        {"spec": {"rollbackPolicy": {"metric": "max(recop_embedding_active_version) == 3",
                                     "threshold": 2.5, "window": "60s"}}}))
    apply(cluster, version("v3", f"s3://{BUCKET}/v3", dense=2))
    wait_for(lambda: status(cluster, "v3").get("phase") in ("Active", "RolledBack"),
             timeout=60, what="v3 Active")
    held = [{v.version for v in p.admin.status().versions} for p in servers.processes]
    assert all(6 in h for h in held), "the previous version must stay held in the window"
    parts[3].stop()  # S3 is gone: the rollback must not need it
    activated = time.monotonic()
    final = wait_for(lambda: status(cluster, "v3").get("completedAt") and status(cluster, "v3"),
                     timeout=60, what="v3 rolled back")
    print(f"breach to restored: {time.monotonic() - activated:.1f}s")
    assert final["phase"] == "RolledBack" and final["reason"] == "MetricBreach"
    assert actives(servers) == {6} and dense_versions(parts[4]) == {1}
    events = get_json(cluster, "-n", NS, "events", "--field-selector",
                      "involvedObject.name=v3")["items"]
    assert any(e["reason"] == "RolledBack" and e["type"] == "Warning" for e in events)
