"""Value checks on checkpoint rows: NaN/Inf and magnitude.

Shared by the embedding server, which runs them on every row it loads (it reads the
bytes anyway, so a bad version fails before it can be committed), and by anyone
validating arrays before writing a checkpoint.
"""

from __future__ import annotations

import numpy as np

from embedding.checkpoint import ShardData, dequantize


class InvalidValues(ValueError):
    """Rows a checkpoint must never serve; the message says which table and why."""


# Elements per step: the temporaries of one step stay in cache, and a whole-table mask
# (a byte per value) is never allocated.
_CHUNK = 1 << 18


def scan_values(name: str, values: np.ndarray, max_abs_value: float,
                allow_non_finite: bool) -> None:
    """fp32 rows of table `name`; max_abs_value 0 skips the magnitude check."""
    flat = np.ascontiguousarray(values).reshape(-1)
    non_finite, peak = 0, 0.0
    for start in range(0, flat.size, _CHUNK):
        chunk = flat[start:start + _CHUNK]
        finite = np.isfinite(chunk)
        if not finite.all():
            non_finite += int(chunk.size - np.count_nonzero(finite))
            chunk = chunk[finite]
        if max_abs_value > 0 and chunk.size:
            peak = max(peak, float(chunk.max()), -float(chunk.min()))
    if non_finite and not allow_non_finite:
        raise InvalidValues(f"table {name}: {non_finite} NaN/Inf values")
    if peak > max_abs_value > 0:
        raise InvalidValues(f"table {name}: |value| up to {peak:g}, above "
                            f"{max_abs_value:g}")


def scan_shard(data: dict[str, ShardData], max_abs_value: float,
               allow_non_finite: bool) -> None:
    """Every table of one shard's data, dequantized a table at a time."""
    for name, part in data.items():
        values = part.values
        if part.scales is not None or values.dtype != np.float32:
            # int4: the padding nibble of an odd dim decodes to the row's minimum, so
            # scanning it too changes no verdict.
            width = part.values.shape[1] * (2 if part.bias is not None else 1)
            values = np.empty((len(part.values), width), np.float32)
            dequantize(part.values, part.scales, values, part.bias)
        scan_values(name, values, max_abs_value, allow_non_finite)
