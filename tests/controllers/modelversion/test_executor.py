"""The executor turns each action into its call, with the version's value checks."""

from __future__ import annotations

import asyncio

import kopf
import pytest

from controllers.modelversion.actions import (
    ApplyIncremental,
    Commit,
    Drop,
    Emit,
    GoldenCheck,
    LoadFull,
    Rollback,
    TritonLoad,
)
from controllers.modelversion.executor import Executor


class Calls:
    """Stands in for drivers.Admin and drivers.Triton: records every call."""

    def __init__(self):
        self.log: list[tuple] = []

    def __getattr__(self, verb):
        async def call(*args):
            self.log.append((verb, *args))
        return call


def run(executor: Executor, *actions):
    async def go():
        return [await executor.run(a) for a in actions]
    return asyncio.run(go())


def test_server_actions_reach_the_admin_api_with_their_checks_and_dense_version():
    admin = Calls()
    executor = Executor(admin, {2: (10.0, False), 3: (5.0, True)})
    run(executor, LoadFull("r0", 2, "s3://b/v2", 4), ApplyIncremental("r0", 3, 2, "s3://b/v3"),
        Commit("r0", 3), Rollback("r1", 2), Drop("r0", 2), LoadFull("r1", 9, "s3://b/v9"))
    assert admin.log == [
        ("load_full", "r0", 2, "s3://b/v2", (10.0, False), 4),
        ("apply_incremental", "r0", 3, 2, "s3://b/v3", (5.0, True), 0),
        ("commit", "r0", 3), ("commit", "r1", 2), ("drop", "r0", 2),
        ("load_full", "r1", 9, "s3://b/v9", (0.0, False), 0)]


def test_triton_golden_and_a_commit_that_announces(monkeypatch):
    posted = []
    monkeypatch.setattr(kopf, "info", lambda body, reason, message: posted.append(reason))
    triton = Calls()

    async def golden():
        return "passed"

    body = {"metadata": {"name": "v2", "namespace": "ns"}}
    executor = Executor(Calls(), triton=triton, golden=golden, body=body)
    results = run(executor, TritonLoad(2, 1), GoldenCheck(),
                  Commit("r0", 2, announce=Emit("ReplicaCaughtUp", "r0 serves v2")),
                  TritonLoad(2, server="10.0.0.9:8001"))
    assert triton.log == [("load", 2, 1, None), ("load", 2, None, "10.0.0.9:8001")]
    assert results[1] == "passed"
    assert posted == ["ReplicaCaughtUp"]


def test_an_action_without_its_context_is_a_bug_not_a_silent_skip():
    with pytest.raises(RuntimeError, match="lacks the context"):
        run(Executor(Calls()), TritonLoad(2))
