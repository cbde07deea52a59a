"""A user rollback request, as recorded on the version serving now."""

from __future__ import annotations

from datetime import UTC, datetime

from controllers.modelversion.queue import needs_drive
from controllers.modelversion.rollback import request, wanted
from recop.api.modelversion import ModelVersionStatus, Phase

NOW = datetime(2026, 11, 23, tzinfo=UTC)


def test_only_a_change_away_from_the_serving_version_is_a_rollback():
    assert wanted("v1", "v2")
    assert not wanted("v2", "v2")
    assert not wanted(None, "v2")  # the field was cleared
    assert not wanted("v1", None)  # nothing serves yet


def test_the_request_turns_a_verified_version_into_one_to_restore():
    verified = ModelVersionStatus(phase=Phase.ACTIVE, previous_version="v0", verified_at=NOW,
                                  completed_at=NOW)
    assert not needs_drive(verified, "full")
    asked = request(verified, "v1")
    assert asked.phase == Phase.ROLLED_BACK and asked.reason == "UserRollback"
    assert asked.previous_version == "v1" and asked.completed_at is None
    assert asked.message == "RecModel.spec.activeVersion set to v1"
    assert needs_drive(asked, "full")  # its own drive restores v1
