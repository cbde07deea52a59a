"""An ABTest's status conditions, from what one reconcile found. Pure.

Ready, Progressing and Degraded are the ones every RecOp kind reports (docs/gitops.md:
Argo CD and Flux read them); Routed, Placed, GuardrailBreached and Concluded say which
part of the test stands where. A guardrail breach is the test working, not a fault: it
is not Degraded. Degraded is what needs a person: an arm that cannot be placed, a
missing arm model, metrics that cannot be read.
"""

from __future__ import annotations

from dataclasses import dataclass

from controllers.common.conditions import condition
from recop.api.abtest import Phase, Verdict
from recop.api.common import Condition, ConditionStatus, set_condition


@dataclass(frozen=True)
class Outcome:
    """One part's result: whether it holds, why (a CamelCase reason), and a message."""

    ok: bool
    reason: str
    message: str = ""


def message_of(conditions: list[Condition], kind: str) -> str | None:
    """The message of a condition that holds (None: absent or not True)."""
    for c in conditions:
        if c.type == kind and c.status == ConditionStatus.TRUE:
            return c.message
    return None


def conditions(previous: list[Condition], generation: int | None, *, phase: Phase,
               percent: int, routed: Outcome, placed: Outcome | None,
               breaches: dict[str, str], stopped: list[str], verdict: Verdict | None,
               problems: list[str]) -> list[Condition]:
    """`placed` None: not placed yet (nothing to place or no answer yet); `breaches`:
    variants this reconcile stopped and why; `problems`: what could not be read."""

    def cond(kind: str, holds: bool, reason: str, message: str = "") -> Condition:
        return condition(kind, holds, reason, message, generation)

    out = previous
    out = set_condition(out, cond("Routed", routed.ok, routed.reason, routed.message))
    if placed is not None:
        out = set_condition(out, cond("Placed", placed.ok, placed.reason, placed.message))

    if breaches:
        breach_text = "; ".join(f"stopped {arm}: {why}" for arm, why in breaches.items())
        earlier = message_of(previous, "GuardrailBreached")
        breach_text = f"{earlier}; {breach_text}" if earlier else breach_text
        out = set_condition(out, cond("GuardrailBreached", True, "GuardrailBreached",
                                      breach_text))
    elif stopped:
        out = set_condition(out, cond("GuardrailBreached", True, "GuardrailBreached",
                                      message_of(previous, "GuardrailBreached")
                                      or f"stopped {', '.join(stopped)}"))
    else:
        out = set_condition(out, cond("GuardrailBreached", False, "WithinGuardrails"))

    if verdict is not None:
        winner = f"winner {verdict.winner}" if verdict.winner else "no winner"
        p = f", p={verdict.p_value:.3g}" if verdict.p_value is not None else ""
        out = set_condition(out, cond("Concluded", True, verdict.action or "Concluded",
                                      f"{verdict.test}: {winner}{p}; {verdict.summary}"))
    else:
        out = set_condition(out, cond("Concluded", False, "InProgress"))

    ramping = phase == Phase.RAMPING
    out = set_condition(out, cond(
        "Progressing", ramping, "Ramping" if ramping else phase.value,
        f"variants at {percent}% of their weights" if ramping else ""))

    failed = [o for o in (routed, placed) if o is not None and not o.ok]
    degraded = [f"{o.reason}: {o.message}" for o in failed] + problems
    out = set_condition(out, cond("Degraded", bool(degraded),
                                  failed[0].reason if failed else
                                  "MetricsUnavailable" if problems else "AsExpected",
                                  "; ".join(degraded)))
    ready = not failed and placed is not None
    out = set_condition(out, cond(
        "Ready", ready, "Serving" if ready else failed[0].reason if failed else "Placing",
        f"traffic split as status.appliedWeights, {phase.value.lower()}" if ready
        else failed[0].message if failed else "waiting for the arms' placement"))
    return out
