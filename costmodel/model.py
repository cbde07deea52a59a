"""Inputs and outputs of the cost model: frozen, validated, JSON-serialisable.

Every measured figure is a `Measured` that carries the `source` it came from, so the ABTest
status can show where each number in a placement decision came from.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Role = Literal["baseline", "variant"]
RiskLevel = Literal["ok", "watch", "breach"]
SolverName = Literal["exact-milp", "heuristic"]
TaintEffect = Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]

# GPU shares are integers in units of 1/10,000 of a GPU so that sums are exact: a float sum
# of 0.1s can land above 1.0 and a "never over-commit" check must not depend on rounding.
GPU_SHARE_UNITS = 10_000
MILLICORES = 1_000


class FrozenModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Measured(FrozenModel):
    """A cost figure and its source: 'prometheus:<query>@<time>', 'profile:<run>' or 'spec'."""

    value: float = Field(ge=0, allow_inf_nan=False)
    source: str = Field(min_length=1)

    @classmethod
    def spec(cls, value: float) -> Measured:
        return cls(value=value, source="spec")


class Taint(FrozenModel):
    key: str = Field(min_length=1)
    value: str = ""
    effect: TaintEffect

    @property
    def hard(self) -> bool:
        """Whether the scheduler refuses a pod that does not tolerate it (PreferNoSchedule
        only lowers a node's score)."""
        return self.effect != "PreferNoSchedule"


class Toleration(FrozenModel):
    """Kubernetes' toleration: Exists with no key tolerates every taint; no effect
    matches every effect."""

    key: str = ""
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str = ""
    effect: TaintEffect | None = None

    def tolerates(self, taint: Taint) -> bool:
        if self.effect is not None and self.effect != taint.effect:
            return False
        if self.operator == "Exists":
            return not self.key or self.key == taint.key
        return self.key == taint.key and self.value == taint.value


class Node(FrozenModel):
    name: str = Field(min_length=1)
    cpu_millicores: int = Field(ge=0, description="allocatable CPU")
    memory_bytes: int = Field(ge=0, description="allocatable memory")
    gpu_count: int = Field(default=0, ge=0)
    gpu_memory_bytes: int = Field(default=0, ge=0, description="memory of each GPU")
    labels: dict[str, str] = Field(default_factory=dict)
    taints: tuple[Taint, ...] = ()
    # Requests of pods that are not ours (or not part of this packing) already on the node.
    reserved_cpu_millicores: int = Field(default=0, ge=0)
    reserved_memory_bytes: int = Field(default=0, ge=0)

    @property
    def free_cpu_millicores(self) -> int:
        return max(0, self.cpu_millicores - self.reserved_cpu_millicores)

    @property
    def free_memory_bytes(self) -> int:
        return max(0, self.memory_bytes - self.reserved_memory_bytes)

    @property
    def free_whole_cores(self) -> int:
        """The most dedicated cores the node can give: the static CPU manager hands out
        whole CPUs and keeps the reservation's (rounded up to whole CPUs) for the shared
        pool, which leaves floor(allocatable)."""
        return self.free_cpu_millicores // MILLICORES

    def matches(self, selector: Mapping[str, str]) -> bool:
        return all(self.labels.get(k) == v for k, v in selector.items())

    def admits(self, tolerations: tuple[Toleration, ...]) -> bool:
        """Whether a pod with these tolerations may be scheduled here."""
        return all(
            any(t.tolerates(taint) for t in tolerations) for taint in self.taints if taint.hard
        )


class NodePool(FrozenModel):
    nodes: tuple[Node, ...]

    @model_validator(mode="after")
    def _unique_names(self) -> NodePool:
        names = [n.name for n in self.nodes]
        if len(set(names)) != len(names):
            raise ValueError("node names must be unique")
        return self


class ModelCost(FrozenModel):
    """One model (an A/B arm) and its measured cost at its share of the traffic."""

    name: str = Field(min_length=1)
    role: Role
    qps: Measured
    cpu_core_seconds_per_1k: Measured = Field(description="CPU core-seconds per 1,000 requests")
    memory_bytes: Measured
    gpu_memory_bytes: Measured = Field(default_factory=lambda: Measured.spec(0))
    gpu_utilisation: Measured = Field(
        default_factory=lambda: Measured.spec(0),
        description="fraction of one GPU busy at this qps",
    )
    target_utilisation: float = Field(
        default=0.7, gt=0, le=1, description="SLO headroom: the highest utilisation allowed"
    )
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: tuple[Toleration, ...] = ()

    @property
    def cpu_cores_busy(self) -> float:
        """Cores the model keeps busy at its measured qps (no headroom)."""
        return self.qps.value / 1000 * self.cpu_core_seconds_per_1k.value

    @property
    def cpu_millicores_request(self) -> int:
        """CPU to request so that utilisation stays at or below the target."""
        millicores = math.ceil(self.cpu_cores_busy / self.target_utilisation * MILLICORES - 1e-9)
        if self.role == "baseline":
            # Whole cores, at least one: the static CPU manager pins only integer requests.
            return max(1, math.ceil(millicores / MILLICORES)) * MILLICORES
        return max(1, millicores)

    @property
    def memory_request_bytes(self) -> int:
        return math.ceil(self.memory_bytes.value)

    @property
    def needs_gpu(self) -> bool:
        return self.gpu_memory_bytes.value > 0 or self.gpu_utilisation.value > 0

    @property
    def gpu_share_units(self) -> int:
        """Share of one GPU, in GPU_SHARE_UNITS; the baseline owns its GPU outright."""
        if not self.needs_gpu:
            return 0
        if self.role == "baseline":
            return GPU_SHARE_UNITS
        share = self.gpu_utilisation.value / self.target_utilisation * GPU_SHARE_UNITS
        return max(1, math.ceil(share - 1e-9))

    @property
    def gpu_memory_request_bytes(self) -> int:
        return math.ceil(self.gpu_memory_bytes.value)

    def sources(self) -> dict[str, str]:
        return {
            "qps": self.qps.source,
            "cpu_core_seconds_per_1k": self.cpu_core_seconds_per_1k.source,
            "memory_bytes": self.memory_bytes.source,
            "gpu_memory_bytes": self.gpu_memory_bytes.source,
            "gpu_utilisation": self.gpu_utilisation.source,
        }


def split_qps(total: Measured, weights: Mapping[str, int]) -> dict[str, Measured]:
    """Each arm's qps from the test's total qps and its traffic weights (any positive scale).

    The source records both inputs, e.g. 'weights(2500/10000)*prometheus:<query>@<time>'.
    """
    weight_sum = sum(weights.values())
    if weight_sum <= 0 or any(w < 0 for w in weights.values()):
        raise ValueError("weights must be non-negative with a positive sum")
    return {
        arm: Measured(
            value=total.value * w / weight_sum, source=f"weights({w}/{weight_sum})*{total.source}"
        )
        for arm, w in weights.items()
    }


class ModelPlacement(FrozenModel):
    model: str
    role: Role
    node: str
    dedicated: bool = Field(description="whole pinned cores: cpu request == limit, integer")
    cpu_request_millicores: int
    cpu_limit_millicores: int
    memory_request_bytes: int
    memory_limit_bytes: int
    gpu_index: int | None = None
    gpu_share: float = 0.0
    gpu_memory_bytes: int = 0
    moved: bool = Field(default=False, description="was placed on another node before")
    sources: dict[str, str] = Field(default_factory=dict)


class GpuUsage(FrozenModel):
    index: int
    share: float
    memory_bytes: int
    models: tuple[str, ...]


class NodeUsage(FrozenModel):
    node: str
    cpu_free_millicores: int = Field(description="allocatable minus reserved")
    dedicated_cores: int
    shared_pool_cores: int = Field(description="whole cores set aside for the variants' requests")
    shared_used_millicores: int
    cpu_headroom_millicores: int
    memory_used_bytes: int
    memory_headroom_bytes: int
    gpus: tuple[GpuUsage, ...] = ()

    @property
    def cores_used(self) -> int:
        return self.dedicated_cores + self.shared_pool_cores


class SloRisk(FrozenModel):
    model: str
    predicted_utilisation: float = Field(description="busy cores / requested cores")
    target_utilisation: float
    saturation_qps: float | None = Field(
        description="qps at which the CPU request is fully busy; None: no measured CPU cost"
    )
    gpu_utilisation: float | None = Field(
        default=None, description="predicted busy fraction of its GPU, neighbours included"
    )
    level: RiskLevel
    reason: str


class Placement(FrozenModel):
    models: tuple[ModelPlacement, ...]
    nodes: tuple[NodeUsage, ...]
    cores_used: int
    lower_bound_cores: int = Field(description="no placement of these models uses fewer cores")
    naive_cores: int = Field(description="one pod per model, each on whole dedicated cores")
    gpus_used: int
    moves: int
    solver: SolverName
    optimal: bool
    solve_seconds: float
    risks: tuple[SloRisk, ...]

    def assignments(self) -> dict[str, str]:
        """model -> node; pass it back to solve() as `current` on the next re-pack."""
        return {p.model: p.node for p in self.models}

    def for_model(self, name: str) -> ModelPlacement:
        for p in self.models:
            if p.model == name:
                return p
        raise KeyError(name)


class InfeasibleError(ValueError):
    """No placement exists (or none was found) without over-committing a node."""

    def __init__(self, model: str, resource: str, shortfall: float, detail: str) -> None:
        self.model = model
        self.resource = resource
        self.shortfall = shortfall
        super().__init__(f"cannot place {model!r}: short of {resource} by {shortfall:g}: {detail}")
