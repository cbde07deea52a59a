"""Which version of a model may act, pure: the queue (the API's creation order, so it
survives restarts), admission of a queued version, whether a version has work left for
a drive, and whether replicas may be caught up to the active version (no update in
flight)."""

from __future__ import annotations

from datetime import datetime

from controllers.modelversion.settle import Next, Outcome, hold, refuse
from recop.api.modelversion import ModelVersionSpec, ModelVersionStatus, Phase

# Versions whose own drive loads every replica it finds: catch-up leaves them alone.
IN_FLIGHT = (Phase.VALIDATING, Phase.LOADING)


def queue_blocker(me: dict, others: list[dict]) -> str | None:
    """The oldest ModelVersion of the same model, created before `me`, still in flight.

    The queue is the API's creation order, not memory, so it survives restarts.
    """
    def key(obj):
        return (obj["metadata"]["creationTimestamp"], obj["metadata"]["name"])

    def in_flight(obj) -> bool:
        status = obj.get("status") or {}
        phase = status.get("phase", Phase.PENDING.value)
        # An Active version still in its rollback window holds the queue too: a newer
        # version must not land before the metrics cleared (or condemned) this one.
        return phase in ("Pending", "Validating", "Loading") or (
            phase == "Active" and not status.get("verifiedAt"))

    earlier = sorted((o for o in others
                      if key(o) < key(me) and o["spec"]["model"] == me["spec"]["model"]
                      and o["spec"]["kind"] != "realtime" and in_flight(o)), key=key)
    return earlier[0]["metadata"]["name"] if earlier else None



def admit(me: dict, others: list[dict], spec: ModelVersionSpec, status: ModelVersionStatus,
          active_name: str | None, now: datetime) -> Outcome:
    """A Pending version waits for the versions before it, then starts validating."""
    blocker = queue_blocker(me, others)
    if blocker:
        return hold(status, reason="Queued", message=f"waiting for {blocker} to settle")
    if spec.base_version and spec.base_version != active_name:
        return refuse(status, "BaseNotActive", f"base {spec.base_version} is not the active "
                      f"version ({active_name or 'none'})", now)
    return hold(status, Next.NOW, phase=Phase.VALIDATING, started_at=now,
                previous_version=active_name, reason=None, message="validating")


def needs_drive(status: ModelVersionStatus, kind: str) -> bool:
    """Whether a drive has anything to do for the version: not once it is superseded,
    verified (a realtime version is never: it reports the stream until superseded), or
    failed or rolled back with its restore complete. A user rollback turns a verified
    version RolledBack with no completedAt, which needs a drive again."""
    if status.phase == Phase.SUPERSEDED:
        return False
    if status.phase in (Phase.FAILED, Phase.ROLLED_BACK):
        return status.completed_at is None
    if status.phase == Phase.ACTIVE:
        return kind == "realtime" or status.verified_at is None
    return True


def settled_active(versions: list[dict], model: str, active_name: str | None) -> dict | None:
    """The active version of `model` when replicas may be caught up to it: it is Active
    and no version of the model is in flight (its own plan loads every replica it finds)
    or restoring. None otherwise."""
    if not active_name:
        return None
    mine = [v for v in versions if v["spec"].get("model") == model]
    for v in mine:
        status = ModelVersionStatus.model_validate(v.get("status") or {})
        if status.phase in IN_FLIGHT or (status.phase in (Phase.FAILED, Phase.ROLLED_BACK)
                                         and status.completed_at is None):
            return None
    body = next((v for v in mine if v["metadata"]["name"] == active_name), None)
    status = ModelVersionStatus.model_validate((body or {}).get("status") or {})
    return body if body is not None and status.phase == Phase.ACTIVE else None
