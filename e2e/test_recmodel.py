"""The RecModel controller on the real control plane with KWOK CPU and GPU nodes."""

from __future__ import annotations

import json
import threading
import time

import pytest

from controllers.common import labels as L
from controllers.common.endpointslices import by_service, ready_endpoints
from devstack.external import shard_slice
from e2e.support import OperatorProcess, get_json, wait_for

NS = "e2e-recmodel"


def model(name: str, shards: int = 3, replicas: int = 2, **overrides) -> dict:
    spec = {
        "tables": [{"name": "user", "dimension": 64, "rows": 1_000_000, "dtype": "fp16"},
                   {"name": "item", "dimension": 32, "rows": 200_000}],
        "sharding": {"shards": shards, "replicasPerShard": replicas},
        "dense": {"modelName": "mlp", "replicas": 2, "gpusPerPod": 1},
        "storage": {"bucket": "recop-models", "prefix": f"{name}/",
                    "endpoint": "http://127.0.0.1:9000"},
    }
    spec.update(overrides)
    return {"apiVersion": "serving.recop.dev/v1alpha1", "kind": "RecModel",
            "metadata": {"name": name, "namespace": NS}, "spec": spec}


@pytest.fixture(scope="module")
def operator(cluster):
    cluster.kubectl("delete", "namespace", NS, "--wait=true", "--ignore-not-found",
                    timeout=180)
    cluster.kubectl("create", "namespace", NS)
    proc = OperatorProcess(cluster.kubeconfig, NS)
    yield proc
    proc.stop()
    cluster.kubectl("delete", "namespace", NS, "--wait=false")


def apply(cluster, obj: dict) -> None:
    cluster.kubectl("apply", "--server-side", "--field-manager=e2e", "-f", "-",
                    input=json.dumps(obj))


def wait_ready(cluster, name: str, timeout: int = 180) -> dict:
    """Ready as a user waits for it (the condition), then every replica up (the phase)."""
    for condition in ("condition=Ready", "jsonpath={.status.phase}=Ready"):
        cluster.kubectl("-n", NS, "wait", f"--for={condition}", f"recmodel/{name}",
                        f"--timeout={timeout}s", timeout=timeout + 30)
    return get_json(cluster, "-n", NS, "recmodel", name)


def pods(cluster, name: str, component: str) -> list[dict]:
    return get_json(cluster, "-n", NS, "pods", "-l",
                    f"{L.MODEL}={name},{L.COMPONENT}={component}")["items"]


def shard_ready(cluster, name: str, shards: int) -> list[int]:
    slices = get_json(cluster, "-n", NS, "endpointslices", "-l", f"{L.MODEL}={name}")["items"]
    grouped = by_service(slices)
    return [ready_endpoints(grouped.get(L.embedding_name(name, i), [])) for i in range(shards)]


@pytest.fixture(scope="module")
def ready_model(cluster, operator):
    apply(cluster, model("ranker"))
    return wait_ready(cluster, "ranker")


def test_model_becomes_ready_with_pods_on_the_right_pools(cluster, ready_model):
    status = ready_model["status"]
    assert status["phase"] == "Ready"
    assert status["readyShards"] == 3 and status["readyReplicas"] == 6
    assert status["tritonReadyReplicas"] == 2
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["observedGeneration"] == ready_model["metadata"]["generation"]

    triton = pods(cluster, "ranker", L.TRITON)
    assert len(triton) == 2
    assert all(p["spec"]["nodeName"].startswith("kwok-gpu-") for p in triton)
    assert all(p["status"]["phase"] == "Running" for p in triton)
    embedding = pods(cluster, "ranker", L.EMBEDDING)
    assert len(embedding) == 6
    assert all(p["spec"]["nodeName"].startswith("kwok-cpu-") for p in embedding)
    for shard in range(3):
        nodes = {p["spec"]["nodeName"] for p in embedding
                 if p["metadata"]["labels"][L.SHARD] == str(shard)}
        assert len(nodes) == 2, f"replicas of shard {shard} share a node"
    pdbs = get_json(cluster, "-n", NS, "pdb", "-l", f"{L.MODEL}=ranker")["items"]
    assert len(pdbs) == 3


def test_settled_model_causes_no_writes(cluster, operator, ready_model):
    wait_for(lambda: operator.writes() == operator.writes(), what="a quiet operator")
    writes = operator.writes()
    version = get_json(cluster, "-n", NS, "recmodel", "ranker")["metadata"]["resourceVersion"]
    time.sleep(35)  # longer than the operator's resync period
    assert operator.writes() == writes
    after = get_json(cluster, "-n", NS, "recmodel", "ranker")["metadata"]["resourceVersion"]
    assert after == version


def test_hand_edits_are_reverted(cluster, ready_model):
    deployment = L.embedding_name("ranker", 1)
    cluster.kubectl("-n", NS, "scale", "deployment", deployment, "--replicas=5")
    wait_for(lambda: get_json(cluster, "-n", NS, "deployment", deployment)["spec"]["replicas"]
             == 2, timeout=60, what="the replica count to be restored")
    cluster.kubectl("-n", NS, "delete", "service", L.embedding_name("ranker", 2))
    wait_for(lambda: cluster.kubectl("-n", NS, "get", "service", L.embedding_name("ranker", 2),
                                     check=False).returncode == 0,
             timeout=60, what="the deleted Service to come back")


def _watch_min_ready(cluster, name, shards, stop: threading.Event, seen: list):
    while not stop.is_set():
        seen.append(min(shard_ready(cluster, name, shards)))
        time.sleep(0.2)


def test_scaling_and_new_image_never_leave_a_shard_without_a_ready_replica(cluster, ready_model):
    stop, seen = threading.Event(), []
    watcher = threading.Thread(target=_watch_min_ready, args=(cluster, "ranker", 3, stop, seen))
    watcher.start()
    try:
        cluster.kubectl("-n", NS, "patch", "recmodel", "ranker", "--type=merge", "-p", json.dumps(
            {"spec": {"sharding": {"replicasPerShard": 3},
                      "embeddingServer": {"image": "ghcr.io/recop/embedding-server:0.1.1"}}}))
        wait_for(lambda: get_json(cluster, "-n", NS, "recmodel", "ranker")["status"].get(
            "readyReplicas") == 9 and all(
            p["spec"]["containers"][0]["image"].endswith("0.1.1")
            for p in pods(cluster, "ranker", L.EMBEDDING)
            if not p["metadata"].get("deletionTimestamp")), timeout=180, what="the rollout")
        wait_ready(cluster, "ranker")
    finally:
        stop.set()
        watcher.join()
    assert seen and min(seen) >= 1, f"a shard had no ready replica during the rollout: {seen}"


def test_a_shard_no_node_can_hold_is_refused_clearly(cluster, operator):
    huge = model("too-big", shards=2, tables=[
        {"name": "user", "dimension": 256, "rows": 2_000_000_000, "dtype": "fp32"}])
    apply(cluster, huge)
    status = wait_for(lambda: get_json(cluster, "-n", NS, "recmodel", "too-big").get(
        "status", {}).get("phase") == "Failed" and get_json(
        cluster, "-n", NS, "recmodel", "too-big")["status"], timeout=60, what="a refusal")
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "CannotPlace"
    assert "largest eligible node" in degraded["message"]
    assert not get_json(cluster, "-n", NS, "deployments", "-l", f"{L.MODEL}=too-big")["items"]
    events = get_json(cluster, "-n", NS, "events", "--field-selector",
                      "involvedObject.name=too-big")["items"]
    assert any(e["reason"] == "CannotPlace" and e["type"] == "Warning" for e in events)


def test_external_servers_are_discovered_through_endpointslices(cluster, operator):
    ext = model("external", shards=2, replicas=1,
                embeddingServer={"deployment": "External"},
                dense={"modelName": "mlp", "replicas": 0, "gpusPerPod": 0,
                       "instanceGroups": [{"kind": "KIND_CPU"}]})
    apply(cluster, ext)
    wait_for(lambda: cluster.kubectl("-n", NS, "get", "service", L.embedding_name("external", 1),
                                     check=False).returncode == 0, what="shard Services")
    service = get_json(cluster, "-n", NS, "service", L.embedding_name("external", 0))
    assert "selector" not in service["spec"]
    assert not pods(cluster, "external", L.EMBEDDING)
    status = get_json(cluster, "-n", NS, "recmodel", "external").get("status", {})
    assert status.get("phase") != "Ready"
    for shard in range(2):
        apply(cluster, shard_slice(NS, "external", shard, {"lookup": 50051 + shard}))
    status = wait_ready(cluster, "external", timeout=60)["status"]
    assert status["readyShards"] == 2


def test_deleting_the_model_removes_everything_it_owned(cluster, operator):
    apply(cluster, model("short-lived", shards=1, replicas=1))
    wait_ready(cluster, "short-lived")
    cluster.kubectl("-n", NS, "delete", "recmodel", "short-lived")
    wait_for(lambda: not get_json(cluster, "-n", NS, "deployments,services,pdb,configmaps",
                                  "-l", f"{L.MODEL}=short-lived")["items"],
             timeout=90, what="garbage collection of the model's objects")
