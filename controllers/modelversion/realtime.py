"""A realtime version, pure: it reports the model's stream (lag, applied and malformed
counts, freshness) on top of the active version until that version stops serving, and
turns Degraded, with an Event, when the stream stalls, floods malformed messages or
falls behind."""

from __future__ import annotations

from controllers.common.conditions import condition
from controllers.modelversion.actions import Action, Emit, WriteStatus
from controllers.modelversion.settle import Next, Outcome, hold
from recop.api.common import set_condition
from recop.api.modelversion import ModelVersionStatus, Phase, RealtimeProgress


def superseded(status: ModelVersionStatus, base: str | None,
               active_name: str | None) -> Outcome | None:
    """A realtime version ends when its base no longer serves."""
    if base == active_name:
        return None
    return hold(status, Next.DONE, phase=Phase.SUPERSEDED, message=f"{active_name} serves now")


def progress(reports: list[dict]) -> RealtimeProgress:
    """status.realtime from the replicas' reports: worst lag and freshness, summed counts."""
    return RealtimeProgress(
        lag=max((r["lag"] for r in reports), default=0),
        applied=sum(r["applied"] for r in reports),
        malformed=sum(r["malformed"] for r in reports),
        freshness_p50_seconds=round(max((r["freshness_p50_seconds"] for r in reports),
                                        default=0), 2),
        freshness_p99_seconds=round(max((r["freshness_p99_seconds"] for r in reports),
                                        default=0), 2))


def report(status: ModelVersionStatus, reports: list[dict],
           max_lag_seconds: float) -> Outcome:
    last = status.realtime.model_dump() if status.realtime else None
    problem = realtime_problem(reports, last, max_lag_seconds)
    conditions = set_condition(status.conditions, condition(
        "Degraded", bool(problem), "StreamUnhealthy" if problem else "StreamHealthy",
        problem or ""))
    actions: list[Action] = []
    if problem and problem != status.message:
        actions.append(Emit("StreamUnhealthy", problem, warning=True))
    actions.append(WriteStatus(status.model_copy(update={
        "realtime": progress(reports), "conditions": conditions,
        "message": problem or "applying"})))
    return Outcome(tuple(actions), Next.LATER)


def realtime_problem(reports: list[dict], previous: dict | None, max_lag_seconds: float,
                     malformed_ratio: float = 0.1) -> str | None:
    """Why a stream is Degraded, from replicas' realtime reports (and the last pass's)."""
    if not reports:
        return "no embedding server reports the stream"
    if not all(r["enabled"] for r in reports):
        return "a server is not configured with the stream"
    worst = max(r["freshness_p99_seconds"] for r in reports)
    if worst > max_lag_seconds:
        return f"freshness p99 {worst:.1f}s exceeds {max_lag_seconds:.0f}s"
    applied = sum(r["applied"] for r in reports)
    malformed = sum(r["malformed"] for r in reports)
    if previous is not None:
        d_applied = applied - previous["applied"]
        d_malformed = malformed - previous["malformed"]
        if d_malformed > 0 and d_malformed > malformed_ratio * max(d_applied + d_malformed, 1):
            return f"{d_malformed} malformed messages of {d_applied + d_malformed} recently"
        if d_applied == 0 and max(r["lag"] for r in reports) > 0:
            return "stalled: lag is growing while nothing is applied"
    return None
