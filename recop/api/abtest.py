"""ABTest: a traffic split between a baseline and variants, with a cost model."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from recop.api.common import (
    ApiModel,
    Comparison,
    Condition,
    Duration,
    Name,
    Rule,
    conditions_field,
)

# The request header an ABTest's routes match to pin a request to one arm; recop.client
# sets it from the user id.
ARM_HEADER = "x-recop-arm"

PromQL = Annotated[str, StringConstraints(min_length=1, max_length=4096)]


class Arm(ApiModel):
    """One arm of the test: a RecModel as it serves, or pinned to a ModelVersion."""

    name: Name
    model: Name = Field(description="RecModel serving this arm.")
    version: Name | None = Field(default=None, description=(
        "ModelVersion to serve in this arm; the model's active version when unset."))
    weight: int = Field(ge=0, le=100, description="Percent of traffic, after the ramp.")


class Stickiness(ApiModel):
    """How a user is kept on one arm: hash(salt, user id) -> bucket -> arm."""

    header: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9-]{1,128}$")] = "x-user-id"
    salt: Annotated[str, StringConstraints(max_length=128)] | None = Field(
        default=None,
        description="Defaults to the ABTest's namespace/name; change it to reshuffle users.")


class Ramp(ApiModel):
    """Variants start at a fraction of their weight and grow step by step."""

    initial_percent: int = Field(default=10, ge=1, le=100, description=(
        "Share of each variant's weight applied at the start."))
    step_percent: int = Field(default=30, ge=1, le=100)
    interval: Duration = "15m"


class Metric(ApiModel):
    name: Name
    query: PromQL = Field(description="PromQL; `$arm` is replaced by each arm's name.")


class SuccessMetric(ApiModel):
    """What the verdict compares between arms: a value per arm (`query`, sampled over the
    test, for welch-t and mann-whitney-u) or a proportion per arm (`successes` out of
    `trials`, counted over the test, for two-proportion-z)."""

    name: Name
    query: PromQL | None = Field(default=None, description=(
        "PromQL; `$arm` is replaced by each arm's name. Sampled once per step of a range "
        "query over the test."))
    successes: PromQL | None = Field(default=None, description=(
        "PromQL counting an arm's successes (e.g. clicks) during the test; `$arm` and "
        "`$window` (the time since the start, e.g. `86400s`) are replaced: "
        "`sum(increase(clicks_total{arm=\"$arm\"}[$window]))`."))
    trials: PromQL | None = Field(default=None, description=(
        "PromQL counting an arm's trials (e.g. impressions), as `successes`."))
    goal: Literal["Increase", "Decrease"] = "Increase"

    cross_field_rules = (
        Rule("has(self.query) ? !has(self.successes) && !has(self.trials) "
             ": has(self.successes) && has(self.trials)",
             "a success metric is either a query or both successes and trials",
             lambda m: (m.successes is None and m.trials is None) if m.query is not None
             else (m.successes is not None and m.trials is not None)),
    )


class Guardrail(Metric):
    """A variant breaching its guardrail is stopped and its resources freed."""

    threshold: float
    comparison: Comparison = "GreaterThan"


class Analysis(ApiModel):
    test: Literal["welch-t", "mann-whitney-u", "two-proportion-z"] = "welch-t"
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    min_samples: int = Field(default=1000, ge=10)
    on_success: Literal["Promote", "Keep"] = Field(default="Keep", description=(
        "Promote makes the winning variant's version the baseline model's active version."))


class ArmCost(ApiModel):
    """Measured costs override; measured from Prometheus or profiling when unset."""

    arm: Name
    cpu_core_seconds_per_1k: float | None = Field(
        default=None, ge=0, alias="cpuCoreSecondsPer1k")
    memory_bytes: int | None = Field(default=None, ge=0)
    gpu_memory_bytes: int | None = Field(default=None, ge=0)
    gpu_utilisation: float | None = Field(default=None, ge=0, le=1)


class CostModel(ApiModel):
    expected_qps: float = Field(default=1000, gt=0, description="Total QPS across arms.")
    target_utilisation: float = Field(default=0.7, gt=0, le=1, description=(
        "Utilisation each arm is sized for; the rest is SLO headroom."))
    measurement: Literal["prometheus", "spec"] = Field(default="prometheus", description=(
        "prometheus: each arm's figures from its pods' history (cAdvisor and Triton "
        "metrics), the RecModel's requests while there is none; spec: the requests only."))
    window: Duration = Field(default="1h", description=(
        "History the measured figures are averaged (memory: maxed) over."))
    overrides: list[ArmCost] = Field(default_factory=list, max_length=64)


class GatewayRef(ApiModel):
    """The Gateway the test's HTTPRoute and GRPCRoute attach to (their parentRef)."""

    name: Name = "recop"
    namespace: Name | None = Field(default=None, description=(
        "Defaults to the ABTest's namespace."))
    section_name: Name | None = Field(default=None, description="A listener of the Gateway.")


class ABTestSpec(ApiModel):
    """A traffic split between a baseline and variants, with user-sticky bucketing,
    guardrails, a verdict, and a cost model placing the arms."""

    baseline: Arm
    variants: list[Arm] = Field(min_length=1, max_length=32)
    stickiness: Stickiness = Field(default_factory=Stickiness)
    ramp: Ramp = Field(default_factory=Ramp)
    success_metric: SuccessMetric
    guardrails: list[Guardrail] = Field(default_factory=list, max_length=16)
    duration: Duration = "72h"
    analysis: Analysis = Field(default_factory=Analysis)
    cost: CostModel = Field(default_factory=CostModel)
    gateway: GatewayRef = Field(default_factory=GatewayRef)

    cross_field_rules = (
        Rule("self.baseline.weight + self.variants.map(v, v.weight).sum() == 100",
             "weights of the baseline and variants must sum to 100",
             lambda s: s.baseline.weight + sum(v.weight for v in s.variants) == 100),
        Rule("self.variants.all(v, v.name != self.baseline.name && "
             "self.variants.exists_one(u, u.name == v.name))",
             "arm names must be unique",
             lambda s: len({s.baseline.name, *(v.name for v in s.variants)})
             == 1 + len(s.variants)),
        Rule("!has(self.cost) || !has(self.cost.overrides) || self.cost.overrides.all(o, "
             "o.arm == self.baseline.name || self.variants.exists(v, v.name == o.arm))",
             "cost overrides must name an arm of this test",
             lambda s: {o.arm for o in s.cost.overrides}
             <= {s.baseline.name, *(v.name for v in s.variants)}),
        Rule("(has(self.analysis) && has(self.analysis.test) && "
             "self.analysis.test == 'two-proportion-z') == has(self.successMetric.successes)",
             "two-proportion-z needs successMetric.successes and trials; welch-t and "
             "mann-whitney-u need successMetric.query",
             lambda s: (s.analysis.test == "two-proportion-z")
             == (s.success_metric.successes is not None)),
    )


class Phase(StrEnum):
    PENDING = "Pending"
    RAMPING = "Ramping"
    RUNNING = "Running"
    CONCLUDED = "Concluded"
    STOPPED = "Stopped"
    FAILED = "Failed"


class Assignment(ApiModel):
    """Where the cost model placed an arm; the RecModel controller applies it to the
    arm model's Triton Deployment (requests = limits, node selection)."""

    arm: str
    model: str | None = None
    node: str | None = None
    cpu_millicores: int = 0
    dedicated_cores: bool = False
    gpu_index: int | None = None
    gpu_share: float = 0
    memory_bytes: int = 0


class CostSource(ApiModel):
    arm: str
    figure: str = Field(description=(
        "qps, cpuCoreSecondsPer1k, memoryBytes, gpuMemoryBytes or gpuUtilisation."))
    value: float
    source: str = Field(description=(
        "Where the figure came from: `prometheus:<query>`, `override:spec.cost.overrides`, "
        "`spec:RecModel <name>` (its requests), `spec:cost.expectedQps`, or `default`."))


class Verdict(ApiModel):
    winner: str | None = None
    test: str
    p_value: float | None = None
    decided_at: datetime | None = None
    action: Literal["Promote", "Keep", "Discard"] | None = None
    summary: str = ""


class ABTestStatus(ApiModel):
    phase: Phase = Phase.PENDING
    observed_generation: int | None = None
    conditions: list[Condition] = conditions_field()
    started_at: datetime | None = Field(default=None, description=(
        "When traffic first reached the variants: the ramp and the duration count from here."))
    applied_weights: dict[str, int] = Field(default_factory=dict, description=(
        "Percent of traffic each arm's route gets now (ramped; stopped arms 0)."))
    bucket_weights: dict[str, int] = Field(default_factory=dict, description=(
        "Basis points per arm for user-sticky bucketing (costmodel.assign_arm); stopped "
        "arms keep their buckets, whose users the routes send to the baseline."))
    assignments: list[Assignment] = Field(default_factory=list)
    cost_sources: list[CostSource] = Field(default_factory=list)
    stopped_arms: list[str] = Field(default_factory=list)
    freed_models: list[str] = Field(default_factory=list, description=(
        "RecModels of stopped (or, once concluded, losing) variants that no running arm "
        "serves: the RecModel controller scales them to zero replicas while the test "
        "exists. Never the baseline's."))
    verdict: Verdict | None = None
