"""The rollback window: its end, when the metric is read, and the threshold."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from controllers.modelversion.window import breach, watching, window_end
from recop.api.modelversion import ModelVersionStatus, Phase
from recop.api.recmodel import RollbackPolicy

NOW = datetime(2026, 11, 23, tzinfo=UTC)
URL = "http://prometheus:9090"


def policy(**kw) -> RollbackPolicy:
    return RollbackPolicy.model_validate({"metric": "p99", "threshold": 0.5, "window": "90s"}
                                         | kw)


def test_the_window_lasts_the_policy_window_and_nothing_without_one():
    assert window_end(policy(), NOW) == NOW + timedelta(seconds=90)
    assert window_end(None, NOW) == NOW
    assert window_end(policy(enabled=False), NOW) == NOW


def test_the_metric_is_read_only_while_active_inside_the_window():
    inside = ModelVersionStatus(phase=Phase.ACTIVE, watch_until=NOW + timedelta(seconds=1))
    assert watching(inside, policy(), URL, NOW)
    assert not watching(inside.model_copy(update={"watch_until": NOW}), policy(), URL, NOW)
    assert not watching(inside.model_copy(update={"phase": Phase.LOADING}), policy(), URL, NOW)
    assert not watching(inside, None, URL, NOW)
    assert not watching(inside, policy(enabled=False), URL, NOW)
    assert not watching(inside, policy(), None, NOW)  # no Prometheus configured


def test_a_breach_is_past_the_threshold_in_the_policy_direction():
    assert breach(policy(), 0.9) == "p99 = 0.9, GreaterThan 0.5"
    assert breach(policy(), 0.5) is None  # equal is not past
    assert breach(policy(), None) is None  # no data
    assert breach(policy(comparison="LessThan"), 0.1) == "p99 = 0.1, LessThan 0.5"
    assert breach(policy(comparison="LessThan"), 0.9) is None
