"""Replicas brought to the settled active version: one that joined late, restarted
empty or missed a commit shows up as a change of its shard's endpoints, and one
catch-up drive per model (runner.py) runs until every replica serves the version.

Triton servers too: a Triton pod that starts after the dense version was loaded (a new
replica, a restarted or replaced pod) comes up with the repository's default version
and config, and turns ready, which changes the Triton Service's endpoints; it is loaded
with the active dense version and the spec's config.
"""

from __future__ import annotations

import asyncio
import functools

from controllers.common.kube import Kube
from controllers.common.kubeapi import kube
from controllers.common.secrets import SecretError
from controllers.modelversion.drivers import Admin, discover, triton_servers
from controllers.modelversion.executor import Executor
from controllers.modelversion.plan import Step, catch_up_step
from controllers.modelversion.queue import settled_active
from controllers.modelversion.runner import Runner
from controllers.modelversion.targets import checks, load_target
from recop.api import MODELVERSION, RECMODEL
from recop.api.common import API_VERSION
from recop.api.modelversion import ModelVersionStatus
from recop.api.recmodel import RecModelSpec

POLL_SECONDS = 0.5
# Catch-up passes in a row that changed nothing and waited for no load before it gives up
# (a replica that cannot be built); the next change of the model's endpoints retries.
STUCK_PASSES = 20


def start_catch_up(runner: Runner, namespace: str, model_name: str, logger) -> None:
    runner.ensure(("catch-up", namespace, model_name),
                  functools.partial(catch_up, runner, namespace, model_name, logger), logger)


async def catch_up(runner: Runner, namespace: str, model_name: str, logger) -> None:
    client = await kube()
    admin = Admin()
    stuck = 0
    try:
        while True:
            async with runner.lock(namespace, model_name):
                outcome = await _pass(client, admin, namespace, model_name, logger)
            if outcome is None or outcome[0].done:
                return
            step, progressed = outcome
            stuck = 0 if progressed else stuck + 1
            if stuck >= STUCK_PASSES:
                logger.warning("catch-up of %s stopped: %s", model_name, step.message)
                return
            await asyncio.sleep(POLL_SECONDS)
    finally:
        await admin.close()


async def _pass(client: Kube, admin: Admin, namespace: str, model_name: str,
                logger) -> tuple[Step, bool] | None:
    """The step and whether the pass got anywhere (an action done, a load running);
    None when there is nothing settled to catch up to (queue.settled_active)."""
    model_body = await client.get(API_VERSION, RECMODEL.kind, namespace, model_name)
    active_name = ((model_body or {}).get("status") or {}).get("activeVersion")
    if not active_name:  # spares the list below
        return None
    versions = await client.list(API_VERSION, MODELVERSION.kind, namespace)
    body = settled_active(versions, model_name, active_name)
    if body is None:
        return None
    status = ModelVersionStatus.model_validate(body.get("status") or {})
    model = RecModelSpec.model_validate(model_body["spec"])
    active = await load_target(client, namespace, active_name)
    if active is None:  # deleted since the list
        return None
    try:
        await admin.authenticate(client, namespace, model_name, model)
    except SecretError as err:
        logger.warning("catch-up of %s waits: %s", model_name, err)
        return None
    found = await discover(client, namespace, model_name, model)
    replicas, _ = await admin.observe(found.admin)
    release = status.verified_at is not None
    async with triton_servers(found.triton if active.dense_version else [], model) as triton:
        dense = await triton.versions() if triton else None
        previous = None if release or not dense else await load_target(
            client, namespace, status.previous_version)
        step = catch_up_step(replicas, active, release, dense,
                             keep=previous.dense_version if previous else None)
        run = Executor(admin, checks(active), client, body, model_name, triton)
        done = 0
        for action in step.actions:
            try:
                await run.run(action)
                done += 1
            except Exception as err:  # the server went away or refused: the next pass sees it
                logger.warning("catch-up action %s failed: %s", action, err)
    loading = any(state == "loading" for r in replicas for state in r.versions.values())
    # A discovered server that does not answer yet (a restarted container still starting)
    # keeps the catch-up going: its endpoint stays not ready, so no slice change would
    # start another one.
    if len(replicas) < sum(len(addresses) for addresses in found.admin.values()):
        step.done = False
    return step, bool(done) or loading
