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
import logging
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from enum import Enum

import kopf
from pydantic import ValidationError

from controllers.common import labels as L
from controllers.common.admin_auth import AdminCredentialsError
from controllers.common.kube import Kube
from controllers.common.kubeapi import kube
from controllers.common.prometheus import PrometheusError, query_value
from controllers.modelversion import drivers as io
from controllers.modelversion import golden
from controllers.modelversion.plan import (
    Observed,
    Target,
    catch_up_step,
    plan,
    queue_blocker,
    realtime_problem,
)
from controllers.modelversion.validate import (
    Invalid,
    Unavailable,
    manifest_rows,
    validate_uri,
)
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
    GoldenSetResult,
    ModelVersionSpec,
    ModelVersionStatus,
    Phase,
    RealtimeProgress,
    ShardProgress,
)
from recop.api.recmodel import RecModelSpec

LOG = logging.getLogger(__name__)

RESOURCE = (GROUP, VERSION, MODELVERSION.plural)
STATUS_MANAGER = "recop-modelversion"
POLL_SECONDS = 0.5
# While an update waits on the servers, look again soon (a small load is done in a
# fraction of a second), then less and less often (a large one takes minutes, and every
# look costs a few API calls).
WAIT_FIRST_SECONDS, WAIT_MAX_SECONDS = 0.05, 2.0
# The stream's health is judged over this interval (stall and malformed rates).
REALTIME_POLL_SECONDS = 5
SETTLED = (Phase.SUPERSEDED,)
# Actions that only start work on the servers (it finishes later).
LOADS = ("load_full", "apply_incremental")


class Next(Enum):
    """What the drive loop does after a pass."""

    DONE = "done"  # nothing more to drive for this version
    NOW = "now"  # the pass moved on: take the next one at once
    LATER = "later"  # waiting on servers, the queue or the window: poll again

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
            base: Target | None = None) -> Target:
    rules = spec.validation
    return Target(name, status.embedding_version or 0, spec.kind, spec.source, base,
                  status.dense_model_version, rules.golden_set is not None,
                  (rules.max_abs_value, rules.allow_non_finite))


def _checks(*targets: Target | None) -> dict[int, tuple[float, bool]]:
    """The value checks of every version the servers may be asked to load."""
    return {t.number: t.checks for top in targets if top for t in top.chain()}


# A chain longer than this (incrementals on incrementals) is a loop or a pipeline that
# never cuts a full checkpoint; either way it is not rebuilt.
MAX_CHAIN = 200


async def _load_target(client: Kube, namespace: str, name: str | None,
                       depth: int = 0) -> Target | None:
    """The version `name` with its chain of bases, as far as they still exist."""
    if not name or depth > MAX_CHAIN:
        return None
    body = await client.get(API_VERSION, MODELVERSION.kind, namespace, name)
    if body is None:
        return None
    spec = ModelVersionSpec.model_validate(body["spec"])
    base = await _load_target(client, namespace, spec.base_version, depth + 1) \
        if spec.kind == "incremental" else None
    return _target(name, spec, ModelVersionStatus.model_validate(body.get("status") or {}),
                   base)


async def drive(namespace: str, name: str, logger) -> None:
    client = await kube()
    admin = io.Admin()
    wait = WAIT_FIRST_SECONDS
    try:
        while True:
            body = await client.get(API_VERSION, MODELVERSION.kind, namespace, name)
            if body is None or body["metadata"].get("deletionTimestamp"):
                return
            spec = ModelVersionSpec.model_validate(body["spec"])
            async with _locks[(namespace, spec.model)]:
                after = await _pass(client, admin, body, spec, logger)
            if after == Next.DONE:
                return
            if after == Next.LATER and spec.kind == "realtime":
                await asyncio.sleep(REALTIME_POLL_SECONDS)  # outside the model's lock
            elif after == Next.LATER:
                await asyncio.sleep(wait)
                wait = min(WAIT_MAX_SECONDS, wait * 2)
            else:
                wait = WAIT_FIRST_SECONDS
    finally:
        await admin.close()


async def _pass(client: Kube, admin: io.Admin, body: dict, spec: ModelVersionSpec,
                logger) -> Next:
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    status = ModelVersionStatus.model_validate(body.get("status") or {})
    model_body = await client.get(API_VERSION, RECMODEL.kind, namespace, spec.model)
    if model_body is None:
        await _write(client, body, status.model_copy(update={
            "message": f"waiting for RecModel {spec.model}"}))
        return Next.LATER
    model = RecModelSpec.model_validate(model_body["spec"])
    active_name = (model_body.get("status") or {}).get("activeVersion")

    if status.phase == Phase.PENDING:
        others = await client.list(API_VERSION, MODELVERSION.kind, namespace)
        blocker = queue_blocker(body, others)
        if blocker:
            await _write(client, body, status.model_copy(update={
                "reason": "Queued", "message": f"waiting for {blocker} to settle"}))
            return Next.LATER
        if spec.base_version and spec.base_version != active_name:
            return await _refuse(client, body, status, "BaseNotActive",
                                 f"base {spec.base_version} is not the active version "
                                 f"({active_name or 'none'})")
        status = status.model_copy(update={"phase": Phase.VALIDATING, "started_at": _now(),
                                           "previous_version": active_name,
                                           "reason": None, "message": "validating"})
        await _write(client, body, status)
        return Next.NOW

    if status.phase == Phase.VALIDATING:
        return await _validate(client, body, spec, status, model, namespace, logger)

    if status.phase in SETTLED:
        return Next.DONE
    try:
        await admin.authenticate(client, namespace, spec.model, model)
    except AdminCredentialsError as err:
        await _write(client, body, status.model_copy(update={
            "reason": "AdminCredentials", "message": str(err)}))
        return Next.LATER
    if spec.kind == "realtime":
        return await _watch_stream(client, admin, body, status, spec, model, active_name)

    previous = await _load_target(client, namespace, status.previous_version)
    base = await _load_target(client, namespace, spec.base_version)
    me = _target(name, spec, status, base)
    found = await io.discover(client, namespace, spec.model, model)
    replicas, _ = await admin.observe(found.admin)
    triton = io.Triton(found.triton, model.dense.model_name, model) \
        if found.triton and (me.dense_version or (previous and previous.dense_version)) \
        else None
    triton_versions = await triton.ready_versions() if triton else None
    breach = None
    if status.phase == Phase.ACTIVE and status.watch_until and _now() < status.watch_until:
        breach = await _breach(model)

    obs = Observed(phase=status.phase, me=me, shard_count=model.sharding.shards,
                   replicas=replicas, now=_now(), previous=previous,
                   triton_versions=triton_versions, watch_until=status.watch_until,
                   breach=breach, restored=status.completed_at is not None,
                   golden_passed=status.golden_set is not None)
    step = plan(obs)
    failure = reason = None
    checks = _checks(me, previous)
    for action in step.actions:
        try:
            if action[0] == "triton_load":
                await triton.load(action[1], action[2])
            elif action[0] == "golden":
                status = status.model_copy(update={"golden_set": await _golden(
                    client, namespace, spec, model, found, me, previous)})
            else:
                await admin.run(action, checks)
        except golden.GoldenMismatch as err:
            failure, reason = f"golden set: {err}", "GoldenSetMismatch"
            break
        except Exception as err:  # a failed action is a failed update, handled below
            failure = f"{' '.join(map(str, action[:2]))}: {err}"
            logger.warning("action %s failed: %s", action, err)
            break
    if failure and status.phase == Phase.LOADING:
        step = plan(dataclasses.replace(obs, failure=failure, failure_reason=reason))
    return await _apply_step(client, body, status, step, model, namespace, spec.model,
                             active_name, failure)


async def _apply_step(client, body, status, step, model, namespace, model_name,
                      active_name, failure) -> Next:
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
    if step.done:
        return Next.DONE
    # Loads run on the servers; anything else this pass did is done, so look again now
    # (but not straight after a failed action, which would only fail again).
    waiting = failure or not step.actions or any(a[0] in LOADS for a in step.actions)
    return Next.LATER if waiting and step.phase is None else Next.NOW


async def _watch_stream(client, admin, body, status, spec, model, active_name) -> Next:
    """A realtime version reports the stream until its base stops serving; a stream that
    stalls, floods malformed messages or falls behind sets Degraded."""
    if spec.base_version != active_name:
        await _write(client, body, status.model_copy(update={
            "phase": Phase.SUPERSEDED, "message": f"{active_name} serves now"}))
        return Next.DONE
    found = await io.discover(client, body["metadata"]["namespace"], spec.model, model)
    _, reports = await admin.observe(found.admin)
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
    return Next.LATER


async def _breach(model: RecModelSpec) -> str | None:
    policy, url = model.rollback_policy, io.prometheus_url()
    if policy is None or not policy.enabled or url is None:
        return None
    try:
        value = await query_value(url, policy.metric)
    except PrometheusError as err:  # no evidence of a breach; the window keeps watching
        LOG.warning("rollback metric of this version unreadable: %s", err)
        return None
    if value is None:
        return None
    over = value > policy.threshold if policy.comparison == "GreaterThan" \
        else value < policy.threshold
    return f"{policy.metric} = {value:g}, {policy.comparison} {policy.threshold:g}" \
        if over else None


async def _golden(client, namespace: str, spec: ModelVersionSpec, model: RecModelSpec,
                  found: io.Endpoints, me: Target, previous: Target | None
                  ) -> GoldenSetResult:
    """Raises GoldenMismatch when the candidate is off by more than the tolerance."""
    rules = spec.validation.golden_set
    s3 = await io.s3_client(client, namespace, model)
    try:
        data = await asyncio.to_thread(golden.read, s3, rules.uri)
    except Exception as err:  # unreadable or malformed: the version cannot be judged
        raise golden.GoldenMismatch(f"cannot read {rules.uri}: {err}") from err
    shards = [found.lookup[i] for i in range(model.sharding.shards)]
    triton = found.triton[0] if found.triton else None
    active = golden.Side(previous.number, previous.dense_version) if previous else None
    difference, reference = await golden.compare(
        data, shards, triton, model.dense.model_name, model.dense.max_batch_size,
        golden.Side(me.number, me.dense_version), active)
    if difference > rules.tolerance:
        raise golden.GoldenMismatch(f"relative difference {difference:.4g} from "
                                    f"{reference} exceeds {rules.tolerance:g}")
    return GoldenSetResult(checked_at=_now(), rows=data.rows,
                           relative_difference=round(difference, 6), compared_with=reference)


async def _refuse(client, body, status, reason: str, message: str) -> Next:
    kopf.warn(body, reason=reason, message=message)
    await _write(client, body, status.model_copy(update={
        "phase": Phase.FAILED, "reason": reason, "message": message,
        "completed_at": _now()}))
    return Next.DONE


async def _validate(client, body, spec, status, model, namespace, logger) -> Next:
    if spec.kind == "realtime":
        if model.stream is None:
            return await _refuse(client, body, status, "NoStream",
                                 f"RecModel {spec.model} has no stream")
        await _write(client, body, status.model_copy(update={
            "phase": Phase.ACTIVE, "activated_at": _now(), "message": "stream configured"}))
        return Next.NOW
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
    except Unavailable as err:
        logger.warning("validation of %s waits for S3: %s", spec.source, err)
        await _write(client, body, status.model_copy(update={
            "reason": "StorageUnavailable", "message": f"{err}; retrying"}))
        return Next.LATER
    dense = spec.dense_model_version or (previous.dense_version if previous else None)
    logger.info("validated %s: version %d", spec.source, manifest.version)
    await _write(client, body, status.model_copy(update={
        "phase": Phase.LOADING, "embedding_version": manifest.version,
        "dense_model_version": dense, "message": "validated"}))
    return Next.NOW


IN_FLIGHT = (Phase.VALIDATING, Phase.LOADING)
# Catch-up passes in a row that changed nothing and waited for no load before it gives up
# (a replica that cannot be built); the next change of the model's endpoints retries.
STUCK_PASSES = 20

_catching_up: dict[tuple[str, str], asyncio.Task] = {}


async def catch_up(namespace: str, model_name: str, logger) -> None:
    """Bring replicas that do not serve the settled active version to it, until all do."""
    client = await kube()
    admin = io.Admin()
    stuck = 0
    try:
        while True:
            async with _locks[(namespace, model_name)]:
                outcome = await _catch_up_pass(client, admin, namespace, model_name, logger)
            if outcome is None or outcome[0].done:
                return
            step, loading = outcome
            stuck = 0 if step.actions or loading else stuck + 1
            if stuck >= STUCK_PASSES:
                logger.warning("catch-up of %s stopped: %s", model_name, step.message)
                return
            await asyncio.sleep(POLL_SECONDS)
    finally:
        await admin.close()


async def _catch_up_pass(client: Kube, admin: io.Admin, namespace: str, model_name: str,
                         logger):
    """None when there is nothing settled to catch up to (no active version, or an update
    in flight: its own plan loads every replica it finds)."""
    model_body = await client.get(API_VERSION, RECMODEL.kind, namespace, model_name)
    active_name = ((model_body or {}).get("status") or {}).get("activeVersion")
    if not active_name:
        return None
    versions = await client.list(API_VERSION, MODELVERSION.kind, namespace)
    mine = [v for v in versions if v["spec"].get("model") == model_name]
    for v in mine:
        status = ModelVersionStatus.model_validate(v.get("status") or {})
        if status.phase in IN_FLIGHT or (status.phase in (Phase.FAILED, Phase.ROLLED_BACK)
                                         and status.completed_at is None):
            return None
    body = next((v for v in mine if v["metadata"]["name"] == active_name), None)
    status = ModelVersionStatus.model_validate((body or {}).get("status") or {})
    if body is None or status.phase != Phase.ACTIVE:
        return None
    model = RecModelSpec.model_validate(model_body["spec"])
    active = await _load_target(client, namespace, active_name)
    try:
        await admin.authenticate(client, namespace, model_name, model)
    except AdminCredentialsError as err:
        logger.warning("catch-up of %s waits: %s", model_name, err)
        return None
    found = await io.discover(client, namespace, model_name, model)
    replicas, _ = await admin.observe(found.admin)
    step = catch_up_step(replicas, active, release=status.verified_at is not None)
    checks = _checks(active)
    for action in step.actions:
        try:
            await admin.run(action, checks)
        except Exception as err:  # the replica went away or refused: the next pass sees it
            logger.warning("catch-up action %s failed: %s", action, err)
            continue
        if action[0] == "commit":
            shard = next(r.shard for r in replicas if r.key == action[1])
            kopf.info(body, reason="ReplicaCaughtUp",
                      message=f"{action[1]} (shard {shard}) now serves {active_name}")
    loading = any(state == "loading" for r in replicas for state in r.versions.values())
    return step, loading


@kopf.on.event("discovery.k8s.io", "v1", "endpointslices", labels={L.MODEL: kopf.PRESENT},
               id="modelversion-replicas")
async def on_replicas(namespace, labels, logger, **_):
    """A replica that joined, restarted empty or missed a commit shows up as a change of
    its shard's endpoints; one catch-up task per model runs until all serve the version."""
    key = (namespace, labels[L.MODEL])
    task = _catching_up.get(key)
    if task is None or task.done():
        _catching_up[key] = asyncio.create_task(catch_up(*key, logger))


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
