"""ABTest costs and placement without a cluster: figures with sources, the packing, the
arms a test frees, and the RecModel builder applying a placement."""

from __future__ import annotations

from controllers.abtest import costs
from controllers.abtest.placement import freed_models, released_arms
from controllers.common.nodes import node_pool
from controllers.common.placement import FREED, PlacementOverride, override_for, placements
from controllers.recmodel.objects import HOSTNAME_LABEL, desired_objects, triton_deployment
from costmodel import Toleration, solve
from recop.api.recmodel import RecModelSpec
from tests.controllers.abtest.test_controller import spec
from tests.controllers.recmodel.test_objects import OWNER, example_spec

GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
NODES = [{"metadata": {"name": f"gpu-{i}", "labels": {"nvidia.com/gpu.present": "true"}},
          "spec": {"taints": [GPU_TAINT]},
          "status": {"allocatable": {"cpu": "96", "memory": "1024Gi",
                                     "nvidia.com/gpu": "8"}}} for i in range(2)]
WEIGHTS = {"control": 60, "wide": 20, "deep": 20}


def models(gpus: int = 1):
    base = example_spec().to_wire()
    base["dense"]["resources"] = {"requests": {"cpu": "2", "memory": "4Gi"}}
    base["dense"]["gpusPerPod"] = gpus
    if not gpus:
        base["dense"]["instanceGroups"] = [{"kind": "KIND_CPU", "count": 1}]
    m = RecModelSpec.model_validate(base)
    return {"ranker": m, "ranker-wide": m, "ranker-deep": m}


def test_every_figure_names_its_source_and_overrides_win():
    s = spec(cost={"expectedQps": 1000, "overrides": [
        {"arm": "wide", "cpuCoreSecondsPer1k": 3.5}]})
    queries = costs.cost_queries(s, "ns", models(), set())
    values = {q: 2.0 if "container_cpu" in q else None for q in queries}
    out = {c.name: c for c in costs.model_costs(s, "ns", models(), WEIGHTS, set(), values)}
    assert out["wide"].cpu_core_seconds_per_1k.source == "override:spec.cost.overrides"
    assert out["control"].cpu_core_seconds_per_1k.source.startswith("prometheus:")
    assert out["control"].cpu_core_seconds_per_1k.value == 2.0
    assert 'pod=~"ranker-deep-triton-[a-z0-9]+-[a-z0-9]+"' in \
        out["deep"].cpu_core_seconds_per_1k.source
    assert out["control"].memory_bytes.source == "spec:RecModel ranker"
    assert out["control"].gpu_utilisation.source == "default"
    # The baseline is sized for all the traffic (stopped variants' users go to it).
    assert out["control"].qps.value == 1000 and out["control"].qps.source == \
        "spec:cost.expectedQps"
    assert out["wide"].qps.value == 200 and "spec:cost.expectedQps" in out["wide"].qps.source
    assert out["control"].role == "baseline" and out["wide"].role == "variant"
    sources = costs.cost_sources(list(out.values()))
    assert {x.figure for x in sources} == set(costs.FIGURES)
    assert len(sources) == 3 * len(costs.FIGURES)


def test_gpu_figures_are_queried_only_for_gpu_models_and_scale_with_qps():
    s = spec(cost={"expectedQps": 1000})
    cpu_only = costs.cost_queries(s, "ns", models(gpus=0), set())
    assert not any("nv_gpu" in q or "compute_infer" in q for q in cpu_only)
    queries = costs.cost_queries(s, "ns", models(), set())
    values = {q: 0.5 if "compute_infer" in q else 3e9 if "nv_gpu_memory" in q else None
              for q in queries}
    out = {c.name: c for c in costs.model_costs(s, "ns", models(), WEIGHTS, set(), values)}
    # 0.5 GPU-seconds per 1k requests at 200 qps keeps a GPU 10% busy.
    assert out["wide"].gpu_utilisation.value == 0.1
    assert out["wide"].gpu_utilisation.source.endswith("x 200qps")
    assert out["wide"].gpu_memory_bytes.value == 3e9
    assert out["wide"].tolerations == (
        Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule"),)
    assert out["wide"].node_selector == {"nvidia.com/gpu.present": "true"}


def test_no_data_and_nan_fall_back_to_the_recmodel_requests():
    s = spec(cost={"measurement": "prometheus"})
    queries = costs.cost_queries(s, "ns", models(), set())
    values = dict.fromkeys(queries, float("inf"))
    out = costs.model_costs(s, "ns", models(), WEIGHTS, set(), values)
    assert all(c.cpu_core_seconds_per_1k.source == "spec:RecModel " + m
               for c, m in zip(out, ("ranker", "ranker-wide", "ranker-deep"), strict=True))


def test_without_measurements_the_spec_request_is_reproduced_and_stopped_arms_go():
    s = spec(cost={"measurement": "spec"})
    assert costs.cost_queries(s, "ns", models(), set()) == []
    out = costs.model_costs(s, "ns", models(), WEIGHTS, {"wide"}, {})
    assert [c.name for c in out] == ["control", "deep"]
    assert all(c.cpu_millicores_request == 2000 for c in out)


def _previous(s, values):
    return costs.cost_sources(costs.model_costs(s, "ns", models(), WEIGHTS, set(), values))


def test_the_baseline_keeps_its_first_figures_and_variants_ignore_noise():
    s = spec()
    queries = costs.cost_queries(s, "ns", models(), set())
    cpu = [q for q in queries if "container_cpu" in q]
    first = _previous(s, dict.fromkeys(cpu, 2.0))
    noisy = costs.model_costs(s, "ns", models(), {"control": 80, "wide": 0, "deep": 20},
                              {"wide"}, dict.fromkeys(cpu, 2.1), first)
    by = {c.name: c for c in noisy}
    assert by["control"].cpu_core_seconds_per_1k.value == 2.0
    assert by["deep"].cpu_core_seconds_per_1k.value == 2.0  # within 10%: kept
    moved = {c.name: c for c in costs.model_costs(s, "ns", models(), WEIGHTS, set(),
                                                  dict.fromkeys(cpu, 3.0), first)}
    assert moved["control"].cpu_core_seconds_per_1k.value == 2.0  # the baseline never
    assert moved["deep"].cpu_core_seconds_per_1k.value == 3.0
    overridden = spec(cost={"overrides": [{"arm": "control", "cpuCoreSecondsPer1k": 5}]})
    assert costs.model_costs(overridden, "ns", models(), WEIGHTS, set(), {}, first)[0] \
        .cpu_core_seconds_per_1k.value == 5


def test_placement_keeps_the_baseline_on_its_node_and_becomes_assignments():
    s = spec(cost={"measurement": "spec"})
    pool = node_pool(NODES)
    assert pool.nodes[0].taints[0].key == "nvidia.com/gpu"
    first = solve(costs.model_costs(s, "ns", models(), WEIGHTS, set(), {}), pool,
                  current={"control": "gpu-1"})
    assigned = {a.arm: a for a in costs.assignments(s, first)}
    assert assigned["control"].node == "gpu-1" and assigned["control"].dedicated_cores
    assert assigned["deep"].model == "ranker-deep"


def test_released_arms_are_stopped_or_idle_variants_never_the_baseline():
    s = spec()
    assert released_arms(s, {"wide"}, WEIGHTS, concluded=False) == {"wide"}
    promoted = {"control": 0, "wide": 0, "deep": 100}
    assert released_arms(s, set(), promoted, concluded=True) == {"wide"}
    assert released_arms(s, set(), {"control": 100, "wide": 0, "deep": 0},
                         concluded=True) == {"wide", "deep"}


def test_a_freed_model_is_one_no_running_arm_serves():
    shared = spec(variants=[{"name": "wide", "model": "ranker-wide", "weight": 20},
                            {"name": "fresh", "model": "ranker", "version": "v2",
                             "weight": 20}])
    assert freed_models(shared, {"wide", "fresh"}) == ["ranker-wide"]
    assert freed_models(shared, set()) == []


def _abtest(name, assignments, deleting=False, freed=()):
    meta = {"name": name, **({"deletionTimestamp": "x"} if deleting else {})}
    return {"metadata": meta, "status": {"assignments": assignments,
                                         "freedModels": list(freed)}}


def _override(model, abtests):
    """override_for over the tests as the RecModel controller's index holds them."""
    return override_for((t["metadata"]["name"], placed) for t in abtests
                        for m, placed in placements(t).items() if m == model)


def test_override_for_a_model_comes_from_its_tests_assignments():
    a = {"arm": "wide", "model": "ranker-wide", "node": "gpu-0", "cpuMillicores": 1500,
         "memoryBytes": 2**30}
    tests = [_abtest("b", [a]), _abtest("a", [{**a, "node": "gpu-1"}], deleting=True)]
    assert _override("ranker-wide", tests) == PlacementOverride("gpu-0", 1500, 2**30)
    assert _override("ranker", tests) is None
    assert placements(tests[0]) != placements(_abtest("b", []))


def test_a_freed_model_runs_no_replicas_unless_another_test_places_it():
    a = {"arm": "wide", "model": "ranker-wide", "node": "gpu-0", "cpuMillicores": 1500,
         "memoryBytes": 2**30}
    freeing = _abtest("a", [], freed=["ranker-wide"])
    assert _override("ranker-wide", [freeing]) == FREED
    assert _override("ranker-wide", [freeing, _abtest("b", [a])]).node == "gpu-0"
    assert placements(freeing) != placements(_abtest("a", []))
    objects = desired_objects(OWNER, example_spec(), FREED)
    deployments = [o for o in objects if o["kind"] == "Deployment"]
    assert deployments and all(d["spec"]["replicas"] == 0 for d in deployments)
    triton = next(d for d in deployments if d["metadata"]["name"].endswith("-triton"))
    pod = triton["spec"]["template"]["spec"]
    assert HOSTNAME_LABEL not in pod.get("nodeSelector", {})


def test_triton_deployment_applies_the_override_as_requests_equal_limits():
    placed = triton_deployment(OWNER, example_spec(), PlacementOverride("gpu-0", 1500, 2**30))
    pod = placed["spec"]["template"]["spec"]
    resources = pod["containers"][0]["resources"]
    assert resources["requests"] == {"cpu": "1500m", "memory": str(2**30)}
    assert resources["limits"]["cpu"] == "1500m" and resources["limits"]["memory"] == str(2**30)
    assert pod["nodeSelector"][HOSTNAME_LABEL] == "gpu-0"
    assert placed["spec"]["replicas"] == example_spec().dense.replicas
    plain = triton_deployment(OWNER, example_spec())
    assert HOSTNAME_LABEL not in plain["spec"]["template"]["spec"].get("nodeSelector", {})
