"""The rollback window, pure: when a new version is watched, whether to read its metric,
and whether the value breaches the RecModel's rollbackPolicy."""

from __future__ import annotations

from datetime import datetime, timedelta

from recop.api.common import crossed, parse_duration
from recop.api.modelversion import ModelVersionStatus, Phase
from recop.api.recmodel import RollbackPolicy


def window_end(policy: RollbackPolicy | None, now: datetime) -> datetime:
    """status.watchUntil of a version activated `now` (now itself: no window to watch)."""
    window = parse_duration(policy.window) if policy and policy.enabled else 0
    return now + timedelta(seconds=window)


def watching(status: ModelVersionStatus, policy: RollbackPolicy | None,
             prometheus_url: str | None, now: datetime) -> bool:
    """Whether this pass reads the policy's metric: the version is Active, inside its
    window, and there is a policy and a Prometheus to read it from."""
    return (status.phase == Phase.ACTIVE and status.watch_until is not None
            and now < status.watch_until and policy is not None and policy.enabled
            and prometheus_url is not None)


def breach(policy: RollbackPolicy, value: float | None) -> str | None:
    """Why the metric's `value` condemns the version (None: it does not, or no data)."""
    if value is None or not crossed(value, policy.threshold, policy.comparison):
        return None
    return f"{policy.metric} = {value:g}, {policy.comparison} {policy.threshold:g}"
