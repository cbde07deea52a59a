"""Best-fit-decreasing packing with a local-improvement pass; O(models x nodes).

Cost of a node = its dedicated cores + its shared pool rounded up to whole cores, so the only
waste the packer controls is the unused tail of each node's shared pool. Best fit therefore
fills one shared pool before opening another, and the improvement pass moves variants to
close pools or to drop a pool's top partial core. Two orders are tried (CPU first, and
dominant resource first with baselines spread out, for memory-bound pools); the better wins.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from costmodel.model import GPU_SHARE_UNITS, MILLICORES, InfeasibleError
from costmodel.problem import Item, Problem, Solution


def _cores(millicores: int) -> int:
    return -(-millicores // MILLICORES)


class PackingState:
    """Mutable per-node usage while packing. Every mutation keeps every node within capacity."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        nodes = problem.nodes
        self.cap_cores = [n.free_whole_cores for n in nodes]
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
        if item.baseline:
            cores = self.dedicated[n] + item.cores + _cores(self.pool[n])
        else:
            cores = self.dedicated[n] + _cores(self.pool[n] + item.cpu_millicores)
        if cores > self.cap_cores[n]:
            return False, None
        if not item.needs_gpu:
            return True, None
        k = self.gpu_for(item, n)
        return k is not None, k

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


def pack(problem: Problem) -> Solution:
    """The best of three best-fit runs: by CPU (the usual binding resource); by each model's
    dominant resource with baselines spread out; and the same with baselines placed to keep
    each node's free cores and memory in proportion (for pools where memory binds)."""
    found: list[Solution] = []
    first_error: InfeasibleError | None = None
    for mode in ("cpu", "dominant", "balanced"):
        try:
            found.append(_pack(problem, mode))
        except InfeasibleError as err:
            first_error = first_error or err
    if not found:
        assert first_error is not None
        raise first_error
    return min(found, key=problem.objective)  # min keeps the first of equals: deterministic


def _pack(problem: Problem, mode: Literal["cpu", "dominant", "balanced"]) -> Solution:
    state = PackingState(problem)
    items = problem.items
    baselines = [i for i, it in enumerate(items) if it.baseline]
    variants = [i for i, it in enumerate(items) if not it.baseline]
    nodes = problem.nodes
    mean_cpu = max(1, sum(n.free_cpu_millicores for n in nodes) // max(1, len(nodes)))
    mean_mem = max(1, sum(n.free_memory_bytes for n in nodes) // max(1, len(nodes)))
    gpu_nodes = [n for n in nodes if n.gpu_count]
    mean_gpu_mem = max(1, sum(n.gpu_memory_bytes for n in gpu_nodes) // max(1, len(gpu_nodes)))

    def decreasing(i: int) -> tuple:
        it = items[i]
        if mode == "cpu":
            size: float = it.cpu_millicores
        else:
            gpu = max(it.gpu_units / GPU_SHARE_UNITS, it.gpu_memory_bytes / mean_gpu_mem)
            size = max(it.cpu_millicores / mean_cpu, it.memory_bytes / mean_mem, gpu)
        # GPU models first: they can only go to GPU nodes, the others can go anywhere.
        return (not it.needs_gpu, -size, -it.gpu_units, -it.memory_bytes, it.name)

    # Baselines first (pinned ones are eligible only where they run), then variants that
    # can stay where they run, then everything else by best fit.
    baseline_key = {
        "cpu": _baseline_key,
        "dominant": _baseline_key_spread,
        "balanced": _baseline_key_balanced,
    }[mode]
    for i in sorted(baselines, key=lambda i: (len(items[i].eligible) > 1, decreasing(i))):
        _place_best(state, i, baseline_key)
    staying = sorted((i for i in variants if items[i].current is not None), key=decreasing)
    for i in staying:
        cur = items[i].current
        assert cur is not None
        ok, k = state.fits(items[i], cur) if cur in items[i].eligible else (False, None)
        if ok:
            state.place(i, cur, k)
    key = _variant_key if mode == "cpu" else _variant_key_memory
    for i in sorted((i for i in variants if state.where[i] is None), key=decreasing):
        _place_best(state, i, key)

    _close_pools(state)
    _trim_partial_cores(state)
    _swap_partial_cores(state)
    return state.solution()


def _baseline_key(state: PackingState, i: int, n: int, k: int | None) -> tuple:
    it = state.problem.items[i]
    spare = state.cap_cores[n] - state.dedicated[n] - it.cores - _cores(state.pool[n])
    # Best fit: the node left with the fewest spare cores, keeping big nodes whole; GPU nodes
    # are kept for models that need a GPU.
    return (
        _spends_gpu_node(state, it, n),
        spare,
        state.mem_free[n] - it.memory_bytes,
        n,
    )


def _baseline_key_spread(state: PackingState, i: int, n: int, k: int | None) -> tuple:
    """Worst fit: filling a node's cores with dedicated ones strands its memory, and with
    memory-heavy variants that stranded memory is what runs out first."""
    spends_gpu, spare, mem_after, _ = _baseline_key(state, i, n, k)
    return (spends_gpu, -spare, -mem_after, n)


def _baseline_key_balanced(state: PackingState, i: int, n: int, k: int | None) -> tuple:
    """The node whose free cores and free memory stay closest in proportion, so that the
    dedicated cores strand neither (Kubernetes' balanced-allocation score does the same)."""
    spends_gpu, spare, mem_after, _ = _baseline_key(state, i, n, k)
    node = state.problem.nodes[n]
    imbalance = abs(
        spare / max(1, node.free_whole_cores) - mem_after / max(1, node.free_memory_bytes)
    )
    return (spends_gpu, imbalance, spare, n)


def _spends_gpu_node(state: PackingState, item: Item, n: int) -> bool:
    return not item.needs_gpu and bool(state.gpu_units[n])


def _variant_key(state: PackingState, i: int, n: int, k: int | None) -> tuple:
    it = state.problem.items[i]
    pool = state.pool[n]
    new_cores = _cores(pool + it.cpu_millicores)
    marginal = new_cores - _cores(pool)
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


def _variant_key_memory(state: PackingState, i: int, n: int, k: int | None) -> tuple:
    """Like _variant_key, but best fit by memory: leave the least memory unused."""
    marginal, opens_pool, spends_gpu, opens_gpu, slack, _, _ = _variant_key(state, i, n, k)
    mem_after = state.mem_free[n] - state.problem.items[i].memory_bytes
    return (marginal, opens_pool, spends_gpu, opens_gpu, mem_after, slack, n)


Key = Callable[[PackingState, int, int, int | None], tuple]


def _place_best(state: PackingState, i: int, key: Key) -> None:
    item = state.problem.items[i]
    best = None
    for n in item.eligible:
        ok, k = state.fits(item, n)
        if ok:
            score = key(state, i, n, k)
            if best is None or score < best[0]:
                best = (score, n, k)
    if best is None:
        _raise_unplaceable(state, item)
    else:
        state.place(i, best[1], best[2])


def _raise_unplaceable(state: PackingState, item: Item) -> None:
    # Name the smallest shortfall on the eligible node closest to taking the item.
    best: tuple[int, float, str, float, str] | None = None
    for n in item.eligible:
        if item.needs_gpu and not state.gpu_units[n]:
            continue
        need = item.cores if item.baseline else 0
        pool = state.pool[n] + (0 if item.baseline else item.cpu_millicores)
        cpu_short = state.dedicated[n] + need + _cores(pool) - state.cap_cores[n]
        mem_short = item.memory_bytes - state.mem_free[n]
        short = [
            ("cpu cores", cpu_short, cpu_short / max(1, state.cap_cores[n])),
            ("memory bytes", mem_short, mem_short / max(1, state.mem_free[n] + mem_short)),
        ]
        if item.needs_gpu and state.gpu_for(item, n) is None:
            short.append(("gpu share", 1.0, 1.0))
        short = [s for s in short if s[1] > 0]
        resource, amount, rel = min(short, key=lambda s: s[2])
        if best is None or (len(short), rel) < best[:2]:
            best = (len(short), rel, resource, amount, state.problem.nodes[n].name)
    assert best is not None  # build_problem checked an eligible node exists
    _, _, resource, amount, node = best
    detail = f"on the closest eligible node {node!r} once the other models are placed"
    raise InfeasibleError(item.name, resource, amount, detail)


def _relocate_free(state: PackingState, i: int, avoid: int) -> tuple[int, int | None] | None:
    """A node (other than `avoid`) where variant i fits without adding a core anywhere."""
    item = state.problem.items[i]
    best = None
    for n in item.eligible:
        if n == avoid or state.pool[n] == 0:
            continue
        pool = state.pool[n]
        if _cores(pool + item.cpu_millicores) != _cores(pool):
            continue
        ok, k = state.fits(item, n)
        if ok:
            score = (state.move_penalty(i, avoid, n), _variant_key(state, i, n, k))
            if best is None or score < best[0]:
                best = (score, n, k)
    return None if best is None else (best[1], best[2])


def _close_pools(state: PackingState) -> None:
    """Empty the smallest shared pools into other pools' slack when that saves cores."""
    nodes = sorted(
        (n for n in range(len(state.pool)) if state.pool[n] > 0), key=lambda n: (state.pool[n], n)
    )
    for n in nodes:
        saving = _cores(state.pool[n])
        moved: list[tuple[int, tuple[int, int | None]]] = []
        penalty = 0.0
        for i in sorted(
            state.members[n], key=lambda i: (-state.problem.items[i].cpu_millicores, i)
        ):
            dst = _relocate_free(state, i, n)
            if dst is None:
                break
            penalty += state.move_penalty(i, n, dst[0])
            moved.append((i, (n, state.where[i][1])))  # type: ignore[index]
            state.remove(i)
            state.place(i, *dst)
        if state.pool[n] == 0 and saving > penalty:
            continue
        for i, (src, k) in reversed(moved):  # roll back
            state.remove(i)
            state.place(i, src, k)


def _trim_partial_cores(state: PackingState) -> None:
    """Move variants off each pool's top partial core into slack elsewhere, while it helps.

    Largest first, so the fewest pods move; a trim that saves no core is rolled back.
    Every kept trim drops at least one core, so the loop ends.
    """
    items = state.problem.items
    improved = True
    while improved:
        improved = False
        for n in range(len(state.pool)):
            pool = state.pool[n]
            if pool == 0:
                continue
            excess = pool - (_cores(pool) - 1) * MILLICORES
            moved: list[tuple[int, int | None]] = []
            penalty = 0.0
            for i in sorted(state.members[n], key=lambda i: (-items[i].cpu_millicores, i)):
                if state.pool[n] <= pool - excess:
                    break
                dst = _relocate_free(state, i, n)
                if dst is None:
                    continue
                penalty += state.move_penalty(i, n, dst[0])
                moved.append((i, state.where[i][1]))  # type: ignore[index]
                state.remove(i)
                state.place(i, *dst)
            if _cores(pool) - _cores(state.pool[n]) > penalty:
                improved = True
                continue
            for i, k in reversed(moved):  # roll back
                state.remove(i)
                state.place(i, n, k)


# Pairs the swap pass may look at in one solve: a work budget, not a clock, so that the
# result stays deterministic; ~0.2 s of Python on the benchmark's 1,000-variant pools.
SWAP_BUDGET = 200_000


def _swap_partial_cores(state: PackingState) -> None:
    """Swap a variant off a pool's top partial core for a smaller one from another pool.

    Where memory binds, the pools cannot simply take more variants, but exchanging a
    variant for a smaller one still drops the top core when the other pool has the slack.
    GPU models are left where they are.
    """
    items = state.problem.items
    eligible = [frozenset(it.eligible) for it in items]
    budget = SWAP_BUDGET
    improved = True
    while improved and budget > 0:
        improved = False
        for n in range(len(state.pool)):
            pool = state.pool[n]
            if pool == 0:
                continue
            excess = pool - (_cores(pool) - 1) * MILLICORES
            for a in sorted(state.members[n], key=lambda i: (-items[i].cpu_millicores, i)):
                if items[a].cpu_millicores <= excess or budget <= 0:
                    break  # the swap must shed `excess`, and b takes at least 1 millicore
                if items[a].needs_gpu:
                    continue
                budget, swapped = _swap_one(state, a, n, excess, eligible, budget)
                if swapped:
                    improved = True
                    break


def _swap_one(
    state: PackingState, a: int, n: int, excess: int, eligible: list[frozenset[int]], budget: int
) -> tuple[int, bool]:
    items = state.problem.items
    size = items[a].cpu_millicores
    for m in sorted(eligible[a]):
        pool = state.pool[m]
        if m == n or pool == 0:
            continue
        slack = _cores(pool) * MILLICORES - pool
        for b in sorted(state.members[m]):
            budget -= 1
            shed = size - items[b].cpu_millicores
            if (
                excess <= shed <= slack
                and not items[b].needs_gpu
                and n in eligible[b]
                and _cores(state.pool[n]) - _cores(state.pool[n] - shed)
                > state.move_penalty(a, n, m) + state.move_penalty(b, m, n)
                and _try_swap(state, a, n, b, m)
            ):
                return budget, True
        if budget <= 0:
            break
    return budget, False


def _try_swap(state: PackingState, a: int, n: int, b: int, m: int) -> bool:
    """Exchange a (on n) and b (on m) if both fit; otherwise leave everything as it was."""
    state.remove(a)
    state.remove(b)
    if state.fits(state.problem.items[a], m)[0]:
        state.place(a, m, None)
        if state.fits(state.problem.items[b], n)[0]:
            state.place(b, n, None)
            return True
        state.remove(a)
    state.place(a, n, None)
    state.place(b, m, None)
    return False
