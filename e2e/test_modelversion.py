"""ModelVersions on the real control plane: the operator (a real process) drives real
embedding server processes (registered through FQDN EndpointSlices) that load checkpoints
from a real MinIO. Shows a full update, a resume after the operator is killed mid-update,
a refused checkpoint, a user rollback, and an automatic rollback on a breach of the
rollback policy's metric in a real Prometheus scraping the servers, served from memory."""

from __future__ import annotations

import base64
import json
import time

import numpy as np
import pytest

from controllers import labels as L
from e2e.support import OperatorProcess, get_json, wait_for
from embedding.checkpoint import CheckpointWriter
from embedding.cluster import LocalCluster
from recop.local import minio as local_minio
from recop.local import prometheus as local_prometheus
from recop.local import triton as local_triton

NS = "e2e-modelversion"
BUCKET = "recop-e2e-mv"
SHARDS = 2


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
    ids = np.arange(5000, dtype=np.int64)
    for number in (1, 2, 3):
        CheckpointWriter(client, f"s3://{BUCKET}/v{number}", SHARDS).write_full(
            number, {"user": (ids, np.full((5000, 16), number, np.float32))})
    bad = np.full((5000, 16), 1e9, np.float32)
    CheckpointWriter(client, f"s3://{BUCKET}/bad", SHARDS).write_full(9, {"user": (ids, bad)})
    servers = LocalCluster(SHARDS, replicas=1, env=s3.env)
    prometheus = local_prometheus.start()
    prometheus.set_targets("mv-servers", [f"127.0.0.1:{p.metrics_port}"
                                          for p in servers.processes], {"job_kind": "emb"})
    triton = local_triton.start(local_triton.TEST_MODELS)
    operator = None
    try:
        apply(cluster, {"apiVersion": "v1", "kind": "Secret",
                        "metadata": {"name": "s3", "namespace": NS}, "data": {
                            "id": base64.b64encode(s3.access_key.encode()).decode(),
                            "secret": base64.b64encode(s3.secret_key.encode()).decode()}})
        apply(cluster, {"apiVersion": "serving.recop.dev/v1alpha1", "kind": "RecModel",
                        "metadata": {"name": "ranker", "namespace": NS}, "spec": {
                            "tables": [{"name": "user", "dimension": 16, "rows": 5000}],
                            "sharding": {"shards": SHARDS, "replicasPerShard": 1},
                            "embeddingServer": {"deployment": "External"},
                            "dense": {"modelName": "mlp", "replicas": 0, "gpusPerPod": 0,
                                      "instanceGroups": [{"kind": "KIND_CPU"}]},
                            "storage": {"bucket": BUCKET, "endpoint": s3.endpoint,
                                        "accessKeyId": {"name": "s3", "key": "id"},
                                        "secretAccessKey": {"name": "s3", "key": "secret"}}}})
        register(cluster, servers, 0)
        service = L.triton_name("ranker")
        apply(cluster, {
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{service}-local", "namespace": NS,
                         "labels": {L.SERVICE_NAME: service, L.MODEL: "ranker"}},
            "addressType": "FQDN",
            "endpoints": [{"addresses": ["triton.localhost"], "conditions": {"ready": True}}],
            "ports": [{"name": "grpc", "port": triton.grpc_port, "protocol": "TCP"}]})
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
    """An FQDN slice for shard `shard`'s server: the API refuses loopback IPs, and names
    under .localhost resolve to loopback (RFC 6761)."""
    proc = next(p for p in servers.processes if p.shard_index == shard)
    service = L.embedding_name("ranker", shard)
    apply(cluster, {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": f"{service}-local", "namespace": NS,
                     "labels": {L.SERVICE_NAME: service, L.MODEL: "ranker"}},
        "addressType": "FQDN",
        "endpoints": [{"addresses": [f"shard-{shard}.localhost"], "conditions": {"ready": True}}],
        "ports": [{"name": "lookup", "port": proc.lookup_port, "protocol": "TCP"},
                  {"name": "admin", "port": proc.admin_port, "protocol": "TCP"}]})


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
    wait_for(lambda: status(cluster, "v2").get("phase") == "Active", timeout=60,
             what="v2 Active")
    assert actives(servers) == {2}
    wait_for(lambda: status(cluster, "v1")["phase"] == "Superseded", timeout=10,
             what="v1 Superseded")
    wait_for(lambda: dense_versions(parts[4]) == {2}, timeout=10, what="dense 1 released")
    apply(cluster, version("bad", f"s3://{BUCKET}/bad"))
    failed = wait_for(lambda: status(cluster, "bad").get("phase") == "Failed"
                      and status(cluster, "bad"), timeout=60, what="bad refused")
    assert failed["reason"] == "ValidationFailed" and "above" in failed["message"]
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


def test_metric_breach_rolls_back_by_itself_without_s3(parts):
    cluster, servers, *_ = parts
    # The servers export the version they serve; a policy that calls any version above 2
    # bad makes v3 breach as soon as Prometheus scrapes it.
    cluster.kubectl("-n", NS, "patch", "recmodel", "ranker", "--type=merge", "-p", json.dumps(
        {"spec": {"rollbackPolicy": {"metric": "max(recop_embedding_active_version)",
                                     "threshold": 2.5, "window": "60s"}}}))
    apply(cluster, version("v3", f"s3://{BUCKET}/v3", dense=2))
    wait_for(lambda: status(cluster, "v3").get("phase") in ("Active", "RolledBack"),
             timeout=60, what="v3 Active")
    held = [{v.version for v in p.admin.status().versions} for p in servers.processes]
    assert all(1 in h for h in held), "the previous version must stay held in the window"
    parts[3].stop()  # S3 is gone: the rollback must not need it
    activated = time.monotonic()
    final = wait_for(lambda: status(cluster, "v3").get("completedAt") and status(cluster, "v3"),
                     timeout=60, what="v3 rolled back")
    print(f"breach to restored: {time.monotonic() - activated:.1f}s")
    assert final["phase"] == "RolledBack" and final["reason"] == "MetricBreach"
    assert actives(servers) == {1} and dense_versions(parts[4]) == {1}
    events = get_json(cluster, "-n", NS, "events", "--field-selector",
                      "involvedObject.name=v3")["items"]
    assert any(e["reason"] == "RolledBack" and e["type"] == "Warning" for e in events)
