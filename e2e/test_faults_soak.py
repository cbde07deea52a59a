"""The soak (bench/soak.py) as a test, for the reliability report: continuous lookups
while full, incremental and real-time updates land through the operator. Its length comes
from $RECOP_SOAK_SECONDS (default 120; `python -m bench.reliability` sets 60)."""

from __future__ import annotations

import os
import sys

import pytest

from devstack import kafka as local_kafka
from e2e.reliability import REPO, Figures

pytestmark = pytest.mark.slow


def test_soak_lookups_while_updates_land(cluster, record_property):
    seconds = float(os.environ.get("RECOP_SOAK_SECONDS", "120"))
    figures = Figures(record_property,
                      f"{seconds:.0f} s of lookups (512 random ids each, one thread) while the "
                      "operator lands full and incremental versions back to back over a "
                      "realtime version and ~50 deltas/s",
                      "no lookup error, no mixed-version read, every update Active, deltas "
                      "applied; p50/p99 latency and server RSS growth measured")
    sys.path.insert(0, str(REPO / "bench"))
    try:
        import soak
    finally:
        sys.path.pop(0)
    kafka = local_kafka.start()
    try:
        result = soak.run(cluster, kafka, seconds)
    finally:
        kafka.stop()
    print(soak.table(result))
    figures.update({k: v if isinstance(v, int | float) else str(v)
                    for k, v in result.items() if k != "failures"})
    if result["failures"]:
        figures.note("; ".join(result["failures"]))
    assert result["lookup_errors"] == 0
    assert result["mixed_version_reads"] == 0
    assert result["updates_failed"] == 0
    assert result["updates_full"] + result["updates_incremental"] >= 2
