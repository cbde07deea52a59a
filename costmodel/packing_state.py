"""The packer's mutable per-node usage, and the best-fit scores of a placement on it.

The scores live beside the state because both the packing and the improvement pass rank
nodes with them.
"""

from __future__ import annotations

from collections.abc import Callable

from costmodel.model import GPU_SHARE_UNITS, MILLICORES
from costmodel.problem import Item, Problem, Solution


def whole_cores(millicores: int) -> int:
    return -(-millicores // MILLICORES)


class PackingState:
    """Mutable per-node usage while packing. Every mutation keeps every node within capacity.

    The CPU capacity is the scheduler's: dedicated cores and the variants' millicores
    together within the allocatable CPU. The shared pool is counted in whole cores (the
    objective) but may take a core that allocatable only holds in part: the static CPU
    manager's shared pool keeps the CPUs of the node's reservation, and on a node of 2
    CPUs with 100m reserved (1.9 allocatable) a 1-core baseline and a 900m pool both fit.
    """

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        nodes = problem.nodes
        self.cap_cores = [n.free_whole_cores for n in nodes]
        self.cap_millicores = [n.free_cpu_millicores for n in nodes]
        self.mem_free = [n.free_memory_bytes for n in nodes]
        self.gpu_mem_cap = [n.gpu_memory_bytes for n in nodes]
        self.dedicated = [0] * len(nodes)
        self.pool = [0] * len(nodes)  # sum of variant millicores
        self.gpu_units = [[0] * n.gpu_count for n in nodes]
        self.gpu_mem = [[0] * n.gpu_count for n in nodes]
        self.where: list[tuple[int, int | None] | None] = [None] * len(problem.items)
        self.members: list[set[int]] = [set() for _ in nodes]  # variant indices per node

    # -- capacity ------------------------------------------------------------------------

    def gpu_for(self, item: Item, n: int) -> int | None:
        """The GPU on node n that item would use, or None if none fits."""
        units, mem, cap = self.gpu_units[n], self.gpu_mem[n], self.gpu_mem_cap[n]
        if item.baseline:
            # A baseline owns its GPU: take the first one nobody uses.
            for k in range(len(units)):
                if units[k] == 0 and mem[k] == 0:
                    return k
            return None
        best = None
        for k in range(len(units)):
            if (
                units[k] < GPU_SHARE_UNITS
                and units[k] + item.gpu_units <= GPU_SHARE_UNITS
                and mem[k] + item.gpu_memory_bytes <= cap
                and (best is None or units[k] > units[best])
            ):
                best = k  # tightest fit: the fullest GPU it fits on
        return best

    def fits(self, item: Item, n: int) -> tuple[bool, int | None]:
        if item.memory_bytes > self.mem_free[n]:
            return False, None
        if self.cpu_used(n) + item.cpu_millicores > self.cap_millicores[n]:
            return False, None
        if not item.needs_gpu:
            return True, None
        k = self.gpu_for(item, n)
        return k is not None, k

    def cpu_used(self, n: int) -> int:
        """Millicores requested on node n (a baseline's are its whole cores)."""
        return self.dedicated[n] * MILLICORES + self.pool[n]

    # -- mutation ------------------------------------------------------------------------

    def place(self, i: int, n: int, k: int | None) -> None:
        item = self.problem.items[i]
        if item.baseline:
            self.dedicated[n] += item.cores
        else:
            self.pool[n] += item.cpu_millicores
            self.members[n].add(i)
        self.mem_free[n] -= item.memory_bytes
        if k is not None:
            if item.baseline:
                self.gpu_units[n][k] = GPU_SHARE_UNITS
                self.gpu_mem[n][k] = self.gpu_mem_cap[n]
            else:
                self.gpu_units[n][k] += item.gpu_units
                self.gpu_mem[n][k] += item.gpu_memory_bytes
        self.where[i] = (n, k)

    def remove(self, i: int) -> None:
        item = self.problem.items[i]
        where = self.where[i]
        assert where is not None
        n, k = where
        if item.baseline:
            self.dedicated[n] -= item.cores
        else:
            self.pool[n] -= item.cpu_millicores
            self.members[n].discard(i)
        self.mem_free[n] += item.memory_bytes
        if k is not None:
            if item.baseline:
                self.gpu_units[n][k] = 0
                self.gpu_mem[n][k] = 0
            else:
                self.gpu_units[n][k] -= item.gpu_units
                self.gpu_mem[n][k] -= item.gpu_memory_bytes
        self.where[i] = None

    # -- scoring -------------------------------------------------------------------------

    def move_penalty(self, i: int, src: int, dst: int) -> float:
        """Change in move cost when item i goes from node src to node dst."""
        cur = self.problem.items[i].current
        if cur is None:
            return 0.0
        return self.problem.move_cost * (int(dst != cur) - int(src != cur))

    def solution(self) -> Solution:
        assert all(w is not None for w in self.where)
        return [w for w in self.where if w is not None]


Key = Callable[[PackingState, int, int, int | None], tuple]


def baseline_key(state: PackingState, i: int, n: int, k: int | None) -> tuple:
    it = state.problem.items[i]
    spare = state.cap_cores[n] - state.dedicated[n] - it.cores - whole_cores(state.pool[n])
    # Best fit: the node left with the fewest spare cores, keeping big nodes whole; GPU nodes
    # are kept for models that need a GPU.
    return (
        _spends_gpu_node(state, it, n),
        spare,
        state.mem_free[n] - it.memory_bytes,
        n,
    )


def baseline_key_spread(state: PackingState, i: int, n: int, k: int | None) -> tuple:
    """Worst fit: filling a node's cores with dedicated ones strands its memory, and with
    memory-heavy variants that stranded memory is what runs out first."""
    spends_gpu, spare, mem_after, _ = baseline_key(state, i, n, k)
    return (spends_gpu, -spare, -mem_after, n)


def baseline_key_balanced(state: PackingState, i: int, n: int, k: int | None) -> tuple:
    """The node whose free cores and free memory stay closest in proportion, so that the
    dedicated cores strand neither (Kubernetes' balanced-allocation score does the same)."""
    spends_gpu, spare, mem_after, _ = baseline_key(state, i, n, k)
    node = state.problem.nodes[n]
    imbalance = abs(
        spare / max(1, node.free_whole_cores) - mem_after / max(1, node.free_memory_bytes)
    )
    return (spends_gpu, imbalance, spare, n)


def _spends_gpu_node(state: PackingState, item: Item, n: int) -> bool:
    return not item.needs_gpu and bool(state.gpu_units[n])


def variant_key(state: PackingState, i: int, n: int, k: int | None) -> tuple:
    it = state.problem.items[i]
    pool = state.pool[n]
    new_cores = whole_cores(pool + it.cpu_millicores)
    marginal = new_cores - whole_cores(pool)
    opens_gpu = k is not None and state.gpu_units[n][k] == 0
    slack_after = new_cores * MILLICORES - pool - it.cpu_millicores
    spare_after = state.cap_cores[n] - state.dedicated[n] - new_cores
    return (
        marginal,
        pool == 0,  # grow an open pool before opening another
        _spends_gpu_node(state, it, n),
        opens_gpu,
        slack_after,
        spare_after,
        n,
    )


def variant_key_memory(state: PackingState, i: int, n: int, k: int | None) -> tuple:
    """Like variant_key, but best fit by memory: leave the least memory unused."""
    marginal, opens_pool, spends_gpu, opens_gpu, slack, _, _ = variant_key(state, i, n, k)
    mem_after = state.mem_free[n] - state.problem.items[i].memory_bytes
    return (marginal, opens_pool, spends_gpu, opens_gpu, mem_after, slack, n)
