"""Will a RecModel's pods fit the node pool and their own memory limits? Pure checks over
nodes (parsed by controllers/common/nodes.py) and the spec, so a shard that no node can
hold is refused with a message instead of a Pod stuck Pending, and one whose limit is
below its tables instead of a Pod OOM-killed as it loads."""

from __future__ import annotations

from controllers.common.nodes import eligible
from costmodel import Node
from recop.api.recmodel import RecModelSpec
from recop.quantity import mebibytes, parse


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


def shard_limit_problem(spec: RecModelSpec, shard_bytes: int) -> str | None:
    """Why one embedding server's memory limit cannot hold its shard, or None.

    The limit is the spec's `limits.memory`, else its `requests.memory` (the limit the
    controller writes defaults to the request). Below the shard's need, the server is
    OOM-killed as it loads a version: refused before any pod runs instead."""
    resources = spec.embedding_server.resources
    field, quantity = next(((f, q) for f, q in (("limits", resources.limits.memory),
                                                ("requests", resources.requests.memory))
                            if q is not None), (None, None))
    if quantity is None or parse(quantity) >= shard_bytes:
        return None
    return (f"spec.embeddingServer.resources.{field}.memory is {quantity} but each embedding "
            f"shard needs {mebibytes(shard_bytes)} (its share of the tables plus "
            f"{spec.embedding_server.memory_headroom_percent}% headroom and the server "
            f"process): the server would be OOM-killed while loading; raise it to at least "
            f"{mebibytes(shard_bytes)}, remove it to take the default, or use more shards")


def refusal(spec: RecModelSpec, shard_bytes: int, nodes: list[Node]) -> tuple[str, str] | None:
    """(reason, message) of the first check the model's Managed pods fail, or None."""
    if spec.embedding_server.deployment == "Managed":
        problem = shard_limit_problem(spec, shard_bytes)
        if problem:
            return "MemoryLimitTooLow", problem
        problem = shard_fit_problem(spec, shard_bytes, nodes)
        if problem:
            return "CannotPlace", problem
    if spec.dense.deployment == "Managed":
        problem = dense_fit_problem(spec, nodes)
        if problem:
            return "CannotPlace", problem
    return None
