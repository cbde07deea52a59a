"""RecModel handlers: parse the spec, build the serving objects, apply what changed,
report status from discovery. The logic lives in pure modules beside this one.

Besides its own children, the controller watches ABTests, as a controller-runtime
controller watches another kind and maps it to its own objects: an index of the tests'
placements by model (what the Triton Deployments are built from), and an event handler
that reconciles the models whose placement an ABTest changed. The ABTest controller
never calls into this one. It also watches the model's pods and its failed versions:
why replicas are not ready (controllers/recmodel/causes.py) shows in no endpoint."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import kopf
from pydantic import ValidationError

from controllers.common import labels as L
from controllers.common import metrics
from controllers.common.endpointslices import by_service as slices_by_service
from controllers.common.endpointslices import ready_endpoints
from controllers.common.fit import refusal as fit_refusal
from controllers.common.kube import Kube, is_subset
from controllers.common.kubeapi import kube
from controllers.common.placement import PlacementOverride, override_for, placements
from controllers.common.settings import Settings, settings_of
from controllers.recmodel.cache import (
    CHILDREN,
    MODELS_INDEX,
    NODES_INDEX,
    VERSIONS_INDEX,
    Cache,
    api_version,
    child_index,
    node_entry,
    trimmed,
    version_entry,
)
from controllers.recmodel.causes import Cause, pod_causes, version_cause
from controllers.recmodel.objects import Owner, desired_objects, shard_memory_bytes
from controllers.recmodel.status import (
    MAX_CAUSES,
    STATUS_MANAGER,
    owned_status,
    replicas_missing,
    shows_freshness_breach,
    summarize,
)
from recop.api import ABTEST, MODELVERSION, RECMODEL
from recop.api.common import API_VERSION, GROUP, VERSION, parse_duration
from recop.api.recmodel import Phase, RecModelSpec, RecModelStatus

RESOURCE = (GROUP, VERSION, RECMODEL.plural)
# Kinds RecOp creates for a model, so objects left over from an older spec are removed.
OWNED_KINDS = ("Deployment", "PodDisruptionBudget", "Service", "ConfigMap", "NetworkPolicy")

_locks: defaultdict[tuple[str, str], asyncio.Lock] = defaultdict(asyncio.Lock)
_queued: set[tuple[str, str]] = set()


async def reconcile(namespace: str, name: str, *, spec_changed: bool, settings: Settings,
                    abtest_placements: kopf.Index, cache: Cache, logger) -> None:
    """Bring one RecModel's objects and status in line with its spec.

    Serialised per model; a burst of child events while one run is waiting collapses
    into that run. `spec_changed` applies every object (SSA also drops fields the new
    spec no longer sets) and prunes; otherwise only objects that drifted are applied, so
    a settled model causes no writes.
    """
    key = (namespace, name)
    if not spec_changed and key in _queued:
        return
    _queued.add(key)
    async with _locks[key]:
        _queued.discard(key)
        client = await kube()
        body = cache.model(namespace, name) or await client.get(
            API_VERSION, RECMODEL.kind, namespace, name)  # not indexed yet
        if body is None or body["metadata"].get("deletionTimestamp"):
            metrics.forget_recmodel(namespace, name)
            return
        # The ABTests' placement of this model, as the index holds it now.
        override = override_for(abtest_placements.get((namespace, name), ()))
        try:
            await _reconcile(client, cache, body, spec_changed, override,
                             settings.operator_namespace, logger)
        except Exception:
            metrics.handled(RECMODEL.kind, ok=False)
            raise
        metrics.handled(RECMODEL.kind, ok=True)


async def _reconcile(client: Kube, cache: Cache, body: dict, spec_changed: bool,
                     override: PlacementOverride | None, operator_namespace: str | None,
                     logger) -> None:
    meta = body["metadata"]
    name, namespace, generation = meta["name"], meta["namespace"], meta.get("generation", 0)
    previous = RecModelStatus.model_validate(body.get("status") or {})
    try:
        spec = RecModelSpec.model_validate(body["spec"])
    except ValidationError as exc:
        # The CRD schema refuses nearly all of this; reaching here means a schema older
        # than the operator. Report it and do nothing else.
        kopf.warn(body, reason="InvalidSpec", message=str(exc)[:1024])
        await _report(client, body, previous.model_copy(update={
            "phase": Phase.FAILED, "observed_generation": generation}))
        raise kopf.PermanentError(f"invalid spec: {exc}") from exc

    owner = Owner(name, namespace, meta["uid"])
    refused = fit_refusal(spec, shard_memory_bytes(spec), cache.node_list())
    refusal_reason, refusal = refused or ("", None)
    if refusal is None:
        desired = desired_objects(owner, spec, override, operator_namespace)
        changed = await _apply(client, cache, name, desired, everything=spec_changed)
        if spec_changed:
            changed += await _prune(client, cache, owner, desired)
        if changed:
            logger.info("applied %d object(s)", changed)
            kopf.info(body, reason="Applied", message=f"{changed} object(s) created or updated")
    elif refusal != previous.conditions_message("Degraded"):
        kopf.warn(body, reason=refusal_reason, message=refusal)

    by_service = slices_by_service(cache.children_of("EndpointSlice", namespace, name))
    shard_ready = [ready_endpoints(by_service.get(L.embedding_name(name, i), []))
                   for i in range(spec.sharding.shards)]
    triton_ready = ready_endpoints(by_service.get(L.triton_name(name), []))
    metrics.shard_ready(namespace, name, shard_ready)
    metrics.freshness_objective(namespace, name, parse_duration(
        spec.stream.freshness_objective.p99) if spec.stream else None)
    causes = (_causes(cache, namespace, name, previous.active_version)
              if refusal is None and replicas_missing(spec, shard_ready, triton_ready) else [])
    status = summarize(spec, name, namespace, generation, shard_ready, triton_ready,
                       previous, refusal, refusal_reason=refusal_reason, causes=causes)
    told = " ".join(previous.conditions_message(k) for k in ("Ready", "Degraded", "Progressing"))
    for cause in causes[:MAX_CAUSES]:
        if cause.message not in told:
            kopf.warn(body, reason=cause.reason, message=cause.message)
    if status.phase != previous.phase and status.phase in (Phase.READY, Phase.DEGRADED):
        post = kopf.info if status.phase == Phase.READY else kopf.warn
        post(body, reason=status.phase.value, message=status.conditions_message("Ready")
             if status.phase == Phase.READY else status.conditions_message("Degraded"))
    await _report(client, body, status)


def _causes(cache: Cache, namespace: str, name: str, active: str | None) -> list[Cause]:
    """Why replicas are missing: looked for only while some are."""
    causes = pod_causes([p for p in cache.children_of("Pod", namespace, name) if L.managed(p)])
    cause = version_cause(cache.versions_of(namespace, name), name, active)
    return causes + ([cause] if cause else [])


async def _apply(client: Kube, cache: Cache, model: str, desired: list[dict],
                 everything: bool) -> int:
    changed = 0
    live_by_kind: dict[str, dict[str, dict]] = {}  # one pass over a kind's children
    for obj in desired:
        meta, kind = obj["metadata"], obj["kind"]
        if not everything:
            if kind not in live_by_kind:
                live_by_kind[kind] = cache.children_by_name(kind, meta["namespace"], model)
            live = live_by_kind[kind].get(meta["name"])
            if live is not None and is_subset(obj, live):
                continue
        await client.apply(obj)
        changed += 1
    return changed


async def _prune(client: Kube, cache: Cache, owner: Owner, desired: list[dict]) -> int:
    keep = {(o["kind"], o["metadata"]["name"]) for o in desired}
    removed = 0
    for kind in OWNED_KINDS:
        for live in cache.children_of(kind, owner.namespace, owner.name):
            if L.managed(live) and (kind, live["metadata"]["name"]) not in keep:
                await client.delete(api_version(kind), kind, owner.namespace,
                                    live["metadata"]["name"])
                removed += 1
    return removed


async def _report(client: Kube, body: dict, status: RecModelStatus) -> None:
    """Apply this controller's part of the status, only when it changed, so a settled
    model writes nothing."""
    mine = owned_status(status.to_wire())
    if mine != owned_status(body.get("status") or {}):
        meta = body["metadata"]
        await client.apply_status(API_VERSION, RECMODEL.kind, meta["namespace"],
                                  meta["name"], mine, STATUS_MANAGER)


@kopf.on.resume(*RESOURCE)
@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE, field="spec")
async def on_spec(namespace, name, memo, abtest_placements, logger, **kwargs):
    await reconcile(namespace, name, spec_changed=True, settings=settings_of(memo),
                    abtest_placements=abtest_placements, cache=Cache.of(kwargs),
                    logger=logger)


@kopf.index(*RESOURCE, id=MODELS_INDEX)
def index_models(namespace, name, body, **_):
    return {(namespace, name): trimmed(body)}


@kopf.index(GROUP, VERSION, MODELVERSION.plural, id=VERSIONS_INDEX)
def index_versions(namespace, body, **_):
    return version_entry(namespace, body)


@kopf.index("", "v1", "nodes", id=NODES_INDEX)
def index_nodes(body, **_):
    return node_entry(body)


def _on_child(kind: str) -> None:
    """Watch a kind RecOp manages: a change made by someone else (a hand edit, a
    deletion, a replica turning ready) re-reconciles the owning model at once, and the
    index on the same watch is what reconciles read of it."""
    group, version, plural = CHILDREN[kind]

    @kopf.index(group=group, version=version, plural=plural,
                labels={L.MODEL: kopf.PRESENT}, id=child_index(kind))
    def index_child(namespace, labels, body, **_):
        return {(namespace, labels[L.MODEL]): trimmed(body)}

    @kopf.on.event(group=group, version=version, plural=plural,
                   labels={L.MODEL: kopf.PRESENT}, id=f"recmodel-child-{plural}")
    async def on_child(namespace, labels, memo, abtest_placements, logger, **kwargs):
        await reconcile(namespace, labels[L.MODEL], spec_changed=False,
                        settings=settings_of(memo), abtest_placements=abtest_placements,
                        cache=Cache.of(kwargs), logger=logger)


# Pods among them: a container that is OOM-killed or crash-loops before it was ever
# ready changes no endpoint, only its pod shows it.
for _kind in CHILDREN:
    _on_child(_kind)


def _freshness_untold(status, **_) -> bool:
    status = status or {}
    breached = bool((status.get("freshness") or {}).get("breached"))
    return breached != shows_freshness_breach(status)


@kopf.on.event(*RESOURCE, id="recmodel-freshness", when=_freshness_untold)
async def on_freshness(namespace, name, memo, abtest_placements, logger, **kwargs):
    """The realtime version reported a freshness breach, or its end, that the model's
    conditions do not show yet (it changes no child object)."""
    await reconcile(namespace, name, spec_changed=False, settings=settings_of(memo),
                    abtest_placements=abtest_placements, cache=Cache.of(kwargs),
                    logger=logger)


def _failed(status, **_) -> bool:
    return (status or {}).get("phase") in ("Failed", "RolledBack")


@kopf.on.event(GROUP, VERSION, MODELVERSION.plural, id="recmodel-modelversion", when=_failed)
async def on_failed_version(namespace, spec, memo, abtest_placements, logger, **kwargs):
    """A version that failed changes no endpoint either; while none serves, its failure
    is why the model's servers are not ready (causes.version_cause)."""
    model = spec.get("model")
    if model:  # the CRD requires it; a schema older than the operator may not
        await reconcile(namespace, model, spec_changed=False, settings=settings_of(memo),
                        abtest_placements=abtest_placements, cache=Cache.of(kwargs),
                        logger=logger)


@kopf.index(GROUP, VERSION, ABTEST.plural, id="abtest_placements")
def index_abtest_placements(name, namespace, body, **_):
    """(namespace, model) -> (ABTest name, what the test does with the model), for each
    model an ABTest places or frees; Kopf keeps it current from the ABTest watch and
    drops a deleted test's entries."""
    return {(namespace, model): (name, override)
            for model, override in placements(body).items()}


# Where the last placements seen of an ABTest are kept, in the test's own Kopf memo.
_SEEN = "recmodel-placements"


@kopf.on.event(GROUP, VERSION, ABTEST.plural, id="recmodel-abtest")
async def on_abtest(type, body, namespace, memo, abtest_placements, logger, **kwargs):
    """An ABTest placed, moved or freed some of its arm models (or went): reconcile
    those models, whose Triton Deployments follow the placement. Kopf has updated the
    index with this event before calling handlers."""
    new = {} if type == "DELETED" else placements(body)
    old = memo.get(_SEEN, {})
    memo[_SEEN] = new
    for model in sorted(m for m in old.keys() | new.keys() if old.get(m) != new.get(m)):
        await reconcile(namespace, model, spec_changed=True, settings=settings_of(memo),
                        abtest_placements=abtest_placements, cache=Cache.of(kwargs),
                        logger=logger)
