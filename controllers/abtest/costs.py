"""The cost model's inputs for an ABTest, each figure with its source, and the
assignments that come out. Pure: Prometheus values come in as a mapping query -> value.

Figures, first found wins: the spec's cost override (`override:spec.cost.overrides`);
the history of the arm model's Triton pods over cost.window when cost.measurement is
prometheus (`prometheus:<query>`); the arm RecModel's requests (`spec:RecModel <name>`);
a default (`default`). The queries read cAdvisor (container_*) and Triton (nv_*)
metrics with the `namespace` and `pod` labels a pod scrape (PodMonitor, the usual
kubernetes-pods job) adds. Placement packs one Triton pod per arm (the cost model's unit).

Stability: the baseline is sized once, for the whole expected qps (every stopped
variant's share goes to it), and keeps its figures while the test runs, so re-packs never
replace its pods; a variant keeps its last figure while a new measurement stays within
SETTLE of it, so noise does not restart its pods every check.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from controllers.common.nodes import cost_tolerations, pod_selector
from costmodel import Measured, ModelCost, Placement, split_qps
from recop.api.abtest import ABTestSpec, Arm, Assignment, CostSource
from recop.api.recmodel import RecModelSpec
from recop.quantity import parse

SETTLE = 0.1  # relative change of a measured figure that re-sizes a variant
DEFAULT_CPU_CORES = 1.0
DEFAULT_MEMORY = "1Gi"

# An arm's Triton pods: `<model>-triton-<replicaset hash>-<pod hash>`.
_PODS = 'namespace="{ns}",pod=~"{model}-triton-[a-z0-9]+-[a-z0-9]+"'
_REQUESTS = "sum(rate(nv_inference_request_success{{{pods}}}[{w}]))"
QUERIES = {
    # Core-seconds of the Triton container per 1,000 requests it answered.
    "cpuCoreSecondsPer1k": "1000 * sum(rate(container_cpu_usage_seconds_total{{{pods},"
                           'container="triton"}}[{w}])) / ' + _REQUESTS,
    "memoryBytes": 'max(max_over_time(container_memory_working_set_bytes{{{pods},'
                   'container="triton"}}[{w}]))',
    # Seconds of model execution (GPU busy time) per 1,000 requests: x qps = utilisation.
    "gpuSecondsPer1k": "sum(rate(nv_inference_compute_infer_duration_us{{{pods}}}[{w}])) "
                       "/ 1000 / " + _REQUESTS,
    "gpuMemoryBytes": "max(max_over_time(nv_gpu_memory_used_bytes{{{pods}}}[{w}]))",
}
FIGURES = ("qps", "cpuCoreSecondsPer1k", "memoryBytes", "gpuMemoryBytes", "gpuUtilisation")


def _running(spec: ABTestSpec, stopped: set[str]) -> list[Arm]:
    return [a for a in (spec.baseline, *spec.variants) if a.name not in stopped]


def arm_queries(spec: ABTestSpec, namespace: str, arm: Arm,
                models: Mapping[str, RecModelSpec]) -> dict[str, str]:
    """figure -> PromQL for one arm; none unless cost.measurement is prometheus."""
    if spec.cost.measurement != "prometheus":
        return {}
    pods = _PODS.format(ns=namespace, model=arm.model)
    gpu = models[arm.model].dense.gpus_per_pod > 0
    return {figure: query.format(pods=pods, w=spec.cost.window)
            for figure, query in QUERIES.items() if gpu or not figure.startswith("gpu")}


def cost_queries(spec: ABTestSpec, namespace: str, models: Mapping[str, RecModelSpec],
                 stopped: set[str]) -> list[str]:
    """Every query model_costs will look up, for the controller to run."""
    return sorted({q for arm in _running(spec, stopped)
                   for q in arm_queries(spec, namespace, arm, models).values()})


def model_costs(spec: ABTestSpec, namespace: str, models: Mapping[str, RecModelSpec],
                weights: Mapping[str, int], stopped: set[str],
                values: Mapping[str, float | None],
                previous: Sequence[CostSource] = ()) -> list[ModelCost]:
    """A ModelCost per running arm: the baseline sized for the whole expected qps, each
    variant for its share of it under the current weights. `values`: query -> value
    (None: no data); `previous`: the figures of the last placement (status.costSources)."""
    expected = Measured(value=spec.cost.expected_qps, source="spec:cost.expectedQps")
    running = _running(spec, stopped)
    variant_qps = split_qps(expected, {a.name: max(weights.get(a.name, 0), 1)
                                       for a in running})
    overrides = {o.arm: o for o in spec.cost.overrides}
    before = {(c.arm, c.figure): Measured(value=c.value, source=c.source) for c in previous}
    costs = []
    for arm in running:
        baseline = arm is spec.baseline
        qps = expected if baseline else variant_qps[arm.name]
        figures = _figures(spec, namespace, arm, models, qps, values)
        o = overrides.get(arm.name)
        for figure, value in (("cpuCoreSecondsPer1k", o and o.cpu_core_seconds_per_1k),
                              ("memoryBytes", o and o.memory_bytes),
                              ("gpuMemoryBytes", o and o.gpu_memory_bytes),
                              ("gpuUtilisation", o and o.gpu_utilisation)):
            if value is not None:
                figures[figure] = Measured(value=value, source="override:spec.cost.overrides")
        for figure, new in figures.items():
            figures[figure] = _settle(before.get((arm.name, figure)), new, baseline)
        dense = models[arm.model].dense
        placement = models[arm.model].dense_placement
        gpu = dense.gpus_per_pod > 0
        costs.append(ModelCost(
            name=arm.name, role="baseline" if baseline else "variant",
            qps=figures["qps"], cpu_core_seconds_per_1k=figures["cpuCoreSecondsPer1k"],
            memory_bytes=figures["memoryBytes"], gpu_memory_bytes=figures["gpuMemoryBytes"],
            gpu_utilisation=figures["gpuUtilisation"],
            target_utilisation=spec.cost.target_utilisation,
            # As the RecModel controller gives the Triton pods.
            node_selector=pod_selector(placement, gpu),
            tolerations=cost_tolerations(placement, gpu)))
    return costs


def _figures(spec: ABTestSpec, namespace: str, arm: Arm, models: Mapping[str, RecModelSpec],
             qps: Measured, values: Mapping[str, float | None]) -> dict[str, Measured]:
    """Measured where Prometheus has a finite value, else the RecModel's requests or a
    default (its CPU request turned into a cost per 1k requests at this qps)."""
    requests = models[arm.model].dense.resources.requests
    source = f"spec:RecModel {arm.model}"
    cpu = Measured(value=float(parse(requests.cpu)), source=source) if requests.cpu \
        else Measured(value=DEFAULT_CPU_CORES, source="default")
    figures = {
        "qps": qps,
        "cpuCoreSecondsPer1k": Measured(
            value=cpu.value * 1000 / max(qps.value, 1e-9) * spec.cost.target_utilisation,
            source=cpu.source),
        "memoryBytes": Measured(value=float(parse(requests.memory)), source=source)
        if requests.memory else Measured(value=float(parse(DEFAULT_MEMORY)), source="default"),
        "gpuMemoryBytes": Measured(value=0, source="default"),
        "gpuUtilisation": Measured(value=0, source="default"),
    }
    for figure, query in arm_queries(spec, namespace, arm, models).items():
        value = values.get(query)
        if value is None or not 0 <= value < float("inf"):
            continue
        if figure == "gpuSecondsPer1k":
            figures["gpuUtilisation"] = Measured(
                value=value * qps.value / 1000, source=f"prometheus:{query} x {qps.value:g}qps")
        else:
            figures[figure] = Measured(value=value, source=f"prometheus:{query}")
    return figures


def _settle(before: Measured | None, new: Measured, baseline: bool) -> Measured:
    """The figure to pack with: the previous one for the baseline (unless the user
    overrides it) and for a variant whose new measurement by the same query stays
    within SETTLE of it (figures from the spec carry no noise to settle)."""
    if before is None or new.source.startswith("override:"):
        return new
    if baseline:
        return before
    close = abs(new.value - before.value) <= SETTLE * before.value
    measured = new.source.startswith("prometheus:") and new.source == before.source
    return before if close and measured else new


def assignments(spec: ABTestSpec, placement: Placement) -> list[Assignment]:
    models = {a.name: a.model for a in (spec.baseline, *spec.variants)}
    return [Assignment(arm=p.model, model=models[p.model], node=p.node,
                       cpu_millicores=p.cpu_request_millicores, dedicated_cores=p.dedicated,
                       gpu_index=p.gpu_index, gpu_share=p.gpu_share,
                       memory_bytes=p.memory_request_bytes) for p in placement.models]


def cost_sources(costs: list[ModelCost]) -> list[CostSource]:
    attributes = dict(zip(FIGURES, ("qps", "cpu_core_seconds_per_1k", "memory_bytes",
                                    "gpu_memory_bytes", "gpu_utilisation"), strict=True))
    return [CostSource(arm=c.name, figure=figure, value=getattr(c, attr).value,
                       source=getattr(c, attr).source)
            for c in costs for figure, attr in attributes.items()]
