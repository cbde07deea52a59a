"""Which arms an ABTest gives the resources of back, and which arm models that frees
(status.freedModels). What a placement means for a RecModel is in
controllers/common/placement.py, which the RecModel controller reads."""

from __future__ import annotations

from recop.api.abtest import ABTestSpec


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
