"""The verdict at the end of a test: the named test of each running variant against the
baseline on the success metric, then Promote (the best significant winner, when
analysis.onSuccess is Promote), Keep (a significant winner, onSuccess Keep) or Discard.

Two kinds of success metric, each with its tests:
- a value per arm (successMetric.query), sampled once per step over the test: Welch's t
  or Mann-Whitney U on the samples;
- a proportion per arm (successMetric.successes / trials), counted over the test: the
  pooled two-proportion z-test on the counts.

Promote is a status verdict and an Event, never a spec write: the user or the GitOps
pipeline makes the winner's version the baseline model's active version.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from controllers.abtest import stats
from controllers.abtest.guardrails import arm_query
from recop.api.abtest import ABTestSpec, Verdict

SAMPLE_TESTS = {"welch-t": stats.welch_t, "mann-whitney-u": stats.mann_whitney_u}


@dataclass(frozen=True)
class Counts:
    successes: float
    trials: float


def count_queries(spec: ABTestSpec, started_at: datetime, now: datetime
                  ) -> dict[str, tuple[str, str]]:
    """arm -> (successes, trials) PromQL over the test so far, `$window` filled in."""
    metric = spec.success_metric
    window = f"{max(1, int((now - started_at).total_seconds()))}s"
    return {arm.name: tuple(arm_query(q, arm.name).replace("$window", window)
                            for q in (metric.successes, metric.trials))
            for arm in (spec.baseline, *spec.variants)}


def decide(spec: ABTestSpec, samples: Mapping[str, Sequence[float]], stopped: set[str],
           now: datetime, counts: Mapping[str, Counts] | None = None) -> Verdict:
    """`samples`: per arm, the success query's values (sample tests); `counts`: per arm,
    successes and trials (two-proportion-z)."""
    analysis = spec.analysis
    alpha = 1 - analysis.confidence
    increase = spec.success_metric.goal == "Increase"
    best: tuple[float, str, float] | None = None
    lines = []
    for v in spec.variants:
        if v.name in stopped:
            lines.append(f"{v.name}: stopped by a guardrail")
            continue
        if analysis.test == "two-proportion-z":
            result = _proportions(spec, (counts or {}).get(v.name),
                                  (counts or {}).get(spec.baseline.name))
        else:
            result = _samples(spec, samples.get(v.name, ()),
                              samples.get(spec.baseline.name, ()))
        if isinstance(result, str):
            lines.append(f"{v.name}: {result}")
            continue
        lift, p = result
        lines.append(f"{v.name}: lift {lift:+.4g}, p={p:.3g}")
        better = lift > 0 if increase else lift < 0
        if better and p < alpha and (best is None or abs(lift) > abs(best[0])):
            best = (lift, v.name, p)
    if best is None:
        return Verdict(test=analysis.test, decided_at=now, action="Discard",
                       summary="no variant beat the baseline; " + "; ".join(lines))
    action = "Promote" if analysis.on_success == "Promote" else "Keep"
    return Verdict(winner=best[1], test=analysis.test, p_value=best[2], decided_at=now,
                   action=action, summary="; ".join(lines))


def _samples(spec: ABTestSpec, arm: Sequence[float],
             base: Sequence[float]) -> tuple[float, float] | str:
    """(lift of the means, p) or why there is none."""
    needed = spec.analysis.min_samples
    if min(len(arm), len(base)) < needed:
        return f"{len(arm)} samples (baseline {len(base)}), {needed} needed"
    p = SAMPLE_TESTS[spec.analysis.test](arm, base)
    return sum(arm) / len(arm) - sum(base) / len(base), p


def _proportions(spec: ABTestSpec, arm: Counts | None,
                 base: Counts | None) -> tuple[float, float] | str:
    """(lift of the rates, p) or why there is none. Counts from increase() are
    extrapolated, so they are rounded to whole events."""
    if arm is None or base is None:
        return "no counts"
    s_a, n_a, s_b, n_b = (round(x) for x in (arm.successes, arm.trials,
                                             base.successes, base.trials))
    needed = spec.analysis.min_samples
    if min(n_a, n_b) < needed:
        return f"{n_a} trials (baseline {n_b}), {needed} needed"
    if not (0 <= s_a <= n_a and 0 <= s_b <= n_b):
        return f"successes outside 0..trials ({s_a}/{n_a}, baseline {s_b}/{n_b})"
    return s_a / n_a - s_b / n_b, stats.two_proportion_z(s_a, n_a, s_b, n_b)
