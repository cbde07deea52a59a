"""Builders shared by the cost-model tests (kept tiny: figures default to a profile run)."""

from costmodel import Measured, ModelCost, Node, NodePool

GIB = 1 << 30


def figure(value: float) -> Measured:
    return Measured(value=value, source="profile:test-run")


def model(
    name: str,
    role: str = "variant",
    cores: float = 1.0,
    memory_gib: float = 1.0,
    gpu_util: float = 0.0,
    gpu_memory_gib: float = 0.0,
    target: float = 0.5,
    **kwargs,
) -> ModelCost:
    """A model that keeps `cores` cores busy (1,000 qps at cores core-seconds per 1k)."""
    return ModelCost(
        name=name,
        role=role,
        qps=figure(1000),
        cpu_core_seconds_per_1k=figure(cores),
        memory_bytes=figure(memory_gib * GIB),
        gpu_utilisation=figure(gpu_util),
        gpu_memory_bytes=figure(gpu_memory_gib * GIB),
        target_utilisation=target,
        **kwargs,
    )


def node(name: str, cores: int = 16, memory_gib: int = 64, gpus: int = 0, **kwargs) -> Node:
    return Node(
        name=name,
        cpu_millicores=cores * 1000,
        memory_bytes=memory_gib * GIB,
        gpu_count=gpus,
        gpu_memory_bytes=16 * GIB if gpus else 0,
        **kwargs,
    )


def pool(*nodes: Node) -> NodePool:
    return NodePool(nodes=nodes)
