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


def scan_values(name: str, values: np.ndarray, max_abs_value: float,
                allow_non_finite: bool) -> None:
    """fp32 rows of table `name`; max_abs_value 0 skips the magnitude check."""
    if values.size == 0:
        return
    finite = np.isfinite(values)
    if not allow_non_finite and not finite.all():
        raise InvalidValues(f"table {name}: {int((~finite).sum())} NaN/Inf values")
    if max_abs_value > 0:
        peak = float(np.abs(np.where(finite, values, 0)).max())
        if peak > max_abs_value:
            raise InvalidValues(f"table {name}: |value| up to {peak:g}, above "
                                f"{max_abs_value:g}")


def scan_shard(data: dict[str, ShardData], max_abs_value: float,
               allow_non_finite: bool) -> None:
    """Every table of one shard's data, dequantized a table at a time."""
    for name, part in data.items():
        values = np.empty(part.values.shape, np.float32)
        dequantize(part.values, part.scales, values)
        scan_values(name, values, max_abs_value, allow_non_finite)
