"""Building a status condition, as every RecOp kind reports them (merged into the list
with recop.api.common.set_condition)."""

from __future__ import annotations

from recop.api.common import Condition, ConditionStatus

# A condition message is read by people and GitOps tools; a longer one is cut.
MESSAGE_LIMIT = 4096


def condition(kind: str, holds: bool, reason: str, message: str = "",
              generation: int | None = None) -> Condition:
    """A True/False condition of `kind` with its reason (CamelCase), message and the
    generation it was observed at."""
    return Condition(type=kind, status=ConditionStatus.TRUE if holds else ConditionStatus.FALSE,
                     reason=reason, message=message[:MESSAGE_LIMIT],
                     observed_generation=generation)
