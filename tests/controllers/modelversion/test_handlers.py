"""The Kopf wiring: a ModelVersion event starts its drive only while it has work; a user
rollback is recorded, never driven, in the RecModel's handler."""

from __future__ import annotations

import asyncio
import logging

import kopf
import pytest

from controllers.common.settings import MEMO_KEY, Settings
from controllers.modelversion import handlers
from recop.api.modelversion import ModelVersionStatus, Phase

SPEC = {"model": "m", "kind": "full", "source": "s3://bucket/v2"}


class Runner:
    def __init__(self):
        self.started: list[tuple] = []

    def ensure(self, key, start, logger):
        self.started.append(key)


def memo(runner) -> kopf.Memo:
    return kopf.Memo({handlers.RUNNER: runner, MEMO_KEY: Settings()})


def event(runner, status: dict | None, type="MODIFIED", spec=SPEC):
    asyncio.run(handlers.on_modelversion(type=type, namespace="ns", name="v2",
                                         spec=spec, status=status, memo=memo(runner),
                                         logger=logging.getLogger()))


def test_a_version_with_work_gets_its_drive_and_a_settled_one_none():
    runner = Runner()
    event(runner, None)
    event(runner, {"phase": "Loading"})
    assert runner.started == [("drive", "ns", "v2")] * 2
    settled = ModelVersionStatus(phase=Phase.SUPERSEDED).to_wire()
    event(runner, settled)
    event(runner, {"phase": "Loading"}, type="DELETED")
    assert len(runner.started) == 2


def test_an_invalid_spec_is_a_permanent_error():
    with pytest.raises(kopf.PermanentError, match="invalid spec"):
        event(Runner(), None, spec={"model": "m", "kind": "full"})


def test_the_recmodel_handler_only_records_a_rollback(monkeypatch):
    recorded = []

    async def record(runner, namespace, model, current, new):
        recorded.append((namespace, model, current, new))

    monkeypatch.setattr(handlers.rollback, "record", record)
    runner = Runner()
    asyncio.run(handlers.on_user_rollback(namespace="ns", name="m", new="v1",
                                          status={"activeVersion": "v2"}, memo=memo(runner)))
    assert recorded == [("ns", "m", "v2", "v1")] and runner.started == []
