"""What a pass leaves behind, pure: the version's new status, the bookkeeping around its
write (the RecModel's pointers, the other versions' phases, Events), and when the drive
looks again.

The model's active pointer moves only after this version's own status says it serves
(whoever follows the pointer finds a version that serves). The clean pointer moves
before verifiedAt: a version is driven until verifiedAt is set (queue.needs_drive), so
after a crash between the two writes the next pass verifies and points it again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from controllers.modelversion.actions import (
    LOADS,
    Action,
    Emit,
    PointModel,
    SetPhase,
    WriteStatus,
)
from controllers.modelversion.plan import WAITING_FOR_TRITON, Step
from controllers.modelversion.window import window_end
from recop.api.modelversion import ModelVersionStatus, Phase, ShardProgress
from recop.api.recmodel import RollbackPolicy

# While an update waits on the servers, look again soon (a small load is done in a
# fraction of a second), then less and less often (a large one takes minutes, and every
# look costs a few API calls).
WAIT_FIRST_SECONDS, WAIT_MAX_SECONDS = 0.05, 2.0
# The stream's health is judged over this interval (stall and malformed rates).
REALTIME_POLL_SECONDS = 5


class Next(Enum):
    """What the drive loop does after a pass."""

    DONE = "done"  # nothing more to drive for this version
    NOW = "now"  # the pass moved on: take the next one at once
    LATER = "later"  # waiting on servers, the queue or the window: poll again


@dataclass(frozen=True)
class Outcome:
    """The bookkeeping of one pass, in order (the status write among it), and what next."""

    actions: tuple[Action, ...]
    next: Next


def hold(status: ModelVersionStatus, next: Next = Next.LATER, **update) -> Outcome:
    """Write `update` into the status and go on as `next` says."""
    return Outcome((WriteStatus(status.model_copy(update=update)),), next)


def refuse(status: ModelVersionStatus, reason: str, message: str, now: datetime) -> Outcome:
    """The version is Failed for good before anything loaded it."""
    return Outcome((Emit(reason, message, warning=True), WriteStatus(status.model_copy(
        update={"phase": Phase.FAILED, "reason": reason, "message": message,
                "completed_at": now}))), Next.DONE)


def settle(name: str, status: ModelVersionStatus, step: Step, failure: str | None,
           policy: RollbackPolicy | None, active_name: str | None,
           now: datetime) -> Outcome:
    """The status after the plan's `step` (and the failure of one of its actions)."""
    update: dict = {"shards": [ShardProgress(**s) for s in step.shards] or status.shards}
    if step.message is not None or failure:
        update["message"] = failure or step.message
    if step.reason:
        update["reason"] = step.reason
    elif status.reason == WAITING_FOR_TRITON:  # no longer waiting
        update["reason"] = None
    events: list[Action] = []
    if step.phase is not None:
        update["phase"] = step.phase
        events.append(Emit(step.reason or step.phase.value, step.message or "",
                           warning=step.phase != Phase.ACTIVE))
    if step.activate:
        update |= {"activated_at": now, "watch_until": window_end(policy, now)}
    if step.verify:
        update["verified_at"] = now
    if step.restored:
        update["completed_at"] = now
    new = status.model_copy(update=update)
    before: list[Action] = [PointModel(clean=name)] if step.verify else []
    after: list[Action] = []
    previous = new.previous_version
    if step.activate:
        after.append(PointModel(active=name))
        if previous:
            after.append(SetPhase(previous, Phase.SUPERSEDED))
    if step.restored and previous and active_name == name:
        after += [PointModel(active=previous), SetPhase(previous, Phase.ACTIVE),
                  Emit("RolledBack", f"restored {previous}: {new.reason}", warning=True)]
    return Outcome((*events, *before, WriteStatus(new), *after), next_after(step, failure))


def next_after(step: Step, failure: str | None) -> Next:
    if step.done:
        return Next.DONE
    # Loads run on the servers; anything else this pass did is done, so look again now
    # (but not straight after a failed action, which would only fail again).
    waiting = failure or not step.actions or any(isinstance(a, LOADS) for a in step.actions)
    return Next.LATER if waiting and step.phase is None else Next.NOW


def pace(after: Next, realtime: bool, wait: float) -> tuple[float, float]:
    """(seconds to sleep before the next pass, the wait to use after that one)."""
    if after == Next.LATER and realtime:
        return REALTIME_POLL_SECONDS, wait
    if after == Next.LATER:
        return wait, min(WAIT_MAX_SECONDS, wait * 2)
    return 0, WAIT_FIRST_SECONDS
