"""Kubernetes resource quantities: parse to numbers, render canonical strings."""

from __future__ import annotations

import math
import re
from decimal import Decimal

_SUFFIX = {
    "": 1, "m": Decimal("0.001"), "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
    "P": 10**15, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50,
}
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m|k|M|G|T|P|Ki|Mi|Gi|Ti|Pi)?$")


def parse(text: str | int | float) -> Decimal:
    """The value of a quantity ("500m" -> 0.5, "2Gi" -> 2147483648)."""
    if isinstance(text, int | float):
        return Decimal(str(text))
    match = _QUANTITY.match(text.strip())
    if not match:
        raise ValueError(f"not a Kubernetes quantity: {text!r}")
    return Decimal(match.group(1)) * Decimal(_SUFFIX[match.group(2) or ""])


def is_quantity(text: object) -> bool:
    return isinstance(text, str) and _QUANTITY.match(text) is not None


def mebibytes(n_bytes: int) -> str:
    """Memory as whole Mi, rounded up: requests must never be below what the data needs."""
    return f"{math.ceil(n_bytes / 2**20)}Mi"
