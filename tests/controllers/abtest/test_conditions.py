"""An ABTest's conditions from what a reconcile found, and the API rules of its success
metric."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from controllers.abtest.conditions import Outcome, conditions, message_of
from controllers.abtest.guardrails import guardrail_queries
from recop.api.abtest import Phase, Verdict
from tests.controllers.abtest.test_controller import spec

ROUTED = Outcome(True, "RoutesApplied", "weights control 60%, wide 20%, deep 20%")
PLACED = Outcome(True, "Placed", "3 arm(s) on 5 core(s)")


def by_type(conds):
    return {c.type: c for c in conds}


def run(previous=(), generation=4, **changes):
    found = {"phase": Phase.RUNNING, "percent": 100, "routed": ROUTED, "placed": PLACED,
             "breaches": {}, "stopped": [], "verdict": None, "problems": [], **changes}
    return conditions(list(previous), generation, **found)


def test_a_running_test_is_ready_and_every_condition_carries_the_generation():
    c = by_type(run())
    assert {k: (v.status.value, v.reason) for k, v in c.items()} == {
        "Routed": ("True", "RoutesApplied"), "Placed": ("True", "Placed"),
        "GuardrailBreached": ("False", "WithinGuardrails"),
        "Concluded": ("False", "InProgress"), "Progressing": ("False", "Running"),
        "Degraded": ("False", "AsExpected"), "Ready": ("True", "Serving")}
    assert {v.observed_generation for v in c.values()} == {4}


def test_ramping_is_progressing():
    c = by_type(run(phase=Phase.RAMPING, percent=40))
    assert c["Progressing"].status.value == "True"
    assert c["Progressing"].message == "variants at 40% of their weights"


def test_cannot_place_is_degraded_and_not_ready_with_the_reason():
    refused = Outcome(False, "CannotPlace", "cannot place 'wide': short of cpu cores by 3")
    c = by_type(run(placed=refused))
    assert (c["Placed"].status.value, c["Placed"].reason) == ("False", "CannotPlace")
    assert c["Degraded"].status.value == "True" and c["Degraded"].reason == "CannotPlace"
    assert "short of cpu cores" in c["Degraded"].message
    assert (c["Ready"].status.value, c["Ready"].reason) == ("False", "CannotPlace")


def test_a_breach_is_reported_and_remembered_but_is_not_degraded():
    first = run(breaches={"wide": "guardrail errors: 0.5 GreaterThan 0.05"},
                stopped=["wide"])
    c = by_type(first)
    assert c["GuardrailBreached"].status.value == "True"
    assert c["GuardrailBreached"].message == \
        "stopped wide: guardrail errors: 0.5 GreaterThan 0.05"
    assert c["Degraded"].status.value == "False" and c["Ready"].status.value == "True"
    later = by_type(run(first, stopped=["wide"]))
    assert later["GuardrailBreached"].message == c["GuardrailBreached"].message
    assert later["GuardrailBreached"].last_transition_time == \
        c["GuardrailBreached"].last_transition_time
    both = by_type(run(first, breaches={"deep": "guardrail errors: 0.2 GreaterThan 0.05"},
                       stopped=["wide", "deep"]))
    assert both["GuardrailBreached"].message.count("stopped") == 2


def test_unreadable_metrics_are_degraded_with_prometheus_message():
    c = by_type(run(problems=["query 'x{' failed: bad_data: parse error"]))
    assert (c["Degraded"].status.value, c["Degraded"].reason) == ("True", "MetricsUnavailable")
    assert "parse error" in c["Degraded"].message
    assert message_of(list(c.values()), "Degraded") == c["Degraded"].message
    assert message_of(list(c.values()), "Concluded") is None


def test_a_verdict_names_its_test():
    verdict = Verdict(winner="deep", test="two-proportion-z", p_value=0.0123,
                      action="Promote", decided_at=datetime(2026, 11, 23, tzinfo=UTC),
                      summary="deep: lift +0.015, p=0.0123")
    c = by_type(run(phase=Phase.CONCLUDED, verdict=verdict))
    assert (c["Concluded"].status.value, c["Concluded"].reason) == ("True", "Promote")
    assert c["Concluded"].message.startswith("two-proportion-z: winner deep, p=0.0123")
    assert c["Ready"].message.endswith("concluded")


def test_missing_arm_model_before_any_placement():
    missing = Outcome(False, "RecModelMissing", "RecModel ctr-b (arm wide) does not exist")
    c = by_type(run(placed=missing))
    assert (c["Ready"].status.value, c["Ready"].reason) == ("False", "RecModelMissing")


def test_guardrail_queries_skip_stopped_variants_and_the_baseline():
    assert guardrail_queries(spec(), {"wide"}) == ['errors{arm="deep"}']


def test_a_success_metric_is_a_query_or_a_proportion_matching_the_test():
    counts = {"name": "ctr", "successes": "s", "trials": "t"}
    spec(successMetric=counts, analysis={"test": "two-proportion-z"})
    with pytest.raises(ValidationError, match="either a query or both"):
        spec(successMetric={"name": "ctr", "successes": "s"},
             analysis={"test": "two-proportion-z"})
    with pytest.raises(ValidationError, match="two-proportion-z needs"):
        spec(successMetric=counts)
    with pytest.raises(ValidationError, match="two-proportion-z needs"):
        spec(analysis={"test": "two-proportion-z"})
