"""The operator's own Prometheus metrics behind the chart's alerting rules and dashboard
(charts/recop/files/): what only the operator knows, so no kube-state-metrics is needed.

Every series carries the object's `namespace` and the RecModel (`recmodel`) or ABTest
(`abtest`) name, the labels the rules group by. The operator serves the default registry
(operator/cli.py), so defining them here is enough; the handlers call the functions below.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

INFO = Gauge("recop_operator_info", "1 per running operator replica (acting or standby)")
INFO.set(1)
HANDLED = Counter("recop_operator_reconciles", "Handler runs, by kind and result (ok, error)",
                  ["kind", "result"])
SHARD_READY = Gauge("recop_recmodel_shard_ready_replicas",
                    "Ready replicas of each shard, from its EndpointSlices",
                    ["namespace", "recmodel", "shard"])
FRESHNESS_OBJECTIVE = Gauge("recop_recmodel_freshness_objective_seconds",
                            "The RecModel's freshness objective (p99 publish-to-visible)",
                            ["namespace", "recmodel"])
ROLLBACKS = Counter("recop_modelversion_rollbacks",
                    "Versions rolled back, by reason (MetricBreach, GoldenSetMismatch, ...)",
                    ["namespace", "recmodel", "modelversion", "reason"])
GUARDRAIL_BREACHES = Counter("recop_abtest_guardrail_breaches",
                             "Variants stopped by a guardrail breach",
                             ["namespace", "abtest", "arm"])
# `recmodel`: the arm's model, so dashboards can join the arm to its servers' traffic.
ARM_WEIGHT = Gauge("recop_abtest_arm_weight_percent", "Traffic weight routed to each arm",
                   ["namespace", "abtest", "arm", "recmodel"])
ARM_COST = Gauge("recop_abtest_arm_cost", "Each arm's cost figures (status.costs), by figure",
                 ["namespace", "abtest", "arm", "figure"])


def handled(kind: str, ok: bool) -> None:
    HANDLED.labels(kind, "ok" if ok else "error").inc()


def shard_ready(namespace: str, recmodel: str, ready: list[int]) -> None:
    """`ready[i]`: ready replicas of shard i (what the RecModel status is computed from)."""
    for shard, count in enumerate(ready):
        SHARD_READY.labels(namespace, recmodel, str(shard)).set(count)


def freshness_objective(namespace: str, recmodel: str, seconds: float | None) -> None:
    if seconds is None:
        _remove(FRESHNESS_OBJECTIVE, namespace=namespace, recmodel=recmodel)
    else:
        FRESHNESS_OBJECTIVE.labels(namespace, recmodel).set(seconds)


def rolled_back(namespace: str, recmodel: str, modelversion: str, reason: str) -> None:
    ROLLBACKS.labels(namespace, recmodel, modelversion, reason).inc()


def guardrail_breached(namespace: str, abtest: str, arm: str) -> None:
    GUARDRAIL_BREACHES.labels(namespace, abtest, arm).inc()


def arm_figures(namespace: str, abtest: str, arm: str, recmodel: str, weight_percent: float,
                costs: dict[str, float]) -> None:
    ARM_WEIGHT.labels(namespace, abtest, arm, recmodel).set(weight_percent)
    for figure, value in costs.items():
        ARM_COST.labels(namespace, abtest, arm, figure).set(value)


def forget_recmodel(namespace: str, recmodel: str) -> None:
    """On deletion: a deleted model's shards must not look unready."""
    for metric in (SHARD_READY, FRESHNESS_OBJECTIVE):
        _remove(metric, namespace=namespace, recmodel=recmodel)


def forget_abtest(namespace: str, abtest: str) -> None:
    for metric in (ARM_WEIGHT, ARM_COST):
        _remove(metric, namespace=namespace, abtest=abtest)



def _remove(metric: Gauge, **match: str) -> None:
    """Remove the series whose labels include `match` (gauges: one sample per series)."""
    for sample in list(metric.collect()[0].samples):
        if all(sample.labels.get(k) == v for k, v in match.items()):
            metric.remove(*sample.labels.values())
