"""Helpers for the e2e tests of pods on the real node (devstack.node): the node and the
embedding server image, shard pods and their ready addresses, and a container killed
from the host as the kernel would kill it."""

from __future__ import annotations

import json
import time

from controllers.common import labels as L
from devstack import images, netns, node
from e2e.support import get_json

PLACEMENT = {"nodeSelector": node.SELECTOR, "tolerations": [node.TOLERATION]}


def node_up(cluster):
    started = time.monotonic()
    node.ensure_up(cluster)
    print(f"real node Ready {time.monotonic() - started:.1f}s after the fixture began")
    return cluster


def server_image() -> str:
    ref = images.build("embedding-server")
    node.load(ref)
    return ref


def apply(cluster, obj: dict) -> None:
    cluster.kubectl("apply", "--server-side", "--field-manager=e2e", "-f", "-",
                    input=json.dumps(obj))


def recmodel(namespace: str, name: str, image: str, storage: dict, *, shards: int = 1,
             rows: int = 2000, dimension: int = 16, server: dict | None = None,
             **spec) -> dict:
    """A RecModel whose shard pods run on the real node (100m of CPU each) and no Triton
    pod; `server` adds to spec.embeddingServer."""
    return {
        "apiVersion": "serving.recop.dev/v1alpha1", "kind": "RecModel",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "tables": [{"name": "user", "dimension": dimension, "rows": rows}],
            "sharding": {"shards": shards, "replicasPerShard": 1},
            "embeddingServer": {"image": image,
                                "resources": {"requests": {"cpu": "100m"}}, **(server or {})},
            "embeddingPlacement": PLACEMENT,
            "dense": {"modelName": "mlp", "replicas": 0, "gpusPerPod": 0,
                      "instanceGroups": [{"kind": "KIND_CPU"}]},
            "storage": storage,
            **spec,
        },
    }


def s3_storage(bucket: str, port: int, secret: str = "s3") -> dict:
    """spec.storage for the local MinIO as the pods reach it (node.expose)."""
    return {"bucket": bucket, "endpoint": f"http://{netns.HOST_IP}:{port}",
            "accessKeyId": {"name": secret, "key": "id"},
            "secretAccessKey": {"name": secret, "key": "secret"}}


def shard_pods(cluster, namespace: str, model: str, shard: int | None = None) -> list[dict]:
    selector = f"{L.MODEL}={model},{L.COMPONENT}={L.EMBEDDING}"
    if shard is not None:
        selector += f",{L.SHARD}={shard}"
    pods = get_json(cluster, "-n", namespace, "pods", "-l", selector)["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def container(pod: dict) -> dict:
    return (pod.get("status", {}).get("containerStatuses") or [{}])[0]


def ready_addresses(cluster, namespace: str, model: str, shards: int,
                    port: int = 8500) -> list[list[str]]:
    """Each shard's ready endpoints, from its headless Service's EndpointSlices (which
    the kubelet's readiness probe decides), as clients find them."""
    out = []
    for shard in range(shards):
        slices = get_json(cluster, "-n", namespace, "endpointslices", "-l",
                          f"{L.SERVICE_NAME}={L.embedding_name(model, shard)}")["items"]
        out.append([f"{address}:{port}" for s in slices for e in s.get("endpoints") or []
                    if e["conditions"].get("ready") for address in e["addresses"]])
    return out


def kill_container(container_id: str) -> None:
    """SIGKILL the container's process from the host, through the node's containerd: the
    kubelet sees an exit it did not ask for (a kill inside the container cannot do this:
    PID 1 ignores signals it has no handler for)."""
    node._ctr("tasks", "kill", "--signal", "SIGKILL", container_id.split("://", 1)[-1])


def events(cluster, namespace: str, name: str) -> list[dict]:
    return get_json(cluster, "-n", namespace, "events", "--field-selector",
                    f"involvedObject.name={name}")["items"]
