"""The named tests against reference p-values (computed once with scipy 1.16:
ttest_ind(equal_var=False), mannwhitneyu(method="asymptotic"), the pooled z formula),
and the verdict built on them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from controllers import abtest_stats as stats
from controllers.abtest_verdict import decide
from tests.test_abtest_controller import spec

A = [2.1, 2.5, 2.2, 2.8, 3.0, 2.4, 2.6, 2.9]
B = [1.8, 2.0, 2.3, 1.9, 2.2, 2.1, 1.7, 2.0, 2.4, 1.6]
NOW = datetime(2026, 11, 23, tzinfo=UTC)


def test_welch_t_matches_scipy():
    assert stats.welch_t(A, B) == pytest.approx(0.0014855481071457163, rel=1e-9)


def test_mann_whitney_u_matches_scipy_with_and_without_ties():
    assert stats.mann_whitney_u(A, B) == pytest.approx(0.0033012653122439072, rel=1e-9)
    assert stats.mann_whitney_u([1, 2, 2, 3, 3, 3, 4], [2, 3, 3, 4, 4, 5, 5, 5]) == \
        pytest.approx(0.049238967838553395, rel=1e-9)


def test_two_proportion_z_matches_the_pooled_formula():
    assert stats.two_proportion_z(120, 1000, 150, 1000) == \
        pytest.approx(0.04964038686536878, rel=1e-9)


def test_identical_samples_are_not_significant():
    assert stats.welch_t([1.0] * 5, [1.0] * 5) == 1.0
    assert stats.mann_whitney_u([1.0] * 5, [1.0] * 5) == 1.0


def _spec(**analysis):
    return spec(analysis={"minSamples": 10, **analysis})


def test_a_significant_better_variant_wins_and_promote_is_a_verdict_action():
    samples = {"control": B * 2, "wide": A * 2, "deep": B * 2}
    verdict = decide(_spec(onSuccess="Promote"), samples, set(), NOW)
    assert (verdict.winner, verdict.action, verdict.test) == ("wide", "Promote", "welch-t")
    assert verdict.p_value < 0.05
    assert decide(_spec(), samples, set(), NOW).action == "Keep"


def test_no_winner_discards_and_stopped_or_thin_variants_never_win():
    samples = {"control": B * 2, "wide": A * 2, "deep": A}
    verdict = decide(_spec(test="mann-whitney-u"), samples, {"wide"}, NOW)
    assert verdict.action == "Discard" and verdict.winner is None
    assert "stopped" in verdict.summary and "8 samples" in verdict.summary
    lower = spec(analysis={"minSamples": 10},
                 successMetric={"name": "latency", "query": "q", "goal": "Decrease"})
    assert decide(lower, {"control": B * 2, "wide": A * 2, "deep": B * 2}, set(),
                  NOW).action == "Discard"


def test_two_proportion_z_is_named_but_keeps_the_baseline():
    verdict = decide(_spec(test="two-proportion-z"), {}, set(), NOW)
    assert (verdict.action, verdict.test) == ("Keep", "two-proportion-z")
