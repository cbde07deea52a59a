"""What an ABTest's placement means for one RecModel: read by the RecModel controller,
which alone writes the Triton Deployment (one owner per field)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PlacementOverride:
    node: str
    cpu_millicores: int
    memory_bytes: int


def override_for(model: str, abtests: list[dict]) -> PlacementOverride | None:
    """The placement of `model` from the ABTests of its namespace: the first test (by
    name) whose status assigns one of its arms to it. A model shared by two arms of a
    test is placed as the first of them (the baseline when it is one)."""
    for test in sorted(abtests, key=lambda t: t["metadata"]["name"]):
        if test["metadata"].get("deletionTimestamp"):
            continue
        for a in (test.get("status") or {}).get("assignments") or []:
            if a.get("model") == model and a.get("node"):
                return PlacementOverride(a["node"], a["cpuMillicores"], a["memoryBytes"])
    return None


def fingerprint(abtest: dict) -> tuple:
    """What in an ABTest the arm models' Deployments depend on."""
    return tuple(sorted((a.get("model"), a.get("node"), a.get("cpuMillicores"),
                         a.get("memoryBytes"))
                        for a in (abtest.get("status") or {}).get("assignments") or []))
