"""EndpointSlices that register servers running as local processes, the way servers
outside a cluster register (embeddingServer.deployment: External).

The API refuses loopback IPs in slices; names under .localhost resolve to loopback
(RFC 6761, see controllers/modelversion_drivers.resolve), so a local process registers
as an FQDN endpoint. A slice's ports are its own, so each process gets a slice.
"""

from __future__ import annotations

from controllers import labels as L


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
