"""The local control plane does what RecOp's e2e tests rely on: KWOK CPU and GPU nodes,
scheduling by GPU request and taint, Pods reaching Running, garbage collection,
server-side apply of CRDs and custom objects, and helm."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
import yaml

from controllers.common.nodes import GPU_RESOURCE
from devstack.cluster_nodes import GPU_TAINT, POOL_LABEL

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def namespace(cluster):
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    # The namespace controller deletes what is left inside; no need to wait for it.
    cluster.kubectl("delete", "namespace", name, "--wait=false")


def get_json(cluster, *args: str) -> dict:
    return json.loads(cluster.kubectl("get", *args, "--output=json").stdout)


def eventually(condition, what: str, timeout: float = 60):
    """Poll until condition() returns something truthy, and return it."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f}s waiting for {what}"
        time.sleep(0.5)
    return result


def nodes_by_pool(cluster) -> dict[str, list[dict]]:
    pools: dict[str, list[dict]] = {}
    for node in get_json(cluster, "nodes")["items"]:
        pools.setdefault(node["metadata"]["labels"].get(POOL_LABEL), []).append(node)
    return pools


def deployment(name: str, replicas: int, resources: dict, tolerations: list) -> dict:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "tolerations": tolerations,
                    "containers": [{"name": "main", "image": "registry.invalid/never-pulled:1",
                                    "resources": resources}],
                },
            },
        },
    }


def run_deployment(cluster, namespace: str, manifest: dict) -> list[dict]:
    """Apply, wait for the rollout, return its Pods."""
    name = manifest["metadata"]["name"]
    cluster.kubectl("apply", "--server-side", f"--namespace={namespace}", "-f", "-",
                    input=json.dumps(manifest))
    cluster.kubectl("rollout", "status", f"deployment/{name}", f"--namespace={namespace}",
                    "--timeout=120s", timeout=150)
    return get_json(cluster, "pods", f"--namespace={namespace}", f"--selector=app={name}")[
        "items"]


def test_kwok_cpu_and_gpu_nodes_are_ready(cluster):
    pools = nodes_by_pool(cluster)
    assert pools.get("cpu"), "no CPU node"
    assert pools.get("gpu"), "no GPU node"
    for node in pools["cpu"] + pools["gpu"]:
        conditions = {c["type"]: c["status"] for c in node["status"]["conditions"]}
        assert conditions["Ready"] == "True", node["metadata"]["name"]
    for node in pools["gpu"]:
        labels = node["metadata"]["labels"]
        assert labels["nvidia.com/gpu.present"] == "true"
        assert labels["nvidia.com/gpu.product"]
        assert int(node["status"]["capacity"][GPU_RESOURCE]) > 0
        assert int(node["status"]["allocatable"][GPU_RESOURCE]) > 0
        assert GPU_TAINT in node["spec"]["taints"]
    for node in pools["cpu"]:
        assert GPU_RESOURCE not in node["status"]["capacity"]


def test_gpu_deployment_runs_on_a_gpu_node_and_is_collected(cluster, namespace):
    manifest = deployment(
        "gpu-worker", replicas=2,
        resources={"limits": {GPU_RESOURCE: "1"}, "requests": {"cpu": "1"}},
        tolerations=[{"key": GPU_TAINT["key"], "operator": "Exists",
                      "effect": GPU_TAINT["effect"]}],
    )
    pods = run_deployment(cluster, namespace, manifest)
    gpu_nodes = {node["metadata"]["name"] for node in nodes_by_pool(cluster)["gpu"]}
    assert len(pods) == 2
    for pod in pods:
        assert pod["spec"]["nodeName"] in gpu_nodes
        assert pod["status"]["phase"] == "Running"

    # The garbage collector removes the ReplicaSet and its Pods with the Deployment.
    cluster.kubectl("delete", "deployment", "gpu-worker", f"--namespace={namespace}")
    eventually(lambda: not get_json(cluster, "replicasets,pods", f"--namespace={namespace}",
                                    "--selector=app=gpu-worker")["items"],
               "the ReplicaSet and Pods to be collected")


def test_gpu_request_beyond_the_pool_stays_pending(cluster, namespace):
    too_many = max(int(node["status"]["allocatable"][GPU_RESOURCE])
                   for node in nodes_by_pool(cluster)["gpu"]) + 1
    manifest = deployment(
        "greedy", replicas=1, resources={"limits": {GPU_RESOURCE: str(too_many)}},
        tolerations=[{"key": GPU_TAINT["key"], "operator": "Exists"}],
    )
    cluster.kubectl("apply", "--server-side", f"--namespace={namespace}", "-f", "-",
                    input=json.dumps(manifest))

    def unschedulable() -> dict | None:
        pods = get_json(cluster, "pods", f"--namespace={namespace}", "--selector=app=greedy")
        for pod in pods["items"]:
            for condition in pod["status"].get("conditions", []):
                if condition["type"] == "PodScheduled" and condition["status"] == "False":
                    return pod
        return None

    pod = eventually(unschedulable, "the scheduler to refuse the Pod")
    assert pod["status"]["phase"] == "Pending"
    assert "Insufficient nvidia.com/gpu" in json.dumps(pod["status"]["conditions"])


def test_cpu_deployment_never_lands_on_a_gpu_node(cluster, namespace):
    manifest = deployment("cpu-worker", replicas=6, resources={"requests": {"cpu": "1"}},
                          tolerations=[])
    pods = run_deployment(cluster, namespace, manifest)
    cpu_nodes = {node["metadata"]["name"] for node in nodes_by_pool(cluster)["cpu"]}
    assert len(pods) == 6
    for pod in pods:
        assert pod["spec"]["nodeName"] in cpu_nodes
        assert pod["status"]["phase"] == "Running"


def test_server_side_apply_of_a_crd_and_its_objects(cluster, namespace):
    group = "e2e.recop.dev"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget",
                      "listKind": "WidgetList"},
            "versions": [{
                "name": "v1", "served": True, "storage": True,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {
                        "size": {"type": "integer", "minimum": 1}}}}}},
            }],
        },
    }
    cluster.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(crd))
    try:
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                        f"crd/widgets.{group}")
        widget = {"apiVersion": f"{group}/v1", "kind": "Widget",
                  "metadata": {"name": "w", "namespace": namespace}, "spec": {"size": 3}}
        cluster.kubectl("apply", "--server-side", "--field-manager=alice", "-f", "-",
                        input=json.dumps(widget))
        # Another manager changing a field alice owns is a conflict, as on any real server.
        widget["spec"]["size"] = 4
        clash = cluster.kubectl("apply", "--server-side", "--field-manager=bob", "-f", "-",
                                input=json.dumps(widget), check=False)
        assert clash.returncode != 0
        assert "conflict" in clash.stderr.lower()
        # The schema is enforced.
        widget["spec"]["size"] = 0
        invalid = cluster.kubectl("apply", "--server-side", "--field-manager=alice", "-f", "-",
                                  input=json.dumps(widget), check=False)
        assert invalid.returncode != 0
        assert "spec.size" in invalid.stderr
    finally:
        cluster.kubectl("delete", "crd", f"widgets.{group}", "--wait=false")


def test_repo_crds_are_served_and_valid_examples_apply(cluster, namespace):
    crds = sorted((REPO / "crds").glob("*.yaml"))
    if not crds:
        pytest.fail("no CRDs in crds/")
    for path in crds:
        name = yaml.safe_load(path.read_text())["metadata"]["name"]
        crd = get_json(cluster, f"crd/{name}")
        established = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert established["Established"] == "True", name
    examples = sorted((REPO / "crds" / "examples" / "valid").glob("*.yaml"))
    for path in examples:
        for doc in yaml.safe_load_all(path.read_text()):
            doc["metadata"]["namespace"] = namespace
            cluster.kubectl("apply", "--server-side", "--field-manager=recop-e2e", "-f", "-",
                            input=json.dumps(doc))
            kind = doc["kind"].lower()
            assert get_json(cluster, kind, doc["metadata"]["name"],
                            f"--namespace={namespace}")["spec"]


def test_helm_installs_and_uninstalls_a_chart(cluster, namespace, tmp_path):
    chart = tmp_path / "hello"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text(
        "apiVersion: v2\nname: hello\nversion: 0.1.0\nkubeVersion: '>=1.30.0-0'\n")
    (chart / "values.yaml").write_text("greeting: hello\n")
    (chart / "templates" / "configmap.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-greeting\n"
        "data:\n  greeting: {{ .Values.greeting | quote }}\n")

    cluster.helm("install", "hello", str(chart), f"--namespace={namespace}",
                 "--set=greeting=hi", "--wait", "--timeout=60s")
    configmap = get_json(cluster, "configmap", "hello-greeting", f"--namespace={namespace}")
    assert configmap["data"] == {"greeting": "hi"}
    releases = json.loads(cluster.helm("list", f"--namespace={namespace}",
                                       "--output=json").stdout)
    assert [release["name"] for release in releases] == ["hello"]

    cluster.helm("uninstall", "hello", f"--namespace={namespace}", "--wait")
    gone = cluster.kubectl("get", "configmap", "hello-greeting", f"--namespace={namespace}",
                           check=False)
    assert "NotFound" in gone.stderr
