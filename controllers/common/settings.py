"""The operator's settings as the controllers see them: read once at startup by
recop_operator/settings.py (environment and flags) and handed to every Kopf handler in
its `memo`. Controllers never read the environment themselves."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    # Prometheus' HTTP API (ABTest metrics, rollback policies); None: metrics unreadable.
    prometheus_url: str | None = None
    # Where the operator's pods run: the embedding servers' NetworkPolicy admits only them
    # to the admin port. None outside a cluster.
    operator_namespace: str | None = None
    # Seconds between the ABTest controller's periodic checks (ramp steps, guardrails).
    abtest_interval: float = 30.0


MEMO_KEY = "settings"


def settings_of(memo: Mapping) -> Settings:
    """The settings in a handler's `memo` (Kopf copies the operator's memo, which
    operator/cli.py fills, into each resource's)."""
    return memo[MEMO_KEY]
