"""The Helm chart without a cluster: lint, render, validate offline, check the pod
against the restricted Pod Security Standard and the ClusterRole against operator/rbac.py.

Uses the pinned helm build (devstack/cluster_build.py) and kubernetes-validate's
schemas of the Kubernetes release the local control plane runs.
"""

from __future__ import annotations

import re
import subprocess
from functools import cache
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from controllers.recmodel.objects import OPERATOR_POD_LABELS
from devstack import cluster, cluster_build
from devstack.common import cache_dir
from recop_operator import rbac

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "charts" / "recop"
SCHEMA_VERSION = cluster_build.KUBERNETES_VERSION.lstrip("v").rsplit(".", 1)[0] + ".0"
NAMESPACE = "recop-system"
# Kinds kubernetes-validate has no schema for; the chart renders no others.
CUSTOM_KINDS = {"ClusterKopfPeering", "ServiceMonitor", "PrometheusRule"}
# Everything optional switched on, so every branch of the templates is validated.
ALL_ON = ["--set", "metrics.serviceMonitor.enabled=true",
          "--set", "metrics.serviceMonitor.labels.release=prometheus",
          "--set", f"image.digest=sha256:{'a' * 64}",
          "--set", "priorityClassName=system-cluster-critical",
          "--set", "imagePullSecrets[0].name=registry",
          "--set", "nodeSelector.kubernetes\\.io/os=linux",
          "--set", "tolerations[0].key=dedicated,tolerations[0].operator=Exists",
          "--set", "podAnnotations.a=b,podLabels.c=d",
          "--set", "serviceAccount.annotations.e=f",
          "--set", "networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.team=obs",
          "--set", "networkPolicy.extraEgress[0].to[0].ipBlock.cidr=10.1.0.0/16",
          "--set", "alerts.prometheusRule.enabled=true",
          "--set", "dashboard.enabled=true"]


@cache
def helm_bin() -> Path:
    """The pinned helm build; built with the other local parts when missing."""
    built = cache_dir() / "bin" / f"helm-{cluster_build.HELM_VERSION}" / "helm"
    if not built.exists():
        try:
            built = cluster.build().helm
        except Exception as error:
            pytest.fail(f"helm {cluster_build.HELM_VERSION} could not be built: {error}",
                        pytrace=False)
    return built


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([str(helm_bin()), *args], capture_output=True, text=True,
                            timeout=120)
    if check and result.returncode:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}")
    return result


def render(*args: str) -> list[dict]:
    out = helm("template", "recop", str(CHART), "--namespace", NAMESPACE, *args).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def one(docs: list[dict], kind: str) -> dict:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def test_lint_is_clean():
    result = helm("lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in result.stdout, result.stdout


@pytest.mark.parametrize("values", [[], ALL_ON, ["--set", "replicaCount=1"]],
                         ids=["defaults", "all-on", "one-replica"])
def test_rendered_objects_are_valid_kubernetes(values):
    docs = render("--include-crds", *values)
    for doc in docs:
        if doc["kind"] in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, SCHEMA_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {error.message} at "
                        f"{'.'.join(map(str, error.path))}")
    kinds = {d["kind"] for d in docs}
    assert {"CustomResourceDefinition", "Deployment", "ServiceAccount", "ClusterRole",
            "ClusterRoleBinding", "ClusterKopfPeering"} <= kinds
    assert kinds - {"CustomResourceDefinition"} <= {
        "Deployment", "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
        "ClusterKopfPeering", "Service", "ServiceMonitor", "PodDisruptionBudget",
        "NetworkPolicy", "PrometheusRule", "ConfigMap"}


def test_chart_crds_are_the_generated_ones_plus_kopf_peering():
    generated = sorted(p.name for p in (REPO / "crds").glob("*.yaml"))
    in_chart = sorted(p.name for p in (CHART / "crds").glob("*.yaml"))
    assert in_chart == sorted([*generated, "kopf-peering.yaml"])
    for name in generated:
        assert (CHART / "crds" / name).read_text() == (REPO / "crds" / name).read_text(), (
            f"charts/recop/crds/{name} drifted: run `python -m recop.crdgen`")
    peering = {d["spec"]["names"]["kind"]: d for d in
               yaml.safe_load_all((CHART / "crds" / "kopf-peering.yaml").read_text())}
    assert set(peering) == {"ClusterKopfPeering", "KopfPeering"}
    for crd in peering.values():
        assert crd["spec"]["group"] == "kopf.dev"
        # The RBAC grants keep-alives only on the status subresource.
        assert crd["spec"]["versions"][0]["subresources"] == {"status": {}}


def test_pod_meets_the_restricted_pod_security_standard():
    pod = one(render(*ALL_ON), "Deployment")["spec"]["template"]["spec"]
    pod_sc = pod["securityContext"]
    assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] != 0
    assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert not {"hostNetwork", "hostPID", "hostIPC", "hostUsers"} & pod.keys()
    for volume in pod.get("volumes", []):
        assert set(volume) - {"name"} <= {"emptyDir", "configMap", "secret", "projected",
                                          "downwardAPI", "persistentVolumeClaim"}, volume
    for container in pod["containers"] + pod.get("initContainers", []):
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert not sc["capabilities"].get("add")
        assert sc.get("privileged") is not True and sc.get("runAsUser", 1) != 0
        assert sc["readOnlyRootFilesystem"] is True
        assert not any("hostPort" in p for p in container.get("ports", []))
        assert container["resources"]["requests"] and container["resources"]["limits"]
        assert {"livenessProbe", "readinessProbe", "startupProbe"} <= container.keys()


def test_ha_two_replicas_spread_with_a_budget_and_peering():
    docs = render()
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    assert pod["affinity"]["podAntiAffinity"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    # operator/cli.py derives each replica's peering priority from POD_NAME.
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert "--standalone" not in pod["containers"][0]["args"]
    assert one(docs, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    peering_name = re.search(r'settings\.peering\.name = "([^"]+)"',
                             (REPO / "operator" / "main.py").read_text()).group(1)
    assert one(docs, "ClusterKopfPeering")["metadata"]["name"] == peering_name
    assert not [d for d in render("--set", "replicaCount=1")
                if d["kind"] == "PodDisruptionBudget"]


def test_cluster_role_is_exactly_recop_rbac():
    docs = render()
    role = one(docs, "ClusterRole")
    assert role["rules"] == rbac.cluster_role_rules()
    binding = one(docs, "ClusterRoleBinding")
    account = one(docs, "ServiceAccount")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io",
                                  "kind": "ClusterRole", "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "namespace": NAMESPACE,
                                    "name": account["metadata"]["name"]}]
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    assert not [d for d in docs if d["kind"] in ("Role", "RoleBinding")]


def test_rbac_grants_no_wildcards_or_escalation():
    for rule in rbac.RULES:
        assert "*" not in rule.resources and "*" not in rule.verbs and rule.group != "*"
        assert not {"escalate", "bind", "impersonate", "deletecollection"} & set(rule.verbs)
        if "secrets" in rule.resources:
            assert rule.verbs == ("get",), "S3 credentials are read by name only"


def test_network_policy_limits_the_operator_to_its_peers():
    docs = render()
    policy = one(docs, "NetworkPolicy")["spec"]
    pod = one(docs, "Deployment")["spec"]["template"]
    assert policy["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    ports = [p["port"] for rule in policy["ingress"] for p in rule["ports"]]
    assert sorted(ports) == [8080, 8081]
    egress = {p["port"] for rule in policy["egress"] for p in rule.get("ports", [])}
    assert {53, 443, 6443, 9000, 9090} <= egress
    # The pods RecOp runs for models (embedding admin, Triton) are the only other peers.
    managed = [rule for rule in policy["egress"] if "ports" not in rule]
    assert managed == [{"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {
        "app.kubernetes.io/part-of": "recop", "app.kubernetes.io/managed-by": "recop"}}}]}]
    # Each RecModel's policy opens the admin port to these labels in this namespace.
    env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert OPERATOR_POD_LABELS.items() <= pod["metadata"]["labels"].items()
    assert not [d for d in render("--set", "networkPolicy.enabled=false")
                if d["kind"] == "NetworkPolicy"]


@pytest.mark.parametrize("bad", [
    "replicaCount=0", "image.pullPolicy=Sometimes", "image.digest=sha256:abc",
    "image.tag=has space", "metrics.port=80", "resources.limits.memory=lots",
    "nosuchkey=1", "metrics.serviceMonitor.interval=often", "serviceAccount.name=Bad_Name",
    "networkPolicy.egress.s3.cidrs[0]=anywhere", "networkPolicy.egress.prometheus.ports[0]=0",
])
def test_values_schema_refuses_bad_values(bad):
    result = helm("template", "recop", str(CHART), "--set", bad, check=False)
    assert result.returncode != 0, f"--set {bad} was accepted"
    assert "schema" in result.stderr.lower() or "values don't meet" in result.stderr.lower(), (
        result.stderr)
