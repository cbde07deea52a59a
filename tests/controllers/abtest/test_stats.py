"""The named tests against reference p-values (computed once with scipy 1.16:
ttest_ind(equal_var=False), mannwhitneyu(method="asymptotic"), the pooled z formula),
and the verdict built on them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from controllers.abtest import stats
from controllers.abtest.verdict import Counts, count_queries, decide
from tests.controllers.abtest.test_controller import spec

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


def _proportions(**analysis):
    return spec(analysis={"test": "two-proportion-z", "minSamples": 1000, **analysis},
                successMetric={"name": "ctr",
                               "successes": 'sum(increase(clicks{arm="$arm"}[$window]))',
                               "trials": 'sum(increase(shows{arm="$arm"}[$window]))'})


def test_two_proportion_z_by_hand():
    # pooled 80/400 = 0.2, se = sqrt(0.2 * 0.8 * (1/200 + 1/200)) = 0.04,
    # z = (0.15 - 0.25) / 0.04 = -2.5, p = erfc(2.5 / sqrt 2).
    assert stats.two_proportion_z(30, 200, 50, 200) == \
        pytest.approx(0.012419330651552318, rel=1e-12)
    assert stats.two_proportion_z(50, 100, 50, 100) == 1.0
    assert stats.two_proportion_z(0, 100, 0, 100) == 1.0


def test_count_queries_fill_in_the_arm_and_the_time_since_the_start():
    queries = count_queries(_proportions(), NOW - timedelta(hours=1), NOW)
    assert queries["deep"] == ('sum(increase(clicks{arm="deep"}[3600s]))',
                               'sum(increase(shows{arm="deep"}[3600s]))')
    assert set(queries) == {"control", "wide", "deep"}


def test_two_proportion_z_on_counts_names_the_test_and_picks_the_winner():
    counts = {"control": Counts(1000, 10_000), "wide": Counts(1010, 10_000),
              "deep": Counts(1150.4, 10_000.2)}
    verdict = decide(_proportions(onSuccess="Promote"), {}, set(), NOW, counts)
    assert (verdict.winner, verdict.action, verdict.test) == \
        ("deep", "Promote", "two-proportion-z")
    assert verdict.p_value == pytest.approx(stats.two_proportion_z(1150, 10_000, 1000, 10_000))
    assert "wide: lift +0.001" in verdict.summary


def test_two_proportion_z_without_enough_trials_or_with_bad_counts_discards():
    counts = {"control": Counts(10, 500), "wide": Counts(400, 300), "deep": Counts(90, 500)}
    verdict = decide(_proportions(minSamples=100), {}, {"deep"}, NOW, counts)
    assert verdict.action == "Discard" and verdict.test == "two-proportion-z"
    assert "successes outside 0..trials" in verdict.summary
    thin = decide(_proportions(), {}, set(), NOW, counts)
    assert "500 trials (baseline 500), 1000 needed" in thin.summary
    assert "no counts" in decide(_proportions(), {}, set(), NOW).summary
