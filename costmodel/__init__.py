"""Cost model for A/B tests: dedicated cores for the baseline, measured packing of variants.

Pure code, no Kubernetes imports: the ABTest controller feeds measured costs and the node
pool in, and applies the Placement that comes out:

    qps = split_qps(Measured(value=total, source="prometheus:<query>@<time>"), weights)
    costs = [ModelCost(name=arm, role=..., qps=qps[arm], cpu_core_seconds_per_1k=..., ...)]
    placement = solve(costs, NodePool(nodes=...), current=previous.assignments())
    placement.for_model(arm)  # node, cpu/memory request == limit, GPU index and share
    render(placement)         # human-readable report: headroom, bound, SLO risk

solve() raises InfeasibleError (model, resource, shortfall) rather than over-commit, and
checks every answer with verify(). Traffic: assign_arm(user_id, salt, weights, baseline).
"""

from costmodel.bucketing import BUCKETS, arm_for_bucket, assign_arm, bucket
from costmodel.model import (
    GpuUsage,
    InfeasibleError,
    Measured,
    ModelCost,
    ModelPlacement,
    Node,
    NodePool,
    NodeUsage,
    Placement,
    SloRisk,
    Taint,
    Toleration,
    split_qps,
)
from costmodel.report import render
from costmodel.solve import PackingOptions, solve
from costmodel.verify import OvercommitError, verify

__all__ = [
    "BUCKETS",
    "GpuUsage",
    "InfeasibleError",
    "Measured",
    "ModelCost",
    "ModelPlacement",
    "Node",
    "NodePool",
    "NodeUsage",
    "OvercommitError",
    "PackingOptions",
    "Placement",
    "SloRisk",
    "Taint",
    "Toleration",
    "arm_for_bucket",
    "assign_arm",
    "bucket",
    "render",
    "solve",
    "split_qps",
    "verify",
]
