"""The cost model's inputs for an ABTest, each figure with its source, and the
assignments that come out. Pure: Prometheus comes in as a `sample(query)` function.

Figures, first found wins: the spec's cost override ("override:spec.cost.overrides"),
Prometheus history when cost.measurement is prometheus (the query is the source), the
arm RecModel's requested resources ("spec:RecModel <name>"). Placement packs one Triton
pod per arm (the cost model's unit).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from costmodel import Measured, ModelCost, Node, NodePool, Placement, split_qps
from recop.api.abtest import ABTestSpec, Assignment, CostSource
from recop.api.recmodel import RecModelSpec
from recop.quantity import parse

GPU_RESOURCE = "nvidia.com/gpu"
GPU_NODE_LABEL = "nvidia.com/gpu.present"
# PromQL over the last hour of the arm model's Triton pods (cAdvisor and Triton metrics).
CPU_QUERY = ('1000 * sum(rate(container_cpu_usage_seconds_total{{namespace="{ns}",'
             'pod=~"{model}-triton-.*"}}[1h])) / sum(rate(nv_inference_request_success'
             '{{namespace="{ns}",pod=~"{model}-triton-.*"}}[1h]))')
MEMORY_QUERY = ('max(max_over_time(container_memory_working_set_bytes{{namespace="{ns}",'
                'pod=~"{model}-triton-.*"}}[1h]))')


def node_pool(nodes: list[dict]) -> NodePool:
    """Schedulable nodes, as the cost model sees them."""
    out = []
    for node in nodes:
        if node.get("spec", {}).get("unschedulable"):
            continue
        alloc = node.get("status", {}).get("allocatable", {})
        out.append(Node(name=node["metadata"]["name"],
                        cpu_millicores=int(parse(alloc.get("cpu", "0")) * 1000),
                        memory_bytes=int(parse(alloc.get("memory", "0"))),
                        gpu_count=int(parse(alloc.get(GPU_RESOURCE, "0"))),
                        labels=node["metadata"].get("labels", {})))
    return NodePool(nodes=tuple(out))


def _figure(override: float | None, query: str | None,
            sample: Callable[[str], float | None], fallback: Measured) -> Measured:
    if override is not None:
        return Measured(value=override, source="override:spec.cost.overrides")
    if query is not None:
        value = sample(query)
        if value is not None:
            return Measured(value=value, source=f"prometheus:{query}")
    return fallback


def model_costs(spec: ABTestSpec, namespace: str, models: Mapping[str, RecModelSpec],
                weights: Mapping[str, int], stopped: set[str],
                sample: Callable[[str], float | None]) -> list[ModelCost]:
    """A ModelCost per running arm, sized for its share of the expected traffic."""
    running = [a for a in (spec.baseline, *spec.variants) if a.name not in stopped]
    qps = split_qps(Measured(value=spec.cost.expected_qps, source="spec:cost.expectedQps"),
                    {a.name: max(weights.get(a.name, 0), 1) for a in running})
    overrides = {o.arm: o for o in spec.cost.overrides}
    prometheus = spec.cost.measurement == "prometheus"
    costs = []
    for arm in running:
        dense = models[arm.model].dense
        source = f"spec:RecModel {arm.model}"
        o = overrides.get(arm.name)
        requests = dense.resources.requests
        # Without a measurement, the model's CPU request at the expected qps.
        cpu_cores = float(parse(requests.cpu)) if requests.cpu else 1.0
        fallback_cpu = Measured(value=cpu_cores * 1000 / max(qps[arm.name].value, 1e-9)
                                * spec.cost.target_utilisation, source=source)
        q = {"ns": namespace, "model": arm.model}
        costs.append(ModelCost(
            name=arm.name, role="baseline" if arm is spec.baseline else "variant",
            qps=qps[arm.name],
            cpu_core_seconds_per_1k=_figure(
                o.cpu_core_seconds_per_1k if o else None,
                CPU_QUERY.format(**q) if prometheus else None, sample, fallback_cpu),
            memory_bytes=_figure(
                o.memory_bytes if o else None, MEMORY_QUERY.format(**q) if prometheus else None,
                sample, Measured(value=float(parse(requests.memory or "1Gi")), source=source)),
            target_utilisation=spec.cost.target_utilisation,
            node_selector={GPU_NODE_LABEL: "true"} if dense.gpus_per_pod > 0 else {}))
    return costs


def assignments(spec: ABTestSpec, placement: Placement) -> list[Assignment]:
    models = {a.name: a.model for a in (spec.baseline, *spec.variants)}
    return [Assignment(arm=p.model, model=models[p.model], node=p.node,
                       cpu_millicores=p.cpu_request_millicores, dedicated_cores=p.dedicated,
                       gpu_index=p.gpu_index, gpu_share=p.gpu_share,
                       memory_bytes=p.memory_request_bytes) for p in placement.models]


def cost_sources(costs: list[ModelCost]) -> list[CostSource]:
    return [CostSource(arm=c.name, figure=figure, value=getattr(c, figure).value,
                       source=getattr(c, figure).source)
            for c in costs for figure in ("qps", "cpu_core_seconds_per_1k", "memory_bytes")]
