"""What ABTests' placements mean for one RecModel: written by the ABTest controller into
its status, read by the RecModel controller, which alone writes the arm models'
Deployments (one owner per field).

The ABTest never writes a RecModel's spec: its status says where each running arm goes
(`assignments`) and which arm models are freed (`freedModels`), and the RecModel
controller builds the Deployments from that.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


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


def placements(abtest: dict) -> dict[str, PlacementOverride]:
    """Model -> what one ABTest (as read from the API, status included) does with it: the
    node of its first assignment of the model (a model shared by two arms is placed as
    the first, the baseline when it is one), else FREED when the test frees it. Nothing
    while the test is being deleted."""
    if abtest["metadata"].get("deletionTimestamp"):
        return {}
    status = abtest.get("status") or {}
    out: dict[str, PlacementOverride] = {}
    for a in status.get("assignments") or []:
        if a.get("model") and a.get("node") and a["model"] not in out:
            out[a["model"]] = PlacementOverride(a["node"], a["cpuMillicores"],
                                                a["memoryBytes"])
    for model in status.get("freedModels") or []:
        out.setdefault(model, FREED)
    return out


def override_for(by_test: Iterable[tuple[str, PlacementOverride]]) -> PlacementOverride | None:
    """One model's placement from (ABTest name, its `placements` entry) for the tests of
    its namespace that name the model: the first test by name that places it; FREED when
    tests only free it; None when no test names it."""
    ordered = sorted(by_test, key=lambda entry: entry[0])
    return next((o for _, o in ordered if not o.freed), FREED if ordered else None)
