"""The RecModel controller's watch of ABTests: an index of their placements by model,
and a reconcile of exactly the models whose placement an ABTest event changed."""

from __future__ import annotations

import logging

import kopf

from controllers.common.placement import FREED, PlacementOverride
from controllers.common.settings import Settings
from controllers.recmodel import handlers
from controllers.recmodel.cache import (
    CHILDREN,
    MODELS_INDEX,
    NODES_INDEX,
    VERSIONS_INDEX,
    child_index,
)

LOG = logging.getLogger("test")


def _abtest(assignments=(), freed=()):
    return {"metadata": {"name": "t", "namespace": "ns"},
            "status": {"assignments": [{"arm": m, "model": m, "node": n, "cpuMillicores": 500,
                                        "memoryBytes": 1} for m, n in assignments],
                       "freedModels": list(freed)}}


def test_the_index_keys_each_placed_or_freed_model_by_namespace():
    body = _abtest([("a", "n0")], freed=["b"])
    assert handlers.index_abtest_placements(name="t", namespace="ns", body=body) == {
        ("ns", "a"): ("t", PlacementOverride("n0", 500, 1)), ("ns", "b"): ("t", FREED)}


EMPTY_INDEXES = {MODELS_INDEX: {}, NODES_INDEX: {}, VERSIONS_INDEX: {},
                 **{child_index(k): {} for k in CHILDREN}}


async def test_an_abtest_event_reconciles_only_the_models_it_moved(monkeypatch):
    calls = []

    async def reconcile(namespace, name, **kwargs):
        calls.append((namespace, name, kwargs["spec_changed"], kwargs["settings"]))

    monkeypatch.setattr(handlers, "reconcile", reconcile)
    settings = Settings(operator_namespace="recop-system")
    memo = kopf.Memo(settings=settings)

    async def event(type, body):
        calls.clear()
        await handlers.on_abtest(type=type, body=body, namespace="ns", memo=memo,
                                 abtest_placements={}, logger=LOG, **EMPTY_INDEXES)
        return [name for _, name, _, _ in calls]

    assert await event("ADDED", _abtest([("a", "n0"), ("b", "n1")])) == ["a", "b"]
    assert all(changed and s is settings for _, _, changed, s in calls)
    assert await event("MODIFIED", _abtest([("a", "n0"), ("b", "n1")])) == []
    assert await event("MODIFIED", _abtest([("a", "n0"), ("b", "n2")])) == ["b"]
    assert await event("MODIFIED", _abtest([("a", "n0")], freed=["b"])) == ["b"]
    assert await event("DELETED", _abtest([("a", "n0")], freed=["b"])) == ["a", "b"]
