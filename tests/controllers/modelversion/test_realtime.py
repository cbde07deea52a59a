"""A realtime version's report of the stream and its freshness, and when it ends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from controllers.modelversion.actions import Emit, ReportFreshness, WriteStatus
from controllers.modelversion.realtime import moved, realtime_problem, report, superseded
from controllers.modelversion.settle import Next
from recop.api.modelversion import ModelVersionStatus, Phase, RealtimeProgress
from recop.api.recmodel import Freshness, FreshnessObjective

T0 = datetime(2026, 12, 3, 6, 0, tzinfo=UTC)
OBJECTIVE = FreshnessObjective(p99="1s", window="30s")


def _rt(applied=10, malformed=0, lag=0, p99=0.5):
    return {"enabled": True, "applied": applied, "malformed": malformed, "lag": lag,
            "freshness_p99_seconds": p99, "freshness_p50_seconds": p99 / 2}


def test_realtime_unhealthy_on_stall_flood_or_missing_stream():
    assert realtime_problem([_rt()], None) is None
    assert "stalled" in realtime_problem([_rt(lag=5)], {"applied": 10, "malformed": 0})
    assert "malformed" in realtime_problem([_rt(20, 50)], {"applied": 10, "malformed": 0})
    assert "not configured" in realtime_problem([_rt() | {"enabled": False}], None)
    assert "no embedding server" in realtime_problem([], None)


def test_a_realtime_version_ends_when_its_base_stops_serving_and_takes_its_report_off():
    status = ModelVersionStatus(phase=Phase.ACTIVE)
    assert superseded(status, "rt", "v1", "v1", None) is None
    out = superseded(status, "rt", "v1", "v2", {"version": "rt"})
    assert out.next == Next.DONE
    assert out.actions[0] == ReportFreshness(None)
    assert out.actions[-1].status.phase == Phase.SUPERSEDED
    newer = superseded(status, "rt", "v1", "v2", {"version": "rt-2"})
    assert [type(a) for a in newer.actions] == [WriteStatus]  # not another version's report


def _pass(status, reports, now, reported=None):
    return report(status, "rt", reports, OBJECTIVE, reported, now)


def test_the_report_sums_counts_and_turns_degraded_with_one_event():
    healthy = _pass(ModelVersionStatus(phase=Phase.ACTIVE), [_rt(), _rt(lag=3)], T0)
    write, fresh = healthy.actions
    assert healthy.next == Next.LATER and write.status.realtime.applied == 20
    assert write.status.realtime.lag == 3
    assert [(c.type, c.status.value) for c in write.status.conditions] == [("Degraded", "False")]
    assert fresh.freshness == Freshness(version="rt", p99_seconds=0.5,
                                        objective_p99_seconds=1.0)
    last = write.status.model_copy(update={"realtime": RealtimeProgress(applied=20)})
    flood = _pass(last, [_rt(applied=10, malformed=50)] * 2, T0)
    event, write = flood.actions[:2]
    assert isinstance(event, Emit) and event.warning and event.reason == "StreamUnhealthy"
    assert write.status.conditions[0].status.value == "True"
    again = _pass(write.status, [_rt(applied=10, malformed=100)] * 2, T0)
    assert WriteStatus in {type(a) for a in again.actions}
    assert not any(isinstance(a, Emit) for a in again.actions)  # same problem: no new Event


def _degraded(outcome):
    write = next(a for a in outcome.actions if isinstance(a, WriteStatus))
    return write.status, next(c for c in write.status.conditions if c.type == "Degraded")


def test_freshness_over_the_objective_breaches_only_after_the_window():
    status = ModelVersionStatus(phase=Phase.ACTIVE)
    seen = []
    for second in (0, 10, 20, 30, 40):
        outcome = _pass(status, [_rt(p99=2.5), _rt(p99=0.1)], T0 + timedelta(seconds=second))
        status, degraded = _degraded(outcome)
        seen.append((degraded.status.value, degraded.reason,
                     sum(isinstance(a, Emit) for a in outcome.actions)))
    assert seen == [("False", "StreamHealthy", 0)] * 3 + [
        ("True", "FreshnessObjectiveBreached", 1), ("True", "FreshnessObjectiveBreached", 0)]
    assert status.realtime.over_objective_since == T0
    assert "over the objective of 1s for 30s" in degraded.message
    report_ = next(a for a in outcome.actions if isinstance(a, ReportFreshness)).freshness
    assert report_.breached and report_.over_since == T0 and report_.p99_seconds == 2.5
    # Back under the objective: healthy at once, and the excursion is forgotten.
    status, degraded = _degraded(_pass(status, [_rt(p99=0.2)], T0 + timedelta(seconds=50)))
    assert degraded.status.value == "False" and status.realtime.over_objective_since is None


def test_a_short_excursion_over_the_objective_does_not_breach():
    status = ModelVersionStatus(phase=Phase.ACTIVE)
    for second, p99 in ((0, 3.0), (20, 0.2), (40, 3.0), (60, 3.0)):
        status, degraded = _degraded(_pass(status, [_rt(p99=p99)],
                                           T0 + timedelta(seconds=second)))
        assert degraded.status.value == "False"
    assert status.realtime.over_objective_since == T0 + timedelta(seconds=40)


def test_the_model_report_is_rewritten_only_when_it_moved():
    old = Freshness(version="rt", p99_seconds=0.5, objective_p99_seconds=1.0)
    wire = old.to_wire()
    assert moved(None, old)
    assert not moved(wire, old.model_copy(update={"p99_seconds": 0.55}))
    assert moved(wire, old.model_copy(update={"p99_seconds": 0.7}))
    assert moved(wire, old.model_copy(update={"over_since": T0}))
    assert moved(wire, old.model_copy(update={"breached": True}))
    steady = _pass(ModelVersionStatus(phase=Phase.ACTIVE), [_rt(p99=0.52)], T0, wire)
    assert not any(isinstance(a, ReportFreshness) for a in steady.actions)
