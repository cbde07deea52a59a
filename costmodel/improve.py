"""The local-improvement pass after best-fit packing: close pools, trim and swap partial cores.

Each step keeps a set of moves only where it saves more cores than the moves cost, and
rolls it back otherwise.
"""

from __future__ import annotations

from costmodel.model import MILLICORES
from costmodel.packing_state import PackingState, variant_key, whole_cores


def _relocate_free(state: PackingState, i: int, avoid: int) -> tuple[int, int | None] | None:
    """A node (other than `avoid`) where variant i fits without adding a core anywhere."""
    item = state.problem.items[i]
    best = None
    for n in item.eligible:
        if n == avoid or state.pool[n] == 0:
            continue
        pool = state.pool[n]
        if whole_cores(pool + item.cpu_millicores) != whole_cores(pool):
            continue
        ok, k = state.fits(item, n)
        if ok:
            score = (state.move_penalty(i, avoid, n), variant_key(state, i, n, k))
            if best is None or score < best[0]:
                best = (score, n, k)
    return None if best is None else (best[1], best[2])


def close_pools(state: PackingState) -> None:
    """Empty the smallest shared pools into other pools' slack when that saves cores."""
    nodes = sorted(
        (n for n in range(len(state.pool)) if state.pool[n] > 0), key=lambda n: (state.pool[n], n)
    )
    for n in nodes:
        saving = whole_cores(state.pool[n])
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


def trim_partial_cores(state: PackingState) -> None:
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
            excess = pool - (whole_cores(pool) - 1) * MILLICORES
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
            if whole_cores(pool) - whole_cores(state.pool[n]) > penalty:
                improved = True
                continue
            for i, k in reversed(moved):  # roll back
                state.remove(i)
                state.place(i, n, k)


# Pairs the swap pass may look at in one solve: a work budget, not a clock, so that the
# result stays deterministic; ~0.2 s of Python on the benchmark's 1,000-variant pools.
SWAP_BUDGET = 200_000


def swap_partial_cores(state: PackingState) -> None:
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
            excess = pool - (whole_cores(pool) - 1) * MILLICORES
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
        slack = whole_cores(pool) * MILLICORES - pool
        for b in sorted(state.members[m]):
            budget -= 1
            shed = size - items[b].cpu_millicores
            if (
                excess <= shed <= slack
                and not items[b].needs_gpu
                and n in eligible[b]
                and whole_cores(state.pool[n]) - whole_cores(state.pool[n] - shed)
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
