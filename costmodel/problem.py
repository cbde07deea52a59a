"""The packing problem in plain integers, shared by the heuristic and the exact solver.

Models and nodes are sorted by name first, so the answer does not depend on input order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from costmodel.model import GPU_SHARE_UNITS, MILLICORES, InfeasibleError, ModelCost, Node, NodePool


@dataclass(frozen=True, slots=True)
class Item:
    """One model's demand. A baseline's cpu is whole cores; a variant's is millicores."""

    name: str
    baseline: bool
    cpu_millicores: int
    memory_bytes: int
    gpu_units: int  # 0 when the model needs no GPU
    gpu_memory_bytes: int
    eligible: tuple[int, ...]  # node indices its selector (and pinning) allows
    current: int | None  # node index it runs on now, if any

    @property
    def cores(self) -> int:
        return self.cpu_millicores // MILLICORES

    @property
    def needs_gpu(self) -> bool:
        return self.gpu_units > 0


# A solution: for each item (same order as Problem.items), its node index and GPU index.
Solution = list[tuple[int, int | None]]


@dataclass(frozen=True, slots=True)
class Problem:
    models: tuple[ModelCost, ...]
    nodes: tuple[Node, ...]
    items: tuple[Item, ...]
    move_cost: float

    def lower_bound_cores(self) -> int:
        """Dedicated cores plus the variants' millicores rounded up to whole cores.

        This is the LP relaxation's optimum (rounded up, as the true optimum is an integer)
        whenever node capacities do not bind, and a valid bound whenever they do.
        """
        dedicated = sum(i.cores for i in self.items if i.baseline)
        shared = sum(i.cpu_millicores for i in self.items if not i.baseline)
        return dedicated + -(-shared // MILLICORES)

    def objective(self, solution: Solution) -> float:
        """What the solvers minimise: cores used plus move_cost per variant moved."""
        pool = [0] * len(self.nodes)
        cores = moves = 0
        for item, (n, _) in zip(self.items, solution, strict=True):
            if item.baseline:
                cores += item.cores
            else:
                pool[n] += item.cpu_millicores
                moves += item.current is not None and item.current != n
        return cores + sum(-(-p // MILLICORES) for p in pool) + self.move_cost * moves

    def naive_cores(self) -> int:
        """One pod per model, each on its own whole cores (how A/B arms are deployed today)."""
        return sum(-(-i.cpu_millicores // MILLICORES) for i in self.items)


def build_problem(
    models: Sequence[ModelCost],
    pool: NodePool,
    current: Mapping[str, str] | None,
    move_cost: float,
) -> Problem:
    sorted_models = tuple(sorted(models, key=lambda m: m.name))
    names = [m.name for m in sorted_models]
    if len(set(names)) != len(names):
        raise ValueError("model names must be unique")
    nodes = tuple(sorted(pool.nodes, key=lambda n: n.name))
    node_index = {n.name: i for i, n in enumerate(nodes)}
    current = current or {}
    items = []
    by_selector: dict[tuple, tuple[int, ...]] = {}  # most models share one
    for m in sorted_models:
        cur = node_index.get(current.get(m.name, ""))
        selector = (tuple(sorted(m.node_selector.items())), m.tolerations)
        if selector not in by_selector:
            by_selector[selector] = tuple(
                i
                for i, n in enumerate(nodes)
                if n.matches(m.node_selector) and n.admits(m.tolerations)
            )
        eligible = by_selector[selector]
        # Stability: a running baseline is never evicted, so it may only stay where it is
        # (even if its selector changed since; the controller redeploys it to move it). A
        # model whose node left the pool is placed afresh, and that is not counted a move.
        if m.role == "baseline" and cur is not None:
            eligible = (cur,)
        item = Item(
            name=m.name,
            baseline=m.role == "baseline",
            cpu_millicores=m.cpu_millicores_request,
            memory_bytes=m.memory_request_bytes,
            gpu_units=m.gpu_share_units,
            gpu_memory_bytes=m.gpu_memory_request_bytes,
            eligible=eligible,
            current=cur,
        )
        untolerated = tuple(
            n.name for n in nodes if n.matches(m.node_selector) and not n.admits(m.tolerations)
        )
        _check_fits_alone(item, nodes, untolerated)
        items.append(item)
    return Problem(sorted_models, nodes, tuple(items), move_cost)


def _alone_shortfalls(item: Item, node: Node) -> list[tuple[str, float]]:
    """What `item` lacks on an otherwise empty `node` (empty list: it fits)."""
    short: list[tuple[str, float]] = []
    if item.cpu_millicores > node.free_cpu_millicores:
        short.append(("cpu cores", (item.cpu_millicores - node.free_cpu_millicores) / MILLICORES))
    if item.memory_bytes > node.free_memory_bytes:
        short.append(("memory bytes", item.memory_bytes - node.free_memory_bytes))
    if item.needs_gpu:
        if node.gpu_count == 0:
            short.append(("gpus", 1))
        elif item.gpu_memory_bytes > node.gpu_memory_bytes:
            short.append(("gpu memory bytes", item.gpu_memory_bytes - node.gpu_memory_bytes))
        if item.gpu_units > GPU_SHARE_UNITS:
            short.append(("gpu share", (item.gpu_units - GPU_SHARE_UNITS) / GPU_SHARE_UNITS))
    return short


def _check_fits_alone(item: Item, nodes: tuple[Node, ...], untolerated: tuple[str, ...]) -> None:
    """Raise if no eligible node could hold the item even if nothing else were placed.
    `untolerated`: nodes its selector matches whose taints it does not tolerate."""
    tainted = (
        f"; its tolerations exclude the tainted {', '.join(untolerated)}" if untolerated else ""
    )
    if not item.eligible:
        raise InfeasibleError(
            item.name, "nodes", 1, f"no node matches its node selector and tolerations{tainted}"
        )
    best: tuple[int, str, list[tuple[str, float]]] | None = None
    for i in item.eligible:
        short = _alone_shortfalls(item, nodes[i])
        if not short:
            return
        if best is None or len(short) < len(best[2]):
            best = (i, nodes[i].name, short)
    assert best is not None
    resource, amount = best[2][0]
    pinned = (
        " (running there; baselines are not evicted)"
        if item.baseline and item.current is not None
        else ""
    )
    raise InfeasibleError(
        item.name,
        resource,
        amount,
        f"even alone on the closest eligible node {best[1]!r}{pinned}; "
        f"all shortfalls there: {best[2]}{tainted}",
    )
