"""The fake nodes KWOK plays: a CPU pool and a GPU pool labelled as a real one is.

GPU nodes carry what NVIDIA's GPU feature discovery and device plugin put on a node
(nvidia.com/gpu.* labels, the nvidia.com/gpu extended resource) and the taint GPU pools
are usually created with, so RecOp's placement (node selectors, tolerations, GPU
requests) meets the same scheduler decisions as in production.
"""

from __future__ import annotations

from controllers.common.nodes import GPU_NODE_LABEL, GPU_RESOURCE

KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
POOL_LABEL = "recop.dev/pool"
GPU_TAINT = {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}

CPU_NODES = 2
GPU_NODES = 2
GPUS_PER_NODE = 8


def kwok_nodes() -> list[dict]:
    cpu = [cpu_node(f"kwok-cpu-{index}") for index in range(CPU_NODES)]
    gpu = [_node(f"kwok-gpu-{index}", pool="gpu", cpu="96", memory="1024Gi",
                 gpus=GPUS_PER_NODE) for index in range(GPU_NODES)]
    return cpu + gpu


def cpu_node(name: str) -> dict:
    """A KWOK CPU node as the dev stack makes them (32 cores, 128 GiB, 110 pods)."""
    return _node(name, pool="cpu", cpu="32", memory="128Gi", gpus=0)


def _node(name: str, pool: str, cpu: str, memory: str, gpus: int) -> dict:
    labels = {
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/os": "linux",
        "kubernetes.io/hostname": name,
        "type": "kwok",
        POOL_LABEL: pool,
        f"node-role.kubernetes.io/{pool}": "",
        "topology.kubernetes.io/zone": "local-a",
    }
    resources = {"cpu": cpu, "memory": memory, "pods": "110", "ephemeral-storage": "500Gi"}
    taints = []
    if gpus:
        # As set by GPU feature discovery on an H100 SXM node.
        labels |= {
            "node.kubernetes.io/instance-type": "gpu-8x-h100",
            GPU_NODE_LABEL: "true",
            "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
            "nvidia.com/gpu.family": "hopper",
            "nvidia.com/gpu.count": str(gpus),
            "nvidia.com/gpu.memory": "81559",
            "nvidia.com/gpu.machine": "local-kwok",
        }
        resources[GPU_RESOURCE] = str(gpus)
        taints.append(GPU_TAINT)
    else:
        labels["node.kubernetes.io/instance-type"] = "cpu-32"
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": labels,
            # KWOK manages only nodes with this annotation (see its start flags).
            "annotations": {KWOK_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": {"taints": taints},
        "status": {"capacity": resources, "allocatable": dict(resources)},
    }
