"""Taints and tolerations: a model is only ever packed onto a node whose hard taints it
tolerates, by either solver; toleration matching follows Kubernetes."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from costmodel import InfeasibleError, PackingOptions, Taint, Toleration, solve
from tests.costmodel.builders import model, node, pool
from tests.costmodel.test_costmodel_properties import HEURISTIC, model_costs, nodes

GPU_TAINT = Taint(key="nvidia.com/gpu", value="present", effect="NoSchedule")
GPU_TOLERATION = Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")

taints = st.sampled_from([
    GPU_TAINT,
    Taint(key="dedicated", value="ranking", effect="NoSchedule"),
    Taint(key="dedicated", value="ranking", effect="NoExecute"),
    Taint(key="spot", effect="PreferNoSchedule"),
])
tolerations = st.sampled_from([
    GPU_TOLERATION,
    Toleration(key="dedicated", value="ranking"),
    Toleration(key="dedicated", value="other", effect="NoSchedule"),
    Toleration(key="dedicated", operator="Exists", effect="NoExecute"),
    Toleration(operator="Exists"),
])


def test_toleration_matching_follows_kubernetes():
    assert GPU_TOLERATION.tolerates(GPU_TAINT)
    assert Toleration(operator="Exists").tolerates(GPU_TAINT)
    assert Toleration(key="nvidia.com/gpu", value="present").tolerates(GPU_TAINT)
    assert not Toleration(key="nvidia.com/gpu", value="absent").tolerates(GPU_TAINT)
    assert not Toleration(key="nvidia.com/gpu", operator="Exists",
                          effect="NoExecute").tolerates(GPU_TAINT)
    # PreferNoSchedule is a preference, not a refusal.
    assert node("n", taints=(Taint(key="spot", effect="PreferNoSchedule"),)).admits(())
    assert not node("n", taints=(GPU_TAINT,)).admits(())


def test_an_untolerating_model_skips_the_tainted_node_or_is_refused():
    tainted = pool(node("gpu-0", cores=64, gpus=8, taints=(GPU_TAINT,)), node("cpu-0", cores=4))
    placed = solve([model("a", cores=1), model("b", cores=1)], tainted)
    assert {p.node for p in placed.models} == {"cpu-0"}
    with_toleration = solve([model("a", cores=1, gpu_util=0.2, tolerations=(GPU_TOLERATION,))],
                            tainted)
    assert with_toleration.for_model("a").node == "gpu-0"
    try:
        solve([model("a", cores=1, gpu_util=0.2)], tainted)
    except InfeasibleError as err:
        assert err.model == "a" and "tolerations exclude the tainted gpu-0" in str(err)
    else:
        raise AssertionError("a GPU model without the GPU toleration was placed")


@st.composite
def tainted_problem(draw, max_variants: int):
    models = [m.model_copy(update={"tolerations": tuple(draw(st.lists(tolerations,
                                                                         max_size=2)))})
              for m in draw(model_costs(max_variants=max_variants))]
    base = draw(nodes())
    tainted = base.model_copy(update={"nodes": tuple(
        n.model_copy(update={"taints": tuple(draw(st.lists(taints, max_size=2)))})
        for n in base.nodes)})
    return models, tainted


def _check_tolerated(models, pool_, options):
    try:
        placement = solve(models, pool_, options=options)
    except InfeasibleError:
        return
    by_name = {n.name: n for n in pool_.nodes}
    costs = {m.name: m for m in models}
    for p in placement.models:
        assert by_name[p.node].admits(costs[p.model].tolerations), (p.model, p.node)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tainted_problem(max_variants=14))
def test_heuristic_never_places_a_model_on_an_untolerated_node(problem):
    _check_tolerated(*problem, HEURISTIC)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tainted_problem(max_variants=6))
def test_exact_milp_never_places_a_model_on_an_untolerated_node(problem):
    _check_tolerated(*problem, PackingOptions(exact_time_limit_s=5))
