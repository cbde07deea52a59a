"""Traffic weights of an ABTest at a moment: the ramp, stopped arms, the conclusion.

Pure: the handler passes the clock in, so tests need no waiting.
"""

from __future__ import annotations

from datetime import datetime

from costmodel import BUCKETS
from recop.api.abtest import ABTestSpec
from recop.api.common import parse_duration


def ramp_percent(spec: ABTestSpec, started_at: datetime | None, now: datetime) -> int:
    """Share (percent) of each variant's weight applied now: initial, plus a step per
    elapsed interval, capped at 100. Before the start nothing reaches the variants."""
    if started_at is None:
        return 0
    steps = int((now - started_at).total_seconds() // parse_duration(spec.ramp.interval))
    return min(100, spec.ramp.initial_percent + steps * spec.ramp.step_percent)


def bucket_weights(spec: ABTestSpec, percent: int) -> dict[str, int]:
    """Basis points per arm for sticky bucketing; stopped arms keep theirs (their users
    are sent to the baseline), so stopping one variant never moves another's users."""
    variants = {v.name: v.weight * percent for v in spec.variants}  # percent * percent = bp
    return {spec.baseline.name: BUCKETS - sum(variants.values()), **variants}


def applied_weights(spec: ABTestSpec, percent: int, stopped: set[str],
                    winner: str | None = None) -> dict[str, int]:
    """Percent of traffic per arm for the routes' weighted rule. A stopped variant's
    share goes to the baseline; a concluded test sends everything to `winner`."""
    if winner is not None:
        return {a: 100 if a == winner else 0
                for a in (spec.baseline.name, *(v.name for v in spec.variants))}
    variants = {v.name: 0 if v.name in stopped else v.weight * percent // 100
                for v in spec.variants}
    return {spec.baseline.name: 100 - sum(variants.values()), **variants}


def fully_ramped(percent: int) -> bool:
    return percent >= 100
