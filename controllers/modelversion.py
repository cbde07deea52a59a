"""ModelVersion handlers: queue, validate, then drive the plan until the version settles.

One `drive` loop per ModelVersion, started by on.create and again by on.resume after an
operator restart. It keeps no state of its own: each pass reads the CR, the RecModel and
the servers' Status, asks controllers/modelversion_plan what to do, does it and writes the
status. The queue is the API's creation order (plan.queue_blocker), so it survives
restarts too. No finalizer: deleting a ModelVersion must never unload what serves, and
versions a server still holds are freed by the next version's release step.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import kopf
from pydantic import ValidationError

from controllers import modelversion_drivers as io
from controllers.kubeapi import kube
from controllers.modelversion_plan import (
    Observed,
    Target,
    plan,
    queue_blocker,
    realtime_problem,
)
from controllers.modelversion_validate import Invalid, manifest_rows, validate_uri
from recop.api import MODELVERSION, RECMODEL
from recop.api.common import (
    API_VERSION,
    GROUP,
    VERSION,
    Condition,
    ConditionStatus,
    parse_duration,
    set_condition,
)
from recop.api.modelversion import (
    ModelVersionSpec,
    ModelVersionStatus,
    Phase,
    RealtimeProgress,
    ShardProgress,
)
from recop.api.recmodel import RecModelSpec
from recop.kube import Kube

RESOURCE = (GROUP, VERSION, MODELVERSION.plural)
STATUS_MANAGER = "recop-modelversion"
POLL_SECONDS = 0.5
# The stream's health is judged over this interval (stall and malformed rates).
REALTIME_POLL_SECONDS = 5
SETTLED = (Phase.SUPERSEDED,)

_locks: defaultdict[tuple[str, str], asyncio.Lock] = defaultdict(asyncio.Lock)


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


async def _write(client: Kube, body: dict, status: ModelVersionStatus) -> None:
    if status.to_wire() != (body.get("status") or {}):
        meta = body["metadata"]
        await client.apply_status(API_VERSION, MODELVERSION.kind, meta["namespace"],
                                  meta["name"], status.to_wire(), STATUS_MANAGER)


async def _set_model(client: Kube, namespace: str, model: str, **fields) -> None:
    """The RecModel status fields this controller owns (activeVersion, lastCleanVersion).

    Both go in every apply: server-side apply removes a field its manager stops sending.
    """
    body = await client.get(API_VERSION, RECMODEL.kind, namespace, model) or {}
    current = body.get("status") or {}
    wire = {"activeVersion": fields.get("active", current.get("activeVersion")),
            "lastCleanVersion": fields.get("clean", current.get("lastCleanVersion"))}
    wire = {k: v for k, v in wire.items() if v}
    await client.apply_status(API_VERSION, RECMODEL.kind, namespace, model, wire,
                              STATUS_MANAGER)


async def _set_phase(client: Kube, namespace: str, name: str, phase: Phase) -> None:
    body = await client.get(API_VERSION, MODELVERSION.kind, namespace, name)
    if body is not None:
        status = ModelVersionStatus.model_validate(body.get("status") or {})
        await _write(client, body, status.model_copy(update={"phase": phase}))


def _target(name: str, spec: ModelVersionSpec, status: ModelVersionStatus,
            base_number: int | None = None) -> Target:
    return Target(name, status.embedding_version or 0, spec.kind, spec.source, base_number,
                  status.dense_model_version)


async def _load_target(client: Kube, namespace: str, name: str | None) -> Target | None:
    if not name:
        return None
    body = await client.get(API_VERSION, MODELVERSION.kind, namespace, name)
    if body is None:
        return None
    return _target(name, ModelVersionSpec.model_validate(body["spec"]),
                   ModelVersionStatus.model_validate(body.get("status") or {}))


async def drive(namespace: str, name: str, logger) -> None:
    client = await kube()
    admin = io.Admin()
    while True:
        body = await client.get(API_VERSION, MODELVERSION.kind, namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return
        spec = ModelVersionSpec.model_validate(body["spec"])
        async with _locks[(namespace, spec.model)]:
            done = await _pass(client, admin, body, spec, logger)
        if done:
            return
        await asyncio.sleep(POLL_SECONDS)


async def _pass(client: Kube, admin: io.Admin, body: dict, spec: ModelVersionSpec,
                logger) -> bool:
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    status = ModelVersionStatus.model_validate(body.get("status") or {})
    model_body = await client.get(API_VERSION, RECMODEL.kind, namespace, spec.model)
    if model_body is None:
        await _write(client, body, status.model_copy(update={
            "message": f"waiting for RecModel {spec.model}"}))
        return False
    model = RecModelSpec.model_validate(model_body["spec"])
    active_name = (model_body.get("status") or {}).get("activeVersion")

    if status.phase == Phase.PENDING:
        others = await client.list(API_VERSION, MODELVERSION.kind, namespace)
        blocker = queue_blocker(body, others)
        if blocker:
            await _write(client, body, status.model_copy(update={
                "reason": "Queued", "message": f"waiting for {blocker} to settle"}))
            return False
        if spec.base_version and spec.base_version != active_name:
            return await _refuse(client, body, status, "BaseNotActive",
                                 f"base {spec.base_version} is not the active version "
                                 f"({active_name or 'none'})")
        status = status.model_copy(update={"phase": Phase.VALIDATING, "started_at": _now(),
                                           "previous_version": active_name,
                                           "reason": None, "message": "validating"})
        await _write(client, body, status)
        return False

    if status.phase == Phase.VALIDATING:
        return await _validate(client, body, spec, status, model, namespace, logger)

    if status.phase in SETTLED:
        return True
    if spec.kind == "realtime":
        return await _watch_stream(client, admin, body, status, spec, model, active_name)

    previous = await _load_target(client, namespace, status.previous_version)
    base = await _load_target(client, namespace, spec.base_version)
    me = _target(name, spec, status, base.number if base else None)
    shards, triton_addresses = await io.discover(client, namespace, spec.model, model)
    replicas, _ = await admin.observe(shards)
    triton = io.Triton(triton_addresses, model.dense.model_name, model) \
        if triton_addresses and (me.dense_version or (previous and previous.dense_version)) \
        else None
    triton_versions = await triton.ready_versions() if triton else None
    breach = None
    if status.phase == Phase.ACTIVE and status.watch_until and _now() < status.watch_until:
        breach = await _breach(model)

    obs = Observed(phase=status.phase, me=me, shard_count=model.sharding.shards,
                   replicas=replicas, now=_now(), previous=previous,
                   triton_versions=triton_versions, watch_until=status.watch_until,
                   breach=breach, restored=status.completed_at is not None)
    step = plan(obs)
    failure = None
    for action in step.actions:
        try:
            if action[0] == "triton_load":
                await triton.load(action[1], action[2])
            else:
                await admin.run(action)
        except Exception as err:  # a failed action is a failed update, handled below
            failure = f"{action[0]} on {action[1]}: {err}"
            logger.warning("action %s failed: %s", action, err)
            break
    if failure and status.phase == Phase.LOADING:
        step = plan(dataclasses.replace(obs, failure=failure))
    return await _apply_step(client, body, status, step, model, namespace, spec.model,
                             active_name, failure)


async def _apply_step(client, body, status, step, model, namespace, model_name,
                      active_name, failure) -> bool:
    name = body["metadata"]["name"]
    update: dict = {"shards": [ShardProgress(**s) for s in step.shards] or status.shards}
    if step.message is not None or failure:
        update["message"] = failure or step.message
    if step.reason:
        update["reason"] = step.reason
    if step.phase is not None:
        update["phase"] = step.phase
        post = kopf.info if step.phase == Phase.ACTIVE else kopf.warn
        post(body, reason=step.reason or step.phase.value, message=step.message or "")
    if step.activate:
        policy = model.rollback_policy
        window = parse_duration(policy.window) if policy and policy.enabled else 0
        update |= {"activated_at": _now(), "watch_until": _now() + timedelta(seconds=window)}
    if step.verify:
        update["verified_at"] = _now()
    if step.restored:
        update["completed_at"] = _now()
    status = status.model_copy(update=update)
    await _write(client, body, status)
    # The model's pointers move only after this version's own status says so, so a
    # crash between the two writes is repaired by the next pass.
    if step.activate:
        await _set_model(client, namespace, model_name, active=name)
        if status.previous_version:
            await _set_phase(client, namespace, status.previous_version, Phase.SUPERSEDED)
    if step.verify:
        await _set_model(client, namespace, model_name, clean=name)
    if step.restored and status.previous_version and active_name == name:
        await _set_model(client, namespace, model_name, active=status.previous_version)
        await _set_phase(client, namespace, status.previous_version, Phase.ACTIVE)
        kopf.warn(body, reason="RolledBack",
                  message=f"restored {status.previous_version}: {status.reason}")
    return step.done


async def _watch_stream(client, admin, body, status, spec, model, active_name) -> bool:
    """A realtime version reports the stream until its base stops serving; a stream that
    stalls, floods malformed messages or falls behind sets Degraded."""
    if spec.base_version != active_name:
        await _write(client, body, status.model_copy(update={
            "phase": Phase.SUPERSEDED, "message": f"{active_name} serves now"}))
        return True
    shards, _ = await io.discover(client, body["metadata"]["namespace"], spec.model, model)
    _, reports = await admin.observe(shards)
    last = status.realtime.model_dump() if status.realtime else None
    problem = realtime_problem(reports, last, model.stream.max_lag_seconds)
    progress = RealtimeProgress(
        lag=max((r["lag"] for r in reports), default=0),
        applied=sum(r["applied"] for r in reports),
        malformed=sum(r["malformed"] for r in reports),
        freshness_p50_seconds=round(max((r["freshness_p50_seconds"] for r in reports),
                                        default=0), 2),
        freshness_p99_seconds=round(max((r["freshness_p99_seconds"] for r in reports),
                                        default=0), 2))
    conditions = set_condition(status.conditions, Condition(
        type="Degraded", status=ConditionStatus.TRUE if problem else ConditionStatus.FALSE,
        reason="StreamUnhealthy" if problem else "StreamHealthy", message=problem or ""))
    if problem and problem != status.message:
        kopf.warn(body, reason="StreamUnhealthy", message=problem)
    await _write(client, body, status.model_copy(update={
        "realtime": progress, "conditions": conditions, "message": problem or "applying"}))
    await asyncio.sleep(REALTIME_POLL_SECONDS)
    return False


async def _breach(model: RecModelSpec) -> str | None:
    policy, url = model.rollback_policy, io.prometheus_url()
    if policy is None or not policy.enabled or url is None:
        return None
    value = await io.prometheus_value(url, policy.metric)
    if value is None:
        return None
    over = value > policy.threshold if policy.comparison == "GreaterThan" \
        else value < policy.threshold
    return f"{policy.metric} = {value:g}, {policy.comparison} {policy.threshold:g}" \
        if over else None


async def _refuse(client, body, status, reason: str, message: str) -> bool:
    kopf.warn(body, reason=reason, message=message)
    await _write(client, body, status.model_copy(update={
        "phase": Phase.FAILED, "reason": reason, "message": message,
        "completed_at": _now()}))
    return True


async def _validate(client, body, spec, status, model, namespace, logger) -> bool:
    if spec.kind == "realtime":
        if model.stream is None:
            return await _refuse(client, body, status, "NoStream",
                                 f"RecModel {spec.model} has no stream")
        await _write(client, body, status.model_copy(update={
            "phase": Phase.ACTIVE, "activated_at": _now(), "message": "stream configured"}))
        return False
    base = await _load_target(client, namespace, spec.base_version)
    previous = await _load_target(client, namespace, status.previous_version)
    try:
        s3 = await io.s3_client(client, namespace, model)
        # Row counts are compared with the full version serving now (incrementals carry
        # only changed rows).
        base_rows = None
        if spec.kind == "full" and previous is not None and previous.kind == "full":
            base_rows = await asyncio.to_thread(manifest_rows, s3, previous.uri)
        manifest = await asyncio.to_thread(
            validate_uri, s3, spec.source, model, spec.kind, base.number if base else None,
            base_rows, spec.validation, spec.manifest_sha256)
    except Invalid as err:
        return await _refuse(client, body, status, "ValidationFailed", str(err))
    dense = spec.dense_model_version or (previous.dense_version if previous else None)
    logger.info("validated %s: version %d", spec.source, manifest.version)
    await _write(client, body, status.model_copy(update={
        "phase": Phase.LOADING, "embedding_version": manifest.version,
        "dense_model_version": dense, "message": "validated"}))
    return False


@kopf.on.resume(*RESOURCE)
@kopf.on.create(*RESOURCE)
async def on_modelversion(namespace, name, spec, logger, **_):
    try:
        ModelVersionSpec.model_validate(spec)
    except ValidationError as exc:
        raise kopf.PermanentError(f"invalid spec: {exc}") from exc
    await drive(namespace, name, logger)


@kopf.on.update(GROUP, VERSION, RECMODEL.plural, field="spec.activeVersion")
async def on_user_rollback(namespace, name, new, status, logger, **_):
    """A user points the RecModel at an earlier version: the one serving is rolled back
    to it (re-activated from memory when the servers still hold it)."""
    current = (status or {}).get("activeVersion")
    if not new or new == current or current is None:
        return
    client = await kube()
    body = await client.get(API_VERSION, MODELVERSION.kind, namespace, current)
    if body is None:
        return
    mv = ModelVersionStatus.model_validate(body.get("status") or {})
    await _write(client, body, mv.model_copy(update={
        "phase": Phase.ROLLED_BACK, "reason": "UserRollback", "previous_version": new,
        "completed_at": None, "message": f"RecModel.spec.activeVersion set to {new}"}))
    await drive(namespace, current, logger)
