"""An independent check that a Placement never over-commits a node.

It recomputes everything from the Placement and the pool alone, so it also guards the
solvers: solve() runs it on every answer before returning it.
"""

from __future__ import annotations

from collections import defaultdict

from costmodel.model import GPU_SHARE_UNITS, MILLICORES, Node, NodePool, Placement


class OvercommitError(AssertionError):
    """A placement breaks a node's capacity or the dedicated-core rules."""


def verify(placement: Placement, pool: NodePool) -> None:
    nodes = {n.name: n for n in pool.nodes}
    by_node: dict[str, list] = defaultdict(list)
    for p in placement.models:
        if p.node not in nodes:
            raise OvercommitError(f"{p.model}: unknown node {p.node!r}")
        if p.cpu_request_millicores != p.cpu_limit_millicores:
            raise OvercommitError(f"{p.model}: cpu request != limit")
        if p.memory_request_bytes != p.memory_limit_bytes:
            raise OvercommitError(f"{p.model}: memory request != limit")
        if p.dedicated != (p.role == "baseline"):
            raise OvercommitError(f"{p.model}: only baselines get dedicated cores")
        if p.dedicated and (p.cpu_request_millicores % MILLICORES or not p.cpu_request_millicores):
            raise OvercommitError(f"{p.model}: dedicated cpu is not a whole number of cores")
        by_node[p.node].append(p)
    for name, here in by_node.items():
        _verify_node(nodes[name], here)


def _verify_node(node: Node, here: list) -> None:
    cpu = sum(p.cpu_request_millicores for p in here)
    if cpu > node.free_cpu_millicores:
        raise OvercommitError(f"{node.name}: {cpu}m of CPU requested of "
                              f"{node.free_cpu_millicores}m")
    memory = sum(p.memory_request_bytes for p in here)
    if memory > node.free_memory_bytes:
        raise OvercommitError(f"{node.name}: memory {memory} of {node.free_memory_bytes}")
    per_gpu: dict[int, list] = defaultdict(list)
    for p in here:
        if p.gpu_index is not None:
            if not 0 <= p.gpu_index < node.gpu_count:
                raise OvercommitError(f"{p.model}: no GPU {p.gpu_index} on {node.name}")
            per_gpu[p.gpu_index].append(p)
    for k, on_k in per_gpu.items():
        if any(p.dedicated for p in on_k) and len(on_k) > 1:
            raise OvercommitError(f"{node.name} GPU {k}: a baseline's GPU is shared")
        units = sum(round(p.gpu_share * GPU_SHARE_UNITS) for p in on_k)
        gpu_memory = sum(p.gpu_memory_bytes for p in on_k)
        if units > GPU_SHARE_UNITS or gpu_memory > node.gpu_memory_bytes:
            raise OvercommitError(f"{node.name} GPU {k}: share {units}, memory {gpu_memory}")
