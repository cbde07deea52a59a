import random
import subprocess
import sys

import pytest

from costmodel import (
    InfeasibleError,
    Measured,
    PackingOptions,
    Placement,
    render,
    solve,
    verify,
)
from tests.costmodel.builders import model, node, pool

HEURISTIC = PackingOptions(exact_max_models=0)


def _ab_test(n_variants: int = 8, seed: int = 0):
    rng = random.Random(seed)
    models = [model("base", role="baseline", cores=3.3, memory_gib=8)]
    models += [
        model(f"v{i}", cores=rng.uniform(0.05, 1.5), memory_gib=rng.uniform(0.5, 4))
        for i in range(n_variants)
    ]
    return models, pool(node("a"), node("b"), node("c", cores=8))


@pytest.mark.parametrize("options", [HEURISTIC, PackingOptions()])
def test_baseline_on_dedicated_whole_cores_and_variants_shared(options):
    models, nodes = _ab_test()
    placement = solve(models, nodes, options=options)
    base = placement.for_model("base")
    assert base.dedicated and base.cpu_request_millicores == base.cpu_limit_millicores == 7000
    assert not any(p.dedicated for p in placement.models if p.role == "variant")
    assert placement.lower_bound_cores <= placement.cores_used <= placement.naive_cores
    verify(placement, nodes)


def test_exact_solver_for_small_inputs_is_optimal_and_no_worse():
    models, nodes = _ab_test(10, seed=3)
    exact = solve(models, nodes)
    heuristic = solve(models, nodes, options=HEURISTIC)
    assert exact.solver == "exact-milp" and exact.optimal
    assert heuristic.solver == "heuristic"
    assert exact.cores_used <= heuristic.cores_used
    assert exact.lower_bound_cores == exact.cores_used


def test_exact_timeout_still_returns_a_valid_placement():
    models, _ = _ab_test(25, seed=1)
    nodes = pool(*(node(f"n{i}") for i in range(6)))
    placement = solve(models, nodes, options=PackingOptions(exact_time_limit_s=0.001))
    verify(placement, nodes)
    assert placement.cores_used >= placement.lower_bound_cores


def test_packing_beats_one_pod_per_variant():
    models = [model(f"v{i}", cores=0.1) for i in range(20)]  # 200m each at 50% target
    placement = solve(models, pool(node("a")), options=HEURISTIC)
    assert placement.cores_used == 4 and placement.naive_cores == 20


def test_variants_and_gpu_baseline_never_share_its_gpu():
    models = [
        model("base", role="baseline", gpu_util=0.3, gpu_memory_gib=4),
        model("v1", gpu_util=0.1, gpu_memory_gib=4),
        model("v2", gpu_util=0.1, gpu_memory_gib=4),
    ]
    nodes = pool(node("g", gpus=2))
    for options in (HEURISTIC, PackingOptions()):
        placement = solve(models, nodes, options=options)
        base, v1, v2 = (placement.for_model(n) for n in ("base", "v1", "v2"))
        assert base.gpu_share == 1.0 and base.gpu_memory_bytes == nodes.nodes[0].gpu_memory_bytes
        assert v1.gpu_index == v2.gpu_index != base.gpu_index
        assert placement.gpus_used == 2
        verify(placement, nodes)


def test_node_selector_is_respected():
    models = [model("v", node_selector={"pool": "ab"})]
    placement = solve(models, pool(node("a"), node("b", labels={"pool": "ab"})))
    assert placement.for_model("v").node == "b"


def test_baseline_too_big_names_model_and_shortfall():
    with pytest.raises(InfeasibleError) as err:
        solve([model("base", role="baseline", cores=10)], pool(node("a"), node("b", cores=8)))
    assert err.value.model == "base"
    assert err.value.resource == "cpu cores"
    assert err.value.shortfall == 4  # needs 20 cores, the largest node has 16
    assert "base" in str(err.value)


def test_models_that_fit_alone_but_not_together_are_reported():
    models = [model(f"b{i}", role="baseline", cores=3) for i in range(3)]  # 6 cores each
    for options in (HEURISTIC, PackingOptions()):
        with pytest.raises(InfeasibleError) as err:
            solve(models, pool(node("a"), node("b", cores=4)), options=options)
        assert err.value.model == "b2" and err.value.resource == "cpu cores"


def test_exact_solver_finds_a_tight_packing_best_fit_misses():
    # 5+5+3+3 cores onto 6 + 10: only {3,3} | {5,5} works; best and worst fit both put a
    # 5 on the 6-core node and strand the last 3.
    sizes = {"b1": 5, "b2": 5, "b3": 3, "b4": 3}
    models = [model(name, role="baseline", cores=c / 2) for name, c in sizes.items()]
    nodes = pool(node("x", cores=6), node("y", cores=10))
    with pytest.raises(InfeasibleError):
        solve(models, nodes, options=HEURISTIC)
    placement = solve(models, nodes)
    assert placement.solver == "exact-milp" and placement.cores_used == 16


def test_unmatched_selector_and_missing_gpu_are_infeasible():
    with pytest.raises(InfeasibleError, match="node selector"):
        solve([model("v", node_selector={"x": "y"})], pool(node("a")))
    with pytest.raises(InfeasibleError) as err:
        solve([model("v", gpu_util=0.1)], pool(node("a")))
    assert err.value.resource == "gpus"


@pytest.mark.parametrize("options", [HEURISTIC, PackingOptions()])
def test_repack_keeps_the_baseline_and_moves_nothing_needlessly(options):
    models, nodes = _ab_test(12, seed=5)
    first = solve(models, nodes, options=options)
    again = solve(models, nodes, current=first.assignments(), options=options)
    assert again.assignments() == first.assignments() and again.moves == 0
    # A variant ramps up: the baseline stays where it runs, even on a worse node.
    current = first.assignments() | {"base": "c"}
    ramped = [m if m.name != "v0" else model("v0", cores=2.5) for m in models]
    after = solve(ramped, nodes, current=current, options=options)
    assert after.for_model("base").node == "c" and not after.for_model("base").moved
    verify(after, nodes)


def test_pinned_baseline_that_outgrew_its_node_is_an_error_not_an_eviction():
    nodes = pool(node("small", cores=4), node("big", cores=32))
    with pytest.raises(InfeasibleError, match="not evicted"):
        solve([model("base", role="baseline", cores=3)], nodes, current={"base": "small"})


def test_same_input_in_any_order_gives_the_same_placement():
    models, nodes = _ab_test(20, seed=9)
    first = solve(models, nodes, options=HEURISTIC)
    shuffled = list(models)
    random.Random(1).shuffle(shuffled)
    reordered = pool(*reversed(nodes.nodes))
    second = solve(shuffled, reordered, options=HEURISTIC)
    assert first.model_dump(exclude={"solve_seconds"}) == second.model_dump(
        exclude={"solve_seconds"}
    )


def test_nothing_to_place():
    placement = solve([], pool())
    assert placement.models == () and placement.cores_used == 0


def test_placement_round_trips_through_json():
    models, nodes = _ab_test()
    placement = solve([*models, model("idle", cores=0)], nodes)
    assert Placement.model_validate_json(placement.model_dump_json()) == placement


def test_report_names_every_model_and_the_bound():
    models, nodes = _ab_test()
    text = render(solve(models, nodes))
    assert "lower bound" in text and "SLO risk" in text
    assert all(m.name in text for m in models)


def test_slo_risk_levels():
    guessed = model("guessed").model_copy(update={"qps": Measured.spec(1000)})
    models = [
        model("hot", role="baseline", gpu_util=0.9, target=0.7),  # its own GPU, still too busy
        model("v1", gpu_util=0.1),
        model("v2", gpu_util=0.1),
        model("calm", cores=0.2),
        guessed,
    ]
    placement = solve(models, pool(node("g", gpus=2)))
    levels = {r.model: r.level for r in placement.risks}
    assert levels == {
        "hot": "breach",
        "v1": "watch",
        "v2": "watch",
        "calm": "ok",
        "guessed": "watch",
    }
    calm = next(r for r in placement.risks if r.model == "calm")
    assert calm.predicted_utilisation == pytest.approx(0.5)
    assert calm.saturation_qps == pytest.approx(2000)  # 0.4 cores / 0.2 core-seconds per 1k


def test_exact_solver_writes_nothing_to_stdout():
    # The operator's log is one JSON object per line on stdout: a banner from the C solver
    # would break it. A fresh interpreter, since HiGHS prints only on a process's first instance.
    script = (
        "from costmodel import solve\n"
        "from tests.costmodel.builders import model, node, pool\n"
        "solve([model('a', cores=0.5), model('b', cores=0.5)], pool(node('n')))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout == ""
