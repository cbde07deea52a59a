"""The operator's drive tasks: one per key, run again when asked while running, tried
again after a failure, cancelled on close."""

from __future__ import annotations

import asyncio
import logging

from controllers.modelversion import runner as runner_module
from controllers.modelversion.runner import Runner

LOG = logging.getLogger(__name__)


def test_one_task_per_key_and_one_more_run_when_asked_while_running():
    async def scenario():
        runner, runs, gate = Runner(), [], asyncio.Event()

        async def start():
            runs.append(len(runs))
            await gate.wait()

        runner.ensure(("drive", "ns", "v1"), start, LOG)
        await asyncio.sleep(0)
        runner.ensure(("drive", "ns", "v1"), start, LOG)  # runs: asked again
        runner.ensure(("drive", "ns", "v1"), start, LOG)  # folded into that one
        assert runs == [0]
        gate.set()
        for _ in range(10):
            await asyncio.sleep(0)
        assert runs == [0, 1]
        await runner.close()

    asyncio.run(scenario())


def test_a_failed_drive_is_tried_again_and_close_cancels(monkeypatch):
    monkeypatch.setattr(runner_module, "RETRY_SECONDS", (0,))

    async def scenario():
        runner, calls = Runner(), []

        async def start():
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("API server away")
            await asyncio.sleep(3600)

        runner.ensure(("catch-up", "ns", "m"), start, LOG)
        for _ in range(10):
            await asyncio.sleep(0)
        assert len(calls) == 2
        await runner.close()
        assert runner._tasks == {}

    asyncio.run(scenario())


def test_the_model_lock_is_one_per_model():
    runner = Runner()
    assert runner.lock("ns", "m") is runner.lock("ns", "m")
    assert runner.lock("ns", "m") is not runner.lock("ns", "n")
