"""Best-fit-decreasing packing with a local-improvement pass; O(models x nodes).

Cost of a node = its dedicated cores + its shared pool rounded up to whole cores, so the only
waste the packer controls is the unused tail of each node's shared pool. Best fit therefore
fills one shared pool before opening another, and the improvement pass moves variants to
close pools or to drop a pool's top partial core. Three orders are tried (CPU first;
dominant resource first with baselines spread out, for memory-bound pools; and the same with
baselines placed to keep each node's free cores and memory in proportion); the best wins.
"""

from __future__ import annotations

from typing import Literal

from costmodel.improve import close_pools, swap_partial_cores, trim_partial_cores
from costmodel.model import GPU_SHARE_UNITS, MILLICORES, InfeasibleError
from costmodel.packing_state import (
    Key,
    PackingState,
    baseline_key,
    baseline_key_balanced,
    baseline_key_spread,
    variant_key,
    variant_key_memory,
)
from costmodel.problem import Item, Problem, Solution


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
    baseline_score = {
        "cpu": baseline_key,
        "dominant": baseline_key_spread,
        "balanced": baseline_key_balanced,
    }[mode]
    for i in sorted(baselines, key=lambda i: (len(items[i].eligible) > 1, decreasing(i))):
        _place_best(state, i, baseline_score)
    staying = sorted((i for i in variants if items[i].current is not None), key=decreasing)
    for i in staying:
        cur = items[i].current
        assert cur is not None
        ok, k = state.fits(items[i], cur) if cur in items[i].eligible else (False, None)
        if ok:
            state.place(i, cur, k)
    key = variant_key if mode == "cpu" else variant_key_memory
    for i in sorted((i for i in variants if state.where[i] is None), key=decreasing):
        _place_best(state, i, key)

    close_pools(state)
    trim_partial_cores(state)
    swap_partial_cores(state)
    return state.solution()


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
        cpu_short = (state.cpu_used(n) + item.cpu_millicores - state.cap_millicores[n]
                     ) / MILLICORES
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
