"""Will a RecModel's pods fit the node pool? Pure checks over node objects, so a shard
that no node can hold is refused with a message instead of a Pod stuck Pending."""

from __future__ import annotations

from dataclasses import dataclass

from recop import quantity
from recop.api.common import PodPlacement
from recop.api.recmodel import RecModelSpec


@dataclass(frozen=True)
class NodeInfo:
    name: str
    labels: dict[str, str]
    taints: tuple[dict, ...]
    memory: int
    gpus: int

    @classmethod
    def from_object(cls, node: dict) -> NodeInfo:
        allocatable = node.get("status", {}).get("allocatable", {})
        return cls(
            name=node["metadata"]["name"],
            labels=node["metadata"].get("labels", {}),
            taints=tuple(node.get("spec", {}).get("taints", [])),
            memory=int(quantity.parse(allocatable.get("memory", "0"))),
            gpus=int(quantity.parse(allocatable.get("nvidia.com/gpu", "0"))),
        )


def _tolerates(tolerations: list[dict], taint: dict) -> bool:
    for tol in tolerations:
        if tol.get("effect") not in (None, taint.get("effect")):
            continue
        if tol.get("operator") == "Exists" and tol.get("key") in (None, taint.get("key")):
            return True
        if tol.get("key") == taint.get("key") and tol.get("value") == taint.get("value"):
            return True
    return False


def eligible(node: NodeInfo, node_selector: dict[str, str], tolerations: list[dict]) -> bool:
    if any(node.labels.get(k) != v for k, v in node_selector.items()):
        return False
    return all(_tolerates(tolerations, t) for t in node.taints
               if t.get("effect") in ("NoSchedule", "NoExecute"))


def _pool(nodes: list[NodeInfo], placement: PodPlacement, extra_selector=None,
          extra_tolerations=None) -> list[NodeInfo]:
    selector = {**placement.node_selector, **(extra_selector or {})}
    tolerations = [t.to_wire() for t in placement.tolerations] + (extra_tolerations or [])
    return [n for n in nodes if eligible(n, selector, tolerations)]


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f}Gi"


def shard_fit_problem(spec: RecModelSpec, shard_bytes: int, nodes: list[NodeInfo]) -> str | None:
    """Why no node can run one embedding shard, or None when one can."""
    pool = _pool(nodes, spec.embedding_placement)
    if not pool:
        return "no node matches embeddingPlacement (node selector and tolerations)"
    largest = max(n.memory for n in pool)
    if shard_bytes <= largest:
        return None
    total = shard_bytes * spec.sharding.shards
    needed = -(-total // largest) if largest else None
    advice = f"use at least {needed} shards" if needed else "add nodes with memory"
    return (f"each embedding shard needs {_gib(shard_bytes)} of memory (its share of the "
            f"tables plus {spec.embedding_server.memory_headroom_percent}% headroom) but the "
            f"largest eligible node has {_gib(largest)} allocatable: {advice}, a smaller "
            "dtype, or larger nodes")


def dense_fit_problem(spec: RecModelSpec, nodes: list[NodeInfo], gpu_selector: dict,
                      gpu_tolerations: list[dict]) -> str | None:
    dense = spec.dense
    if dense.gpus_per_pod == 0 or dense.replicas == 0:
        return None
    pool = _pool(nodes, spec.dense_placement, gpu_selector, gpu_tolerations)
    most = max((n.gpus for n in pool), default=0)
    if most >= dense.gpus_per_pod:
        return None
    return (f"each Triton pod asks for {dense.gpus_per_pod} GPU(s) but the eligible GPU nodes "
            f"have at most {most}")
