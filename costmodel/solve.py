"""Entry point: solve() picks the exact MILP for small inputs and the heuristic otherwise."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from pydantic import Field

from costmodel.assemble import assemble
from costmodel.exact import solve_exact
from costmodel.heuristic import pack
from costmodel.model import FrozenModel, InfeasibleError, ModelCost, NodePool, Placement
from costmodel.problem import Solution, build_problem
from costmodel.verify import verify


class PackingOptions(FrozenModel):
    exact_max_models: int = Field(
        default=60, ge=0, description="use the MILP when there are at most this many models"
    )
    exact_time_limit_s: float = Field(default=2.0, gt=0)
    move_cost_cores: float = Field(
        default=1.0,
        ge=0,
        description="cores a re-pack must save per moved variant; 1.0: a move must pay for itself",
    )


def solve(
    models: Sequence[ModelCost],
    pool: NodePool,
    current: Mapping[str, str] | None = None,
    options: PackingOptions | None = None,
) -> Placement:
    """Place every model on the pool, or raise InfeasibleError naming a model and shortfall.

    `current` (model -> node, e.g. a previous Placement.assignments()) keeps running
    baselines where they are and makes each variant move cost `options.move_cost_cores`.
    The same inputs always give the same placement (exact solves that hit their time limit
    excepted, as how far HiGHS gets depends on the machine).
    """
    options = options or PackingOptions()
    started = time.perf_counter()
    problem = build_problem(models, pool, current, options.move_cost_cores)
    small = len(problem.items) <= options.exact_max_models
    failure: InfeasibleError | None = None
    try:
        heuristic: Solution | None = pack(problem)
    except InfeasibleError as err:
        if not small:
            raise
        # Best fit can miss a tight packing; for small inputs let the MILP decide.
        heuristic, failure = None, err
    solution, solver, optimal, bound = heuristic, "heuristic", False, 0
    if small:
        exact = solve_exact(problem, heuristic, options.exact_time_limit_s)
        bound = exact.lower_bound_cores
        # On a timeout keep whichever answer is better; ties go to the heuristic's.
        if exact.solution is not None and (
            heuristic is None
            or exact.optimal
            or problem.objective(exact.solution) < problem.objective(heuristic)
        ):
            solution, solver, optimal = exact.solution, "exact-milp", exact.optimal
    if solution is None:
        assert failure is not None
        raise failure
    placement = assemble(
        problem,
        solution,
        solver=solver,
        optimal=optimal,
        lower_bound_cores=bound,
        solve_seconds=time.perf_counter() - started,
    )
    verify(placement, pool)
    return placement
