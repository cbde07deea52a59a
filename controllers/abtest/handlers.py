"""ABTest handlers: ramp the weights, apply the routes, stop variants that breach a
guardrail and free their resources, pack the running arms (the RecModel controller
applies the placement: it watches ABTests itself), conclude with a verdict, report status
and conditions. The logic lives in the pure modules beside this one.

The operator never writes an ABTest's (or a RecModel's) spec: a Promote verdict is a
status field and an Event, and the routes send all traffic to the winner until the user
or the GitOps pipeline applies the promotion and deletes the test. A stopped arm's
RecModel is scaled to zero through the test's status (freedModels), which the RecModel
controller reads, never through the RecModel itself.

Periodic work (the ramp's steps, guardrail checks) runs in one operator-level task
(started with the first ABTest event), which re-reconciles the ABTests the watch has shown this
process. Not kopf.timer/daemon: Kopf would put a finalizer on every ABTest for them,
though nothing outside the cluster needs cleaning (the routes are owned objects,
garbage-collected with the test). Not kopf.TemporaryError re-driving either: each retry
is logged as a failure, posted as an Event and written to the object's annotations.
Kopf's peering pauses only its own handlers, timers and daemons, so the task reads the
peering object itself and skips its rounds while a peer acts (controllers/abtest/peering.py).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import kopf
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import ValidationError

from controllers.abtest import costs, ramp
from controllers.abtest.conditions import Outcome, conditions, message_of
from controllers.abtest.guardrails import arm_query, breaches, guardrail_queries
from controllers.abtest.peering import paused
from controllers.abtest.placement import freed_models, released_arms
from controllers.abtest.routes import routes
from controllers.abtest.verdict import Counts, count_queries, decide
from controllers.common import metrics
from controllers.common.kube import Kube, is_subset
from controllers.common.kubeapi import kube
from controllers.common.nodes import node_pool
from controllers.common.prometheus import PrometheusError, query_range_values, query_value
from controllers.common.settings import Settings, settings_of
from costmodel import InfeasibleError, Placement, solve
from recop.api import ABTEST, RECMODEL
from recop.api.abtest import ABTestSpec, ABTestStatus, Phase, Verdict
from recop.api.common import API_VERSION, GROUP, VERSION, parse_duration
from recop.api.recmodel import RecModelSpec

RESOURCE = (GROUP, VERSION, ABTEST.plural)
STATUS_MANAGER = "recop-abtest"
NO_PROMETHEUS = "no Prometheus to read metrics from: set RECOP_PROMETHEUS_URL"

_known: set[tuple[str, str]] = set()
_locks: defaultdict[tuple[str, str], asyncio.Lock] = defaultdict(asyncio.Lock)


async def _values(url: str | None, queries: list[str], at: datetime | None = None
                  ) -> tuple[dict[str, float | None], list[str]]:
    """query -> value for each query Prometheus answered, and the errors of the others."""
    if url is None:
        return {}, [NO_PROMETHEUS] if queries else []
    answers = await asyncio.gather(*(query_value(url, q, at=at) for q in queries),
                                   return_exceptions=True)
    values, errors = {}, []
    for query, answer in zip(queries, answers, strict=True):
        if isinstance(answer, PrometheusError):
            errors.append(str(answer))
        elif isinstance(answer, BaseException):
            raise answer
        else:
            values[query] = answer
    return values, errors


async def reconcile(namespace: str, name: str, settings: Settings, logger) -> None:
    async with _locks[(namespace, name)]:
        client = await kube()
        body = await client.get(API_VERSION, ABTEST.kind, namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            _known.discard((namespace, name))
            return
        try:
            await _reconcile(client, body, settings.prometheus_url, logger)
        except Exception:
            metrics.handled(ABTEST.kind, ok=False)
            raise
        metrics.handled(ABTEST.kind, ok=True)


async def _reconcile(client: Kube, body: dict, prometheus: str | None, logger) -> None:
    meta = body["metadata"]
    generation = meta.get("generation")
    previous = ABTestStatus.model_validate(body.get("status") or {})
    try:
        spec = ABTestSpec.model_validate(body["spec"])
    except ValidationError as exc:
        # The CRD schema refuses nearly all of this: reaching here means a schema older
        # than the operator.
        failed = Outcome(False, "InvalidSpec", str(exc)[:1024])
        await _report(client, body, previous.model_copy(update={
            "phase": Phase.FAILED, "observed_generation": generation,
            "conditions": conditions(previous.conditions, generation, phase=Phase.FAILED,
                                     percent=0, routed=failed, placed=None, breaches={},
                                     stopped=[], verdict=None, problems=[])}))
        raise kopf.PermanentError(f"invalid spec: {exc}") from exc
    now = datetime.now(UTC).replace(microsecond=0)
    started_at = previous.started_at or now
    stopped = set(previous.stopped_arms)
    problems: list[str] = []

    verdict = previous.verdict
    if verdict is None and now >= started_at + timedelta(
            seconds=parse_duration(spec.duration)):
        verdict, errors = await _conclude(prometheus, spec, started_at, now, stopped)
        problems += errors
        if verdict is not None:
            kopf.info(body, reason=verdict.action or "Concluded",
                      message=f"{verdict.test}: winner {verdict.winner or 'none'}; "
                              f"{verdict.summary}"[:1024])
    concluded = verdict is not None
    found: dict[str, str] = {}
    if spec.guardrails and not concluded:
        values, errors = await _values(prometheus, guardrail_queries(spec, stopped))
        problems += errors
        found = breaches(spec, stopped, values.get)
        for arm, reason in found.items():
            logger.warning("stopping %s: %s", arm, reason)
            kopf.warn(body, reason="GuardrailBreached",
                      message=f"stopped {arm} and freed its resources: {reason}")
            metrics.guardrail_breached(meta["namespace"], meta["name"], arm)
        stopped |= set(found)

    percent = ramp.ramp_percent(spec, started_at, now)
    winner = (verdict.winner if verdict and verdict.action == "Promote"
              else spec.baseline.name) if concluded else None
    weights = ramp.applied_weights(spec, percent, stopped, winner)
    released = released_arms(spec, stopped, weights, concluded)
    for obj in routes(meta["name"], meta["namespace"], meta["uid"], spec, weights, released):
        live = await client.get(obj["apiVersion"], obj["kind"], meta["namespace"],
                                meta["name"])
        if live is None or not is_subset(obj, live):
            await client.apply(obj)
    routed = Outcome(True, "RoutesApplied", "weights " + ", ".join(
        f"{arm} {w}%" for arm, w in weights.items()))

    placed, fields, errors = await _place(client, prometheus, spec, meta["namespace"],
                                          weights, released, previous)
    problems += errors
    freed = freed_models(spec, released)
    if set(freed) - set(previous.freed_models):
        kopf.info(body, reason="ResourcesFreed", message=(
            f"scaled {', '.join(sorted(set(freed) - set(previous.freed_models)))} to zero "
            "replicas: no running arm serves them"))

    if concluded:
        phase = Phase.CONCLUDED
    elif {v.name for v in spec.variants} <= stopped:
        phase = Phase.STOPPED
    else:
        phase = Phase.RUNNING if ramp.fully_ramped(percent) else Phase.RAMPING
    order = [spec.baseline.name, *(v.name for v in spec.variants)]
    stopped_arms = [a for a in order if a in stopped]
    status_conditions = conditions(
        previous.conditions, generation, phase=phase, percent=percent, routed=routed,
        placed=placed, breaches=found, stopped=stopped_arms, verdict=verdict,
        problems=problems)
    _post_changes(body, previous, placed, problems)
    models = {spec.baseline.name: spec.baseline.model, **{v.name: v.model for v in spec.variants}}
    for arm, weight in weights.items():
        metrics.arm_figures(meta["namespace"], meta["name"], arm, models[arm], weight, {})
    await _report(client, body, previous.model_copy(update={
        "phase": phase, "observed_generation": generation, "conditions": status_conditions,
        "started_at": started_at, "applied_weights": weights,
        "bucket_weights": ramp.bucket_weights(spec, percent), "stopped_arms": stopped_arms,
        "freed_models": freed, "verdict": verdict, **fields}))


def _post_changes(body: dict, previous: ABTestStatus, placed: Outcome,
                  problems: list[str]) -> None:
    """Events for what a user must see, once per change rather than once per check:
    a placement that fails, metrics that cannot be read."""
    was_placed = next((c for c in previous.conditions if c.type == "Placed"), None)
    if not placed.ok and (was_placed is None or was_placed.message != placed.message):
        kopf.warn(body, reason=placed.reason, message=placed.message[:1024])
    elif placed.ok and (was_placed is None or was_placed.message != placed.message):
        kopf.info(body, reason="Placed", message=placed.message[:1024])
    text = "; ".join(problems)
    degraded = message_of(previous.conditions, "Degraded") or ""
    if problems and text not in degraded:
        kopf.warn(body, reason="MetricsUnavailable", message=text[:1024])


async def _conclude(url: str | None, spec: ABTestSpec, started_at: datetime, now: datetime,
                    stopped: set[str]) -> tuple[Verdict | None, list[str]]:
    """The verdict from the success metric over the test (None while the metrics cannot
    be read: a verdict is final, so it is never made without them)."""
    if url is None:
        return None, [NO_PROMETHEUS]
    try:
        if spec.success_metric.successes is not None:
            queries = count_queries(spec, started_at, now)
            flat = [q for pair in queries.values() for q in pair]
            values, errors = await _values(url, flat, at=now)
            if errors:
                return None, errors
            counts = {arm: Counts(values[s] or 0.0, values[t] or 0.0)
                      for arm, (s, t) in queries.items()}
            return decide(spec, {}, stopped, now, counts), []
        samples = {arm.name: await query_range_values(
            url, arm_query(spec.success_metric.query, arm.name), started_at, now)
            for arm in (spec.baseline, *spec.variants)}
        return decide(spec, samples, stopped, now), []
    except PrometheusError as exc:
        return None, [str(exc)]


async def _place(client: Kube, prometheus: str | None, spec: ABTestSpec, namespace: str,
                 weights: dict[str, int], released: set[str], previous: ABTestStatus
                 ) -> tuple[Outcome, dict, list[str]]:
    """Re-pack the running arms for the current weights and measurements; the baseline
    stays on its node (solve's `current`) with its first figures. Returns the Placed
    outcome, the status fields to update (none while no placement fits: the last one
    stays) and the metric errors."""
    models: dict[str, RecModelSpec] = {}
    for arm in (spec.baseline, *spec.variants):
        obj = await client.get(API_VERSION, RECMODEL.kind, namespace, arm.model)
        if obj is None:
            return Outcome(False, "RecModelMissing",
                           f"RecModel {arm.model} (arm {arm.name}) does not exist"), {}, []
        models[arm.model] = RecModelSpec.model_validate(obj["spec"])
    values, errors = await _values(prometheus,
                                   costs.cost_queries(spec, namespace, models, released))
    nodes = await client.list("v1", "Node")
    model_costs = costs.model_costs(spec, namespace, models, weights, released, values,
                                    previous.cost_sources)
    current = {a.arm: a.node for a in previous.assignments if a.node}
    try:
        placement = await asyncio.to_thread(solve, model_costs, node_pool(nodes),
                                            current)
    except InfeasibleError as exc:
        return Outcome(False, "CannotPlace", str(exc)), {}, errors
    return Outcome(True, "Placed", _summary(placement)), {
        "assignments": costs.assignments(spec, placement),
        "cost_sources": costs.cost_sources(model_costs)}, errors


def _summary(placement: Placement) -> str:
    """Cores, the bound and the naive deployment, and the arms whose SLO is at risk."""
    p = placement
    text = (f"{len(p.models)} arm(s) on {p.cores_used} core(s) by {p.solver}"
            f"{' (optimal)' if p.optimal else ''}; lower bound {p.lower_bound_cores}, "
            f"one pod per arm {p.naive_cores}")
    risks = [f"{r.model} {r.level}: {r.reason}" for r in p.risks if r.level != "ok"]
    return text + ("; SLO risk: " + "; ".join(risks) if risks else "")


async def _report(client: Kube, body: dict, status: ABTestStatus) -> None:
    """Apply the status only when it changed, so a settled test writes nothing."""
    wire = status.to_wire()
    if wire != (body.get("status") or {}):
        meta = body["metadata"]
        await client.apply_status(API_VERSION, ABTEST.kind, meta["namespace"], meta["name"],
                                  wire, STATUS_MANAGER)


@kopf.on.event(*RESOURCE, id="abtest")
async def on_event(type, namespace, name, memo, logger, **_):
    if type == "DELETED":
        _known.discard((namespace, name))
        metrics.forget_abtest(namespace, name)
        return
    settings = settings_of(memo)
    _known.add((namespace, name))
    _start_ticker(settings, logger)
    await reconcile(namespace, name, settings, logger)


_ticker: asyncio.Task | None = None
_settings: kopf.OperatorSettings | None = None


@kopf.on.startup(id="abtest-peering")
async def remember_settings(settings: kopf.OperatorSettings, **_):
    """Kopf has set the peering settings (priority, standalone, scope) by now."""
    global _settings
    _settings = settings


async def _paused(logger) -> bool:
    """Whether a peer acts instead of this replica. Only cluster-wide peering is read
    (the chart's); a namespaced operator runs standalone (the e2e tests, `recop-dev`)."""
    if _settings is None or _settings.peering.standalone or not _settings.peering.clusterwide:
        return False
    peering = _settings.peering
    api = k8s.CustomObjectsApi((await kube()).api)
    try:
        listed = await api.list_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings")
    except ApiException as exc:
        if exc.status == 404:  # no peering CRD: Kopf runs unpaused (peering not mandatory)
            return False
        raise
    mine = next((o for o in listed.get("items", [])
                 if o["metadata"]["name"] == peering.name), None)
    if mine is None:
        return False
    now = datetime.now(UTC)
    if paused(mine.get("status") or {}, peering.priority, now):
        logger.debug("ABTest checks paused: a peer of higher or equal priority acts")
        return True
    return False


def _start_ticker(settings: Settings, logger) -> None:
    """Started from a handler, not kopf.on.startup: the task inherits the handler's
    context, which kopf.warn needs to post Events."""
    global _ticker
    if _ticker is None or _ticker.done():
        _ticker = asyncio.get_running_loop().create_task(_tick(settings, logger),
                                                         name="recop-abtest-ticker")


async def _tick(settings: Settings, logger) -> None:
    while True:
        await asyncio.sleep(settings.abtest_interval)
        try:
            if await _paused(logger):
                continue
        except Exception:  # unknown is not paused: Kopf itself keeps acting then
            logger.exception("ABTest checks: cannot read the peering object")
        for namespace, name in sorted(_known):
            try:
                await reconcile(namespace, name, settings, logger)
            except Exception:  # one broken test must not stop the others' checks
                logger.exception("ABTest %s/%s: periodic check failed", namespace, name)
