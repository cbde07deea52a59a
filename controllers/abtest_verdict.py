"""The verdict at the end of a test: the named test of each running variant against the
baseline on the success metric, then Promote (the best significant winner, when
analysis.onSuccess is Promote), Keep (a significant winner, onSuccess Keep) or Discard.

Promote is a status verdict and an Event, never a spec write: the user or the GitOps
pipeline makes the winner's version the baseline model's active version.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from controllers import abtest_stats as stats
from recop.api.abtest import ABTestSpec, Verdict

# Tests on per-interval samples of the success metric; two-proportion-z needs success
# and trial counts, which the success metric (one PromQL value per arm) does not give.
SAMPLE_TESTS = {"welch-t": stats.welch_t, "mann-whitney-u": stats.mann_whitney_u}


def decide(spec: ABTestSpec, samples: Mapping[str, Sequence[float]], stopped: set[str],
           now: datetime) -> Verdict:
    analysis = spec.analysis
    name = analysis.test
    if name not in SAMPLE_TESTS:
        return Verdict(test=name, decided_at=now, action="Keep",
                       summary=f"{name} is not supported on a success-metric query: "
                               "the baseline is kept")
    base = samples.get(spec.baseline.name, ())
    alpha = 1 - analysis.confidence
    best: tuple[float, str, float] | None = None
    lines = []
    for v in spec.variants:
        arm = samples.get(v.name, ())
        if v.name in stopped:
            lines.append(f"{v.name}: stopped by a guardrail")
            continue
        if min(len(arm), len(base)) < analysis.min_samples:
            lines.append(f"{v.name}: {len(arm)} samples, {analysis.min_samples} needed")
            continue
        p = SAMPLE_TESTS[name](arm, base)
        lift = sum(arm) / len(arm) - sum(base) / len(base)
        better = lift > 0 if spec.success_metric.goal == "Increase" else lift < 0
        lines.append(f"{v.name}: lift {lift:+.4g}, p={p:.3g}")
        if better and p < alpha and (best is None or abs(lift) > abs(best[0])):
            best = (lift, v.name, p)
    if best is None:
        return Verdict(test=name, decided_at=now, action="Discard",
                       summary="no variant beat the baseline; " + "; ".join(lines))
    action = "Promote" if analysis.on_success == "Promote" else "Keep"
    return Verdict(winner=best[1], test=name, p_value=best[2], decided_at=now,
                   action=action, summary="; ".join(lines))
