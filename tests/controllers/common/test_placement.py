"""What ABTests' status says of one RecModel, as the RecModel controller indexes it."""

from __future__ import annotations

from controllers.common.placement import (
    FREED,
    PlacementOverride,
    override_for,
    placements,
    replicas,
)


def _abtest(assignments=(), freed=(), deleting=False):
    meta = {"name": "t", **({"deletionTimestamp": "x"} if deleting else {})}
    return {"metadata": meta, "status": {"assignments": list(assignments),
                                         "freedModels": list(freed)}}


def _at(model, node):
    return {"arm": model, "model": model, "node": node, "cpuMillicores": 500,
            "memoryBytes": 2**30}


def test_a_tests_placements_name_each_model_once_placed_before_freed():
    test = _abtest([_at("a", "n0"), {**_at("a", "n1"), "arm": "a2"}, _at("b", None)],
                   freed=["c", "a"])
    assert placements(test) == {"a": PlacementOverride("n0", 500, 2**30), "c": FREED}
    assert placements(_abtest([_at("a", "n0")], deleting=True)) == {}
    assert placements({"metadata": {"name": "t"}}) == {}


def test_the_first_test_by_name_that_places_a_model_wins_over_frees():
    placed_b = ("b", PlacementOverride("n1"))
    assert override_for([placed_b, ("a", FREED)]) == PlacementOverride("n1")
    assert override_for([("c", PlacementOverride("n2")), placed_b]).node == "n1"
    assert override_for([("a", FREED)]) == FREED
    assert override_for([]) is None


def test_a_freed_model_runs_no_replicas():
    assert replicas(FREED, 3) == 0
    assert replicas(PlacementOverride("n0"), 3) == 3
    assert replicas(None, 3) == 3
