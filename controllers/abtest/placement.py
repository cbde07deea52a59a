"""What an ABTest's placement means for one RecModel: read by the RecModel controller,
which alone writes the arm models' Deployments (one owner per field).

The ABTest never writes a RecModel's spec: its status says where each running arm goes
(`assignments`) and which arm models are freed (`freedModels`), and the RecModel
controller builds the Deployments from that.
"""

from __future__ import annotations

from dataclasses import dataclass

from recop.api.abtest import ABTestSpec


@dataclass(frozen=True)
class PlacementOverride:
    """`node` set: requests = limits of the cost model, on that node. `node` None: the
    model is freed (a stopped arm's): zero replicas, its resources given back."""

    node: str | None
    cpu_millicores: int = 0
    memory_bytes: int = 0

    @property
    def freed(self) -> bool:
        return self.node is None


FREED = PlacementOverride(node=None)


def replicas(override: PlacementOverride | None, wanted: int) -> int:
    """Replicas of one of the model's Deployments: none while a test has freed it."""
    return 0 if override is not None and override.freed else wanted


def override_for(model: str, abtests: list[dict]) -> PlacementOverride | None:
    """The placement of `model` from the ABTests of its namespace: the first test (by
    name) whose status assigns one of its arms to it. A model shared by two arms of a
    test is placed as the first of them (the baseline when it is one). A model no test
    places but one has freed runs no replicas."""
    freed = False
    for test in sorted(abtests, key=lambda t: t["metadata"]["name"]):
        if test["metadata"].get("deletionTimestamp"):
            continue
        status = test.get("status") or {}
        for a in status.get("assignments") or []:
            if a.get("model") == model and a.get("node"):
                return PlacementOverride(a["node"], a["cpuMillicores"], a["memoryBytes"])
        freed = freed or model in (status.get("freedModels") or [])
    return FREED if freed else None


def released_arms(spec: ABTestSpec, stopped: set[str], weights: dict[str, int],
                  concluded: bool) -> set[str]:
    """Arms whose resources the test gives back: stopped variants, and once concluded
    every variant that no longer takes traffic. Never the baseline."""
    variants = {v.name for v in spec.variants}
    idle = {a for a, w in weights.items() if w == 0} if concluded else set()
    return (stopped | idle) & variants


def freed_models(spec: ABTestSpec, released: set[str]) -> list[str]:
    """RecModels of released arms that no other arm of the test serves (a variant may
    be a version of the baseline's model)."""
    arms = (spec.baseline, *spec.variants)
    serving = {a.model for a in arms if a.name not in released}
    return sorted({a.model for a in arms if a.name in released} - serving)


def fingerprint(abtest: dict) -> tuple:
    """What in an ABTest the arm models' Deployments depend on."""
    status = abtest.get("status") or {}
    return tuple(sorted((a.get("model"), a.get("node"), a.get("cpuMillicores"),
                         a.get("memoryBytes"))
                        for a in status.get("assignments") or [])) + \
        tuple((m, None, None, None) for m in status.get("freedModels") or [])
