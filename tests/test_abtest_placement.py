"""ABTest costs and placement without a cluster: figures with sources, the packing, and
the RecModel builder applying a placement."""

from __future__ import annotations

from controllers import abtest_costs as costs
from controllers.abtest_placement import PlacementOverride, fingerprint, override_for
from controllers.recmodel_objects import HOSTNAME_LABEL, triton_deployment
from costmodel import solve
from recop.api.recmodel import RecModelSpec
from tests.test_abtest_controller import spec
from tests.test_recmodel_objects import OWNER, example_spec

NODES = [{"metadata": {"name": f"gpu-{i}", "labels": {"nvidia.com/gpu.present": "true"}},
          "status": {"allocatable": {"cpu": "96", "memory": "1024Gi",
                                     "nvidia.com/gpu": "8"}}} for i in range(2)]
WEIGHTS = {"control": 60, "wide": 20, "deep": 20}


def models():
    base = example_spec().to_wire()
    base["dense"]["resources"] = {"requests": {"cpu": "2", "memory": "4Gi"}}
    m = RecModelSpec.model_validate(base)
    return {"ranker": m, "ranker-wide": m, "ranker-deep": m}


def test_every_figure_names_its_source_and_overrides_win():
    s = spec(cost={"expectedQps": 1000, "overrides": [
        {"arm": "wide", "cpuCoreSecondsPer1k": 3.5}]})
    queried = []

    def sample(query):
        queried.append(query)
        return 2.0 if "container_cpu" in query else None

    out = {c.name: c for c in costs.model_costs(s, "ns", models(), WEIGHTS, set(), sample)}
    assert out["wide"].cpu_core_seconds_per_1k.source == "override:spec.cost.overrides"
    assert out["control"].cpu_core_seconds_per_1k.source.startswith("prometheus:")
    assert 'pod=~"ranker-deep-triton-.*"' in out["deep"].cpu_core_seconds_per_1k.source
    assert out["control"].memory_bytes.source == "spec:RecModel ranker"
    assert out["control"].qps.value == 600 and "spec:cost.expectedQps" in out["control"].qps.source
    assert out["control"].role == "baseline" and out["wide"].role == "variant"
    sources = costs.cost_sources(list(out.values()))
    assert {(x.arm, x.figure) for x in sources} >= {("wide", "cpu_core_seconds_per_1k")}


def test_without_measurements_the_spec_request_is_reproduced_and_stopped_arms_go():
    s = spec(cost={"measurement": "spec"})
    out = costs.model_costs(s, "ns", models(), WEIGHTS, {"wide"}, lambda q: 1 / 0)
    assert [c.name for c in out] == ["control", "deep"]
    assert all(c.cpu_millicores_request == 2000 for c in out)


def test_placement_keeps_the_baseline_on_its_node_and_becomes_assignments():
    s = spec(cost={"measurement": "spec"})
    pool = costs.node_pool(NODES)
    first = solve(costs.model_costs(s, "ns", models(), WEIGHTS, set(), lambda q: None), pool,
                  current={"control": "gpu-1"})
    assigned = {a.arm: a for a in costs.assignments(s, first)}
    assert assigned["control"].node == "gpu-1" and assigned["control"].dedicated_cores
    assert assigned["deep"].model == "ranker-deep"


def _abtest(name, assignments, deleting=False):
    meta = {"name": name, **({"deletionTimestamp": "x"} if deleting else {})}
    return {"metadata": meta, "status": {"assignments": assignments}}


def test_override_for_a_model_comes_from_its_tests_assignments():
    a = {"arm": "wide", "model": "ranker-wide", "node": "gpu-0", "cpuMillicores": 1500,
         "memoryBytes": 2**30}
    tests = [_abtest("b", [a]), _abtest("a", [{**a, "node": "gpu-1"}], deleting=True)]
    assert override_for("ranker-wide", tests) == PlacementOverride("gpu-0", 1500, 2**30)
    assert override_for("ranker", tests) is None
    assert fingerprint(tests[0]) != fingerprint(_abtest("b", []))


def test_triton_deployment_applies_the_override_as_requests_equal_limits():
    placed = triton_deployment(OWNER, example_spec(), PlacementOverride("gpu-0", 1500, 2**30))
    pod = placed["spec"]["template"]["spec"]
    resources = pod["containers"][0]["resources"]
    assert resources["requests"] == {"cpu": "1500m", "memory": str(2**30)}
    assert resources["limits"]["cpu"] == "1500m" and resources["limits"]["memory"] == str(2**30)
    assert pod["nodeSelector"][HOSTNAME_LABEL] == "gpu-0"
    plain = triton_deployment(OWNER, example_spec())
    assert HOSTNAME_LABEL not in plain["spec"]["template"]["spec"].get("nodeSelector", {})
