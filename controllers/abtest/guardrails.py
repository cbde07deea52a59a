"""Guardrails: which running variants breach a threshold, from Prometheus samples."""

from __future__ import annotations

from collections.abc import Callable

from recop.api.abtest import ABTestSpec
from recop.api.common import crossed


def arm_query(query: str, arm: str) -> str:
    return query.replace("$arm", arm)


def guardrail_queries(spec: ABTestSpec, stopped: set[str]) -> list[str]:
    """Every query `breaches` will sample, for the controller to run."""
    return sorted({arm_query(g.query, v.name) for v in spec.variants if v.name not in stopped
                   for g in spec.guardrails})


def breaches(spec: ABTestSpec, stopped: set[str],
             sample: Callable[[str], float | None]) -> dict[str, str]:
    """Variant -> reason, for each running variant breaching a guardrail. `sample` runs
    one PromQL query and returns its value, None when there is no data yet: no data is
    not a breach (a fresh variant has served nothing)."""
    found: dict[str, str] = {}
    for variant in spec.variants:
        if variant.name in stopped:
            continue
        for guardrail in spec.guardrails:
            value = sample(arm_query(guardrail.query, variant.name))
            if value is not None and crossed(value, guardrail.threshold, guardrail.comparison):
                found[variant.name] = (f"guardrail {guardrail.name}: {value:g} "
                                       f"{guardrail.comparison} {guardrail.threshold:g}")
                break
    return found
