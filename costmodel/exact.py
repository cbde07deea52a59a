"""Exact packing as a MILP solved by HiGHS (highspy), warm-started from the heuristic.

Variables: x[m,n] model m on node n; s[n] whole shared-pool cores on node n; y[m,n,k] GPU
model m on GPU k of node n; z[n,k] GPU k of node n in use.
Minimise  sum s[n] + dedicated cores + move_cost * moves + eps * GPUs used,
where eps * (number of GPUs) < 1, so GPUs are only a tie-break between equal core counts.
"""

from __future__ import annotations

import ctypes
import math
import os
import sys
from dataclasses import dataclass

import highspy

from costmodel.model import GPU_SHARE_UNITS, MILLICORES
from costmodel.problem import Problem, Solution

_MIB = 1 << 20


def _construct_first_highs_quietly() -> None:
    """HiGHS prints a banner on C stdout when a process builds its first instance, before any
    option can turn it off; in the operator that line would break the one-JSON-object-per-line
    log. So the first instance is built here, at import, with fd 1 pointed at /dev/null."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        highspy.Highs()
        ctypes.CDLL(None).fflush(None)  # the banner may still sit in C's stdio buffer
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


_construct_first_highs_quietly()


@dataclass(frozen=True, slots=True)
class ExactResult:
    solution: Solution | None  # None: no feasible solution found within the time limit
    optimal: bool
    lower_bound_cores: int  # from the MIP dual bound; 0 when unknown


def solve_exact(problem: Problem, warm_start: Solution | None, time_limit_s: float) -> ExactResult:
    items, nodes = problem.items, problem.nodes
    h = highspy.Highs()
    h.silent()
    h.setOptionValue("time_limit", float(time_limit_s))
    h.setOptionValue("threads", 1)  # one thread: the same input gives the same answer
    h.setOptionValue("mip_rel_gap", 0.0)
    total_gpus = sum(n.gpu_count for n in nodes)
    eps = 0.5 / (total_gpus + 1)
    h.setOptionValue("mip_abs_gap", eps / 2)

    x: dict[tuple[int, int], highspy.highs.highs_var] = {}
    y: dict[tuple[int, int, int], highspy.highs.highs_var] = {}
    for m, it in enumerate(items):
        for n in it.eligible:
            stays = it.current == n and not it.baseline
            x[m, n] = h.addBinary(obj=-problem.move_cost if stays else 0.0)
            if it.needs_gpu:
                for k in range(nodes[n].gpu_count):
                    y[m, n, k] = h.addBinary()
    # The objective's constant part: dedicated cores and every current variant counted moved.
    stayers = sum(1 for it in items if it.current is not None and not it.baseline)
    h.changeObjectiveOffset(
        sum(it.cores for it in items if it.baseline) + problem.move_cost * stayers
    )

    s = [h.addIntegral(lb=0, ub=-(-n.free_cpu_millicores // MILLICORES), obj=1.0) for n in nodes]
    z = {
        (n, k): h.addBinary(obj=eps) for n, node in enumerate(nodes) for k in range(node.gpu_count)
    }

    for m, it in enumerate(items):
        h.addConstr(h.qsum(x[m, n] for n in it.eligible) == 1)
        if it.needs_gpu:
            for n in it.eligible:
                gpus = [y[m, n, k] for k in range(nodes[n].gpu_count)]
                h.addConstr(h.qsum(gpus) - x[m, n] == 0)
    for n, node in enumerate(nodes):
        on_n = [(m, it) for m, it in enumerate(items) if (m, n) in x]
        variants = [x[m, n] * it.cpu_millicores for m, it in on_n if not it.baseline]
        if variants:
            h.addConstr(h.qsum(variants) - MILLICORES * s[n] <= 0)
        # The scheduler's check (see PackingState): requests within allocatable.
        if on_n:
            cpu = [x[m, n] * it.cpu_millicores for m, it in on_n]
            h.addConstr(h.qsum(cpu) <= node.free_cpu_millicores)
        if on_n:
            # Memory in MiB (demand rounded up, capacity down) keeps coefficients well scaled.
            mem = [x[m, n] * math.ceil(it.memory_bytes / _MIB) for m, it in on_n]
            h.addConstr(h.qsum(mem) <= node.free_memory_bytes // _MIB)
        for k in range(node.gpu_count):
            users = [(m, it) for m, it in on_n if it.needs_gpu]
            if users:
                share = [y[m, n, k] * it.gpu_units for m, it in users]
                h.addConstr(h.qsum(share) - GPU_SHARE_UNITS * z[n, k] <= 0)
                cap = node.gpu_memory_bytes // _MIB
                gmem = [
                    y[m, n, k] * (cap if it.baseline else math.ceil(it.gpu_memory_bytes / _MIB))
                    for m, it in users
                ]
                h.addConstr(h.qsum(gmem) - cap * z[n, k] <= 0)
            if k > 0:
                h.addConstr(z[n, k] - z[n, k - 1] <= 0)  # GPUs of a node are interchangeable

    if warm_start is not None:
        _set_start(h, problem, warm_start, x, y, s, z)
    h.run()

    status = h.getModelStatus()
    info = h.getInfo()
    optimal = status == highspy.HighsModelStatus.kOptimal
    # The objective is whole cores + move_cost*moves + eps*GPUs: without moves, the dual bound
    # less the most the GPU term can add, rounded up, bounds the cores.
    bound = info.mip_dual_bound if math.isfinite(info.mip_dual_bound) else 0.0
    moves_in_objective = stayers > 0 and problem.move_cost > 0
    bound_cores = 0 if moves_in_objective else max(0, math.ceil(bound - eps * total_gpus - 1e-6))
    if info.primal_solution_status != 2:  # 2: a feasible solution exists
        return ExactResult(None, False, bound_cores)
    values = h.getSolution().col_value
    solution: Solution = []
    for m, it in enumerate(items):
        n = next(n for n in it.eligible if values[x[m, n].index] > 0.5)
        k = None
        if it.needs_gpu:
            k = next(k for k in range(nodes[n].gpu_count) if values[y[m, n, k].index] > 0.5)
        solution.append((n, k))
    return ExactResult(solution, optimal, bound_cores)


def _set_start(h, problem: Problem, start: Solution, x, y, s, z) -> None:
    values: dict[int, float] = {}
    pool = [0] * len(problem.nodes)
    for m, (n, k) in enumerate(start):
        values[x[m, n].index] = 1.0
        if k is not None:
            values[y[m, n, k].index] = 1.0
            values[z[n, k].index] = 1.0
        if not problem.items[m].baseline:
            pool[n] += problem.items[m].cpu_millicores
    for n, var in enumerate(s):
        values[var.index] = float(-(-pool[n] // MILLICORES))
    # The warm start is the heuristic's, whose GPU numbering may break the z[k] <= z[k-1]
    # ordering; HiGHS then just ignores (or repairs) it, which costs nothing but speed.
    idx = sorted(values)
    h.setSolution(len(idx), idx, [values[i] for i in idx])
