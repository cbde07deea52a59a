"""Will a RecModel's pods fit the node pool? Pure checks over nodes (parsed by
controllers/common/nodes.py), so a shard that no node can hold is refused with a message
instead of a Pod stuck Pending."""

from __future__ import annotations

from controllers.common.nodes import eligible
from costmodel import Node
from recop.api.recmodel import RecModelSpec


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f}Gi"


def shard_fit_problem(spec: RecModelSpec, shard_bytes: int, nodes: list[Node]) -> str | None:
    """Why no node can run one embedding shard, or None when one can."""
    pool = [n for n in nodes if eligible(n, spec.embedding_placement, gpu=False)]
    if not pool:
        return "no node matches embeddingPlacement (node selector and tolerations)"
    largest = max(n.memory_bytes for n in pool)
    if shard_bytes <= largest:
        return None
    total = shard_bytes * spec.sharding.shards
    needed = -(-total // largest) if largest else None
    advice = f"use at least {needed} shards" if needed else "add nodes with memory"
    return (f"each embedding shard needs {_gib(shard_bytes)} of memory (its share of the "
            f"tables plus {spec.embedding_server.memory_headroom_percent}% headroom) but the "
            f"largest eligible node has {_gib(largest)} allocatable: {advice}, a smaller "
            "dtype, or larger nodes")


def dense_fit_problem(spec: RecModelSpec, nodes: list[Node]) -> str | None:
    """Why no GPU node can run one Triton pod, or None when one can (or none needs one)."""
    dense = spec.dense
    if dense.gpus_per_pod == 0 or dense.replicas == 0:
        return None
    most = max((n.gpu_count for n in nodes if eligible(n, spec.dense_placement, gpu=True)),
               default=0)
    if most >= dense.gpus_per_pod:
        return None
    return (f"each Triton pod asks for {dense.gpus_per_pod} GPU(s) but the eligible GPU nodes "
            f"have at most {most}")
