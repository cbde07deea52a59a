"""The one status-condition builder."""

from __future__ import annotations

from controllers.common.conditions import MESSAGE_LIMIT, condition


def test_a_condition_holds_or_not_at_a_generation_with_its_message_capped():
    held = condition("Ready", True, "Serving", "all good", 4)
    assert (held.type, held.status, held.reason, held.message, held.observed_generation) == (
        "Ready", "True", "Serving", "all good", 4)
    not_held = condition("Degraded", False, "Healthy")
    assert (not_held.status, not_held.message, not_held.observed_generation) == (
        "False", "", None)
    assert len(condition("Degraded", True, "X", "x" * 10_000).message) == MESSAGE_LIMIT
