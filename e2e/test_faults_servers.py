"""Embedding server processes SIGKILLed during a full load the operator drives, and
restarted (a new process for the same shard on the same ports, its endpoint unchanged, its
memory empty). The model must end on the right version on every replica, the restarted
one included, with lookups reading one whole version throughout."""

from __future__ import annotations

import time

import pytest

from devstack.faultproxy import Fault
from e2e.reliability import Figures, Reader, serving_v1
from e2e.support import wait_for

NS = "e2e-faults-servers"


@pytest.fixture(scope="module")
def stack(cluster):
    with serving_v1(cluster, NS) as stack:
        yield stack


def test_only_replica_of_a_shard_killed_during_a_full_load(stack, record_property):
    figures = Figures(record_property,
                      "SIGKILL shard 1's only server while it loads v2 (its S3 reads held); "
                      "restart it 3 s later, empty, then let S3 answer",
                      "the operator waits for the shard, loads v2 into the new process, "
                      "commits everywhere: v2 on every server, no mixed read")
    stack.server_proxy.set(Fault("blackhole", path=r"shard-00001"))
    reader = Reader(stack)
    try:
        stack.version("v2", f"s3://{stack.bucket}/v2")
        wait_for(lambda: [h.get(2) for h in stack.held()] == ["ready", "loading"],
                 timeout=90, what="v2 loading on shard 1")
        victim = stack.servers[1]
        stack.kill_server(victim)
        time.sleep(3)
        figures["phase_while_down"] = stack.phase("v2")
        figures["message_while_down"] = stack.status("v2").get("message", "")
        restarted = time.monotonic()
        stack.restart_server(victim)
        stack.server_proxy.heal()
        stack.wait_phase("v2", "Active", "Failed", timeout=180)
        end = wait_for(lambda: (c := stack.consistent(2))["ok"] and c, timeout=120,
                       what="v2 on every server")
        figures["restart_to_consistent_s"] = time.monotonic() - restarted
        figures["versions_per_replica"] = str(end["actives"])
    finally:
        figures.update(reader.stop())
        stack.server_proxy.heal()
    assert stack.phase("v2") == "Active"
    # Shard 1 had no other replica: lookups fail while it is down, never read mixed.
    assert reader.mixed == 0


def test_one_of_two_replicas_killed_during_a_full_load(stack, record_property):
    figures = Figures(record_property,
                      "shard 0 gets a second replica; SIGKILL one of them while v3 loads "
                      "(reads held), let the update finish on the others, then restart it "
                      "empty",
                      "v3 Active; the restarted replica is brought to v3 by the operator "
                      "(a newly joined replica: its endpoint turns not ready while down and "
                      "ready again, which is what the operator reacts to) and every replica "
                      "serves v3")
    stack.wait_phase("v2", "Active")
    wait_for(lambda: stack.status("v2").get("verifiedAt"), timeout=60, what="v2 verified")
    extra = stack.add_server(0)
    wait_for(lambda: (c := stack.consistent(2))["ok"] and c, timeout=120,
             what="the added replica brought to v2")
    stack.server_proxy.set(Fault("blackhole", path=r"shard-00000"))
    reader = Reader(stack)
    try:
        stack.version("v3", f"s3://{stack.bucket}/v3")
        wait_for(lambda: sum(h.get(3) == "loading" for h in stack.held()) == 2, timeout=90,
                 what="v3 loading on shard 0's replicas")
        stack.kill_server(extra)
        stack.server_proxy.heal()
        stack.wait_phase("v3", "Active", "Failed", timeout=180)
        figures["phase_without_victim"] = stack.phase("v3")
        restarted = time.monotonic()
        stack.restart_server(extra)
        end = wait_for(lambda: (c := stack.consistent(3))["ok"] and c, timeout=120,
                       what="v3 on every server, the restarted one included")
        figures["restart_to_consistent_s"] = time.monotonic() - restarted
        figures["versions_per_replica"] = str(end["actives"])
    finally:
        figures.update(reader.stop())
        stack.server_proxy.heal()
        figures["versions_per_replica_at_end"] = str(stack.actives())
    assert reader.mixed == 0
