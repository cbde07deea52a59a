"""ABTest handlers: ramp the weights, apply the routes, stop variants that breach a
guardrail, pack the arms (the RecModel controller applies the placement), conclude with
a verdict, report status. The logic lives in the pure abtest_* modules.

The operator never writes an ABTest's (or a RecModel's) spec: a Promote verdict is a
status field and an Event, and the routes send all traffic to the winner until the user
or the GitOps pipeline applies the promotion and deletes the test.

Periodic work (the ramp's steps, guardrail checks) runs in one operator-level task
(started with the first ABTest event), which re-reconciles the ABTests the watch has shown this
process. Not kopf.timer/daemon: Kopf would put a finalizer on every ABTest for them,
though nothing outside the cluster needs cleaning (the routes are owned objects,
garbage-collected with the test). Not kopf.TemporaryError re-driving either: each retry
is logged as a failure, posted as an Event and written to the object's annotations.
"""

from __future__ import annotations

import asyncio
import json
import os
import urllib.parse
import urllib.request
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import kopf
from pydantic import ValidationError

from controllers import abtest_costs as costs
from controllers import abtest_ramp as ramp
from controllers import recmodel
from controllers.abtest_guardrails import arm_query, breaches
from controllers.abtest_placement import fingerprint
from controllers.abtest_routes import routes
from controllers.abtest_verdict import decide
from controllers.kubeapi import kube
from costmodel import InfeasibleError, solve
from recop.api import ABTEST, RECMODEL
from recop.api.abtest import ABTestSpec, ABTestStatus, Phase
from recop.api.common import API_VERSION, GROUP, VERSION, parse_duration
from recop.api.recmodel import RecModelSpec
from recop.kube import Kube, is_subset

RESOURCE = (GROUP, VERSION, ABTEST.plural)
STATUS_MANAGER = "recop-abtest"
# Seconds between periodic checks; tests shorten it.
INTERVAL = float(os.environ.get("RECOP_ABTEST_INTERVAL", "30"))

_known: set[tuple[str, str]] = set()
_refusals: dict[tuple[str, str], str] = {}
_locks: defaultdict[tuple[str, str], asyncio.Lock] = defaultdict(asyncio.Lock)


def prometheus_sample(query: str) -> float | None:
    """First value of an instant query against $RECOP_PROMETHEUS_URL; None: no data."""
    url = os.environ["RECOP_PROMETHEUS_URL"].rstrip("/") + "/api/v1/query?" + \
        urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.load(response)
    if body.get("status") != "success":
        raise RuntimeError(f"query {query!r} failed: {body}")
    result = body["data"]["result"]
    return float(result[0]["value"][1]) if result else None


async def reconcile(namespace: str, name: str, logger) -> None:
    async with _locks[(namespace, name)]:
        client = await kube()
        body = await client.get(API_VERSION, ABTEST.kind, namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            _known.discard((namespace, name))
            return
        await _reconcile(client, body, logger)


async def _reconcile(client: Kube, body: dict, logger) -> None:
    meta = body["metadata"]
    previous = ABTestStatus.model_validate(body.get("status") or {})
    try:
        spec = ABTestSpec.model_validate(body["spec"])
    except ValidationError as exc:
        await _report(client, body, previous.model_copy(update={"phase": Phase.FAILED}))
        raise kopf.PermanentError(f"invalid spec: {exc}") from exc
    now = datetime.now(UTC).replace(microsecond=0)
    started_at = previous.started_at or now
    stopped = set(previous.stopped_arms)

    verdict = previous.verdict
    if verdict is None and now >= started_at + timedelta(
            seconds=parse_duration(spec.duration)):
        verdict = await _conclude(spec, started_at, now, stopped, body)
    concluded = verdict is not None
    if spec.guardrails and not concluded:
        if "RECOP_PROMETHEUS_URL" not in os.environ:
            raise kopf.PermanentError("guardrails need RECOP_PROMETHEUS_URL")
        found = await asyncio.to_thread(breaches, spec, stopped, prometheus_sample)
        for arm, reason in found.items():
            logger.warning("stopping %s: %s", arm, reason)
            kopf.warn(body, reason="GuardrailBreached", message=f"stopped {arm}: {reason}")
        stopped |= set(found)

    percent = ramp.ramp_percent(spec, started_at, now)
    winner = (verdict.winner if verdict and verdict.action == "Promote"
              else spec.baseline.name) if concluded else None
    weights = ramp.applied_weights(spec, percent, stopped, winner)
    # A concluded test frees every arm but the one that now takes the traffic; their
    # users' arm headers lead to the baseline.
    unplaced = {a for a, w in weights.items() if w == 0} if concluded else stopped
    desired = routes(meta["name"], meta["namespace"], meta["uid"], spec, weights, unplaced)
    for obj in desired:
        live = await client.get(obj["apiVersion"], obj["kind"], meta["namespace"],
                                meta["name"])
        if live is None or not is_subset(obj, live):
            await client.apply(obj)

    placed = await _place(client, spec, meta["namespace"], weights, unplaced, previous, body)

    if concluded:
        phase = Phase.CONCLUDED
    elif {v.name for v in spec.variants} <= stopped:
        phase = Phase.STOPPED
    else:
        phase = Phase.RUNNING if ramp.fully_ramped(percent) else Phase.RAMPING
    order = [spec.baseline.name, *(v.name for v in spec.variants)]
    await _report(client, body, previous.model_copy(update={
        "phase": phase, "observed_generation": meta.get("generation"),
        "started_at": started_at, "applied_weights": weights,
        "bucket_weights": ramp.bucket_weights(spec, percent),
        "stopped_arms": [a for a in order if a in stopped], "verdict": verdict, **placed}))


async def _conclude(spec: ABTestSpec, started_at: datetime, now: datetime,
                    stopped: set[str], body: dict):
    """The verdict from the success metric's history since the start (one sample per
    step of a range query), posted as an Event; Promote is for the pipeline to apply."""
    samples = {}
    if "RECOP_PROMETHEUS_URL" in os.environ:
        for arm in (spec.baseline, *spec.variants):
            samples[arm.name] = await asyncio.to_thread(
                prometheus_range, arm_query(spec.success_metric.query, arm.name),
                started_at, now)
    verdict = decide(spec, samples, stopped, now)
    kopf.info(body, reason=verdict.action or "Concluded",
              message=f"{verdict.test}: winner {verdict.winner or 'none'}; {verdict.summary}"
              [:1024])
    return verdict


def prometheus_range(query: str, start: datetime, end: datetime) -> list[float]:
    """Values of the first series of a range query (at most ~10,000 points)."""
    step = max(1, int((end - start).total_seconds() // 10_000))
    url = os.environ["RECOP_PROMETHEUS_URL"].rstrip("/") + "/api/v1/query_range?" + \
        urllib.parse.urlencode({"query": query, "start": start.timestamp(),
                                "end": end.timestamp(), "step": step})
    with urllib.request.urlopen(url, timeout=30) as response:
        body = json.load(response)
    if body.get("status") != "success":
        raise RuntimeError(f"query {query!r} failed: {body}")
    result = body["data"]["result"]
    return [float(v) for _, v in result[0]["values"]] if result else []


async def _place(client: Kube, spec: ABTestSpec, namespace: str, weights: dict[str, int],
                 stopped: set[str], previous: ABTestStatus, body: dict) -> dict:
    """Re-pack the running arms for the current weights and measurements; the baseline
    stays on its node (solve's `current`). Returns the status fields to update: none
    while an arm's RecModel is missing or no placement fits (the last one stays)."""
    models = {}
    for arm in (spec.baseline, *spec.variants):
        obj = await client.get(API_VERSION, RECMODEL.kind, namespace, arm.model)
        if obj is None:
            return {}
        models[arm.model] = RecModelSpec.model_validate(obj["spec"])
    sample = (prometheus_sample if spec.cost.measurement == "prometheus"
              and "RECOP_PROMETHEUS_URL" in os.environ else _no_sample)
    nodes = await client.list("v1", "Node")

    def pack():
        model_costs = costs.model_costs(spec, namespace, models, weights, stopped, sample)
        current = {a.arm: a.node for a in previous.assignments if a.node}
        placement = solve(model_costs, costs.node_pool(nodes), current=current)
        return costs.assignments(spec, placement), costs.cost_sources(model_costs)

    try:
        assignments, sources = await asyncio.to_thread(pack)
    except InfeasibleError as exc:
        # Once per distinct refusal, not once per periodic check.
        key = (namespace, body["metadata"]["name"])
        if _refusals.get(key) != str(exc):
            _refusals[key] = str(exc)
            kopf.warn(body, reason="CannotPlace", message=str(exc))
        return {}
    _refusals.pop((namespace, body["metadata"]["name"]), None)
    return {"assignments": assignments, "cost_sources": sources}


def _no_sample(_query: str) -> None:
    return None


async def _report(client: Kube, body: dict, status: ABTestStatus) -> None:
    """Apply the status only when it changed, so a settled test writes nothing."""
    wire = status.to_wire()
    if wire != (body.get("status") or {}):
        meta = body["metadata"]
        await client.apply_status(API_VERSION, ABTEST.kind, meta["namespace"], meta["name"],
                                  wire, STATUS_MANAGER)


@kopf.on.event(*RESOURCE, id="abtest")
async def on_event(type, body, namespace, name, logger, **_):
    await _replace_arms(namespace, name, None if type == "DELETED" else body, logger)
    if type == "DELETED":
        _known.discard((namespace, name))
        return
    _known.add((namespace, name))
    _start_ticker(logger)
    await reconcile(namespace, name, logger)


_placed: dict[tuple[str, str], tuple] = {}


async def _replace_arms(namespace: str, name: str, body: dict | None, logger) -> None:
    """When a test's assignments change (or it goes), re-reconcile the arm models: the
    RecModel controller applies the placement to their Deployments."""
    new = fingerprint(body) if body else ()
    old = _placed.get((namespace, name), ())
    if new == old:
        return
    _placed[(namespace, name)] = new
    for model in sorted({entry[0] for entry in (*old, *new) if entry[0]}):
        await recmodel.reconcile(namespace, model, spec_changed=True, logger=logger)


_ticker: asyncio.Task | None = None


def _start_ticker(logger) -> None:
    """Started from a handler, not kopf.on.startup: the task inherits the handler's
    context, which kopf.warn needs to post Events."""
    global _ticker
    if _ticker is None or _ticker.done():
        _ticker = asyncio.get_running_loop().create_task(_tick(logger),
                                                         name="recop-abtest-ticker")


async def _tick(logger) -> None:
    while True:
        await asyncio.sleep(INTERVAL)
        for namespace, name in sorted(_known):
            try:
                await reconcile(namespace, name, logger)
            except Exception:  # one broken test must not stop the others' checks
                logger.exception("ABTest %s/%s: periodic check failed", namespace, name)
