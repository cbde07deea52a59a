"""Benchmark of costmodel packing on generated A/B-test fleets.

For each size (variants) and seed: generate A/B tests (one baseline and ~10 variants each,
traffic split by weights, costs drawn around a per-test figure, some tests on GPUs) and a
node pool with `--slack` times the cores the models need; then compare
  - the heuristic (what solve() uses above its exact threshold): cores used, solve time;
  - the exact MILP (up to --exact-max variants, --time-limit each): optimum or best bound;
  - the naive peer: one pod per model on whole dedicated cores.
Prints a Markdown table of medians over seeds.

    .venv/bin/python bench/costmodel_bench.py --sizes 10 20 50 100 300 1000 --seeds 5
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time

from costmodel import InfeasibleError, Measured, ModelCost, Node, NodePool, PackingOptions, solve
from costmodel.exact import solve_exact
from costmodel.problem import build_problem

GIB = 1 << 30


def _m(value: float, run: str) -> Measured:
    return Measured(value=value, source=f"profile:{run}")


def generate(n_variants: int, seed: int, args) -> tuple[list[ModelCost], NodePool]:
    rng = random.Random(seed * 100_003 + n_variants)
    models: list[ModelCost] = []
    tests = max(1, round(n_variants / 10))
    sizes = [n_variants // tests + (t < n_variants % tests) for t in range(tests)]
    for t, k in enumerate(sizes):
        run = f"bench-{seed}-{t}"
        gpu = rng.random() < 0.2
        total_qps = rng.uniform(1_000, 8_000) * args.qps_scale
        per_1k = min(2.0, rng.lognormvariate(0, 0.6))  # core-seconds per 1k requests
        memory = rng.uniform(1, 8) * GIB  # dense part + cache; embeddings live elsewhere
        weights = [rng.uniform(100, 1000) for _ in range(k)]  # basis points per variant
        arms = [("baseline", f"t{t}-base", 10_000 - sum(weights), 1.0)] + [
            ("variant", f"t{t}-v{i}", w, rng.uniform(0.8, 1.5)) for i, w in enumerate(weights)
        ]
        for role, name, weight, heavier in arms:
            qps = total_qps * weight / 10_000
            models.append(
                ModelCost(
                    name=name,
                    role=role,
                    qps=_m(qps, run),
                    cpu_core_seconds_per_1k=_m(per_1k * heavier, run),
                    memory_bytes=_m(memory * rng.uniform(0.8, 1.2), run),
                    gpu_utilisation=_m(min(0.6, qps / 8_000 / args.qps_scale) if gpu else 0, run),
                    gpu_memory_bytes=_m(rng.uniform(2, 12) * GIB if gpu else 0, run),
                )
            )
    return models, _pool(models, rng, args.slack, SHAPES[args.nodes])


# Node shapes: (cores, GiB of memory, GPUs). Small nodes make fragmentation matter.
GPU_GIB = 80  # memory of each GPU

# Node shapes (cores, GiB, GPUs): CPU shapes to draw from, then the GPU node shape.
SHAPES = {
    "large": ([(16, 128, 0), (32, 256, 0), (48, 384, 0)], (32, 256, 4)),
    "small": ([(4, 32, 0), (8, 64, 0)], (8, 64, 2)),
}


def _pool(models: list[ModelCost], rng: random.Random, slack: float, shapes) -> NodePool:
    """Enough nodes for `slack` times the models' cores, memory and GPU shares."""
    cpu_shapes, gpu_shape = shapes
    gpu_models = [m for m in models if m.needs_gpu]
    gpu_share = sum(m.gpu_share_units / 10_000 for m in gpu_models if m.role == "variant")
    gpu_gib = sum(m.gpu_memory_request_bytes for m in gpu_models if m.role == "variant") / GIB
    gpu_need = max(gpu_share, gpu_gib / GPU_GIB) + sum(m.role == "baseline" for m in gpu_models)
    gpu_cores = sum(m.cpu_millicores_request for m in gpu_models) / 1000
    # One spare GPU node: GPU shares and whole-core baselines fragment a few small nodes.
    host_gib = sum(m.memory_request_bytes for m in gpu_models) / GIB
    need = max(gpu_need / gpu_shape[2], gpu_cores / (gpu_shape[0] - 2), host_gib / gpu_shape[1])
    gpu_nodes = math.ceil(need * slack)
    gpu_nodes += bool(gpu_models)
    cores = sum(m.cpu_millicores_request for m in models) / 1000 * slack
    memory = sum(m.memory_request_bytes for m in models) / GIB * slack
    nodes = []
    while cores > 0 or memory > 0 or len(nodes) < gpu_nodes:
        gpu = len(nodes) < gpu_nodes
        n_cores, n_gib, gpus = gpu_shape if gpu else rng.choice(cpu_shapes)
        reserved = rng.randrange(0, 2000)  # daemons and sidecars: at most 2 cores
        nodes.append(
            Node(
                name=f"{'gpu' if gpu else 'cpu'}-{len(nodes):04d}",
                cpu_millicores=n_cores * 1000,
                memory_bytes=n_gib * GIB,
                gpu_count=gpus,
                gpu_memory_bytes=GPU_GIB * GIB if gpus else 0,
                reserved_cpu_millicores=reserved,
            )
        )
        cores -= n_cores - reserved / 1000
        memory -= n_gib
    return NodePool(nodes=tuple(nodes))


def run_one(n_variants: int, seed: int, args) -> dict | None:
    """One instance's figures, or None when the heuristic finds no placement."""
    models, pool = generate(n_variants, seed, args)
    print(f"size {n_variants} seed {seed}", file=sys.stderr, flush=True)
    cpu_started = time.process_time()  # CPU time too: wall time on a shared box is noisy
    try:
        heuristic = solve(models, pool, options=PackingOptions(exact_max_models=0))
    except InfeasibleError as err:
        print(f"  heuristic: {err}", file=sys.stderr)
        return None
    row = {
        "models": len(models),
        "nodes": len(pool.nodes),
        "heur": heuristic.cores_used,
        "heur_s": heuristic.solve_seconds,
        "heur_cpu_s": time.process_time() - cpu_started,
        "naive": heuristic.naive_cores,
        "bound": heuristic.lower_bound_cores,
        "opt": None,
        "exact_s": None,
    }
    if n_variants <= args.exact_max:
        problem = build_problem(models, pool, None, move_cost=0.0)
        started = time.perf_counter()
        exact = solve_exact(problem, None, args.time_limit)
        row["exact_s"] = time.perf_counter() - started
        row["bound"] = max(row["bound"], exact.lower_bound_cores)
        if exact.optimal:
            # The MILP's optimum in cores is its bound (its GPU tie-break is below a core).
            row["opt"] = exact.lower_bound_cores
    return row


def _med(values) -> float:
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 20, 50, 100, 300, 1000])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--slack", type=float, default=1.5, help="pool cores / cores needed")
    parser.add_argument("--nodes", choices=sorted(SHAPES), default="large")
    parser.add_argument("--qps-scale", type=float, default=1.0, help="multiplies each test's qps")
    parser.add_argument("--exact-max", type=int, default=50, help="largest size given to MILP")
    parser.add_argument("--time-limit", type=float, default=30.0, help="MILP seconds per case")
    args = parser.parse_args()
    print(
        "| variants | models | nodes | heuristic cores | optimum (solved) | lower bound "
        "| heur/opt | heur/bound | naive cores | heur/naive | heuristic wall s (max) "
        "| heuristic CPU s (max) | exact s "
        "| placed |"
    )
    print("|" + "---|" * 14)
    for size in args.sizes:
        results = [run_one(size, seed, args) for seed in range(args.seeds)]
        rows = [r for r in results if r is not None]
        if not rows:
            print(f"| {size} | heuristic found no placement in any of {len(results)} |")
            continue
        solved = [r for r in rows if r["opt"] is not None]
        exact_s = [r["exact_s"] for r in rows if r["exact_s"] is not None]
        print(
            f"| {size} | {_med(r['models'] for r in rows):.0f} "
            f"| {_med(r['nodes'] for r in rows):.0f} "
            f"| {_med(r['heur'] for r in rows):.0f} "
            + (
                f"| {_med(r['opt'] for r in solved):.0f} ({len(solved)}/{len(rows)}) "
                if solved
                else f"| - (0/{len(rows) if exact_s else 0}) "
            )
            + f"| {_med(r['bound'] for r in rows):.0f} "
            + (f"| {_med(r['heur'] / r['opt'] for r in solved):.3f} " if solved else "| - ")
            + f"| {_med(r['heur'] / r['bound'] for r in rows):.3f} "
            f"| {_med(r['naive'] for r in rows):.0f} "
            f"| {_med(r['heur'] / r['naive'] for r in rows):.3f} "
            f"| {_med(r['heur_s'] for r in rows):.3f} ({max(r['heur_s'] for r in rows):.3f}) "
            f"| {_med(r['heur_cpu_s'] for r in rows):.3f} "
            f"({max(r['heur_cpu_s'] for r in rows):.3f}) "
            + (f"| {_med(exact_s):.2f} " if exact_s else "| - ")
            + f"| {len(rows)}/{len(results)} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
