"""Nodes as RecOp places pods on them: the GPU resource, label and taint toleration GPU
pools carry, the selector and tolerations a pod gets, and Node objects parsed once into
costmodel's Node for the fit checks (controllers/common/fit.py) and the ABTest packing
(controllers/abtest/costs.py)."""

from __future__ import annotations

import costmodel
from recop import quantity
from recop.api.common import PodPlacement, Toleration

# What NVIDIA's device plugin and GPU feature discovery put on a GPU node.
GPU_RESOURCE = "nvidia.com/gpu"
GPU_NODE_LABEL = "nvidia.com/gpu.present"
# GPU pools are usually tainted with the resource name; GPU pods tolerate any such taint.
GPU_TOLERATION = Toleration(key=GPU_RESOURCE, operator="Exists", effect="NoSchedule")


def pod_selector(placement: PodPlacement, gpu: bool) -> dict[str, str]:
    """The node selector of a pod: the spec's placement, plus the GPU label for GPU pods."""
    return {**placement.node_selector, **({GPU_NODE_LABEL: "true"} if gpu else {})}


def pod_tolerations(placement: PodPlacement, gpu: bool) -> list[Toleration]:
    """The tolerations of a pod: the spec's, then the GPU one for GPU pods (once)."""
    out = list(placement.tolerations)
    if gpu and GPU_TOLERATION not in out:
        out.append(GPU_TOLERATION)
    return out


def cost_tolerations(placement: PodPlacement, gpu: bool) -> tuple[costmodel.Toleration, ...]:
    """`pod_tolerations` as the cost model matches them against taints."""
    return tuple(costmodel.Toleration(**t.to_wire()) for t in pod_tolerations(placement, gpu))


def parse_node(node: dict) -> costmodel.Node:
    """A Node object's allocatable resources, labels and taints."""
    allocatable = (node.get("status") or {}).get("allocatable") or {}
    return costmodel.Node(
        name=node["metadata"]["name"],
        cpu_millicores=int(quantity.parse(allocatable.get("cpu", "0")) * 1000),
        memory_bytes=int(quantity.parse(allocatable.get("memory", "0"))),
        gpu_count=int(quantity.parse(allocatable.get(GPU_RESOURCE, "0"))),
        labels=node["metadata"].get("labels") or {},
        taints=tuple(costmodel.Taint(key=t["key"], value=t.get("value") or "",
                                     effect=t["effect"])
                     for t in (node.get("spec") or {}).get("taints") or []))


def node_pool(nodes: list[dict]) -> costmodel.NodePool:
    """The schedulable nodes (not cordoned), as the cost model packs onto them."""
    return costmodel.NodePool(nodes=tuple(parse_node(n) for n in nodes
                                          if not (n.get("spec") or {}).get("unschedulable")))


def eligible(node: costmodel.Node, placement: PodPlacement, gpu: bool) -> bool:
    """Whether the scheduler may put such a pod on `node` (selector and hard taints)."""
    return node.matches(pod_selector(placement, gpu)) and node.admits(
        cost_tolerations(placement, gpu))
