"""The queue, admission, whether a version needs a drive, and catch-up's gate."""

from __future__ import annotations

from datetime import UTC, datetime

from controllers.modelversion.actions import Emit, WriteStatus
from controllers.modelversion.queue import admit, needs_drive, queue_blocker, settled_active
from controllers.modelversion.settle import Next
from recop.api.modelversion import ModelVersionSpec, ModelVersionStatus, Phase

NOW = datetime(2026, 11, 23, tzinfo=UTC)


def _mv(name, minute, phase="Pending", kind="full", verified=False):
    status = {"phase": phase} | ({"verifiedAt": "x"} if verified else {})
    return {"metadata": {"name": name, "creationTimestamp": f"2026-11-23T10:{minute:02d}:00Z"},
            "spec": {"model": "m", "kind": kind}, "status": status}


def test_queue_is_creation_order_and_includes_the_watch_window():
    a, b, c = _mv("a", 1, "Loading"), _mv("b", 2), _mv("c", 3)
    assert queue_blocker(c, [a, b, c]) == "a"
    assert queue_blocker(a, [a, b, c]) is None
    assert queue_blocker(c, [_mv("a", 1, "Active"), b]) == "a"
    assert queue_blocker(c, [_mv("a", 1, "Active", verified=True)]) is None
    assert queue_blocker(c, [_mv("r", 1, "Active", kind="realtime")]) is None



def _spec(**kw) -> ModelVersionSpec:
    return ModelVersionSpec.model_validate(
        {"model": "m", "kind": "full", "source": "s3://bucket/v"} | kw)


def _written(outcome) -> ModelVersionStatus:
    return next(a.status for a in outcome.actions if isinstance(a, WriteStatus))


def test_a_queued_version_waits_then_validates_with_the_active_version_as_previous():
    a, c = _mv("a", 1, "Loading"), _mv("c", 3)
    waiting = admit(c, [a, c], _spec(), ModelVersionStatus(), "v0", NOW)
    assert waiting.next == Next.LATER and _written(waiting).reason == "Queued"
    assert "waiting for a" in _written(waiting).message
    started = admit(c, [c], _spec(), ModelVersionStatus(), "v0", NOW)
    status = _written(started)
    assert started.next == Next.NOW and status.phase == Phase.VALIDATING
    assert status.previous_version == "v0" and status.started_at == NOW


def test_an_incremental_whose_base_does_not_serve_is_refused():
    spec = _spec(kind="incremental", baseVersion="v1")
    out = admit(_mv("c", 3), [], spec, ModelVersionStatus(), "v2", NOW)
    status = _written(out)
    assert out.next == Next.DONE and status.phase == Phase.FAILED
    assert status.reason == "BaseNotActive" and status.completed_at == NOW
    assert any(isinstance(a, Emit) and a.warning for a in out.actions)


def test_needs_drive_until_superseded_verified_or_restored():
    s = ModelVersionStatus
    for phase in (Phase.PENDING, Phase.VALIDATING, Phase.LOADING):
        assert needs_drive(s(phase=phase), "full")
    assert needs_drive(s(phase=Phase.ACTIVE), "full")  # in its window
    assert not needs_drive(s(phase=Phase.ACTIVE, verified_at=NOW), "full")
    assert needs_drive(s(phase=Phase.ACTIVE, verified_at=NOW), "realtime")  # the stream
    assert not needs_drive(s(phase=Phase.SUPERSEDED), "realtime")
    assert needs_drive(s(phase=Phase.ROLLED_BACK), "full")  # restoring (a user rollback)
    assert not needs_drive(s(phase=Phase.ROLLED_BACK, completed_at=NOW), "full")
    assert not needs_drive(s(phase=Phase.FAILED, completed_at=NOW), "full")


def _v(name, phase, completed=False):
    status = {"phase": phase} | ({"completedAt": "2026-11-23T10:00:00Z"} if completed else {})
    return {"metadata": {"name": name}, "spec": {"model": "m"}, "status": status}


def test_catch_up_waits_for_updates_in_flight_and_restores():
    active = _v("v2", "Active")
    assert settled_active([active, _v("v1", "Superseded")], "m", "v2") is active
    assert settled_active([active], "m", None) is None
    assert settled_active([active, _v("v3", "Loading")], "m", "v2") is None
    assert settled_active([active, _v("v3", "RolledBack")], "m", "v2") is None
    assert settled_active([active, _v("v3", "RolledBack", True)], "m", "v2") is active
    assert settled_active([_v("v2", "RolledBack")], "m", "v2") is None
    other = {**_v("x", "Loading"), "spec": {"model": "other"}}
    assert settled_active([active, other], "m", "v2") is active
