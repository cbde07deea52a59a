"""The partition function: which shard owns an int64 id.

`splitmix64` finaliser of the id, modulo the shard count. It is stable across processes,
machines and numpy versions (pure integer arithmetic with defined wrap-around), spreads
sequential ids evenly, and is written to the manifest by name so that a reader can refuse a
checkpoint cut with another function.
"""

from __future__ import annotations

import numpy as np

PARTITION_FUNCTION = "splitmix64-mod"

_C1 = np.uint64(0x9E3779B97F4A7C15)
_C2 = np.uint64(0xBF58476D1CE4E5B9)
_C3 = np.uint64(0x94D049BB133111EB)


def mix64(ids: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser, vectorised; int64 ids are read as their uint64 bits."""
    z = np.asarray(ids, dtype=np.int64).view(np.uint64) + _C1
    z = (z ^ (z >> np.uint64(30))) * _C2
    z = (z ^ (z >> np.uint64(27))) * _C3
    return z ^ (z >> np.uint64(31))


def shard_of(ids: np.ndarray, shard_count: int) -> np.ndarray:
    """Shard index (int64) of every id."""
    if shard_count < 1:
        raise ValueError("shard_count must be >= 1")
    with np.errstate(over="ignore"):
        return (mix64(ids) % np.uint64(shard_count)).astype(np.int64)
