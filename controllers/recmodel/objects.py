"""Pure builders: a RecModel spec in, the Kubernetes objects that serve it out.

No I/O here: the handlers in controllers/recmodel/handlers.py apply what these return, and
tests check them without a cluster.
"""

from __future__ import annotations

from dataclasses import dataclass

from controllers.common import labels as L
from controllers.common import nodes, triton_config
from controllers.common.owners import controller_reference
from controllers.common.placement import PlacementOverride, replicas
from controllers.recmodel import entry_model
from embedding import config as contract
from recop.api import RECMODEL
from recop.api.common import PodPlacement, ResourceList, Resources
from recop.api.recmodel import RecModelSpec
from recop.quantity import mebibytes

# Python, gRPC and allocator overhead of one embedding server besides its tables.
SERVER_BASE_BYTES = 256 * 2**20
HOSTNAME_LABEL = "kubernetes.io/hostname"
TRITON_HTTP, TRITON_GRPC, TRITON_METRICS = 8000, 8001, 8002
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
        return controller_reference(RECMODEL.kind, self.name, self.uid)


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


def _placement(placement: PodPlacement, gpu: bool, node: str | None = None) -> dict:
    """Node selector and tolerations of a pod: the spec's, the GPU pools' for GPU pods, and
    the node an ABTest placed it on."""
    out: dict = {}
    selector = nodes.pod_selector(placement, gpu)
    if node is not None:
        selector[HOSTNAME_LABEL] = node
    if selector:
        out["nodeSelector"] = selector
    tolerations = [t.to_wire() for t in nodes.pod_tolerations(placement, gpu)]
    if tolerations:
        out["tolerations"] = tolerations
    return out


def _s3_env(spec: RecModelSpec) -> list[dict]:
    """The standard AWS variables, which boto3 (the embedding servers) and Triton read;
    where in the bucket a checkpoint is comes with each load, not from here."""
    storage = spec.storage
    env = [{"name": "AWS_DEFAULT_REGION", "value": storage.region}]
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
    env = [contract.KAFKA_BOOTSTRAP.value(",".join(stream.brokers)),
           contract.TOPIC.value(stream.topic)]
    auth = stream.auth
    if auth is not None:
        env += [contract.KAFKA_SECURITY_PROTOCOL.value("SASL_SSL" if auth.tls
                                                     else "SASL_PLAINTEXT"),
                contract.KAFKA_SASL_MECHANISM.value(auth.mechanism),
                contract.KAFKA_USERNAME.secret(auth.username.to_wire()),
                contract.KAFKA_PASSWORD.secret(auth.password.to_wire())]
    return env


def _admin_auth(spec: RecModelSpec) -> tuple[list[dict], list[dict], list[dict]]:
    """Env, volumes and mounts that give a server its admin token (and TLS pair) as files
    from the Secrets the spec names: never as env values, which leak into `describe`."""
    auth = spec.embedding_server.admin_auth
    if auth is None:
        return [], [], []
    ref = auth.token_secret
    env = [contract.ADMIN_TOKEN_FILE.value(f"{ADMIN_TOKEN_DIR}/token")]
    # 0440 with the pod's fsGroup: readable by the server's group, not by others.
    volumes = [{"name": "admin-token", "secret": {
        "secretName": ref.name, "items": [{"key": ref.key, "path": "token"}],
        "defaultMode": 0o440}}]
    mounts = [{"name": "admin-token", "mountPath": ADMIN_TOKEN_DIR, "readOnly": True}]
    if auth.tls_secret:
        env += [contract.ADMIN_TLS_CERT.value(f"{ADMIN_TLS_DIR}/tls.crt"),
                contract.ADMIN_TLS_KEY.value(f"{ADMIN_TLS_DIR}/tls.key")]
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
        contract.SHARD_INDEX.value(shard),
        contract.SHARD_COUNT.value(spec.sharding.shards),
        contract.LOOKUP_PORT.value(server.lookup_port),
        contract.ADMIN_PORT.value(server.admin_port),
        contract.METRICS_PORT.value(server.metrics_port),
        contract.HOST.value(contract.ALL_INTERFACES),
        contract.MAX_IDS.value(server.lookup_limits.max_ids_per_request),
        contract.MAX_REQUEST_BYTES.value(server.lookup_limits.max_request_bytes),
        *_s3_env(spec),
    ]
    auth_env, volumes, mounts = _admin_auth(spec)
    env += auth_env
    env += _stream_env(spec)
    container = {
        "name": "server",
        "image": server.image,
        "args": list(contract.COMMAND),
        "env": env,
        "ports": [{"name": "lookup", "containerPort": server.lookup_port},
                  {"name": "admin", "containerPort": server.admin_port},
                  {"name": "metrics", "containerPort": server.metrics_port}],
        "resources": _resources(server.resources, mebibytes(shard_memory_bytes(spec))),
        # Not ready until a version is active (the operator loads one into a replica that
        # is not ready yet); live as long as the process answers.
        "readinessProbe": {"grpc": {"port": server.lookup_port,
                                    "service": contract.LOOKUP_HEALTH_SERVICE}, "periodSeconds": 5},
        "livenessProbe": {"grpc": {"port": server.lookup_port,
                                   "service": contract.LIVENESS_HEALTH_SERVICE},
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
        **_placement(spec.embedding_placement, gpu=False),
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
    gpu = dense.gpus_per_pod > 0
    container = {
        "name": "triton",
        "image": dense.image,
        "args": ["tritonserver", f"--model-repository=s3://{repository}",
                 "--model-control-mode=explicit", f"--load-model={dense.model_name}",
                 f"--http-port={TRITON_HTTP}", f"--grpc-port={TRITON_GRPC}",
                 f"--metrics-port={TRITON_METRICS}", *entry_model.triton_args(spec)],
        "env": _s3_env(spec) + entry_model.triton_env(owner.name, owner.namespace, spec),
        "ports": [{"name": "http", "containerPort": TRITON_HTTP},
                  {"name": "grpc", "containerPort": TRITON_GRPC},
                  {"name": "metrics", "containerPort": TRITON_METRICS}],
        "resources": _resources(
            dense.resources if override is None or override.freed else _placed(override),
            extra_limits={nodes.GPU_RESOURCE: str(dense.gpus_per_pod)} if gpu else None),
        "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": "http"},
                           "periodSeconds": 5},
        "livenessProbe": {"httpGet": {"path": "/v2/health/live", "port": "http"},
                          "periodSeconds": 10, "failureThreshold": 6},
        # Triton stages every model it loads from S3 in a temporary folder under /tmp,
        # which the read-only root filesystem would refuse.
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
        "securityContext": RESTRICTED,
    }
    placement = _placement(spec.dense_placement, gpu,
                           override.node if override is not None and not override.freed
                           else None)
    template_meta = {
        "labels": L.labels(owner.name, L.TRITON),
        # A config change rolls the pods, so none keeps the model loaded with an older
        # spec's config. A new pod starts from the repository's config (--load-model); the
        # spec's comes with the operator's loads (controllers/common/triton_config.py).
        "annotations": {"recop.dev/config-sha256": triton_config.digest(dense)},
    }
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": _meta(owner, name, L.TRITON),
        "spec": {**_rolling(replicas(override, dense.replicas)),
                 "selector": {"matchLabels": L.selector(owner.name, L.TRITON)},
                 "template": {"metadata": template_meta, "spec": {
                     "containers": [container],
                     "volumes": [{"name": "tmp", "emptyDir": {}}],
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
    objects.append(triton_service(owner, spec))
    if spec.dense.deployment == "Managed":
        objects.append(triton_deployment(owner, spec, override))
    return objects
