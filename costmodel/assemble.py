"""Turn a solver's node/GPU choice into the Placement the controller applies and reports."""

from __future__ import annotations

from collections import Counter

from costmodel.model import (
    GPU_SHARE_UNITS,
    MILLICORES,
    GpuUsage,
    ModelCost,
    ModelPlacement,
    Node,
    NodeUsage,
    Placement,
    SloRisk,
    SolverName,
)
from costmodel.problem import Problem, Solution


def assemble(
    problem: Problem,
    solution: Solution,
    *,
    solver: SolverName,
    optimal: bool,
    lower_bound_cores: int,
    solve_seconds: float,
) -> Placement:
    models = [_model_placement(problem, m, n, k) for m, (n, k) in enumerate(solution)]
    by_node: dict[str, list[ModelPlacement]] = {}
    for p in models:
        by_node.setdefault(p.node, []).append(p)
    nodes = [_node_usage(node, by_node.get(node.name, [])) for node in problem.nodes]
    gpu_busy = _gpu_busy(problem, solution)
    tenants = Counter(w for w in solution if w[1] is not None)
    return Placement(
        models=tuple(models),
        nodes=tuple(nodes),
        cores_used=sum(u.cores_used for u in nodes),
        lower_bound_cores=max(lower_bound_cores, problem.lower_bound_cores()),
        naive_cores=problem.naive_cores(),
        gpus_used=sum(1 for u in nodes for g in u.gpus if g.models),
        moves=sum(p.moved for p in models),
        solver=solver,
        optimal=optimal,
        solve_seconds=solve_seconds,
        risks=tuple(
            _risk(cost, gpu_busy.get(solution[m]), tenants[solution[m]] > 1)
            for m, cost in enumerate(problem.models)
        ),
    )


def _model_placement(problem: Problem, m: int, n: int, k: int | None) -> ModelPlacement:
    item, cost, node = problem.items[m], problem.models[m], problem.nodes[n]
    gpu_memory = node.gpu_memory_bytes if item.baseline else item.gpu_memory_bytes
    return ModelPlacement(
        model=item.name,
        role=cost.role,
        node=node.name,
        dedicated=item.baseline,
        # Request == limit for every model: the baseline's integer cores make it Guaranteed
        # and pinned; a variant's request already holds its SLO headroom, and a limit equal
        # to it keeps one variant from eating its neighbours' share of the pool.
        cpu_request_millicores=item.cpu_millicores,
        cpu_limit_millicores=item.cpu_millicores,
        memory_request_bytes=item.memory_bytes,
        memory_limit_bytes=item.memory_bytes,
        gpu_index=k,
        gpu_share=item.gpu_units / GPU_SHARE_UNITS if k is not None else 0.0,
        gpu_memory_bytes=gpu_memory if k is not None else 0,
        moved=item.current is not None and item.current != n,
        sources=cost.sources(),
    )


def _node_usage(node: Node, here: list[ModelPlacement]) -> NodeUsage:
    dedicated = sum(p.cpu_request_millicores for p in here if p.dedicated) // MILLICORES
    shared = sum(p.cpu_request_millicores for p in here if not p.dedicated)
    pool_cores = -(-shared // MILLICORES)
    memory = sum(p.memory_request_bytes for p in here)
    gpus = []
    for k in range(node.gpu_count):
        on_k = [p for p in here if p.gpu_index == k]
        gpus.append(
            GpuUsage(
                index=k,
                share=sum(p.gpu_share for p in on_k),
                memory_bytes=sum(p.gpu_memory_bytes for p in on_k),
                models=tuple(p.model for p in on_k),
            )
        )
    return NodeUsage(
        node=node.name,
        cpu_free_millicores=node.free_cpu_millicores,
        dedicated_cores=dedicated,
        shared_pool_cores=pool_cores,
        shared_used_millicores=shared,
        cpu_headroom_millicores=node.free_cpu_millicores - dedicated * MILLICORES - shared,
        memory_used_bytes=memory,
        memory_headroom_bytes=node.free_memory_bytes - memory,
        gpus=tuple(gpus),
    )


def _gpu_busy(problem: Problem, solution: Solution) -> dict[tuple[int, int | None], float]:
    """Predicted busy fraction of each used GPU: the sum of its models' measured utilisation."""
    busy: dict[tuple[int, int | None], float] = {}
    for m, where in enumerate(solution):
        if where[1] is not None:
            busy[where] = busy.get(where, 0.0) + problem.models[m].gpu_utilisation.value
    return busy


def _risk(cost: ModelCost, gpu_busy: float | None, shares_gpu: bool) -> SloRisk:
    cores = cost.cpu_millicores_request / MILLICORES
    busy = cost.cpu_cores_busy
    utilisation = busy / cores
    per_request = cost.cpu_core_seconds_per_1k.value / 1000
    saturation = cores / per_request if per_request > 0 else None
    target = cost.target_utilisation
    # Utilisation above target cannot come out of sizing (requests are sized to the target),
    # but a GPU's neighbours or unmeasured figures make the prediction less certain.
    if utilisation > target + 1e-9 or (gpu_busy is not None and gpu_busy > target + 1e-9):
        level, reason = "breach", "predicted utilisation above the target"
    elif cost.qps.source == "spec" or cost.cpu_core_seconds_per_1k.source == "spec":
        level, reason = "watch", "qps or cpu cost is from the spec, not measured"
    elif shares_gpu:
        level, reason = "watch", "shares a time-sliced GPU: latency interference is not modelled"
    else:
        level, reason = "ok", "within target"
    return SloRisk(
        model=cost.name,
        predicted_utilisation=round(utilisation, 6),
        target_utilisation=target,
        saturation_qps=saturation,
        gpu_utilisation=None if gpu_busy is None else round(gpu_busy, 6),
        level=level,
        reason=reason,
    )
