"""A version's lifecycle as standard conditions, pure: what `kubectl wait` and GitOps
tools wait on, derived from the phase in every status write so the two never disagree.

- Ready: the version serves (phase Active).
- Succeeded: it landed for good: a full or incremental version passed its rollback
  window (verifiedAt), a realtime version applied its stream until a newer version
  took over.
- Failed: it was refused or rolled back; the reason says why.
"""

from __future__ import annotations

from controllers.common.conditions import condition
from recop.api.common import set_condition
from recop.api.modelversion import ModelVersionStatus, Phase

ENDED_BADLY = (Phase.FAILED, Phase.ROLLED_BACK)


def succeeded(status: ModelVersionStatus, kind: str) -> bool:
    if status.phase in ENDED_BADLY:
        return False
    if kind == "realtime":
        return status.phase == Phase.SUPERSEDED
    return status.verified_at is not None


def with_lifecycle(status: ModelVersionStatus, kind: str,
                   generation: int | None) -> ModelVersionStatus:
    """`status` with observedGeneration and its Ready, Succeeded and Failed conditions."""
    cause = status.reason or status.phase.value
    message = status.message or ""
    done = succeeded(status, kind)
    failed = status.phase in ENDED_BADLY
    conditions = status.conditions
    for new in (
        condition("Ready", status.phase == Phase.ACTIVE,
                  Phase.ACTIVE.value if status.phase == Phase.ACTIVE else cause, message,
                  generation),
        condition("Succeeded", done, ("Verified" if kind != "realtime" else "Superseded")
                  if done else cause, message, generation),
        condition("Failed", failed, cause if failed else status.phase.value,
                  message if failed else "", generation),
    ):
        conditions = set_condition(conditions, new)
    return status.model_copy(update={"conditions": conditions,
                                     "observed_generation": generation})
