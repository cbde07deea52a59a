"""Pure builders: a RecModel spec in, the Kubernetes objects that serve it out.

No I/O here: the handlers in controllers/recmodel/handlers.py apply what these return, and
tests check them without a cluster.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from controllers.abtest.placement import PlacementOverride, replicas
from controllers.common import labels as L
from controllers.common import triton_config
from recop.api import RECMODEL
from recop.api.common import API_VERSION, PodPlacement, ResourceList, Resources
from recop.api.recmodel import RecModelSpec
from recop.quantity import mebibytes

# Python, gRPC and allocator overhead of one embedding server besides its tables.
SERVER_BASE_BYTES = 256 * 2**20
GPU_RESOURCE = "nvidia.com/gpu"
GPU_NODE_LABEL = "nvidia.com/gpu.present"
HOSTNAME_LABEL = "kubernetes.io/hostname"
TRITON_HTTP, TRITON_GRPC, TRITON_METRICS = 8000, 8001, 8002
# grpc.health.v1 services of embedding/server.py: ready once a version serves, live while
# the process answers (tests/controllers/recmodel/test_objects.py checks the names against it).
LOOKUP_HEALTH_SERVICE = "recop.embedding.v1.EmbeddingLookup"
LIVENESS_HEALTH_SERVICE = "liveness"
ADMIN_TOKEN_DIR = "/etc/recop/admin-token"
ADMIN_TLS_DIR = "/etc/recop/admin-tls"
SERVER_UID = 10001
# The labels the chart gives the operator's pods (charts/recop/templates/_helpers.tpl).
OPERATOR_POD_LABELS = {"app.kubernetes.io/name": "recop",
                       "app.kubernetes.io/component": "operator"}

# The `restricted` Pod Security Standard, for every container RecOp runs.
RESTRICTED = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


@dataclass(frozen=True)
class Owner:
    """The RecModel that owns the objects, for owner references and names."""

    name: str
    namespace: str
    uid: str

    def reference(self) -> dict:
        return {"apiVersion": API_VERSION, "kind": RECMODEL.kind, "name": self.name,
                "uid": self.uid, "controller": True, "blockOwnerDeletion": True}


def _meta(owner: Owner, name: str, component: str, shard: int | None = None) -> dict:
    return {"name": name, "namespace": owner.namespace,
            "labels": L.labels(owner.name, component, shard),
            "ownerReferences": [owner.reference()]}


def shard_memory_bytes(spec: RecModelSpec) -> int:
    """Memory one embedding server needs: its share of the tables plus headroom for the
    version loading beside the serving one, plus the process itself."""
    data = spec.bytes_per_shard()
    return data + data * spec.embedding_server.memory_headroom_percent // 100 + SERVER_BASE_BYTES


def _resources(resources: Resources, memory_default: str | None = None,
               extra_limits: dict | None = None) -> dict:
    requests = resources.requests.to_wire()
    limits = resources.limits.to_wire()
    if memory_default:
        requests.setdefault("memory", memory_default)
        limits.setdefault("memory", requests["memory"])
    limits.update(extra_limits or {})
    return {k: v for k, v in (("requests", requests), ("limits", limits)) if v}


def _placement(placement: PodPlacement, extra_selector: dict | None = None,
               extra_tolerations: list | None = None) -> dict:
    out: dict = {}
    selector = {**placement.node_selector, **(extra_selector or {})}
    if selector:
        out["nodeSelector"] = selector
    tolerations = [t.to_wire() for t in placement.tolerations]
    tolerations += [t for t in extra_tolerations or [] if t not in tolerations]
    if tolerations:
        out["tolerations"] = tolerations
    return out


def _s3_env(spec: RecModelSpec) -> list[dict]:
    storage = spec.storage
    env = [{"name": "AWS_DEFAULT_REGION", "value": storage.region},
           {"name": "RECOP_S3_BUCKET", "value": storage.bucket},
           {"name": "RECOP_S3_PREFIX", "value": storage.prefix}]
    if storage.endpoint:
        env.append({"name": "AWS_ENDPOINT_URL_S3", "value": storage.endpoint})
    for var, ref in (("AWS_ACCESS_KEY_ID", storage.access_key_id),
                     ("AWS_SECRET_ACCESS_KEY", storage.secret_access_key)):
        if ref is not None:
            env.append({"name": var, "valueFrom": {"secretKeyRef": ref.to_wire()}})
    return env


def _stream_env(spec: RecModelSpec) -> list[dict]:
    """Where the servers read deltas from; SASL credentials only as Secret references,
    so no password is ever part of the Deployment."""
    stream = spec.stream
    if stream is None:
        return []
    env = [{"name": "RECOP_KAFKA_BOOTSTRAP", "value": ",".join(stream.brokers)},
           {"name": "RECOP_DELTA_TOPIC", "value": stream.topic}]
    auth = stream.auth
    if auth is not None:
        env += [{"name": "RECOP_KAFKA_SECURITY_PROTOCOL",
                 "value": "SASL_SSL" if auth.tls else "SASL_PLAINTEXT"},
                {"name": "RECOP_KAFKA_SASL_MECHANISM", "value": auth.mechanism}]
        env += [{"name": var, "valueFrom": {"secretKeyRef": ref.to_wire()}}
                for var, ref in (("RECOP_KAFKA_USERNAME", auth.username),
                                 ("RECOP_KAFKA_PASSWORD", auth.password))]
    return env


def _admin_auth(spec: RecModelSpec) -> tuple[list[dict], list[dict], list[dict]]:
    """Env, volumes and mounts that give a server its admin token (and TLS pair) as files
    from the Secrets the spec names: never as env values, which leak into `describe`."""
    auth = spec.embedding_server.admin_auth
    if auth is None:
        return [], [], []
    ref = auth.token_secret
    env = [{"name": "RECOP_ADMIN_TOKEN_FILE", "value": f"{ADMIN_TOKEN_DIR}/token"}]
    # 0440 with the pod's fsGroup: readable by the server's group, not by others.
    volumes = [{"name": "admin-token", "secret": {
        "secretName": ref.name, "items": [{"key": ref.key, "path": "token"}],
        "defaultMode": 0o440}}]
    mounts = [{"name": "admin-token", "mountPath": ADMIN_TOKEN_DIR, "readOnly": True}]
    if auth.tls_secret:
        env += [{"name": "RECOP_ADMIN_TLS_CERT", "value": f"{ADMIN_TLS_DIR}/tls.crt"},
                {"name": "RECOP_ADMIN_TLS_KEY", "value": f"{ADMIN_TLS_DIR}/tls.key"}]
        volumes.append({"name": "admin-tls", "secret": {
            "secretName": auth.tls_secret, "defaultMode": 0o440,
            "items": [{"key": "tls.crt", "path": "tls.crt"},
                      {"key": "tls.key", "path": "tls.key"}]}})
        mounts.append({"name": "admin-tls", "mountPath": ADMIN_TLS_DIR, "readOnly": True})
    return env, volumes, mounts


def _rolling(replicas: int) -> dict:
    # Surge before removing, so no shard ever has zero ready replicas during a rollout,
    # even with a single replica.
    return {"replicas": replicas, "minReadySeconds": 5,
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}}


def embedding_deployment(owner: Owner, spec: RecModelSpec, shard: int,
                         override: PlacementOverride | None = None) -> dict:
    """`override`: an ABTest's placement of the model; a freed one runs no replicas."""
    server = spec.embedding_server
    name = L.embedding_name(owner.name, shard)
    selector = L.selector(owner.name, L.EMBEDDING, shard)
    env = [
        {"name": "RECOP_MODEL", "value": owner.name},
        {"name": "RECOP_SHARD_INDEX", "value": str(shard)},
        {"name": "RECOP_SHARD_COUNT", "value": str(spec.sharding.shards)},
        {"name": "RECOP_LOOKUP_PORT", "value": str(server.lookup_port)},
        {"name": "RECOP_ADMIN_PORT", "value": str(server.admin_port)},
        {"name": "RECOP_METRICS_PORT", "value": str(server.metrics_port)},
        {"name": "RECOP_BIND_HOST", "value": "0.0.0.0"},
        {"name": "RECOP_LOOKUP_MAX_IDS",
         "value": str(server.lookup_limits.max_ids_per_request)},
        {"name": "RECOP_LOOKUP_MAX_REQUEST_BYTES",
         "value": str(server.lookup_limits.max_request_bytes)},
        *_s3_env(spec),
    ]
    auth_env, volumes, mounts = _admin_auth(spec)
    env += auth_env
    env += _stream_env(spec)
    container = {
        "name": "server",
        "image": server.image,
        "args": ["python", "-m", "embedding.server"],
        "env": env,
        "ports": [{"name": "lookup", "containerPort": server.lookup_port},
                  {"name": "admin", "containerPort": server.admin_port},
                  {"name": "metrics", "containerPort": server.metrics_port}],
        "resources": _resources(server.resources, mebibytes(shard_memory_bytes(spec))),
        # Not ready until a version is active (the operator loads one into a replica that
        # is not ready yet); live as long as the process answers.
        "readinessProbe": {"grpc": {"port": server.lookup_port,
                                    "service": LOOKUP_HEALTH_SERVICE}, "periodSeconds": 5},
        "livenessProbe": {"grpc": {"port": server.lookup_port,
                                   "service": LIVENESS_HEALTH_SERVICE},
                          "periodSeconds": 10, "failureThreshold": 6},
        "securityContext": RESTRICTED,
    }
    if mounts:
        container["volumeMounts"] = mounts
    pod_spec = {
        "containers": [container],
        "securityContext": {"runAsNonRoot": True, "runAsUser": SERVER_UID,
                            "fsGroup": SERVER_UID,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        # Replicas of one shard on different nodes, so one node loss never takes a
        # whole shard; preferred so a small pool still schedules.
        "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "podAffinityTerm": {
                "labelSelector": {"matchLabels": selector},
                "topologyKey": "kubernetes.io/hostname"}}]}},
        "topologySpreadConstraints": [{
            "maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": L.selector(owner.name, L.EMBEDDING)}}],
        **_placement(spec.embedding_placement),
    }
    if volumes:
        pod_spec["volumes"] = volumes
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": _meta(owner, name, L.EMBEDDING, shard),
        "spec": {**_rolling(replicas(override, spec.sharding.replicas_per_shard)),
                 "selector": {"matchLabels": selector},
                 "template": {"metadata": {"labels": L.labels(owner.name, L.EMBEDDING, shard)},
                              "spec": pod_spec}},
    }


def embedding_service(owner: Owner, spec: RecModelSpec, shard: int) -> dict:
    """Headless, one per shard: its EndpointSlices are how clients and the operator find
    every replica of the shard. Selector-less for External servers, whose slices are
    registered by whoever runs them."""
    server = spec.embedding_server
    service_spec = {
        "clusterIP": "None",
        "ports": [{"name": "lookup", "port": server.lookup_port, "protocol": "TCP"},
                  {"name": "admin", "port": server.admin_port, "protocol": "TCP"},
                  {"name": "metrics", "port": server.metrics_port, "protocol": "TCP"}],
    }
    if server.deployment == "Managed":
        service_spec["selector"] = L.selector(owner.name, L.EMBEDDING, shard)
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": _meta(owner, L.embedding_name(owner.name, shard), L.EMBEDDING, shard),
            "spec": service_spec}


def embedding_network_policy(owner: Owner, spec: RecModelSpec,
                             operator_namespace: str | None) -> dict:
    """Ingress to the model's embedding servers: lookup and metrics from anywhere, the
    admin port only from the operator's pods (in its namespace when known; outside a
    cluster, pods labelled as RecOp's operator in any namespace)."""
    server = spec.embedding_server
    operator: dict = {"podSelector": {"matchLabels": OPERATOR_POD_LABELS}}
    operator["namespaceSelector"] = (
        {"matchLabels": {"kubernetes.io/metadata.name": operator_namespace}}
        if operator_namespace else {})
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": _meta(owner, f"{owner.name}-{L.EMBEDDING}", L.EMBEDDING),
        "spec": {
            "podSelector": {"matchLabels": L.selector(owner.name, L.EMBEDDING)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"ports": [{"protocol": "TCP", "port": server.lookup_port},
                           {"protocol": "TCP", "port": server.metrics_port}]},
                {"from": [operator], "ports": [{"protocol": "TCP", "port": server.admin_port}]},
            ],
        },
    }


def embedding_pdb(owner: Owner, spec: RecModelSpec, shard: int) -> dict:
    replicas = spec.sharding.replicas_per_shard
    # With two or more replicas a drain may take one at a time; a lone replica is
    # protected outright (drains wait), since losing it loses the shard.
    budget = {"maxUnavailable": 1} if replicas > 1 else {"minAvailable": 1}
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": _meta(owner, L.embedding_name(owner.name, shard), L.EMBEDDING, shard),
            "spec": {**budget,
                     "selector": {"matchLabels": L.selector(owner.name, L.EMBEDDING, shard)}}}


def triton_configmap(owner: Owner, spec: RecModelSpec) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": _meta(owner, L.triton_name(owner.name), L.TRITON),
            "data": {"config.pbtxt": triton_config.render(spec.dense)}}


def triton_deployment(owner: Owner, spec: RecModelSpec,
                      override: PlacementOverride | None = None) -> dict:
    """`override`: an ABTest's placement of this model (requests = limits on the node
    the cost model chose), which replaces the spec's resources while the test runs; a
    freed model (a stopped arm's) runs no replicas."""
    dense = spec.dense
    name = L.triton_name(owner.name)
    storage = spec.storage
    endpoint = (storage.endpoint or "").split("://", 1)[-1]
    repository = "/".join(p.strip("/") for p in (endpoint, storage.bucket, storage.prefix,
                                                  "dense") if p.strip("/"))
    config = triton_config.render(dense)
    gpu = dense.gpus_per_pod > 0
    container = {
        "name": "triton",
        "image": dense.image,
        "args": ["tritonserver", f"--model-repository=s3://{repository}",
                 "--model-control-mode=explicit", f"--load-model={dense.model_name}",
                 f"--http-port={TRITON_HTTP}", f"--grpc-port={TRITON_GRPC}",
                 f"--metrics-port={TRITON_METRICS}"],
        "env": _s3_env(spec),
        "ports": [{"name": "http", "containerPort": TRITON_HTTP},
                  {"name": "grpc", "containerPort": TRITON_GRPC},
                  {"name": "metrics", "containerPort": TRITON_METRICS}],
        "resources": _resources(
            dense.resources if override is None or override.freed else _placed(override),
            extra_limits={GPU_RESOURCE: str(dense.gpus_per_pod)} if gpu else None),
        "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": "http"},
                           "periodSeconds": 5},
        "livenessProbe": {"httpGet": {"path": "/v2/health/live", "port": "http"},
                          "periodSeconds": 10, "failureThreshold": 6},
        "volumeMounts": [{"name": "config", "mountPath": "/etc/recop/triton", "readOnly": True}],
        "securityContext": RESTRICTED,
    }
    selector = {GPU_NODE_LABEL: "true"} if gpu else {}
    if override is not None and not override.freed:
        selector[HOSTNAME_LABEL] = override.node
    placement = _placement(
        spec.dense_placement,
        extra_selector=selector or None,
        extra_tolerations=[{"key": GPU_RESOURCE, "operator": "Exists",
                            "effect": "NoSchedule"}] if gpu else None)
    template_meta = {
        "labels": L.labels(owner.name, L.TRITON),
        # A config change must roll the pods, which read it only at start.
        "annotations": {"recop.dev/config-sha256":
                        hashlib.sha256(config.encode()).hexdigest()[:16]},
    }
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": _meta(owner, name, L.TRITON),
        "spec": {**_rolling(replicas(override, dense.replicas)),
                 "selector": {"matchLabels": L.selector(owner.name, L.TRITON)},
                 "template": {"metadata": template_meta, "spec": {
                     "containers": [container],
                     "volumes": [{"name": "config", "configMap": {"name": name}}],
                     "securityContext": {"runAsNonRoot": True, "runAsUser": 1000,
                                         "seccompProfile": {"type": "RuntimeDefault"}},
                     **placement}}},
    }


def _placed(override: PlacementOverride) -> Resources:
    quantities = ResourceList(cpu=f"{override.cpu_millicores}m",
                              memory=str(override.memory_bytes))
    return Resources(requests=quantities, limits=quantities)


def triton_service(owner: Owner, spec: RecModelSpec) -> dict:
    service_spec: dict = {"ports": [
        {"name": "http", "port": TRITON_HTTP, "protocol": "TCP"},
        {"name": "grpc", "port": TRITON_GRPC, "protocol": "TCP"},
        {"name": "metrics", "port": TRITON_METRICS, "protocol": "TCP"}]}
    if spec.dense.deployment == "Managed":
        service_spec["selector"] = L.selector(owner.name, L.TRITON)
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": _meta(owner, L.triton_name(owner.name), L.TRITON),
            "spec": service_spec}


def desired_objects(owner: Owner, spec: RecModelSpec,
                    override: PlacementOverride | None = None,
                    operator_namespace: str | None = None) -> list[dict]:
    """Every object that serves the model, in the order they should be applied."""
    objects: list[dict] = []
    managed = spec.embedding_server.deployment == "Managed"
    if managed:
        # First, so no server pod ever runs with its admin port open to every pod.
        objects.append(embedding_network_policy(owner, spec, operator_namespace))
    for shard in range(spec.sharding.shards):
        objects.append(embedding_service(owner, spec, shard))
        if managed:
            objects += [embedding_pdb(owner, spec, shard),
                        embedding_deployment(owner, spec, shard, override)]
    objects += [triton_configmap(owner, spec), triton_service(owner, spec)]
    if spec.dense.deployment == "Managed":
        objects.append(triton_deployment(owner, spec, override))
    return objects
