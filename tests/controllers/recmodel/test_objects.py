"""The RecModel builders, fit checks and status, without a cluster."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import yaml
from pydantic import ValidationError

from controllers.common import labels as L
from controllers.common.endpointslices import ready_endpoints
from controllers.common.fit import dense_fit_problem, shard_fit_problem
from controllers.common.nodes import parse_node
from controllers.recmodel.objects import (
    OPERATOR_POD_LABELS,
    Owner,
    desired_objects,
    embedding_deployment,
    embedding_network_policy,
    shard_memory_bytes,
    triton_deployment,
)
from controllers.recmodel.status import shows_freshness_breach, summarize
from embedding.config import LIVENESS_HEALTH_SERVICE, LOOKUP_HEALTH_SERVICE
from recop.api.common import PodPlacement
from recop.api.recmodel import Freshness, InstanceGroup, Phase, RecModelSpec, RecModelStatus
from recop.quantity import parse
from tests.examples import EXAMPLES

OWNER = Owner("ctr-ranker", "recsys", "uid-1")


def example_spec(**changes) -> RecModelSpec:
    doc = yaml.safe_load((EXAMPLES / "valid" / "recmodel.yaml").read_text())
    spec = RecModelSpec.model_validate(doc["spec"])
    return spec.model_copy(update=changes)


def by_kind(objects, kind):
    return [o for o in objects if o["kind"] == kind]


def test_one_deployment_service_and_pdb_per_shard_plus_triton():
    objects = desired_objects(OWNER, example_spec())
    deployments = by_kind(objects, "Deployment")
    assert len(deployments) == 8 + 1
    assert len(by_kind(objects, "Service")) == 8 + 1
    assert len(by_kind(objects, "PodDisruptionBudget")) == 8
    for obj in objects:
        assert len(obj["metadata"]["name"]) <= 63
        ref = obj["metadata"]["ownerReferences"][0]
        assert ref["uid"] == "uid-1" and ref["controller"] is True


def test_each_embedding_pod_knows_its_shard_and_never_drops_to_zero():
    objects = desired_objects(OWNER, example_spec())
    for shard, dep in enumerate(d for d in by_kind(objects, "Deployment")
                                if d["metadata"]["labels"][L.COMPONENT] == L.EMBEDDING):
        env = {e["name"]: e.get("value") for e in
               dep["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["RECOP_SHARD_INDEX"] == str(shard)
        assert env["RECOP_SHARD_COUNT"] == "8"
        assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
        assert dep["spec"]["selector"]["matchLabels"][L.SHARD] == str(shard)


def test_memory_request_covers_the_shard_data_and_headroom():
    spec = example_spec()
    dep = by_kind(desired_objects(OWNER, spec), "Deployment")[0]
    memory = dep["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["memory"]
    data = (200_000_000 * 64 * 2 + 50_000_000 * 64 * 4 + 10_000 * (16 + 4)) / 8
    assert parse(memory) >= data * 1.3
    assert parse(memory) == -(-shard_memory_bytes(spec) // 2**20) * 2**20


def test_credentials_come_from_the_secret_only():
    dep = by_kind(desired_objects(OWNER, example_spec()), "Deployment")[0]
    env = dep["spec"]["template"]["spec"]["containers"][0]["env"]
    secret = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in env if "valueFrom" in e}
    assert secret["AWS_ACCESS_KEY_ID"] == {"name": "recop-s3", "key": "AWS_ACCESS_KEY_ID"}
    assert not any("value" in e for e in env if e["name"].startswith("AWS_SECRET"))


def test_triton_lands_on_gpu_nodes_with_gpu_limits_and_health_probes():
    dep = triton_deployment(OWNER, example_spec())
    pod = dep["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"]["nvidia.com/gpu.present"] == "true"
    assert sum(t.get("key") == "nvidia.com/gpu" for t in pod["tolerations"]) == 1
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert "--model-control-mode=explicit" in container["args"]


def test_cpu_only_triton_asks_for_no_gpu():
    spec = example_spec()
    spec = spec.model_copy(update={"dense": spec.dense.model_copy(update={
        "gpus_per_pod": 0, "instance_groups": [InstanceGroup(kind="KIND_CPU")]}),
        "dense_placement": PodPlacement()})
    pod = triton_deployment(OWNER, spec)["spec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in pod["containers"][0]["resources"].get("limits", {})
    assert "nvidia.com/gpu.present" not in pod.get("nodeSelector", {})


def test_triton_config_change_rolls_the_pods():
    spec = example_spec()
    before = triton_deployment(OWNER, spec)
    dense = spec.dense.model_copy(update={"max_batch_size": 4096})
    after = triton_deployment(OWNER, spec.model_copy(update={"dense": dense}))
    key = "recop.dev/config-sha256"
    assert (before["spec"]["template"]["metadata"]["annotations"][key]
            != after["spec"]["template"]["metadata"]["annotations"][key])


def test_external_servers_get_selectorless_services_and_no_pods():
    spec = example_spec()
    spec = spec.model_copy(update={"embedding_server": spec.embedding_server.model_copy(
        update={"deployment": "External"})})
    objects = desired_objects(OWNER, spec)
    emb = [o for o in objects if o["metadata"]["labels"][L.COMPONENT] == L.EMBEDDING]
    assert {o["kind"] for o in emb} == {"Service"}
    assert all("selector" not in o["spec"] for o in emb)


def test_external_triton_gets_a_selectorless_service_and_no_deployment():
    spec = example_spec()
    spec = spec.model_copy(update={"dense": spec.dense.model_copy(
        update={"deployment": "External"})})
    triton = [o for o in desired_objects(OWNER, spec)
              if o["metadata"]["labels"][L.COMPONENT] == L.TRITON]
    assert {o["kind"] for o in triton} == {"Service"}
    assert "selector" not in next(o for o in triton if o["kind"] == "Service")["spec"]


def test_single_replica_shards_are_protected_from_drains():
    spec = example_spec()
    spec = spec.model_copy(update={"sharding": spec.sharding.model_copy(
        update={"replicas_per_shard": 1})})
    pdb = by_kind(desired_objects(OWNER, spec), "PodDisruptionBudget")[0]
    assert pdb["spec"] == {"minAvailable": 1, "selector": pdb["spec"]["selector"]}


def _node(name, memory, gpus=0, taint=False):
    return parse_node({
        "metadata": {"name": name, "labels": {"nvidia.com/gpu.present": "true"} if gpus else {}},
        "spec": {"taints": [{"key": "nvidia.com/gpu", "value": "present",
                             "effect": "NoSchedule"}] if taint else []},
        "status": {"allocatable": {"memory": memory, "nvidia.com/gpu": str(gpus)}},
    })


def test_shard_too_big_for_every_node_is_refused_with_advice():
    spec = example_spec()
    nodes = [_node("cpu-0", "2Gi"), _node("gpu-0", "64Gi", gpus=8, taint=True)]
    problem = shard_fit_problem(spec, shard_memory_bytes(spec), nodes)
    assert problem is not None
    assert "largest eligible node has 2.0Gi" in problem and "shards" in problem
    assert shard_fit_problem(spec, shard_memory_bytes(spec), [_node("big", "64Gi")]) is None


def test_dense_needs_a_gpu_node_with_enough_gpus():
    spec = example_spec()
    assert dense_fit_problem(spec, [_node("cpu", "8Gi")]) is not None
    assert dense_fit_problem(spec, [_node("g", "8Gi", gpus=2, taint=True)]) is None


def test_ready_endpoints_counts_unset_as_ready():
    slices = [{"endpoints": [{"conditions": {"ready": True}}, {"conditions": {}},
                             {"conditions": {"ready": False}}]}, {"endpoints": None}]
    assert ready_endpoints(slices) == 2


def test_status_moves_from_progressing_to_ready_to_degraded():
    spec = example_spec()
    status = summarize(spec, "ctr-ranker", "recsys", 3, [1] * 8, 0, RecModelStatus(), None)
    assert status.phase == Phase.PROGRESSING
    ready = {c.type: c for c in status.conditions}["Ready"]
    assert ready.status == "False" and ready.observed_generation == 3
    status = summarize(spec, "ctr-ranker", "recsys", 3, [2] * 8, 2, status, None)
    assert status.phase == Phase.READY and status.ready_shards == 8
    assert {c.type: c.status for c in status.conditions} == {
        "Ready": "True", "Progressing": "False", "Degraded": "False"}
    status = summarize(spec, "ctr-ranker", "recsys", 3, [2] * 7 + [1], 2, status, None)
    assert status.phase == Phase.DEGRADED
    assert "shard 7 1/2" in status.conditions_message("Degraded")
    assert status.endpoints.triton_grpc == "ctr-ranker-triton.recsys.svc:8001"


def test_a_rollout_after_ready_is_progressing_not_degraded():
    spec = example_spec()
    status = summarize(spec, "m", "ns", 3, [2] * 8, 2, RecModelStatus(), None)
    assert status.phase == Phase.READY and status.ready_generation == 3
    status = summarize(spec, "m", "ns", 4, [2] * 7 + [1], 2, status, None)
    assert status.phase == Phase.PROGRESSING
    assert {c.type: c.status for c in status.conditions}["Ready"] == "True"


def test_status_reports_a_refusal_as_failed():
    status = summarize(example_spec(), "m", "ns", 1, [0] * 8, 0, RecModelStatus(), "too big")
    assert status.phase == Phase.FAILED
    assert status.conditions_message("Degraded") == "too big"


def test_a_breached_freshness_objective_degrades_a_ready_model_until_it_is_met():
    spec = example_spec()
    ready = summarize(spec, "m", "ns", 3, [2] * 8, 2, RecModelStatus(), None)
    since = datetime(2026, 12, 3, 6, 0, tzinfo=UTC)
    over = Freshness(version="m-live", p99_seconds=4.2, objective_p99_seconds=1,
                     over_since=since)
    assert not shows_freshness_breach(ready.to_wire())
    ready = ready.model_copy(update={"freshness": over})  # over, not yet for the window
    assert summarize(spec, "m", "ns", 3, [2] * 8, 2, ready, None).phase == Phase.READY
    breached = ready.model_copy(update={"freshness": over.model_copy(
        update={"breached": True})})
    status = summarize(spec, "m", "ns", 3, [2] * 8, 2, breached, None)
    assert status.phase == Phase.DEGRADED
    conditions = {c.type: c for c in status.conditions}
    assert conditions["Ready"].status == "True"  # it still serves
    assert conditions["Degraded"].reason == "FreshnessObjectiveBreached"
    assert conditions["Degraded"].message == (
        "freshness p99 4.2s is over the objective of 1s since 2026-12-03T06:00:00Z "
        "(ModelVersion m-live)")
    assert shows_freshness_breach(status.to_wire())
    # Replicas missing are told first: that is what to fix.
    short = summarize(spec, "m", "ns", 3, [2] * 7 + [1], 2, status, None)
    assert {c.type: c for c in short.conditions}["Degraded"].reason == "ReplicasMissing"
    healthy = summarize(spec, "m", "ns", 3, [2] * 8, 2,
                        status.model_copy(update={"freshness": None}), None)
    assert healthy.phase == Phase.READY and not shows_freshness_breach(healthy.to_wire())


def _with_server(**changes) -> RecModelSpec:
    spec = example_spec()
    server = spec.embedding_server.model_validate(
        {**spec.embedding_server.to_wire(), **changes})
    return spec.model_copy(update={"embedding_server": server})


def _container(spec: RecModelSpec) -> dict:
    return embedding_deployment(OWNER, spec, 0)["spec"]["template"]["spec"]["containers"][0]


def test_probes_ask_the_servers_health_services():
    container = _container(example_spec())
    # Ready once a version serves; alive while the process answers, version or not.
    assert container["readinessProbe"]["grpc"] == {"port": 8500,
                                                   "service": LOOKUP_HEALTH_SERVICE}
    assert container["livenessProbe"]["grpc"] == {"port": 8500,
                                                  "service": LIVENESS_HEALTH_SERVICE}


def test_admin_token_and_tls_are_mounted_from_their_secrets_never_put_in_env():
    spec = _with_server(adminAuth={"tokenSecret": {"name": "emb-admin", "key": "token"},
                                   "tlsSecret": "emb-admin-tls"})
    pod = embedding_deployment(OWNER, spec, 0)["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["RECOP_ADMIN_TOKEN_FILE"]["value"] == "/etc/recop/admin-token/token"
    assert env["RECOP_ADMIN_TLS_CERT"]["value"] == "/etc/recop/admin-tls/tls.crt"
    assert env["RECOP_ADMIN_TLS_KEY"]["value"] == "/etc/recop/admin-tls/tls.key"
    volumes = {v["name"]: v["secret"] for v in pod["volumes"]}
    assert volumes["admin-token"]["secretName"] == "emb-admin"
    assert volumes["admin-token"]["items"] == [{"key": "token", "path": "token"}]
    assert volumes["admin-tls"]["secretName"] == "emb-admin-tls"
    # Readable by the server's group only (fsGroup), mounted read-only.
    assert {v["defaultMode"] for v in volumes.values()} == {0o440}
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsUser"]
    assert all(m["readOnly"] for m in container["volumeMounts"])
    assert {m["mountPath"] for m in container["volumeMounts"]} == {
        "/etc/recop/admin-token", "/etc/recop/admin-tls"}
    # Without adminAuth: no token, no volumes.
    plain = embedding_deployment(OWNER, _with_server(adminAuth=None), 0)
    plain = plain["spec"]["template"]["spec"]
    assert "volumes" not in plain and "volumeMounts" not in plain["containers"][0]
    assert not any(e["name"].startswith("RECOP_ADMIN_T") for e in plain["containers"][0]["env"])


def test_lookup_limits_reach_the_servers():
    spec = _with_server(lookupLimits={"maxIdsPerRequest": 5000})
    env = {e["name"]: e.get("value") for e in _container(spec)["env"]}
    assert env["RECOP_LOOKUP_MAX_IDS"] == "5000"
    assert env["RECOP_LOOKUP_MAX_REQUEST_BYTES"] == str(64 << 20)


def test_network_policy_opens_lookup_to_all_and_admin_to_the_operator_only():
    policy = embedding_network_policy(OWNER, example_spec(), "recop-system")
    assert policy["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"] == L.selector("ctr-ranker", L.EMBEDDING)
    assert spec["policyTypes"] == ["Ingress"]  # egress (S3, Kafka) stays open
    open_rule, admin_rule = spec["ingress"]
    assert "from" not in open_rule
    assert {p["port"] for p in open_rule["ports"]} == {8500, 9100}
    assert admin_rule["ports"] == [{"protocol": "TCP", "port": 8501}]
    assert admin_rule["from"] == [{
        "podSelector": {"matchLabels": OPERATOR_POD_LABELS},
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "recop-system"}}}]
    # Outside a cluster the operator's namespace is unknown: its pods in any namespace.
    anywhere = embedding_network_policy(OWNER, example_spec(), None)["spec"]["ingress"][1]
    assert anywhere["from"][0]["namespaceSelector"] == {}


def test_network_policy_only_for_managed_servers_and_applied_first():
    objects = desired_objects(OWNER, example_spec(), operator_namespace="recop-system")
    assert objects[0]["kind"] == "NetworkPolicy"
    assert len(by_kind(objects, "NetworkPolicy")) == 1
    external = _with_server(deployment="External")
    assert not by_kind(desired_objects(OWNER, external), "NetworkPolicy")


def test_embedding_objects_are_valid_kubernetes():
    import kubernetes_validate

    from devstack import cluster_build

    version = cluster_build.KUBERNETES_VERSION.lstrip("v").rsplit(".", 1)[0] + ".0"
    spec = _with_server(adminAuth={"tokenSecret": {"name": "a", "key": "t"}, "tlsSecret": "b"})
    for obj in desired_objects(OWNER, spec, operator_namespace="recop-system"):
        kubernetes_validate.validate(obj, version, strict=True)


def _with_stream_auth(**auth) -> RecModelSpec:
    spec = example_spec()
    stream = spec.stream.model_validate({**spec.stream.to_wire(), "auth": {
        "mechanism": "SCRAM-SHA-512", "username": {"name": "kafka-emb", "key": "user"},
        "password": {"name": "kafka-emb", "key": "password"}, **auth}})
    return spec.model_copy(update={"stream": stream})


def test_stream_credentials_reach_the_servers_only_as_secret_refs():
    env = _container(_with_stream_auth())["env"]
    by_name = {e["name"]: e for e in env}
    assert by_name["RECOP_KAFKA_SECURITY_PROTOCOL"]["value"] == "SASL_SSL"
    assert by_name["RECOP_KAFKA_SASL_MECHANISM"]["value"] == "SCRAM-SHA-512"
    for var, key in (("RECOP_KAFKA_USERNAME", "user"), ("RECOP_KAFKA_PASSWORD", "password")):
        assert by_name[var] == {"name": var, "valueFrom": {
            "secretKeyRef": {"name": "kafka-emb", "key": key}}}
    plaintext = {e["name"]: e.get("value") for e in _container(_with_stream_auth(tls=False))["env"]}
    assert plaintext["RECOP_KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT"
    # Without auth the servers connect in PLAINTEXT and get no credentials at all.
    assert not any(e["name"].startswith(("RECOP_KAFKA_S", "RECOP_KAFKA_U", "RECOP_KAFKA_P"))
                   for e in _container(example_spec())["env"])


def test_a_stream_password_cannot_be_written_into_the_spec():
    doc = example_spec().to_wire()
    doc["stream"]["auth"] = {"mechanism": "PLAIN", "username": {"name": "k", "key": "u"},
                             "password": "hunter2"}
    with pytest.raises(ValidationError):
        RecModelSpec.model_validate(doc)


def test_stream_auth_deployment_is_valid_kubernetes():
    import kubernetes_validate

    from devstack import cluster_build

    version = cluster_build.KUBERNETES_VERSION.lstrip("v").rsplit(".", 1)[0] + ".0"
    kubernetes_validate.validate(embedding_deployment(OWNER, _with_stream_auth(), 0), version,
                                 strict=True)
