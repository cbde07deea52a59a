"""Pods on the real node (devstack.node): shard server pods that the RecModel controller
builds, from the image devstack.images builds from embedding/Dockerfile, run in
containerd on the kubelet, answer on their pod IPs, load a full version from MinIO and
serve it.

The KWOK tests only see a Deployment's objects; here the env, args, ports, probes,
security context, Secret references and the image itself have to work.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from controllers.common import labels as L
from controllers.recmodel.objects import TRITON_GRPC
from devstack import images, netns, node
from devstack import minio as local_minio
from devstack import triton as local_triton
from devstack.external import s3_secret
from e2e.support import OperatorProcess, get_json, wait_for
from embedding.checkpoint import CheckpointWriter
from embedding.client import EmbeddingClient
from embedding.config import LIVENESS_HEALTH_SERVICE, LOOKUP_HEALTH_SERVICE

NS = "e2e-realnode"
MODEL = "pods"
SERVED = "served"
LOOKUP_PORT = 8500
BUCKET = "recop-e2e-realnode"
SHARDS = 2
ROWS = 2000
IDS = np.arange(ROWS, dtype=np.int64)

# Part of the default run (it needs root and network namespaces, which this project's
# machines and CI have); only a cluster of one's own (RECOP_KUBECONFIG) has no real node here.
pytestmark = [
    pytest.mark.skipif(bool(os.environ.get("RECOP_KUBECONFIG")),
                       reason="the real node joins the local control plane only"),
]


@pytest.fixture(scope="module")
def real_node(cluster):
    started = time.monotonic()
    node.ensure_up(cluster)
    print(f"real node Ready {time.monotonic() - started:.1f}s after the fixture began")
    return cluster


@pytest.fixture(scope="module")
def server_image(real_node) -> str:
    ref = images.build("embedding-server")
    node.load(ref)
    return ref


@pytest.fixture(scope="module")
def operator(real_node):
    real_node.kubectl("delete", "namespace", NS, "--wait=true", "--ignore-not-found",
                      timeout=180)
    real_node.kubectl("create", "namespace", NS)
    proc = OperatorProcess(real_node.kubeconfig, NS)
    yield proc
    proc.stop()
    real_node.kubectl("delete", "namespace", NS, "--wait=false")


@pytest.fixture(scope="module")
def s3(real_node):
    """MinIO on loopback, reachable from the pods through the node's forwarder, with a
    full checkpoint whose every value is 0.25."""
    handle = local_minio.start()
    try:
        forward = node.expose(handle.port)
        try:
            client = handle.client()
            client.create_bucket(Bucket=BUCKET)
            CheckpointWriter(client, f"s3://{BUCKET}/v1", SHARDS).write_full(
                1, {"user": (IDS, np.full((ROWS, 16), 0.25, np.float32))})
            # Triton's model repository: <bucket>/<prefix>/dense (prefix "" here).
            for path in local_triton.TEST_MODELS.rglob("*"):
                if path.is_file() and "__pycache__" not in path.parts:
                    key = f"dense/{path.relative_to(local_triton.TEST_MODELS).as_posix()}"
                    client.upload_file(str(path), BUCKET, key)
            yield handle
        finally:
            forward.stop()
    finally:
        handle.stop()


def recmodel(name: str, image: str, shards: int = 1, **spec) -> dict:
    return {
        "apiVersion": "serving.recop.dev/v1alpha1", "kind": "RecModel",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "tables": [{"name": "user", "dimension": 16, "rows": ROWS}],
            "sharding": {"shards": shards, "replicasPerShard": 1},
            "embeddingServer": {"image": image, "lookupPort": LOOKUP_PORT,
                                # The node has 1.9 allocatable cores for every test pod.
                                "resources": {"requests": {"cpu": "100m"}}},
            "embeddingPlacement": {"nodeSelector": node.SELECTOR,
                                   "tolerations": [node.TOLERATION]},
            # No Triton pods: only the sparse half runs here.
            "dense": {"modelName": "mlp", "replicas": 0, "gpusPerPod": 0,
                      "instanceGroups": [{"kind": "KIND_CPU"}]},
            # Nothing loads in the first test: no S3 behind it.
            "storage": {"bucket": BUCKET, "endpoint": f"http://{netns.HOST_IP}:9000"},
            **spec,
        },
    }


def shard_pods(cluster, model: str = MODEL) -> list[dict]:
    return get_json(cluster, "-n", NS, "pods", "-l",
                    f"{L.MODEL}={model},{L.COMPONENT}={L.EMBEDDING}")["items"]


def shard_pod(cluster) -> dict | None:
    pods = shard_pods(cluster)
    return pods[0] if pods else None


def health(address: str, service: str) -> int:
    with grpc.insecure_channel(address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5)
    return reply.status


def test_shard_server_pod_runs_on_the_real_node_and_answers(real_node, operator, server_image):
    cluster = real_node
    applied = time.monotonic()
    apply(cluster, recmodel(MODEL, server_image))

    def running() -> dict | None:
        pod = shard_pod(cluster)
        statuses = (pod or {}).get("status", {}).get("containerStatuses") or []
        return pod if statuses and "running" in statuses[0].get("state", {}) else None

    try:
        pod = wait_for(running, timeout=120, what="the shard pod running")
    except AssertionError:
        pod = shard_pod(cluster)
        events = cluster.kubectl("-n", NS, "get", "events", "-o", "wide", check=False).stdout
        raise AssertionError(f"pod: {json.dumps((pod or {}).get('status'), indent=1)}\n"
                             f"events:\n{events}") from None
    print(f"shard pod running {time.monotonic() - applied:.1f}s after the RecModel applied")

    assert pod["spec"]["nodeName"] == node.NODE_NAME
    container = pod["status"]["containerStatuses"][0]
    assert container["containerID"].startswith("containerd://")
    assert container["image"] == server_image
    ip = pod["status"]["podIP"]
    assert ipaddress.ip_address(ip) in ipaddress.ip_network(netns.POD_CIDR)

    # From the host, through the veth, as the operator reaches its servers: the process
    # is live, and not ready for lookups while no version is active (what the kubelet's
    # own grpc probes ask too).
    address = f"{ip}:{LOOKUP_PORT}"
    try:
        wait_for(lambda: _answers(address), timeout=60, what=f"gRPC health on {address}")
    except AssertionError as error:
        logs = cluster.kubectl("-n", NS, "logs", pod["metadata"]["name"], "--previous",
                               "--tail=5", check=False)
        raise AssertionError(f"{error}; the server's last run:\n{logs.stdout or logs.stderr}"
                             ) from None
    assert health(address, LIVENESS_HEALTH_SERVICE) == health_pb2.HealthCheckResponse.SERVING
    assert health(address, LOOKUP_HEALTH_SERVICE) == health_pb2.HealthCheckResponse.NOT_SERVING

    # Prometheus scrapes the pod IP: /metrics listens where the other ports do.
    metrics_port = next(p["containerPort"] for p in pod["spec"]["containers"][0]["ports"]
                        if p["name"] == "metrics")
    with urllib.request.urlopen(f"http://{ip}:{metrics_port}/metrics", timeout=10) as response:
        assert b"recop_embedding_" in response.read()

    # The API server reaches the kubelet for logs (by the node's InternalIP).
    logs = cluster.kubectl("-n", NS, "logs", pod["metadata"]["name"]).stdout
    assert logs.strip(), "the server logged nothing"

    # The liveness probe (grpc, `liveness` service) passes: the kubelet restarts nothing.
    time.sleep(12)
    pod = shard_pod(cluster)
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0


def _answers(address: str) -> bool:
    try:
        health(address, LIVENESS_HEALTH_SERVICE)
    except grpc.RpcError:
        return False
    return True


def test_shard_pods_load_a_full_version_from_s3_and_serve_it(real_node, operator, server_image,
                                                             s3):
    cluster = real_node
    apply(cluster, s3_secret(NS, s3.access_key, s3.secret_key))
    apply(cluster, recmodel(
        SERVED, server_image, shards=SHARDS,
        storage={"bucket": BUCKET, "endpoint": f"http://{netns.HOST_IP}:{s3.port}",
                 "accessKeyId": {"name": "s3", "key": "id"},
                 "secretAccessKey": {"name": "s3", "key": "secret"}}))
    applied = time.monotonic()
    apply(cluster, {"apiVersion": "serving.recop.dev/v1alpha1", "kind": "ModelVersion",
                    "metadata": {"name": "v1", "namespace": NS},
                    "spec": {"model": SERVED, "kind": "full", "source": f"s3://{BUCKET}/v1"}})

    def phase() -> str:
        return get_json(cluster, "-n", NS, "modelversion", "v1").get("status", {}).get("phase")

    try:
        wait_for(lambda: phase() == "Active", timeout=180, what="v1 Active on the shard pods")
    except AssertionError:
        mv = get_json(cluster, "-n", NS, "modelversion", "v1").get("status")
        logs = {p["metadata"]["name"]: cluster.kubectl(
            "-n", NS, "logs", p["metadata"]["name"], "--tail=20", check=False).stdout
            for p in shard_pods(cluster, SERVED)}
        raise AssertionError(f"status: {json.dumps(mv, indent=1)}\nlogs: {logs}") from None
    cluster.kubectl("-n", NS, "wait", "--for=condition=Ready", f"recmodel/{SERVED}",
                    "--timeout=120s", timeout=150)
    print(f"v1 Active and the model Ready {time.monotonic() - applied:.1f}s after applying")

    pods = shard_pods(cluster, SERVED)
    assert len(pods) == SHARDS
    assert {p["spec"]["nodeName"] for p in pods} == {node.NODE_NAME}
    # The shards' addresses as clients find them: the ready endpoints of each shard's
    # headless Service, which the kubelet's readiness probe (grpc) decides.
    shards = []
    for shard in range(SHARDS):
        service = L.embedding_name(SERVED, shard)
        slices = get_json(cluster, "-n", NS, "endpointslices", "-l",
                          f"{L.SERVICE_NAME}={service}")["items"]
        shards.append([f"{address}:{LOOKUP_PORT}" for s in slices
                       for e in s.get("endpoints") or [] if e["conditions"].get("ready")
                       for address in e["addresses"]])
    assert all(len(addresses) == 1 for addresses in shards), shards
    with EmbeddingClient(shards) as client:
        result = client.lookup({"user": IDS})
    assert result.version == 1
    assert result.values["user"].shape == (ROWS, 16)
    np.testing.assert_array_equal(result.values["user"], 0.25)


@pytest.fixture(scope="module")
def triton_image(real_node) -> str:
    ref = images.build("triton-cpu")
    node.load(ref)
    return ref


# Distinct from the repository's config.pbtxt (max_batch_size 64, one instance, no
# batcher): the config read back from Triton says which of the two it serves.
DENSE = {"modelName": "mlp", "replicas": 1, "gpusPerPod": 0, "maxBatchSize": 32,
         "dynamicBatching": {"preferredBatchSizes": [4, 16], "maxQueueDelayMicroseconds": 2500},
         "instanceGroups": [{"kind": "KIND_CPU", "count": 2}],
         "resources": {"requests": {"cpu": "100m"}}}


def triton_pods(cluster) -> list[dict]:
    pods = get_json(cluster, "-n", NS, "pods", "-l",
                    f"{L.MODEL}=dense,{L.COMPONENT}={L.TRITON}")["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def triton_client(pod: dict):
    from tritonclient.grpc import InferenceServerClient

    return InferenceServerClient(f"{pod['status']['podIP']}:{TRITON_GRPC}")


def dense_served(pod: dict) -> tuple[set[int], dict]:
    """The versions READY on the pod's Triton and the model config it reports."""
    triton = triton_client(pod)
    index = triton.get_model_repository_index(as_json=True)["models"]
    ready = {int(m["version"]) for m in index if m.get("state") == "READY" and m.get("version")}
    return ready, triton.get_model_config("mlp", as_json=True)["config"]


def assert_spec_config(config: dict) -> None:
    assert config["max_batch_size"] == 32, config
    assert config["dynamic_batching"]["preferred_batch_size"] == [4, 16], config
    assert int(config["dynamic_batching"]["max_queue_delay_microseconds"]) == 2500, config
    assert [(g["kind"], g["count"]) for g in config["instance_group"]] == [("KIND_CPU", 2)]


def test_triton_pod_loads_the_dense_version_from_s3_and_infers(real_node, operator,
                                                                server_image, triton_image, s3):
    """The RecModel and the ModelVersion go in together: the version waits for the Triton
    pod to be ready (status reason WaitingForTriton) rather than going Active without
    the dense version, then loads it there with the spec's config."""
    from tritonclient.grpc import InferInput

    cluster = real_node
    apply(cluster, s3_secret(NS, s3.access_key, s3.secret_key))
    endpoint = f"http://{netns.HOST_IP}:{s3.port}"
    placement = {"nodeSelector": node.SELECTOR, "tolerations": [node.TOLERATION]}
    apply(cluster, recmodel(
        "dense", server_image, shards=SHARDS,
        # The GPU placement of the dense half is the spec's: here, the real node's CPU.
        dense={**DENSE, "image": triton_image}, densePlacement=placement,
        storage={"bucket": BUCKET, "endpoint": endpoint,
                 "accessKeyId": {"name": "s3", "key": "id"},
                 "secretAccessKey": {"name": "s3", "key": "secret"}}))
    applied = time.monotonic()
    apply(cluster, {"apiVersion": "serving.recop.dev/v1alpha1", "kind": "ModelVersion",
                    "metadata": {"name": "dense-v1", "namespace": NS},
                    "spec": {"model": "dense", "kind": "full", "source": f"s3://{BUCKET}/v1",
                             "denseModelVersion": 1}})
    reasons: list[str] = []

    def settled() -> str | None:
        """Active, Failed, or a Triton container that exited: no need to wait longer."""
        status = get_json(cluster, "-n", NS, "modelversion", "dense-v1").get("status", {})
        if status.get("reason") and status.get("reason") not in reasons:
            reasons.append(status["reason"])
        phase = status.get("phase")
        if phase == "Active":
            # Active only once the dense version is on every ready Triton server.
            assert any(c.get("ready") for p in triton_pods(cluster)
                       for c in p.get("status", {}).get("containerStatuses") or [])
        crashed = any(c.get("restartCount", 0) for p in triton_pods(cluster)
                      for c in p.get("status", {}).get("containerStatuses") or [])
        return phase if phase in ("Active", "Failed") else ("crashed" if crashed else None)

    outcome = wait_for(settled, timeout=300, what="dense-v1 settled")
    if outcome != "Active":
        mv = get_json(cluster, "-n", NS, "modelversion", "dense-v1").get("status")
        logs = {p["metadata"]["name"]: cluster.kubectl(
            "-n", NS, "logs", p["metadata"]["name"], "--tail=3", check=False).stdout
            for p in triton_pods(cluster)}
        raise AssertionError(f"dense-v1 {outcome}: {json.dumps(mv)}\nTriton logs: {logs}")
    print(f"dense-v1 Active {time.monotonic() - applied:.1f}s after applying; "
          f"status reasons on the way: {reasons}")

    pods = triton_pods(cluster)
    assert [p["spec"]["nodeName"] for p in pods] == [node.NODE_NAME]
    # The repository holds versions 1 and 2 and the pod started on its default (2): the
    # operator's load left exactly the active one, with the spec's batching and groups.
    ready, config = dense_served(pods[0])
    assert ready == {1}
    assert_spec_config(config)
    inputs = []
    for name in ("user", "item"):
        tensor = InferInput(name, [2, 4], "FP32")
        tensor.set_data_from_numpy(np.full((2, 4), 0.5, np.float32))
        inputs.append(tensor)
    score = triton_client(pods[0]).infer("mlp", inputs, model_version="1").as_numpy("score")
    np.testing.assert_allclose(score[:, 0], np.tanh(1.0), rtol=1e-5)


def test_a_replaced_triton_pod_is_brought_to_the_active_dense_version(real_node, operator):
    """After Active, the Triton pod is deleted: its replacement starts on the repository's
    default (version 2, config.pbtxt) and the operator's catch-up loads version 1 with
    the spec's config once it is ready."""
    cluster = real_node
    (before,) = triton_pods(cluster)
    cluster.kubectl("-n", NS, "delete", "pod", before["metadata"]["name"], "--wait=false")
    deleted = time.monotonic()

    def replacement() -> dict | None:
        pods = [p for p in triton_pods(cluster)
                if p["metadata"]["uid"] != before["metadata"]["uid"]]
        ready = [p for p in pods if any(c.get("ready") for c in
                                        p.get("status", {}).get("containerStatuses") or [])]
        return ready[0] if ready else None

    pod = wait_for(replacement, timeout=180, what="a new Triton pod Ready")
    print(f"replacement Triton pod Ready {time.monotonic() - deleted:.1f}s after the delete")
    seen: list[set[int]] = []

    def caught_up() -> tuple[set[int], dict] | None:
        try:
            ready, config = dense_served(pod)
        except Exception:  # the model is between versions while it loads
            return None
        if not seen or seen[-1] != ready:
            seen.append(ready)
        return (ready, config) if ready == {1} and config["max_batch_size"] == 32 else None

    try:
        _, config = wait_for(caught_up, timeout=120, what="the new pod on dense version 1")
    except AssertionError:
        logs = cluster.kubectl("-n", NS, "logs", pod["metadata"]["name"], "--tail=10",
                               check=False).stdout
        raise AssertionError(f"versions seen {seen}; Triton log:\n{logs}") from None
    print(f"replacement on dense version 1 {time.monotonic() - deleted:.1f}s after the "
          f"delete; versions it served on the way: {seen}")
    assert_spec_config(config)
    status = get_json(cluster, "-n", NS, "modelversion", "dense-v1")["status"]
    assert status["phase"] == "Active"


PREDICT_DIM = 4
# Row values per embedding version; mlp's version d scales by d, so the score says
# which embedding and dense versions made it: a mixed answer cannot pass for a clean one.
PREDICT_VALUE = {1: 0.5, 2: 0.25}


def predict_score(embedding: int, dense: int) -> float:
    return float(np.tanh(PREDICT_DIM * PREDICT_VALUE[embedding] ** 2 * dense))


def test_predict_entry_model_answers_at_one_version_through_an_update_and_a_rollback(
        real_node, operator, server_image, triton_image, s3):
    """spec.dense.entryModel on the real node: the Triton pod (the triton-cpu image with
    RecOp's data plane) starts the entry model, which finds the shard pods by their
    headless Services through CoreDNS. Under continuous KServe v2 traffic, v2 (dense 2)
    rolls out and a user rollback brings v1 (dense 1) back: no answer fails, none
    mixes versions."""
    cluster = real_node
    client = s3.client()
    ids = np.arange(ROWS, dtype=np.int64)
    for version, value in PREDICT_VALUE.items():
        CheckpointWriter(client, f"s3://{BUCKET}/predict-v{version}", SHARDS).write_full(
            version, {t: (ids, np.full((ROWS, PREDICT_DIM), value, np.float32))
                      for t in ("user", "item")})
    apply(cluster, s3_secret(NS, s3.access_key, s3.secret_key))
    placement = {"nodeSelector": node.SELECTOR, "tolerations": [node.TOLERATION]}
    model = recmodel(
        "predict", server_image, shards=SHARDS,
        tables=[{"name": t, "dimension": PREDICT_DIM, "rows": ROWS} for t in ("user", "item")],
        dense={**DENSE, "image": triton_image, "entryModel": {"enabled": True}},
        densePlacement=placement,
        storage={"bucket": BUCKET, "endpoint": f"http://{netns.HOST_IP}:{s3.port}",
                 "accessKeyId": {"name": "s3", "key": "id"},
                 "secretAccessKey": {"name": "s3", "key": "secret"}})
    apply(cluster, model)

    def version(name: str, number: int) -> dict:
        return {"apiVersion": "serving.recop.dev/v1alpha1", "kind": "ModelVersion",
                "metadata": {"name": name, "namespace": NS},
                "spec": {"model": "predict", "kind": "full",
                         "source": f"s3://{BUCKET}/predict-v{number}",
                         "denseModelVersion": number}}

    def phase(name: str) -> str | None:
        return get_json(cluster, "-n", NS, "modelversion", name).get("status", {}).get("phase")

    apply(cluster, version("predict-v1", 1))
    wait_for(lambda: phase("predict-v1") == "Active", timeout=300, what="predict-v1 Active")
    status = get_json(cluster, "-n", NS, "recmodel", "predict")["status"]
    assert status["endpoints"]["predict"] == (
        f"http://{L.triton_name('predict')}.{NS}.svc:8000/v2/models/predict/infer")
    (pod,) = [p for p in get_json(cluster, "-n", NS, "pods", "-l",
                                  f"{L.MODEL}=predict,{L.COMPONENT}={L.TRITON}")["items"]
              if not p["metadata"].get("deletionTimestamp")]
    url = f"http://{pod['status']['podIP']}:8000/v2/models/predict/infer"
    body = json.dumps({"inputs": [
        {"name": t, "datatype": "INT64", "shape": [16], "data": list(range(16))}
        for t in ("user", "item")]}).encode()

    def ask() -> tuple[int, dict]:
        request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    try:
        first = wait_for(lambda: (lambda r: r if r[0] == 200 else None)(ask()), timeout=60,
                         what="a first prediction")
    except AssertionError:
        logs = cluster.kubectl("-n", NS, "logs", pod["metadata"]["name"], "--tail=30",
                               check=False).stdout
        raise AssertionError(f"last answer {ask()}; Triton log:\n{logs}") from None
    print(f"first prediction: {first[1]['outputs'][1:]}")
    seen, bad, stop = [], [], threading.Event()

    def traffic():
        while not stop.is_set():
            code, answer = ask()
            if code != 200:
                bad.append(answer)
                continue
            got = {o["name"]: o["data"] for o in answer["outputs"]}
            pair = (got["embedding_version"][0], got["dense_version"][0])
            seen.append(pair)
            if not np.allclose(got["score"], predict_score(*pair), rtol=1e-5):
                bad.append(("mixed", pair, got["score"][:2]))

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        apply(cluster, version("predict-v2", 2))
        wait_for(lambda: phase("predict-v2") == "Active", timeout=300,
                 what="predict-v2 Active")
        wait_for(lambda: (2, 2) in seen[-3:], timeout=60, what="answers at version 2")
        cluster.kubectl("-n", NS, "patch", "recmodel", "predict", "--type=merge",
                        "-p", json.dumps({"spec": {"activeVersion": "predict-v1"}}))
        wait_for(lambda: seen[-3:] == [(1, 1)] * 3, timeout=180,
                 what="answers back at version 1")
    finally:
        stop.set()
        worker.join()
    print(f"{len(seen)} predictions, by (embedding, dense) version: "
          f"{ {pair: seen.count(pair) for pair in sorted(set(seen))} }; {len(bad)} failed")
    assert not bad, bad[:5]
    assert set(seen) == {(1, 1), (2, 2)}


def apply(cluster, obj: dict) -> None:
    cluster.kubectl("apply", "--server-side", "--field-manager=e2e", "-f", "-",
                    input=json.dumps(obj))


def test_down_leaves_no_interface_namespace_route_rule_cgroup_or_mount(real_node):
    """Last in the module: the node goes; the next user of the fixture starts a new one."""
    node.down()
    assert not netns.NETNS_PATH.exists()
    assert not any(p.name.startswith("cni-") for p in Path("/run/netns").glob("*"))
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert netns.HOST_LINK not in links and "cni0" not in links
    routes = subprocess.run(["ip", "route"], capture_output=True, text=True).stdout
    assert netns.POD_CIDR not in routes and netns.HOST_IP not in routes
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
    assert "KUBE-" not in rules and "CNI-" not in rules
    assert not list(Path("/sys/fs/cgroup").glob(f"*/{node.CGROUP_ROOT}"))
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(node._state()) not in mounts and str(node._containerd_root()) not in mounts
    assert not node.OWNER.exists()
