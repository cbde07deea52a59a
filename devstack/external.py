"""Objects that serve a RecModel from local processes, the way servers outside a cluster
do (embeddingServer.deployment: External): the model, the Secret with the local S3
server's keys, and EndpointSlices that register each process.

The API refuses loopback IPs in slices (and an FQDN endpoint needs a dotted name), so
a local process registers as `<name>.localhost`: gRPC's own resolver (c-ares) maps names
under .localhost to loopback (RFC 6761), and every client of these endpoints, the
operator's included, is gRPC, so the operator needs no dev-stack rule for them. A
slice's ports are its own, so each process gets a slice.
"""

from __future__ import annotations

import base64

from controllers.common import labels as L
from recop.api.common import API_VERSION


def s3_secret(namespace: str, access_key: str, secret_key: str, name: str = "s3") -> dict:
    """The local S3 server's keys under `id` and `secret`, as external_model names them."""
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name,
                                                               "namespace": namespace},
            "data": {k: base64.b64encode(v.encode()).decode()
                     for k, v in (("id", access_key), ("secret", secret_key))}}


def external_model(namespace: str, name: str, tables: list[dict], shards: int, bucket: str,
                   endpoint: str, secret: str = "s3", **spec) -> dict:
    """A RecModel served by local processes: one replica per shard, no Triton pods, S3
    keys from `secret` (s3_secret). `spec`: more top-level fields (stream,
    rollbackPolicy, an embeddingServer with adminAuth...), which replace the defaults."""
    return {"apiVersion": API_VERSION, "kind": "RecModel",
            "metadata": {"name": name, "namespace": namespace}, "spec": {
                "tables": tables,
                "sharding": {"shards": shards, "replicasPerShard": 1},
                "embeddingServer": {"deployment": "External"},
                "dense": {"modelName": "mlp", "replicas": 0, "gpusPerPod": 0,
                          "instanceGroups": [{"kind": "KIND_CPU"}]},
                "storage": {"bucket": bucket, "endpoint": endpoint,
                            "accessKeyId": {"name": secret, "key": "id"},
                            "secretAccessKey": {"name": secret, "key": "secret"}},
                **spec}}


def local_slice(namespace: str, model: str, service: str, host: str, ports: dict[str, int],
                suffix: str = "local", ready: bool = True) -> dict:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{service}-{suffix}", "namespace": namespace,
                         "labels": {L.SERVICE_NAME: service, L.MODEL: model}},
            "addressType": "FQDN",
            "endpoints": [{"addresses": [host], "conditions": {"ready": ready}}],
            "ports": [{"name": n, "port": p, "protocol": "TCP"} for n, p in ports.items()]}


def shard_slice(namespace: str, model: str, shard: int, ports: dict[str, int],
                suffix: str = "local", ready: bool = True) -> dict:
    """One embedding server process of `shard` with its named ports (lookup, admin...)."""
    return local_slice(namespace, model, L.embedding_name(model, shard),
                       f"shard-{shard}.localhost", ports, suffix, ready)


def triton_slice(namespace: str, model: str, grpc_port: int) -> dict:
    return local_slice(namespace, model, L.triton_name(model), "triton.localhost",
                       {"grpc": grpc_port})
