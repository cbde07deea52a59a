"""The drive of one ModelVersion: passes until it settles, each reading the CR, the
RecModel and what the servers report, asking the pure modules what to do (queue,
validate, plan, realtime, settle), having the executor do it, and writing the status.

It keeps no state between passes, so a drive started after a restart (runner.py) takes
up where the last one stopped. No finalizer: deleting a ModelVersion must never unload
what serves, and versions a server still holds are freed by the next version's release
step.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from datetime import UTC, datetime

from controllers.common.kubeapi import kube
from controllers.common.prometheus import PrometheusError, query_value
from controllers.common.secrets import SecretError
from controllers.modelversion import golden, realtime
from controllers.modelversion.actions import PointModel
from controllers.modelversion.catchup import start_catch_up
from controllers.modelversion.drivers import Admin, discover, s3_client, triton_servers
from controllers.modelversion.executor import Executor
from controllers.modelversion.plan import Observed, plan, uses_triton
from controllers.modelversion.queue import admit, needs_drive
from controllers.modelversion.runner import Runner
from controllers.modelversion.settle import (
    WAIT_FIRST_SECONDS,
    Next,
    Outcome,
    hold,
    pace,
    refuse,
    settle,
)
from controllers.modelversion.targets import checks, load_target, target
from controllers.modelversion.validate import (
    Invalid,
    Unavailable,
    dense_version,
    manifest_rows,
    rows_compared_with,
    validate_uri,
)
from controllers.modelversion.window import breach, watching
from recop.api import MODELVERSION, RECMODEL
from recop.api.common import API_VERSION
from recop.api.modelversion import ModelVersionSpec, ModelVersionStatus, Phase
from recop.api.recmodel import FreshnessObjective, RecModelSpec, RollbackPolicy

LOG = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


async def drive(runner: Runner, namespace: str, name: str, logger,
                prometheus_url: str | None) -> None:
    client = await kube()
    admin = Admin()
    wait = WAIT_FIRST_SECONDS
    try:
        first = await client.get(API_VERSION, MODELVERSION.kind, namespace, name)
        if first is None:
            return
        spec = ModelVersionSpec.model_validate(first["spec"])  # immutable
        while True:
            async with runner.lock(namespace, spec.model):
                body = await client.get(API_VERSION, MODELVERSION.kind, namespace, name)
                if body is None or body["metadata"].get("deletionTimestamp"):
                    return
                status = ModelVersionStatus.model_validate(body.get("status") or {})
                if not needs_drive(status, spec.kind):
                    return
                run = Executor(admin, client=client, body=body, model=spec.model)
                outcome = await _pass(run, spec, status, prometheus_url, logger)
                for action in outcome.actions:
                    await run.run(action)
            if any(isinstance(a, PointModel) and a.active for a in outcome.actions):
                # A server that came up while this version was in flight was left to this
                # drive, which may have looked before it was there: catch up to what
                # serves now.
                start_catch_up(runner, namespace, spec.model, logger)
            if outcome.next == Next.DONE:
                return
            delay, wait = pace(outcome.next, spec.kind == "realtime", wait)
            if delay:
                await asyncio.sleep(delay)  # outside the model's lock
    finally:
        await admin.close()


async def _pass(run: Executor, spec: ModelVersionSpec, status: ModelVersionStatus,
                prometheus_url: str | None, logger) -> Outcome:
    client, namespace = run.client, run.body["metadata"]["namespace"]
    model_body = await client.get(API_VERSION, RECMODEL.kind, namespace, spec.model)
    if model_body is None:
        return hold(status, message=f"waiting for RecModel {spec.model}")
    model = RecModelSpec.model_validate(model_body["spec"])
    model_status = model_body.get("status") or {}
    active_name = model_status.get("activeVersion")
    if status.phase == Phase.PENDING:
        others = await client.list(API_VERSION, MODELVERSION.kind, namespace)
        return admit(run.body, others, spec, status, active_name, _now())
    if status.phase == Phase.VALIDATING:
        return await _validate(run, spec, status, model, logger)
    try:
        await run.admin.authenticate(client, namespace, spec.model, model)
    except SecretError as err:
        return hold(status, reason="AdminCredentials", message=str(err))
    if spec.kind == "realtime":
        name, reported = run.body["metadata"]["name"], model_status.get("freshness")
        ended = realtime.superseded(status, name, spec.base_version, active_name, reported)
        if ended:
            return ended
        found = await discover(client, namespace, spec.model, model)
        _, reports = await run.admin.observe(found.admin)
        objective = model.stream.freshness_objective if model.stream else FreshnessObjective()
        return realtime.report(status, name, reports, objective, reported, _now())
    return await _update(run, spec, status, model, active_name, prometheus_url, logger)


async def _validate(run: Executor, spec: ModelVersionSpec, status: ModelVersionStatus,
                    model: RecModelSpec, logger) -> Outcome:
    client, namespace = run.client, run.body["metadata"]["namespace"]
    if spec.kind == "realtime":
        if model.stream is None:
            return refuse(status, "NoStream", f"RecModel {spec.model} has no stream", _now())
        return hold(status, Next.NOW, phase=Phase.ACTIVE, activated_at=_now(),
                    message="stream configured")
    base = await load_target(client, namespace, spec.base_version)
    previous = await load_target(client, namespace, status.previous_version)
    try:
        s3 = await s3_client(client, namespace, model)
        rows_uri = rows_compared_with(spec.kind, previous)
        base_rows = await asyncio.to_thread(manifest_rows, s3, rows_uri) if rows_uri else None
        manifest = await asyncio.to_thread(
            validate_uri, s3, spec.source, model, spec.kind, base.number if base else None,
            base_rows, spec.validation, spec.manifest_sha256)
    except Invalid as err:
        return refuse(status, "ValidationFailed", str(err), _now())
    except Unavailable as err:
        logger.warning("validation of %s waits for S3: %s", spec.source, err)
        return hold(status, reason="StorageUnavailable", message=f"{err}; retrying")
    logger.info("validated %s: version %d", spec.source, manifest.version)
    return hold(status, Next.NOW, phase=Phase.LOADING, embedding_version=manifest.version,
                dense_model_version=dense_version(spec, previous), message="validated")


async def _update(run: Executor, spec: ModelVersionSpec, status: ModelVersionStatus,
                  model: RecModelSpec, active_name: str | None, prometheus_url: str | None,
                  logger) -> Outcome:
    """A full or incremental version: load, check, commit, watch, release or restore."""
    client, meta = run.client, run.body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    previous = await load_target(client, namespace, status.previous_version)
    base = await load_target(client, namespace, spec.base_version)
    me = target(name, spec, status, base)
    found = await discover(client, namespace, spec.model, model)
    replicas, _ = await run.admin.observe(found.admin)
    async with triton_servers(found.triton if uses_triton(me, previous) else [],
                              model) as triton:
        triton_versions = await triton.ready_versions() if triton else None
        now, policy = _now(), model.rollback_policy
        metric = await _breach(policy, prometheus_url) \
            if watching(status, policy, prometheus_url, now) else None

        obs = Observed(phase=status.phase, me=me, shard_count=model.sharding.shards,
                       replicas=replicas, now=now, previous=previous,
                       triton_versions=triton_versions,
                       triton_expected=model.dense.deployment == "Managed"
                       and model.dense.replicas > 0,
                       watch_until=status.watch_until, breach=metric,
                       restored=status.completed_at is not None,
                       golden_passed=status.golden_set is not None)
        step = plan(obs)
        servers = dataclasses.replace(
            run, checks=checks(me, previous), triton=triton, golden=functools.partial(
                golden.check, client, namespace, spec.validation.golden_set, model, found,
                me, previous))
        failure = reason = None
        for action in step.actions:
            try:
                result = await servers.run(action)
            except golden.GoldenMismatch as err:
                failure, reason = f"golden set: {err}", "GoldenSetMismatch"
                break
            except Exception as err:  # a failed action is a failed update, handled below
                failure = f"{action}: {err}"
                logger.warning("action %s failed: %s", action, err)
                break
            if result is not None:
                status = status.model_copy(update={"golden_set": result})
    if failure:  # the plan decides what it means (during a rollout: a failed update)
        step = plan(dataclasses.replace(obs, failure=failure, failure_reason=reason))
    return settle(name, status, step, failure, policy, active_name, _now())


async def _breach(policy: RollbackPolicy, url: str) -> str | None:
    try:
        value = await query_value(url, policy.metric)
    except PrometheusError as err:  # no evidence of a breach; the window keeps watching
        LOG.warning("rollback metric of this version unreadable: %s", err)
        return None
    return breach(policy, value)
