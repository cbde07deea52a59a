"""What a pass writes: the status after a step, the bookkeeping around the write in the
order that survives a crash between two writes, and when the drive looks again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from controllers.modelversion.actions import (
    Drop,
    Emit,
    LoadFull,
    PointModel,
    SetPhase,
    WriteStatus,
)
from controllers.modelversion.plan import WAITING_FOR_TRITON, Step
from controllers.modelversion.settle import (
    REALTIME_POLL_SECONDS,
    WAIT_FIRST_SECONDS,
    WAIT_MAX_SECONDS,
    Next,
    next_after,
    pace,
    settle,
)
from recop.api.modelversion import ModelVersionStatus, Phase
from recop.api.recmodel import RollbackPolicy

NOW = datetime(2026, 11, 23, tzinfo=UTC)
LOADING = ModelVersionStatus(phase=Phase.LOADING, previous_version="v1")
POLICY = RollbackPolicy(metric="p99", threshold=0.5, window="60s")


def kinds(outcome) -> list[type]:
    return [type(a) for a in outcome.actions]


def written(outcome) -> ModelVersionStatus:
    return next(a.status for a in outcome.actions if isinstance(a, WriteStatus))


def test_activation_opens_the_window_then_moves_the_pointer_and_supersedes():
    step = Step(phase=Phase.ACTIVE, activate=True, reason="Committed", message="serves")
    out = settle("v2", LOADING, step, None, POLICY, "v1", NOW)
    status = written(out)
    assert status.phase == Phase.ACTIVE and status.activated_at == NOW
    assert status.watch_until == NOW + timedelta(seconds=60)
    assert out.actions[0] == Emit("Committed", "serves", warning=False)
    assert out.actions[1:] == (WriteStatus(status), PointModel(active="v2"),
                               SetPhase("v1", Phase.SUPERSEDED))
    assert out.next == Next.NOW


def test_verification_points_the_clean_version_before_it_stamps_verified():
    active = ModelVersionStatus(phase=Phase.ACTIVE, previous_version="v1")
    out = settle("v2", active, Step(verify=True, done=True, reason="Verified"), None,
                 POLICY, "v2", NOW)
    assert kinds(out) == [PointModel, WriteStatus] and out.actions[0] == PointModel(clean="v2")
    assert written(out).verified_at == NOW and out.next == Next.DONE


def test_a_restore_gives_the_model_back_to_the_previous_version_once():
    rolled = ModelVersionStatus(phase=Phase.ROLLED_BACK, previous_version="v1",
                                reason="MetricBreach")
    out = settle("v2", rolled, Step(restored=True, done=True), None, POLICY, "v2", NOW)
    assert written(out).completed_at == NOW
    assert out.actions[1:] == (PointModel(active="v1"), SetPhase("v1", Phase.ACTIVE),
                               Emit("RolledBack", "restored v1: MetricBreach", warning=True))
    # The pointer already moved (a user rollback, or a repeated pass): leave it be.
    again = settle("v2", rolled, Step(restored=True, done=True), None, POLICY, "v1", NOW)
    assert kinds(again) == [WriteStatus]


def test_a_failure_is_the_message_and_a_failed_phase_a_warning():
    step = Step(phase=Phase.FAILED, reason="LoadFailed", message="planned")
    out = settle("v2", LOADING, step, "load_full r0: refused", POLICY, "v1", NOW)
    assert written(out).message == "load_full r0: refused"
    assert out.actions[0] == Emit("LoadFailed", "planned", warning=True)


def test_the_drive_waits_on_loads_and_failures_and_goes_on_after_other_actions():
    assert next_after(Step(actions=[LoadFull("r0", 2, "s3://b/v2")]), None) == Next.LATER
    assert next_after(Step(actions=[Drop("r0", 1)]), None) == Next.NOW
    assert next_after(Step(actions=[Drop("r0", 1)]), "drop r0: gone") == Next.LATER
    assert next_after(Step(), None) == Next.LATER  # nothing to do: waiting on something
    assert next_after(Step(phase=Phase.FAILED), "x") == Next.NOW  # the phase moved on
    assert next_after(Step(done=True), None) == Next.DONE


def test_the_pace_backs_off_while_waiting_and_resets_when_it_moves():
    assert pace(Next.LATER, False, WAIT_FIRST_SECONDS) == (WAIT_FIRST_SECONDS,
                                                           2 * WAIT_FIRST_SECONDS)
    assert pace(Next.LATER, False, WAIT_MAX_SECONDS) == (WAIT_MAX_SECONDS, WAIT_MAX_SECONDS)
    assert pace(Next.NOW, False, WAIT_MAX_SECONDS) == (0, WAIT_FIRST_SECONDS)
    assert pace(Next.LATER, True, 0.4) == (REALTIME_POLL_SECONDS, 0.4)


def test_the_wait_for_triton_is_the_reason_only_while_it_lasts():
    waiting = settle("v2", LOADING, Step(reason=WAITING_FOR_TRITON, message="waiting"), None,
                     POLICY, "v1", NOW)
    status = written(waiting)
    assert status.reason == WAITING_FOR_TRITON and status.phase == Phase.LOADING
    assert waiting.next == Next.LATER
    moved = written(settle("v2", status, Step(message="committing"), None, POLICY, "v1", NOW))
    assert moved.reason is None and moved.message == "committing"
    # Other reasons stay until the plan gives another.
    queued = LOADING.model_copy(update={"reason": "AdminCredentials"})
    assert written(settle("v2", queued, Step(message="x"), None, POLICY, "v1", NOW)
                   ).reason == "AdminCredentials"
