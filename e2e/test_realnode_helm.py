"""The Helm chart's operator as real pods on the real node (devstack.node), from the image
devstack.images builds from operator/Dockerfile: both replicas start and pass the
chart's probes, reach the API server through the `kubernetes` Service with the chart's
ServiceAccount, and one of them reconciles a RecModel, as the audit log shows.

The chart's operator acts cluster-wide: the module installs it, tests, and uninstalls
it before the next module starts its own operator.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from controllers.common import labels as L
from devstack import images, node
from e2e.support import REPO, get_json, wait_for

CHART = REPO / "charts" / "recop"
RELEASE = "recop"
NS = "recop-realnode"
MODELS = "e2e-realnode-helm"
ACCOUNT = f"system:serviceaccount:{NS}:{RELEASE}"

# Part of the default run (it needs root and network namespaces, which this project's
# machines and CI have); only a cluster of one's own (RECOP_KUBECONFIG) has no real node here.
pytestmark = [
    pytest.mark.skipif(bool(os.environ.get("RECOP_KUBECONFIG")),
                       reason="the real node joins the local control plane only"),
]


@pytest.fixture(scope="module")
def release(cluster):
    node.ensure_up(cluster)
    image = images.build("operator")
    node.load(image)
    repository, tag = image.rsplit(":", 1)
    cluster.kubectl("delete", "namespace", MODELS, "--ignore-not-found", "--wait=true",
                    timeout=180)
    cluster.helm("uninstall", RELEASE, "-n", NS, "--wait", check=False)
    started = time.monotonic()
    cluster.helm("install", RELEASE, str(CHART), "-n", NS, "--create-namespace",
                 f"--set=image.repository={repository}", f"--set=image.tag={tag}",
                 f"--set-json=nodeSelector={json.dumps(node.SELECTOR)}",
                 f"--set-json=tolerations={json.dumps([node.TOLERATION])}")
    try:
        rollout = cluster.kubectl("-n", NS, "rollout", "status", f"deployment/{RELEASE}",
                                  "--timeout=180s", timeout=210, check=False)
        if rollout.returncode != 0:
            pytest.fail(f"the chart's operator pods did not become Ready:\n{why(cluster)}",
                        pytrace=False)
        print(f"chart installed and both operator pods Ready in "
              f"{time.monotonic() - started:.1f}s")
        yield cluster
    finally:
        cluster.helm("uninstall", RELEASE, "-n", NS, "--wait", check=False)
        cluster.kubectl("delete", "namespace", MODELS, NS, "--ignore-not-found",
                        "--wait=false", check=False)


def why(cluster) -> str:
    """Each operator pod's container state and the end of its last run's log."""
    lines = []
    for pod in operator_pods(cluster):
        name = pod["metadata"]["name"]
        states = [c.get("state") for c in pod["status"].get("containerStatuses") or []]
        logs = cluster.kubectl("-n", NS, "logs", name, "--previous", "--tail=5",
                               check=False)
        lines.append(f"{name}: {json.dumps(states)}\n{logs.stdout or logs.stderr}")
    return "\n".join(lines)


def operator_pods(cluster) -> list[dict]:
    return get_json(cluster, "-n", NS, "pods", "-l",
                    f"app.kubernetes.io/instance={RELEASE}")["items"]


def test_operator_pods_run_on_the_real_node_and_log_structured_lines(release):
    pods = operator_pods(release)
    assert len(pods) == 2
    for pod in pods:
        assert pod["spec"]["nodeName"] == node.NODE_NAME
        container = pod["status"]["containerStatuses"][0]
        assert container["ready"] and container["containerID"].startswith("containerd://")
        logs = release.kubectl("-n", NS, "logs", pod["metadata"]["name"]).stdout
        lines = [line for line in logs.splitlines() if line.strip()]
        assert lines, f"{pod['metadata']['name']} logged nothing"
        # The chart's default --log-format=json: one object per line, every line.
        records = [json.loads(line) for line in lines]
        assert all(isinstance(r, dict) and r.get("message") for r in records), records[:3]


def test_a_recmodel_is_reconciled_by_the_charts_service_account(release):
    release.kubectl("create", "namespace", MODELS)
    model = {
        "apiVersion": "serving.recop.dev/v1alpha1", "kind": "RecModel",
        "metadata": {"name": "charted", "namespace": MODELS},
        "spec": {"tables": [{"name": "user", "dimension": 16, "rows": 1000}],
                 "sharding": {"shards": 1, "replicasPerShard": 1},
                 # KWOK's pods: this test is about who writes the objects.
                 "dense": {"modelName": "mlp", "replicas": 0, "gpusPerPod": 0,
                           "instanceGroups": [{"kind": "KIND_CPU"}]},
                 "storage": {"bucket": "recop-models"}},
    }
    release.kubectl("apply", "--server-side", "--field-manager=e2e", "-f", "-",
                    input=json.dumps(model))
    shard = L.embedding_name("charted", 0)
    wait_for(lambda: release.kubectl("-n", MODELS, "get", "deployment", shard,
                                     check=False).returncode == 0,
             timeout=120, what=f"deployment/{shard} made by the chart's operator pods")
    audit = release.kubeconfig.parent / "audit.log"
    creators = {event["user"]["username"]
                for event in map(json.loads, audit.read_text().splitlines())
                if event.get("verb") in ("create", "patch")
                and event.get("objectRef", {}).get("namespace") == MODELS
                and event.get("objectRef", {}).get("name") == shard
                and event.get("objectRef", {}).get("resource") == "deployments"
                and event.get("responseStatus", {}).get("code", 0) < 300}
    assert ACCOUNT in creators, creators
    assert creators <= {ACCOUNT, "recop-admin"}, creators
