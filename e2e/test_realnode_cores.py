"""Dedicated cores are real: an ABTest's baseline Triton pod, which the cost model gives
whole cores (requests = limits, an integer CPU: Guaranteed), gets CPUs of its own from the
real node's kubelet (static CPU manager), and the variants' pods share the rest.

The real node (devstack/node.py) has 2 CPUs and reserves `systemReserved: cpu 100m`, not
`reservedSystemCPUs`: the static policy rounds the reservation up to one whole CPU (CPU 0),
which only the shared pool may use, while allocatable stays 1.9 cores. With
`reservedSystemCPUs: "0"` allocatable would be 1 core, and no variant would fit beside a
1-core baseline. So here: the baseline's container runs on CPU 1 alone, every other
container (the variants', and any pod in the shared pool) on CPU 0. Every pod of this
namespace asks for 100m except the baseline's placed pod (1000m): 1000m + 2 x 100m of
1900m, with room for one more pod while a Deployment rolls its pod onto the placement.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from controllers.common import labels as L
from devstack import gateway_api, images, node
from devstack import minio as local_minio
from devstack import triton as local_triton
from devstack.external import s3_secret
from e2e import realnode
from e2e.realnode import apply, container
from e2e.support import OperatorProcess, get_json, wait_for

NS = "e2e-realnode-cores"
BUCKET = "recop-e2e-realnode-cores"
ARMS = {"control": "cores", "wide": "cores-wide", "deep": "cores-deep"}
CPUSET = Path("/sys/fs/cgroup/cpuset") / node.CGROUP_ROOT

pytestmark = [
    pytest.mark.skipif(bool(os.environ.get("RECOP_KUBECONFIG")),
                       reason="the real node joins the local control plane only"),
]


@pytest.fixture(scope="module")
def real_node(cluster):
    return realnode.node_up(cluster)


@pytest.fixture(scope="module")
def triton_image(real_node) -> str:
    ref = images.build("triton-cpu")
    node.load(ref)
    return ref


@pytest.fixture(scope="module")
def operator(real_node):
    for path in gateway_api.build():  # the ABTest's routes need the Gateway API's CRDs
        real_node.kubectl("apply", "--server-side", "--force-conflicts",
                          "--field-manager=recop-e2e", "-f", str(path))
    real_node.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                      "crd/httproutes.gateway.networking.k8s.io",
                      "crd/grpcroutes.gateway.networking.k8s.io", timeout=90)
    real_node.kubectl("delete", "namespace", NS, "--wait=true", "--ignore-not-found",
                      timeout=180)
    real_node.kubectl("create", "namespace", NS)
    proc = OperatorProcess(real_node.kubeconfig, NS, env={"RECOP_ABTEST_INTERVAL": "2"})
    yield proc
    proc.stop()
    real_node.kubectl("delete", "namespace", NS, "--wait=false")


@pytest.fixture(scope="module")
def s3(real_node, operator):
    """MinIO with Triton's model repository (<bucket>/dense), which every arm's Triton
    pod loads its model from as it starts."""
    handle = local_minio.start()
    try:
        forward = node.expose(handle.port)
        try:
            client = handle.client()
            client.create_bucket(Bucket=BUCKET)
            for path in local_triton.TEST_MODELS.rglob("*"):
                if path.is_file() and "__pycache__" not in path.parts:
                    key = f"dense/{path.relative_to(local_triton.TEST_MODELS).as_posix()}"
                    client.upload_file(str(path), BUCKET, key)
            apply(real_node, s3_secret(NS, handle.access_key, handle.secret_key))
            yield handle
        finally:
            forward.stop()
    finally:
        handle.stop()


def arm_model(name: str, triton_image: str, s3) -> dict:
    """An arm whose Triton pod runs on the real node's CPU; its shard pod stays on the
    KWOK CPU pool (this test is about the dense pods' cores)."""
    return {
        "apiVersion": "serving.recop.dev/v1alpha1", "kind": "RecModel",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "tables": [{"name": "user", "dimension": 16, "rows": 1000}],
            "sharding": {"shards": 1, "replicasPerShard": 1},
            "embeddingServer": {"resources": {"requests": {"cpu": "100m"}}},
            # 100m for every arm until the test places it: the cost model still gives the
            # baseline one whole core (its request, rounded up to at least one core).
            "dense": {"modelName": "mlp", "image": triton_image, "replicas": 1,
                      "gpusPerPod": 0, "instanceGroups": [{"kind": "KIND_CPU"}],
                      "resources": {"requests": {"cpu": "100m", "memory": "1Gi"}}},
            "densePlacement": realnode.PLACEMENT,
            "storage": realnode.s3_storage(BUCKET, s3.port),
        },
    }


ABTEST = {
    "apiVersion": "serving.recop.dev/v1alpha1", "kind": "ABTest",
    "metadata": {"name": "cores", "namespace": NS},
    "spec": {
        "baseline": {"name": "control", "model": ARMS["control"], "weight": 80},
        "variants": [{"name": "wide", "model": ARMS["wide"], "weight": 10},
                     {"name": "deep", "model": ARMS["deep"], "weight": 10}],
        "ramp": {"initialPercent": 100, "interval": "1h"},
        "successMetric": {"name": "ctr", "query": 'ctr{arm="$arm"}'},
        # Figures from the RecModels' requests: no Prometheus in this test.
        "cost": {"measurement": "spec"},
    },
}


def assignments(cluster) -> dict[str, dict]:
    status = get_json(cluster, "-n", NS, "abtest", "cores").get("status") or {}
    return {a["arm"]: a for a in status.get("assignments", [])}


def placed_pod(cluster, model: str, cpu_millicores: int) -> dict | None:
    """The model's Triton pod of the placed template (requests = limits = the
    assignment's CPU), Running and ready on the real node; None while it rolls."""
    pods = get_json(cluster, "-n", NS, "pods", "-l",
                    f"{L.MODEL}={model},{L.COMPONENT}={L.TRITON}")["items"]
    for pod in pods:
        resources = pod["spec"]["containers"][0]["resources"]
        if pod["metadata"].get("deletionTimestamp") or pod["spec"].get("nodeName") != \
                node.NODE_NAME or resources.get("limits", {}).get("cpu") not in (
                f"{cpu_millicores}m", str(cpu_millicores // 1000)):
            continue
        if container(pod).get("ready"):
            return pod
    return None


def cpus(text: str) -> set[int]:
    """A cpuset list ("0-1,3") as a set of CPUs."""
    out: set[int] = set()
    for part in text.strip().split(","):
        if part:
            first, _, last = part.partition("-")
            out |= set(range(int(first), int(last or first) + 1))
    return out


def host_cpuset(pod: dict, status: dict | None = None) -> set[int] | None:
    """cpuset.cpus of the pod's container (its first, or `status`'s), from the node's
    cgroup tree (cgroupfs driver: <root>/kubepods[/<qos>]/pod<uid>/<container id>); None
    when it has none there (not started, or gone)."""
    cid = (status or container(pod)).get("containerID", "").split("://", 1)[-1]
    paths = list(CPUSET.glob(f"kubepods/**/pod{pod['metadata']['uid']}/{cid}/cpuset.cpus")
                 ) if cid else []
    return cpus(paths[0].read_text()) if paths else None


def seen_inside(cluster, pod: dict) -> set[int]:
    """Cpus_allowed_list of a process in the container, as the kernel schedules it."""
    status = cluster.kubectl("-n", NS, "exec", pod["metadata"]["name"], "--",
                             "cat", "/proc/self/status").stdout
    line = next(x for x in status.splitlines() if x.startswith("Cpus_allowed_list:"))
    return cpus(line.split(":", 1)[1])


def test_the_baseline_gets_its_own_core_and_the_variants_share_the_rest(
        real_node, operator, triton_image, s3):
    cluster = real_node
    started = time.monotonic()
    apply(cluster, ABTEST)
    for model in ARMS.values():
        apply(cluster, arm_model(model, triton_image, s3))

    def placed() -> dict[str, dict] | None:
        found = assignments(cluster)
        return found if len(found) == len(ARMS) else None

    try:
        found = wait_for(placed, timeout=90, what="the ABTest's three assignments")
    except AssertionError:
        status = get_json(cluster, "-n", NS, "abtest", "cores").get("status")
        raise AssertionError(f"ABTest status: {json.dumps(status, indent=1)}") from None
    print(f"placed {time.monotonic() - started:.1f}s after applying: "
          f"{ {a: (x['node'], x['cpuMillicores']) for a, x in found.items()} }")
    assert {a["node"] for a in found.values()} == {node.NODE_NAME}
    assert found["control"]["dedicatedCores"] and found["control"]["cpuMillicores"] == 1000
    assert not found["wide"]["dedicatedCores"] and not found["deep"]["dedicatedCores"]
    assert found["wide"]["cpuMillicores"] == found["deep"]["cpuMillicores"] == 100

    pods = {}
    for arm, model in ARMS.items():
        try:
            pods[arm] = wait_for(
                lambda model=model, arm=arm: placed_pod(cluster, model,
                                                        found[arm]["cpuMillicores"]),
                timeout=240, what=f"{model}'s placed Triton pod ready")
        except AssertionError:
            listing = cluster.kubectl("-n", NS, "get", "pods", "-o", "wide").stdout
            events = cluster.kubectl("-n", NS, "get", "events", "--sort-by=.lastTimestamp",
                                     check=False).stdout[-3000:]
            raise AssertionError(f"pods:\n{listing}\nevents:\n{events}") from None
    print(f"placed Triton pods ready {time.monotonic() - started:.1f}s after applying")
    assert {p["status"]["qosClass"] for p in pods.values()} == {"Guaranteed"}

    sets = {arm: host_cpuset(pod) for arm, pod in pods.items()}
    inside = {arm: seen_inside(cluster, pod) for arm, pod in pods.items()}
    online = cpus(Path("/sys/devices/system/cpu/online").read_text())
    print(f"cpusets (host cgroup): {sets}; as the containers see them: {inside}; "
          f"online CPUs {sorted(online)}")
    assert inside == sets
    baseline = sets["control"]
    assert len(baseline) == 1  # one exclusive core, as the assignment says
    assert sets["wide"] == sets["deep"] == online - baseline

    # Its alone: no other container on the node, of any namespace, may run on it. (The
    # pods' sandboxes, pause processes that only sleep, keep every CPU: the CPU manager
    # sets the cpusets of the containers a pod spec names.)
    on_node = get_json(cluster, "pods", "-A", "--field-selector",
                       f"spec.nodeName={node.NODE_NAME}")["items"]
    others = {}
    for pod in on_node:
        for status in pod.get("status", {}).get("containerStatuses") or []:
            if status.get("containerID") != container(pods["control"])["containerID"]:
                cpuset = host_cpuset(pod, status)
                if cpuset is not None:
                    meta = pod["metadata"]
                    others[f"{meta['namespace']}/{meta['name']}/{status['name']}"] = cpuset
    print(f"other containers on the node: {others}")
    assert len(others) >= 2 and not any(s & baseline for s in others.values()), others
    # The kubelet's own record: the shared pool, and the baseline's one assignment.
    state = json.loads((node._state() / "kubelet" / "cpu_manager_state").read_text())
    print(f"kubelet cpu_manager_state: {state}")
    assert state["policyName"] == "static"
    assert cpus(state["defaultCpuSet"]) == online - baseline
    entries = {uid: {name: cpus(c) for name, c in containers.items()}
               for uid, containers in (state.get("entries") or {}).items()}
    assert entries == {pods["control"]["metadata"]["uid"]: {"triton": baseline}}
