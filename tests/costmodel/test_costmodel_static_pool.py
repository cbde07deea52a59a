"""The CPU capacity of a node is the scheduler's (requests within allocatable), as the
kubelet's static CPU manager keeps its reserved CPUs in the shared pool: the real dev
node (2 CPUs, 100m system-reserved, 1.9 allocatable) holds a 1-core baseline beside a
variant, which a whole-core capacity (floor(1.9) = 1) would refuse."""

import pytest

from costmodel import InfeasibleError, Node, PackingOptions, solve, verify
from tests.costmodel.builders import GIB, model, pool

HEURISTIC = PackingOptions(exact_max_models=0)
REAL_NODE = Node(name="recop-node", cpu_millicores=1900, memory_bytes=8 * GIB)


@pytest.mark.parametrize("options", [HEURISTIC, PackingOptions()])
def test_a_baseline_core_and_a_variant_share_a_node_of_two_cpus(options):
    models = [model("base", role="baseline", cores=0.5), model("wide", cores=0.2),
              model("deep", cores=0.2)]  # 1 core; 400m each at 50% utilisation
    placement = solve(models, pool(REAL_NODE), options=options)
    assert placement.for_model("base").cpu_request_millicores == 1000
    assert placement.for_model("base").dedicated
    assert {p.node for p in placement.models} == {"recop-node"}
    assert placement.cores_used == 2  # the dedicated core and the shared pool's
    verify(placement, pool(REAL_NODE))
    (usage,) = placement.nodes
    assert usage.cpu_headroom_millicores == 1900 - 1000 - 800


@pytest.mark.parametrize("options", [HEURISTIC, PackingOptions()])
def test_requests_beyond_allocatable_are_refused(options):
    models = [model("base", role="baseline", cores=0.5), model("wide", cores=0.5)]
    with pytest.raises(InfeasibleError) as err:
        solve(models, pool(REAL_NODE), options=options)  # 1000m + 1000m > 1900m
    assert err.value.resource == "cpu cores" and err.value.shortfall == pytest.approx(0.1)
