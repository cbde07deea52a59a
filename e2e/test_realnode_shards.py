"""Shard server pods on the real node (devstack.node) through a model's life: a full and
then an incremental version loaded from MinIO and served through the shards' Service
endpoints, a refused checkpoint and an automatic rollback (a real Prometheus scraping the
pods) with no mixed-version read; a pod deleted and a container killed brought back to
the active version; a server that cannot load, not ready with the reason in its log, the
RecModel's status and an Event, with grpc-health-probe agreeing with the kubelet's
probes; a memory limit below the tables refused, and an OOM kill reported; the pods'
structured logs.

Every row of version N holds N / 100, except the rows the incremental version 2 changes
(0.02 over version 1's 0.01), so a lookup's values name the version they were read from.
"""

from __future__ import annotations

import json
import os
import threading
import time

import numpy as np
import pytest

from controllers.recmodel.objects import shard_memory_bytes
from devstack import grpc_probe, node
from devstack import minio as local_minio
from devstack import prometheus as local_prometheus
from devstack.external import s3_secret
from e2e import realnode
from e2e.realnode import apply, container, events, ready_addresses, recmodel, shard_pods
from e2e.support import OperatorProcess, get_json, wait_for
from embedding.checkpoint import CheckpointWriter
from embedding.client import EmbeddingClient
from embedding.config import LIVENESS_HEALTH_SERVICE, LOOKUP_HEALTH_SERVICE
from recop.api.recmodel import RecModelSpec
from recop.quantity import mebibytes

NS = "e2e-realnode-shards"
BUCKET = "recop-e2e-realnode-shards"
MODEL = "shards"
SHARDS = 2
ROWS = 2000
DIM = 16
IDS = np.arange(ROWS, dtype=np.int64)
CHANGED = np.arange(500, dtype=np.int64)  # the rows version 2 changes on version 1
METRICS_PORT = 9100
# Rows the OOM test's checkpoint really holds (384 MB at dim 16), against ROWS in the spec.
HUGE_ROWS = 6_000_000

pytestmark = [
    pytest.mark.skipif(bool(os.environ.get("RECOP_KUBECONFIG")),
                       reason="the real node joins the local control plane only"),
]


def rows_of(number: int) -> np.ndarray:
    values = np.full(ROWS, 0.01 if number == 2 else number / 100, np.float32)
    if number == 2:
        values[CHANGED] = 0.02
    return values


def write_full(client, name: str, number: int, values: np.ndarray, shards: int = SHARDS,
               ids: np.ndarray = IDS) -> None:
    CheckpointWriter(client, f"s3://{BUCKET}/{name}", shards).write_full(
        number, {"user": (ids, np.repeat(values[:, None], DIM, axis=1))})


@pytest.fixture(scope="module")
def real_node(cluster):
    return realnode.node_up(cluster)


@pytest.fixture(scope="module")
def server_image(real_node) -> str:
    return realnode.server_image()


@pytest.fixture(scope="module")
def prometheus(real_node):
    handle = local_prometheus.start()
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def operator(real_node, prometheus):
    real_node.kubectl("delete", "namespace", NS, "--wait=true", "--ignore-not-found",
                      timeout=180)
    real_node.kubectl("create", "namespace", NS)
    proc = OperatorProcess(real_node.kubeconfig, NS,
                           env={"RECOP_PROMETHEUS_URL": prometheus.url})
    yield proc
    proc.stop()
    real_node.kubectl("delete", "namespace", NS, "--wait=false")


@pytest.fixture(scope="module")
def s3(real_node, operator):
    handle = local_minio.start()
    try:
        forward = node.expose(handle.port)
        try:
            client = handle.client()
            client.create_bucket(Bucket=BUCKET)
            write_full(client, "v1", 1, rows_of(1))
            CheckpointWriter(client, f"s3://{BUCKET}/v2", SHARDS).write_incremental(
                2, 1, {"user": (CHANGED, np.full((len(CHANGED), DIM), 0.02, np.float32))},
                {}, {"user": DIM})
            write_full(client, "v3", 3, rows_of(3))
            write_full(client, "bad", 9, np.full(ROWS, 1e9, np.float32))
            apply(real_node, s3_secret(NS, handle.access_key, handle.secret_key))
            yield handle
        finally:
            forward.stop()
    finally:
        handle.stop()


def storage(s3) -> dict:
    return realnode.s3_storage(BUCKET, s3.port)


def version(name: str, source: str, model: str = MODEL, **spec) -> dict:
    return {"apiVersion": "serving.recop.dev/v1alpha1", "kind": "ModelVersion",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"model": model, "kind": "full", "source": f"s3://{BUCKET}/{source}",
                     **spec}}


def status(cluster, name: str) -> dict:
    return get_json(cluster, "-n", NS, "modelversion", name).get("status", {})


def model_status(cluster, name: str) -> dict:
    return get_json(cluster, "-n", NS, "recmodel", name).get("status", {})


def condition(cluster, model: str, kind: str) -> dict:
    return next((c for c in model_status(cluster, model).get("conditions", [])
                 if c["type"] == kind), {})


def explain(cluster, model: str) -> str:
    """What the pods, the model and the operator said, for a failed wait."""
    pods = {p["metadata"]["name"]: p.get("status") for p in shard_pods(cluster, NS, model)}
    logs = {name: cluster.kubectl("-n", NS, "logs", name, "--tail=20", check=False).stdout
            for name in pods}
    return (f"model: {json.dumps(model_status(cluster, model), indent=1)}\n"
            f"pods: {json.dumps(pods, indent=1)}\nlogs: {logs}")


def settle(cluster, name: str, done, timeout: float, what: str) -> dict:
    try:
        return wait_for(lambda: done(status(cluster, name)) and status(cluster, name),
                        timeout=timeout, what=what)
    except AssertionError:
        raise AssertionError(f"{what}: {json.dumps(status(cluster, name), indent=1)}\n"
                             f"{explain(cluster, MODEL)}") from None


class Reader(threading.Thread):
    """Lookups of every id, one after another, each answer checked against the rows of
    the version it names."""

    def __init__(self, shards: list[list[str]]):
        super().__init__(daemon=True)
        self.client = EmbeddingClient(shards)
        self.stop = threading.Event()
        self.versions: dict[int, int] = {}
        self.mixed: list[str] = []
        self.errors: list[str] = []

    def run(self):
        while not self.stop.is_set():
            try:
                result = self.client.lookup({"user": IDS})
            except Exception as error:  # counted: the test asserts there are none
                self.errors.append(f"{type(error).__name__}: {error}")
                time.sleep(0.1)
                continue
            got = result.values["user"]
            want = rows_of(result.version)[:, None]
            if not np.array_equal(got, np.broadcast_to(want, got.shape)):
                wrong = int((~np.all(got == want, axis=1)).sum())
                self.mixed.append(f"version {result.version}: {wrong} rows of another")
            self.versions[result.version] = self.versions.get(result.version, 0) + 1


def lookup(cluster) -> tuple[int, np.ndarray]:
    with EmbeddingClient(ready_addresses(cluster, NS, MODEL, SHARDS)) as client:
        result = client.lookup({"user": IDS})
    return result.version, result.values["user"]


def test_full_incremental_refusal_and_automatic_rollback_never_mix_versions(
        real_node, operator, server_image, s3, prometheus):
    cluster = real_node
    started = time.monotonic()
    apply(cluster, recmodel(NS, MODEL, server_image, storage(s3), shards=SHARDS))
    apply(cluster, version("v1", "v1"))
    settle(cluster, "v1", lambda s: s.get("verifiedAt"), 180, "v1 Active on the shard pods")
    print(f"v1 Active {time.monotonic() - started:.1f}s after the RecModel was applied")
    pods = shard_pods(cluster, NS, MODEL)
    assert len(pods) == SHARDS and {p["spec"]["nodeName"] for p in pods} == {node.NODE_NAME}
    # The rollback policy's metric comes from the pods, scraped on their IPs.
    prometheus.set_targets("shards", [f"{p['status']['podIP']}:{METRICS_PORT}" for p in pods],
                           {"job_kind": "emb"})
    shards = wait_for(lambda: (a := ready_addresses(cluster, NS, MODEL, SHARDS))
                      and all(len(s) == 1 for s in a) and a, timeout=60,
                      what="one ready endpoint per shard")

    reader = Reader(shards)
    reader.start()
    try:
        apply(cluster, version("v2", "v2", kind="incremental", baseVersion="v1"))
        settle(cluster, "v2", lambda s: s.get("verifiedAt"), 120, "v2 Active")
        apply(cluster, version("bad", "bad"))
        bad = settle(cluster, "bad", lambda s: s.get("completedAt"), 120, "bad refused")
        cluster.kubectl("-n", NS, "patch", "recmodel", MODEL, "--type=merge", "-p", json.dumps(
            {"spec": {"rollbackPolicy": {"metric": "max(recop_embedding_active_version) == 3",
                                         "threshold": 2.5, "window": "60s"}}}))
        applied = time.monotonic()
        apply(cluster, version("v3", "v3"))
        v3 = settle(cluster, "v3", lambda s: s.get("completedAt"), 120, "v3 rolled back")
        print(f"v3 applied to rolled back: {time.monotonic() - applied:.1f}s")
        time.sleep(1)
    finally:
        reader.stop.set()
        reader.join(timeout=30)
        reader.client.close()
    print(f"lookups per version while v2, bad and v3 landed: {reader.versions}")
    assert bad["phase"] == "Failed" and bad["reason"] == "ValidationFailed", bad
    assert "above" in bad["message"], bad
    assert v3["phase"] == "RolledBack" and v3["reason"] == "MetricBreach", v3
    assert reader.mixed == [], reader.mixed[:5]
    assert reader.errors == [], reader.errors[:5]
    # v3 served through the pods before the breach took it back.
    assert {1, 2, 3} <= set(reader.versions), reader.versions
    assert 9 not in reader.versions
    number, values = lookup(cluster)
    assert number == 2 and np.array_equal(values[:, 0], rows_of(2))
    assert model_status(cluster, MODEL)["activeVersion"] == "v2"
    assert any(e["reason"] == "RolledBack" and e["type"] == "Warning"
               for e in events(cluster, NS, "v3"))


def _ready_again(cluster, shard: int, gone: str | None = None, restarts: int = 0):
    def check():
        for pod in shard_pods(cluster, NS, MODEL, shard):
            state = container(pod)
            if pod["metadata"]["name"] != gone and state.get("ready") \
                    and state.get("restartCount", 0) >= restarts:
                return pod
        return None
    return check


def test_a_deleted_pod_is_replaced_and_brought_to_the_active_version(real_node, operator,
                                                                     s3):
    cluster = real_node
    victim = shard_pods(cluster, NS, MODEL, 0)[0]
    old_ip = victim["status"]["podIP"]
    deleted = time.monotonic()
    cluster.kubectl("-n", NS, "delete", "pod", victim["metadata"]["name"], "--wait=false")
    try:
        new = wait_for(_ready_again(cluster, 0, gone=victim["metadata"]["name"]),
                       timeout=180, what="a new shard 0 pod Ready")
    except AssertionError as error:
        raise AssertionError(f"{error}\n{explain(cluster, MODEL)}") from None
    print(f"deleted pod replaced and serving v2 in {time.monotonic() - deleted:.1f}s "
          f"({old_ip} -> {new['status']['podIP']})")
    number, values = lookup(cluster)
    assert number == 2 and np.array_equal(values[:, 0], rows_of(2))
    caught_up = [e["message"] for e in events(cluster, NS, "v2")
                 if e["reason"] == "ReplicaCaughtUp"]
    assert any(new["status"]["podIP"] in m for m in caught_up), caught_up


def test_a_killed_container_comes_back_to_the_active_version(real_node, operator, s3):
    cluster = real_node
    target = shard_pods(cluster, NS, MODEL, 1)[0]
    before = container(target)
    killed = time.monotonic()
    realnode.kill_container(before["containerID"])
    try:
        pod = wait_for(_ready_again(cluster, 1, restarts=before.get("restartCount", 0) + 1),
                       timeout=90, what="the killed shard 1 container restarted and Ready")
    except AssertionError as error:
        raise AssertionError(f"{error}\n{explain(cluster, MODEL)}") from None
    print(f"killed container restarted and serving v2 in {time.monotonic() - killed:.1f}s")
    restarted = container(pod)
    assert pod["metadata"]["name"] == target["metadata"]["name"]
    assert restarted["containerID"] != before["containerID"]
    assert restarted["lastState"]["terminated"]["exitCode"] == 137
    number, values = lookup(cluster)
    assert number == 2 and np.array_equal(values[:, 0], rows_of(2))
    caught_up = [e["message"] for e in events(cluster, NS, "v2")
                 if e["reason"] == "ReplicaCaughtUp"]
    assert any(pod["status"]["podIP"] in m for m in caught_up), caught_up


def _probe(pod: dict) -> dict[str, int]:
    """grpc-health-probe's exit status for both services the kubelet's probes ask."""
    port = next(p["containerPort"] for p in pod["spec"]["containers"][0]["ports"]
                if p["name"] == "lookup")
    address = f"{pod['status']['podIP']}:{port}"
    return {service: grpc_probe.check(address, service).code
            for service in (LIVENESS_HEALTH_SERVICE, LOOKUP_HEALTH_SERVICE)}


def test_a_server_that_cannot_load_stays_not_ready_and_says_why(real_node, operator,
                                                               server_image, s3):
    cluster = real_node
    client = s3.client()
    write_full(client, "broken", 1, rows_of(1), shards=1)
    # One flipped bit in the values: the manifest and the listing are fine, so the
    # operator hands it to the server, whose CRC32 check refuses it as it reads.
    key = next(o["Key"] for o in client.list_objects_v2(
        Bucket=BUCKET, Prefix="broken/")["Contents"] if o["Key"].endswith(".values"))
    data = bytearray(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    data[len(data) // 2] ^= 0x10
    client.put_object(Bucket=BUCKET, Key=key, Body=bytes(data))
    apply(cluster, recmodel(NS, "unready", server_image, storage(s3)))
    wait_for(lambda: any(container(p).get("state", {}).get("running")
                         for p in shard_pods(cluster, NS, "unready")),
             timeout=120, what="the unready model's pod running")
    apply(cluster, version("broken", "broken", model="unready"))
    failed = settle(cluster, "broken", lambda s: s.get("completedAt"), 120, "broken refused")
    assert failed["phase"] == "Failed" and "crc32 mismatch" in failed["message"], failed

    try:
        ready = wait_for(lambda: "crc32 mismatch" in (c := condition(
            cluster, "unready", "Ready")).get("message", "") and c, timeout=60,
            what="the reason in the RecModel's Ready condition")
    except AssertionError as error:
        raise AssertionError(f"{error}\n{explain(cluster, 'unready')}") from None
    print(f"RecModel unready: {ready['reason']}: {ready['message']}")
    assert ready["status"] == "False" and ready["reason"] == "VersionFailed"
    warned = [e for e in events(cluster, NS, "unready") if e["reason"] == "VersionFailed"]
    assert warned and warned[0]["type"] == "Warning" and "crc32 mismatch" in warned[0]["message"]

    pod = shard_pods(cluster, NS, "unready")[0]
    name = pod["metadata"]["name"]
    assert "crc32 mismatch" in cluster.kubectl("-n", NS, "logs", name).stdout
    # The kubelet's own grpc probe (grpc.health.v1) keeps it out of the Service...
    unhealthy = [e["message"] for e in events(cluster, NS, name) if e["reason"] == "Unhealthy"]
    assert any("Readiness probe failed" in m and "NOT_SERVING" in m for m in unhealthy), \
        unhealthy
    assert not container(pod)["ready"] and ready_addresses(cluster, NS, "unready", 1) == [[]]
    # ...and grpc-health-probe from the host says the same of both services, here and of
    # a pod the kubelet counts ready.
    assert _probe(pod) == {LIVENESS_HEALTH_SERVICE: grpc_probe.SERVING,
                                  LOOKUP_HEALTH_SERVICE: grpc_probe.UNHEALTHY}
    serving = shard_pods(cluster, NS, MODEL, 0)[0]
    assert container(serving)["ready"]
    assert _probe(serving) == {LIVENESS_HEALTH_SERVICE: grpc_probe.SERVING,
                                      LOOKUP_HEALTH_SERVICE: grpc_probe.SERVING}
    # Liveness passes while no version loads: the kubelet restarts nothing.
    assert container(shard_pods(cluster, NS, "unready")[0])["restartCount"] == 0


def test_a_memory_limit_below_the_tables_is_refused_before_any_pod_runs(
        real_node, operator, server_image, s3):
    cluster = real_node
    apply(cluster, recmodel(NS, "toosmall", server_image, storage(s3),
                            server={"resources": {"requests": {"cpu": "100m"},
                                                  "limits": {"memory": "64Mi"}}}))
    try:
        wait_for(lambda: model_status(cluster, "toosmall").get("phase") == "Failed",
                 timeout=60, what="toosmall refused")
    except AssertionError as error:
        raise AssertionError(f"{error}\n{explain(cluster, 'toosmall')}") from None
    degraded = condition(cluster, "toosmall", "Degraded")
    print(f"refused: {degraded['message']}")
    assert degraded["reason"] == "MemoryLimitTooLow"
    assert "limits.memory is 64Mi" in degraded["message"]
    assert any(e["reason"] == "MemoryLimitTooLow" and e["type"] == "Warning"
               for e in events(cluster, NS, "toosmall"))
    assert get_json(cluster, "-n", NS, "deployments", "-l",
                    "recop.dev/model=toosmall")["items"] == []

    # A running model whose limit is lowered keeps its Deployment as it was.
    deployment = "unready-emb-0"
    before = get_json(cluster, "-n", NS, "deployment", deployment)["metadata"]["generation"]
    cluster.kubectl("-n", NS, "patch", "recmodel", "unready", "--type=merge", "-p", json.dumps(
        {"spec": {"embeddingServer": {"resources": {"limits": {"memory": "64Mi"}}}}}))
    wait_for(lambda: condition(cluster, "unready", "Degraded").get("reason")
             == "MemoryLimitTooLow", timeout=60, what="the lowered limit refused")
    assert get_json(cluster, "-n", NS, "deployment", deployment)["metadata"][
        "generation"] == before


def test_a_pod_oom_killed_anyway_is_reported(real_node, operator, server_image, s3):
    """The check trusts spec.tables; a checkpoint with far more rows than it says passes
    the operator's manifest checks (rows are compared with the base only) and the server
    outgrows its limit as it loads."""
    cluster = real_node
    name = "oom"
    spec = recmodel(NS, name, server_image, storage(s3))
    need = shard_memory_bytes(RecModelSpec.model_validate(spec["spec"]))
    limit = mebibytes(need + 32 * 2**20)  # just above the check
    spec["spec"]["embeddingServer"]["resources"]["limits"] = {"memory": limit}
    write_full(s3.client(), "huge", 1, np.full(HUGE_ROWS, 0.5, np.float32), shards=1,
               ids=np.arange(HUGE_ROWS, dtype=np.int64))
    apply(cluster, spec)
    apply(cluster, version("huge", "huge", model=name))
    started = time.monotonic()
    try:
        try:
            wait_for(lambda: condition(cluster, name, "Ready").get("reason") == "OOMKilled",
                     timeout=180, what="the OOM kill in the RecModel's status")
        except AssertionError as error:
            raise AssertionError(f"{error} (limit {limit})\n{explain(cluster, name)}") \
                from None
        ready = condition(cluster, name, "Ready")
        print(f"OOM kill reported {time.monotonic() - started:.1f}s after the version: "
              f"{ready['message']}")
        assert f"at its memory limit of {limit}" in ready["message"]
        state = container(shard_pods(cluster, NS, name)[0])
        terminated = (state.get("lastState", {}).get("terminated")
                      or state.get("state", {}).get("terminated"))
        assert terminated["reason"] == "OOMKilled", state
        assert any(e["reason"] == "OOMKilled" and e["type"] == "Warning"
                   for e in events(cluster, NS, name))
    finally:
        # End the crash loop: the node is shared.
        cluster.kubectl("-n", NS, "delete", "modelversion", "huge", "--wait=false")
        cluster.kubectl("-n", NS, "delete", "recmodel", name, "--wait=false")


def test_shard_pod_logs_are_structured(real_node, operator):
    cluster = real_node
    pods = shard_pods(cluster, NS, MODEL)
    assert pods
    for pod in pods:
        lines = [line for line in cluster.kubectl(
            "-n", NS, "logs", pod["metadata"]["name"]).stdout.splitlines() if line.strip()]
        assert lines, f"{pod['metadata']['name']} logged nothing"
        records = [json.loads(line) for line in lines]
        assert all(isinstance(r, dict) and r.get("message") for r in records), records[:3]
        assert any("lookup :8500" in r["message"] for r in records)
