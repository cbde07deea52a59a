"""A realtime version's report of the stream, and when it ends."""

from __future__ import annotations

from controllers.modelversion.actions import Emit, WriteStatus
from controllers.modelversion.realtime import realtime_problem, report, superseded
from controllers.modelversion.settle import Next
from recop.api.modelversion import ModelVersionStatus, Phase, RealtimeProgress


def _rt(applied=10, malformed=0, lag=0, p99=1.0):
    return {"enabled": True, "applied": applied, "malformed": malformed, "lag": lag,
            "freshness_p99_seconds": p99}


def test_realtime_degraded_on_stall_flood_or_staleness():
    assert realtime_problem([_rt()], None, 30) is None
    assert "stalled" in realtime_problem([_rt(lag=5)], {"applied": 10, "malformed": 0}, 30)
    assert "malformed" in realtime_problem([_rt(20, 50)], {"applied": 10, "malformed": 0}, 30)
    assert "freshness" in realtime_problem([_rt(p99=60)], None, 30)
    assert "not configured" in realtime_problem([_rt() | {"enabled": False}], None, 30)


def _report(**kw):
    return _rt(**kw) | {"freshness_p50_seconds": 0.5}


def test_a_realtime_version_ends_when_its_base_stops_serving():
    status = ModelVersionStatus(phase=Phase.ACTIVE)
    assert superseded(status, "v1", "v1") is None
    out = superseded(status, "v1", "v2")
    assert out.next == Next.DONE and out.actions[0].status.phase == Phase.SUPERSEDED


def test_the_report_sums_counts_and_turns_degraded_with_one_event():
    healthy = report(ModelVersionStatus(phase=Phase.ACTIVE), [_report(), _report(lag=3)], 30)
    (write,) = healthy.actions
    assert healthy.next == Next.LATER and write.status.realtime.applied == 20
    assert write.status.realtime.lag == 3
    assert [(c.type, c.status.value) for c in write.status.conditions] == [("Degraded", "False")]
    last = write.status.model_copy(update={"realtime": RealtimeProgress(applied=20)})
    flood = report(last, [_report(applied=10, malformed=50)] * 2, 30)
    event, write = flood.actions
    assert isinstance(event, Emit) and event.warning and event.reason == "StreamUnhealthy"
    assert write.status.conditions[0].status.value == "True"
    again = report(write.status, [_report(applied=10, malformed=100)] * 2, 30)
    assert [type(a) for a in again.actions] == [WriteStatus]  # same problem: no new Event
