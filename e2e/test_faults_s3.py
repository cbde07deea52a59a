"""S3 faults during updates the operator drives: MinIO behind a fault proxy answers errors,
holds requests, or resets connections while the servers load (or the operator validates)
a full checkpoint. Each update must either complete once S3 heals or fail cleanly with the
old version still serving on every shard: never a mixed or half-loaded active version."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import pytest

from devstack.faultproxy import Fault
from e2e.reliability import Figures, Reader, Stack
from e2e.support import wait_for

NS = "e2e-faults-s3"


@pytest.fixture(scope="module")
def stack(cluster):
    stack = Stack(cluster, NS)
    try:
        stack.version("v1", stack.write_full(1))
        stack.wait_phase("v1", "Active")
        yield stack
    finally:
        stack.stop()


@contextlib.contextmanager
def servers_see(stack: Stack, figures: Figures, *faults: Fault) -> Iterator[Reader]:
    """The servers' S3 answers with `faults` while lookups run; on the way out the
    lookups' and the proxy's figures are recorded and S3 is healed."""
    stack.server_proxy.clear_stats()
    stack.server_proxy.set(*faults)
    reader = Reader(stack)
    try:
        yield reader
    finally:
        figures.update(reader.stop())
        figures.update({f"s3_{k}": v for k, v in stack.server_proxy.stats().items()})
        stack.server_proxy.heal()


def land(stack: Stack, figures: Figures, name: str, number: int, old: int) -> dict:
    """Wait for the version to settle; check the end state is one whole version."""
    started = time.monotonic()
    final = stack.wait_phase(name, "Active", "Failed", "RolledBack", timeout=240)
    figures["settle_s"] = time.monotonic() - started
    figures["phase"] = final["phase"]
    if final["phase"] != "Active":
        figures["reason"] = final.get("reason", "")
        wait_for(lambda: final.get("completedAt") or stack.status(name).get("completedAt"),
                 timeout=60, what=f"{name} cleaned up")
    expected = number if final["phase"] == "Active" else old
    end = wait_for(lambda: (c := stack.consistent(expected))["ok"] and c, timeout=60,
                   what=f"every server on version {expected}")
    figures["versions_per_replica"] = str(end["actives"])
    return final


def test_s3_errors_during_a_full_load_are_retried(stack, record_property):
    figures = Figures(record_property,
                      "503 SlowDown and 500 InternalError answers to the servers' first S3 "
                      "requests while they load a full checkpoint",
                      "update completes on every shard; lookups during it each read one "
                      "whole version")
    with servers_see(stack, figures, Fault("error", status=503, limit=3),
                     Fault("error", status=500, limit=2)) as reader:
        stack.version("v2", stack.write_full(2))
        final = land(stack, figures, "v2", 2, old=1)
    assert final["phase"] == "Active"
    assert reader.mixed == 0 and reader.failed == 0


def test_s3_holding_requests_stalls_the_load_until_it_heals(stack, record_property):
    figures = Figures(record_property,
                      "S3 holds every table read unanswered (a dead peer) for 8 s during a "
                      "full load, then closes them",
                      "the old version serves throughout; the load resumes by retry and the "
                      "update completes")
    with servers_see(stack, figures, Fault("blackhole", path=r"/tables/")) as reader:
        stack.version("v3", stack.write_full(3))
        wait_for(lambda: all(h.get(3) == "loading" for h in stack.held()), timeout=60,
                 what="v3 loading everywhere")
        time.sleep(8)
        held = stack.held()
        assert all(h.get(3) == "loading" for h in held), held
        assert stack.actives() == [2, 2]
        healed = time.monotonic()
        stack.server_proxy.heal()
        final = land(stack, figures, "v3", 3, old=2)
        figures["heal_to_active_s"] = time.monotonic() - healed
    assert final["phase"] == "Active"
    assert reader.mixed == 0 and reader.failed == 0 and 2 in reader.versions


def test_s3_reset_in_the_middle_of_a_body_is_read_again(stack, record_property):
    figures = Figures(record_property,
                      "S3 resets the connection half way through a table file's body "
                      "(the first table read only)",
                      "the part is read again and the update completes; lookups never "
                      "see a mixed version")
    with servers_see(stack, figures, Fault("cut", path=r"/tables/", limit=1)) as reader:
        stack.version("v4", stack.write_full(4))
        final = land(stack, figures, "v4", 4, old=3)
    assert reader.mixed == 0 and reader.failed == 0
    # embedding/checkpoint.py retries a part whose body was cut off (botocore does not).
    assert final["phase"] == "Active", final


def test_s3_errors_while_the_operator_validates(stack, record_property):
    figures = Figures(record_property,
                      "S3 answers 503 to the operator's first reads and then resets one of "
                      "its table reads while it validates a checkpoint",
                      "S3 errors are transient: the version stays Validating and then "
                      "lands; the old version serves meanwhile")
    stack.operator_proxy.clear_stats()
    stack.operator_proxy.set(Fault("error", status=503, limit=2),
                             Fault("cut", path=r"/tables/", limit=1))
    try:
        stack.version("v5", stack.write_full(5))
        final = land(stack, figures, "v5", 5, old=stack.actives()[0])
    finally:
        figures.update({f"s3_{k}": v for k, v in stack.operator_proxy.stats().items()})
        stack.operator_proxy.heal()
    # controllers/modelversion/validate.py classes 5xx and resets as Unavailable: retried.
    assert final["phase"] == "Active", final
    assert stack.consistent(5)["ok"]
