"""Client side of an ABTest's user-sticky split: which arm a user belongs to, as the
header the test's routes match (recop.api.abtest.ARM_HEADER)."""

from __future__ import annotations

from costmodel import assign_arm
from recop.api.abtest import ARM_HEADER


def arm_for_user(user_id: str, abtest: dict) -> str:
    """The arm of `user_id` in an ABTest object (as read from the API, status included).

    Buckets follow status.bucketWeights, in which a stopped arm keeps its buckets: its
    users go to the baseline and no other arm's users move.
    """
    spec, status = abtest["spec"], abtest.get("status") or {}
    baseline = spec["baseline"]["name"]
    salt = (spec.get("stickiness") or {}).get("salt") or \
        f"{abtest['metadata']['namespace']}/{abtest['metadata']['name']}"
    weights = status.get("bucketWeights") or {baseline: 10_000}
    # Variants take buckets in spec order (costmodel.bucketing): keep that order.
    ordered = {baseline: weights.get(baseline, 0),
               **{v["name"]: weights.get(v["name"], 0) for v in spec["variants"]}}
    arm = assign_arm(user_id, salt, ordered, baseline)
    return baseline if arm in (status.get("stoppedArms") or []) else arm


def arm_header(user_id: str, abtest: dict) -> dict[str, str]:
    return {ARM_HEADER: arm_for_user(user_id, abtest)}
