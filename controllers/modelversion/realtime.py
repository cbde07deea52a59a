"""A realtime version, pure: it reports the model's stream (lag, applied and malformed
counts, freshness) on top of the active version until that version stops serving, and
turns Degraded, with an Event, when the stream stalls or floods malformed messages, or
when its freshness stays over the RecModel's objective for the objective's window.

The freshness also goes to the RecModel's status.freshness, whose `breached` turns the
model Degraded (controllers/recmodel/status.py). It is rewritten only when it moved, so
a steady stream costs the RecModel no writes.
"""

from __future__ import annotations

from datetime import datetime

from controllers.common.conditions import condition
from controllers.modelversion.actions import Action, Emit, ReportFreshness, WriteStatus
from controllers.modelversion.settle import Next, Outcome, hold
from recop.api.common import parse_duration, set_condition
from recop.api.modelversion import ModelVersionStatus, Phase, RealtimeProgress
from recop.api.recmodel import FRESHNESS_BREACHED, Freshness, FreshnessObjective

STREAM_UNHEALTHY = "StreamUnhealthy"
# A reported p99 is rewritten once it moved by more than this fraction (or 10 ms).
FRESHNESS_REPORT_STEP = 0.2


def superseded(status: ModelVersionStatus, name: str, base: str | None,
               active_name: str | None, reported: dict | None) -> Outcome | None:
    """A realtime version ends when its base no longer serves, and takes its freshness
    report off the RecModel (unless a newer realtime version reports there now)."""
    if base == active_name:
        return None
    ended = hold(status, Next.DONE, phase=Phase.SUPERSEDED,
                 message=f"{active_name} serves now")
    if reported and reported.get("version") == name:
        return Outcome((ReportFreshness(None), *ended.actions), ended.next)
    return ended


def progress(reports: list[dict], last: RealtimeProgress | None, objective_seconds: float,
             now: datetime) -> RealtimeProgress:
    """status.realtime from the replicas' reports: worst lag and freshness, summed counts,
    and since when the worst p99 has been over the objective."""
    p99 = max((r["freshness_p99_seconds"] for r in reports), default=0)
    over = p99 > objective_seconds
    return RealtimeProgress(
        lag=max((r["lag"] for r in reports), default=0),
        applied=sum(r["applied"] for r in reports),
        malformed=sum(r["malformed"] for r in reports),
        freshness_p50_seconds=round(max((r["freshness_p50_seconds"] for r in reports),
                                        default=0), 3),
        freshness_p99_seconds=round(p99, 3),
        over_objective_since=((last.over_objective_since if last else None) or now)
        if over else None)


def report(status: ModelVersionStatus, name: str, reports: list[dict],
           objective: FreshnessObjective, reported: dict | None, now: datetime) -> Outcome:
    """One look at the stream. `reported`: the RecModel's status.freshness as it is."""
    limit = parse_duration(objective.p99)
    now_progress = progress(reports, status.realtime, limit, now)
    since = now_progress.over_objective_since
    breached = since is not None and (now - since).total_seconds() >= parse_duration(
        objective.window)
    problem = realtime_problem(
        reports, status.realtime.model_dump() if status.realtime else None)
    reason = STREAM_UNHEALTHY if problem else FRESHNESS_BREACHED if breached else "StreamHealthy"
    if breached and not problem:
        problem = (f"freshness p99 has been over the objective of {objective.p99} for "
                   f"{objective.window} or longer")
    actions: list[Action] = []
    if problem and problem != status.message:
        actions.append(Emit(reason, problem + (
            f" (p99 {now_progress.freshness_p99_seconds:.2g}s)" if breached else ""),
                            warning=True))
    actions.append(WriteStatus(status.model_copy(update={
        "realtime": now_progress, "message": problem or "applying",
        "conditions": set_condition(status.conditions, condition(
            "Degraded", bool(problem), reason, problem or ""))})))
    freshness = Freshness(version=name, p99_seconds=now_progress.freshness_p99_seconds,
                          objective_p99_seconds=limit, over_since=since, breached=breached)
    if moved(reported, freshness):
        actions.append(ReportFreshness(freshness))
    return Outcome(tuple(actions), Next.LATER)


def moved(reported: dict | None, new: Freshness) -> bool:
    """Whether the RecModel's freshness report is worth rewriting: anything but the p99
    changed, or the p99 moved by more than the report step."""
    if not reported:
        return True
    old = Freshness.model_validate(reported)
    if old.model_copy(update={"p99_seconds": new.p99_seconds}) != new:
        return True
    return abs(new.p99_seconds - old.p99_seconds) > max(
        FRESHNESS_REPORT_STEP * old.p99_seconds, 0.01)


def realtime_problem(reports: list[dict], previous: dict | None,
                     malformed_ratio: float = 0.1) -> str | None:
    """Why a stream is unhealthy, from replicas' realtime reports (and the last pass's)."""
    if not reports:
        return "no embedding server reports the stream"
    if not all(r["enabled"] for r in reports):
        return "a server is not configured with the stream"
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
