"""The Helm chart on the real local control plane: install, the example RecModel made
Ready by the operator running with the chart's service account, HA through Kopf
peering, the role checked against the audit log, upgrade, and uninstall.

KWOK pods never run containers, so the chart's own replicas stand Running but idle;
the operator runs here as two local processes holding the chart's ServiceAccount token
and the pod-like identities the Deployment would give them. They act cluster-wide, as
the chart's replicas would, so no other operator should run against the cluster at
the same time. The tests run in order.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from controllers.common import labels as L
from devstack.common import state_dir
from e2e.support import REPO, OperatorProcess, get_json, wait_for
from recop_operator import rbac

CHART = REPO / "charts" / "recop"
EXAMPLE = REPO / "crds" / "examples" / "valid" / "recmodel.yaml"
RELEASE = "recop"  # the chart's full name is then "recop" too
NS = "recop-e2e-helm"
MODELS = "e2e-helm-models"
ACCOUNT = f"system:serviceaccount:{NS}:{RELEASE}"


def peered_operator(kubeconfig: Path, name: str, priority: int) -> OperatorProcess:
    """`recop operator` with peering on, as one replica of the chart's Deployment."""
    operator = OperatorProcess(kubeconfig, name=name, args=(f"--priority={priority}",),
                               env={"POD_ID": name})
    operator.writes_before_pause = 0.0
    return operator


def service_account_kubeconfig(cluster) -> Path:
    """The admin kubeconfig's cluster, with the chart's ServiceAccount token as the user."""
    token = cluster.kubectl("create", "token", RELEASE, "-n", NS, "--duration=2h").stdout.strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    config = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": admin["clusters"],
        "users": [{"name": "recop-sa", "user": {"token": token}}],
        "contexts": [{"name": "recop-sa", "context": {
            "cluster": admin["clusters"][0]["name"], "user": "recop-sa"}}],
        "current-context": "recop-sa",
    }
    path = state_dir("e2e-helm") / "recop-sa.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def example_model() -> dict:
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["metadata"]["namespace"] = MODELS
    return doc


def apply(cluster, obj: dict) -> None:
    cluster.kubectl("apply", "--server-side", "--field-manager=e2e", "-f", "-",
                    input=json.dumps(obj))


def exists(cluster, *args: str) -> bool:
    return cluster.kubectl("get", *args, check=False).returncode == 0


@pytest.fixture(scope="module")
def release(cluster):
    # Leftovers of an interrupted run: its models keep Kopf's finalizer, which only a
    # running operator would remove.
    cluster.helm("uninstall", RELEASE, "-n", NS, "--wait", check=False)
    for name in cluster.kubectl("-n", MODELS, "get", "recmodels", "-o", "name",
                                check=False).stdout.split():
        cluster.kubectl("-n", MODELS, "patch", name, "--type=merge",
                        "-p", '{"metadata": {"finalizers": null}}', check=False)
    cluster.kubectl("delete", "namespace", MODELS, "--ignore-not-found", "--wait=true",
                    timeout=180)
    installed_at = datetime.now(UTC)
    cluster.helm("install", RELEASE, str(CHART), "-n", NS, "--create-namespace",
                 "--wait", "--timeout=3m")
    cluster.kubectl("create", "namespace", MODELS)
    return installed_at


@pytest.fixture(scope="module")
def operators(cluster, release):
    kubeconfig = service_account_kubeconfig(cluster)
    started = []
    try:
        started.append(peered_operator(kubeconfig, "recop-leader", priority=200))
        standby = peered_operator(kubeconfig, "recop-standby", priority=100)
        started.append(standby)
        # Kopf handles its first events before it has read the peering, and a pause
        # lets handlers already running finish: a starting replica may repeat the
        # leader's (idempotent) applies for a moment. After that it must stay still.
        wait_for(lambda: "Pausing operations in favour of" in standby.log(), timeout=30,
                 what="the standby replica to pause")
        seen = [-1.0]  # so that two readings, one interval apart, are compared

        def settled() -> bool:
            seen.append(standby.writes())
            return seen[-1] == seen[-2]

        wait_for(settled, timeout=60, interval=3, what="the paused standby to go quiet")
        standby.writes_before_pause = seen[-1]
        yield started
    finally:
        for operator in started:
            operator.stop()


def test_install_creates_the_operator_objects(cluster, release):
    status = json.loads(cluster.helm("status", RELEASE, "-n", NS, "-o", "json").stdout)
    assert status["info"]["status"] == "deployed"
    deployment = get_json(cluster, "-n", NS, "deployment", RELEASE)
    assert deployment["status"].get("readyReplicas") == 2
    for args in (["-n", NS, "serviceaccount", RELEASE], ["clusterrole", RELEASE],
                 ["clusterrolebinding", RELEASE], ["clusterkopfpeering", "recop"],
                 ["crd", "clusterkopfpeerings.kopf.dev"], ["crd", "recmodels.serving.recop.dev"]):
        assert exists(cluster, *args), f"missing after install: {args}"


def test_example_recmodel_becomes_ready_with_the_charts_service_account(cluster, operators):
    apply(cluster, example_model())
    # Phase Ready: every replica ready (the Ready condition already holds once each
    # shard and Triton serve from one replica).
    cluster.kubectl("-n", MODELS, "wait", "--for=jsonpath={.status.phase}=Ready",
                    "recmodel/ctr-ranker", "--timeout=300s", timeout=330)
    status = get_json(cluster, "-n", MODELS, "recmodel", "ctr-ranker")["status"]
    assert status["phase"] == "Ready" and status["readyShards"] == 8


def test_only_one_replica_acts(cluster, operators):
    leader, standby = operators
    peers = get_json(cluster, "clusterkopfpeering", "recop").get("status", {})
    assert {leader.name, standby.name} <= set(peers), peers
    assert "Resuming operations" not in standby.log()
    assert leader.writes() > 0
    assert standby.writes() == standby.writes_before_pause, "the paused standby wrote"


def test_pruning_deletes_what_a_new_spec_no_longer_wants(cluster, operators):
    # Leftovers of an older spec, as RecOp labels what it makes for a model.
    labels = {L.MODEL: "ctr-ranker", L.MANAGED_BY: "recop"}
    for kind, extra in (("ConfigMap", {"data": {"a": "b"}}),
                        ("Service", {"spec": {"ports": [{"port": 80}]}})):
        apply(cluster, {"apiVersion": "v1", "kind": kind, **extra, "metadata": {
            "name": "ctr-ranker-leftover", "namespace": MODELS, "labels": labels}})
    # External servers: the per-shard Deployments and budgets are no longer wanted.
    cluster.kubectl("-n", MODELS, "patch", "recmodel", "ctr-ranker", "--type=merge", "-p",
                    json.dumps({"spec": {"embeddingServer": {"deployment": "External"}}}))

    def pruned() -> bool:
        left = get_json(cluster, "-n", MODELS, "deployments,pdb,configmaps,services",
                        "-l", f"{L.MODEL}=ctr-ranker")["items"]
        names = {(o["kind"], o["metadata"]["name"]) for o in left}
        return not any(kind == "PodDisruptionBudget" or name == "ctr-ranker-leftover" or (
            kind == "Deployment" and name.startswith(L.embedding_name("ctr-ranker", "")))
            for kind, name in names)

    wait_for(pruned, timeout=90, what="pruning of the objects the new spec dropped")


def audit_events(cluster) -> list[dict]:
    path = cluster.kubeconfig.parent / "audit.log"
    if not path.exists():
        pytest.fail(f"no API server audit log at {path}: the local control plane must run "
                    "kube-apiserver with --audit-log-path there (JSON, level Metadata) for "
                    "this test to see what the operator's service account did",
                    pytrace=False)
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_role_grants_exactly_what_the_operator_uses(cluster, release, operators):
    # This install's account only: the audit log spans the cluster's life.
    uid = get_json(cluster, "-n", NS, "serviceaccount", RELEASE)["metadata"]["uid"]
    used: set[tuple[str, str, str]] = set()
    refused: set[tuple[str, str, str]] = set()
    for event in audit_events(cluster):
        ref, user = event.get("objectRef"), event.get("user", {})
        if (user.get("username"), user.get("uid")) != (ACCOUNT, uid) or not ref:
            continue  # other users; non-resource requests such as discovery
        if datetime.fromisoformat(event["requestReceivedTimestamp"]) < release:
            continue  # an earlier install's account, had it kept its uid
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource")
                                      else "")
        group, response = ref.get("apiGroup", ""), event.get("responseStatus", {})
        verbs = {event["verb"]}
        # Server-side apply creating an object: audited as patch, authorized as create too.
        if event["verb"] == "patch" and (response.get("code") == 201 or "cannot create"
                                         in response.get("message", "")):
            verbs.add("create")
        if response.get("code") == 403 and "being terminated" in response.get("message", ""):
            # Cluster-wide, the operator still acts on models of namespaces that earlier
            # modules delete: a terminating namespace refuses new Events, not the role.
            continue
        target = refused if response.get("code") == 403 else used
        target.update((group, resource, verb) for verb in verbs)
    assert used, "the audit log holds no request of the operator's service account"
    assert not refused, f"the role lacks what the operator needs: {sorted(refused)}"
    assert used <= rbac.granted(), f"used without a rule: {sorted(used - rbac.granted())}"
    unused = rbac.granted() - rbac.granted_ahead() - used
    assert not unused, f"granted but never used by the operator: {sorted(unused)}"


def test_upgrade_applies_crds_then_rolls_the_deployment(cluster, operators):
    # The documented path: Helm never upgrades crds/, so they are applied first.
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"))
    cluster.helm("upgrade", RELEASE, str(CHART), "-n", NS, "--set",
                 "resources.requests.cpu=200m", "--wait", "--timeout=3m")
    status = json.loads(cluster.helm("status", RELEASE, "-n", NS, "-o", "json").stdout)
    assert status["version"] == 2 and status["info"]["status"] == "deployed"
    deployment = get_json(cluster, "-n", NS, "deployment", RELEASE)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["requests"]["cpu"] == "200m"
    assert deployment["status"].get("updatedReplicas") == 2
    assert exists(cluster, "clusterkopfpeering", "recop")


def test_uninstall_leaves_no_orphans(cluster, operators):
    # Models first, while the operator runs: Kopf's finalizer holds them until it acts.
    cluster.kubectl("-n", MODELS, "delete", "recmodel", "ctr-ranker", "--wait=true",
                    timeout=120)
    for operator in operators:
        operator.stop()
    cluster.helm("uninstall", RELEASE, "-n", NS, "--wait", "--timeout=3m")
    selector = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/name=recop"

    def leftovers() -> list[str]:
        left = get_json(cluster, "-n", NS, "deployments,replicasets,pods,services,"
                        "serviceaccounts,pdb", "-l", selector)["items"]
        left += get_json(cluster, "clusterroles,clusterrolebindings,clusterkopfpeerings",
                         "-l", selector)["items"]
        return [f"{o['kind']}/{o['metadata']['name']}" for o in left]

    # Pods and ReplicaSets go through garbage collection after the Deployment.
    try:
        wait_for(lambda: not leftovers(), timeout=90, what="no objects of the release")
    except AssertionError:
        pytest.fail(f"left after uninstall: {leftovers()}", pytrace=False)
    for args in (["clusterrole", RELEASE], ["clusterrolebinding", RELEASE],
                 ["clusterkopfpeering", "recop"], ["-n", NS, "serviceaccount", RELEASE]):
        assert not exists(cluster, *args), f"left after uninstall: {args}"
    # By Helm's design the CRDs stay, and with them every custom resource.
    assert exists(cluster, "crd", "clusterkopfpeerings.kopf.dev")
    assert exists(cluster, "crd", "recmodels.serving.recop.dev")
    assert not json.loads(cluster.helm("list", "-n", NS, "-o", "json").stdout)
