"""User-sticky traffic split: (user id, test salt) -> bucket in [0, 10000) -> arm.

The hash is SHA-256 (hashlib), never hash(): hash() of a str is randomised per process.

Layout of the buckets, for weights in basis points that sum to 10,000:

    [0 ............................................ 10000)
    | variant 1 | variant 2 | ... | variant k |  baseline  |

Variants take consecutive ranges from 0 in the order given; the baseline takes the top.

Guarantee (tested): when the baseline's weight goes from w to w' <= w, every baseline user
whose bucket is in [10000 - w', 10000) stays in the baseline, i.e. exactly w'/w of the
baseline's users stay - the most any split can keep - and nobody else enters the baseline.
A variant's users keep their arm while its own weight does not shrink and the weights of the
variants listed before it do not change; so ramping one variant (or the last one listed)
against the baseline only moves users from the baseline to that variant. Add new variants at
the end of the list to keep everyone else where they are.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

BUCKETS = 10_000


def bucket(user_id: str, salt: str) -> int:
    """A user's bucket in one test; the salt makes buckets independent across tests."""
    # Length-prefixing the salt keeps ('a:b', 'c') and ('a', 'b:c') apart.
    digest = hashlib.sha256(f"{len(salt)}:{salt}:{user_id}".encode()).digest()
    # 2**64 % 10000 / 2**64 ~ 3e-16: the modulo bias is far below any measurable effect.
    return int.from_bytes(digest[:8], "big") % BUCKETS


def arm_for_bucket(b: int, weights: Mapping[str, int], baseline: str) -> str:
    """The arm owning bucket b. weights: arm -> basis points (sum 10,000), baseline included."""
    _check(weights, baseline)
    if not 0 <= b < BUCKETS:
        raise ValueError(f"bucket {b} outside [0, {BUCKETS})")
    edge = 0
    for arm, w in weights.items():
        if arm == baseline:
            continue
        edge += w
        if b < edge:
            return arm
    return baseline


def assign_arm(user_id: str, salt: str, weights: Mapping[str, int], baseline: str) -> str:
    return arm_for_bucket(bucket(user_id, salt), weights, baseline)


def _check(weights: Mapping[str, int], baseline: str) -> None:
    if baseline not in weights:
        raise ValueError(f"baseline {baseline!r} has no weight")
    if any(w < 0 for w in weights.values()) or sum(weights.values()) != BUCKETS:
        raise ValueError(f"weights must be non-negative basis points summing to {BUCKETS}")
