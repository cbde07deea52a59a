"""The operator's metrics behind the alerts: series per object, gone with the object."""

from __future__ import annotations

from prometheus_client import REGISTRY

from controllers.common import metrics


def value(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_a_deleted_model_leaves_no_shard_series():
    metrics.shard_ready("ns", "gone", [2, 0])
    metrics.shard_ready("ns", "kept", [1])
    metrics.freshness_objective("ns", "gone", 1.0)
    assert value("recop_recmodel_shard_ready_replicas", namespace="ns", recmodel="gone",
                 shard="1") == 0
    metrics.forget_recmodel("ns", "gone")
    assert value("recop_recmodel_shard_ready_replicas", namespace="ns", recmodel="gone",
                 shard="0") is None
    assert value("recop_recmodel_freshness_objective_seconds", namespace="ns",
                 recmodel="gone") is None
    assert value("recop_recmodel_shard_ready_replicas", namespace="ns", recmodel="kept",
                 shard="0") == 1


def test_events_count_and_arms_report_and_go():
    metrics.rolled_back("ns", "m", "v7", "MetricBreach")
    metrics.guardrail_breached("ns", "t", "b")
    metrics.handled("RecModel", ok=False)
    metrics.arm_figures("ns", "t", "b", "ranker-b", 25, {"cpuCoreSecondsPer1k": 3.5})
    assert value("recop_modelversion_rollbacks_total", namespace="ns", recmodel="m",
                 modelversion="v7", reason="MetricBreach") >= 1
    assert value("recop_abtest_guardrail_breaches_total", namespace="ns", abtest="t",
                 arm="b") >= 1
    assert value("recop_operator_reconciles_total", kind="RecModel", result="error") >= 1
    assert value("recop_abtest_arm_cost", namespace="ns", abtest="t", arm="b",
                 figure="cpuCoreSecondsPer1k") == 3.5
    metrics.forget_abtest("ns", "t")
    assert value("recop_abtest_arm_weight_percent", namespace="ns", abtest="t", arm="b") is None
    assert value("recop_operator_info") == 1
