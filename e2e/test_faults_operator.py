"""The operator SIGKILLed at each step of an update, then started again: it must resume
from the ModelVersion's status and what the servers report, and end consistent (one
version on every server and on Triton, the RecModel's pointers right, nothing loading).

The steps are timed by the status phases, and held open where they are too short to hit
by starving S3 through the fault proxies: Validating (the operator's reads held), Loading
with shard 0 loaded and shard 1 not (shard 1's reads held), after every server committed
but before Active (Triton still loading the dense version), inside the rollback window,
and during a user rollback that reloads a released version from S3.
"""

from __future__ import annotations

import json
import time

import pytest

from devstack import triton as local_triton
from devstack.faultproxy import Fault
from e2e.reliability import MODEL, Figures, Stack
from e2e.support import wait_for

NS = "e2e-faults-operator"
WINDOW = 15  # seconds of rollback window after each activation
# v3's window: the kill inside it comes after the test before settles (up to a minute on
# a loaded machine), so it is set from that, not from the other versions' window.
V3_WINDOW = 90

pytestmark = pytest.mark.slow


def dense_versions(triton) -> set[int]:
    from tritonclient.grpc import InferenceServerClient

    index = InferenceServerClient(triton.grpc_address).get_model_repository_index(
        as_json=True)
    return {int(m["version"]) for m in index.get("models", [])
            if m.get("state") == "READY" and m.get("version")}


@pytest.fixture(scope="module")
def stack(cluster):
    triton = local_triton.start(local_triton.TEST_MODELS)
    try:
        stack = Stack(cluster, NS, triton=triton, rollback_window=f"{WINDOW}s")
        try:
            for n in (1, 2, 3):
                stack.write_full(n)
            yield stack
        finally:
            stack.stop()
    finally:
        triton.stop()


def restart(stack: Stack, figures: Figures) -> float:
    stack.kill_operator()
    started = time.monotonic()
    stack.start_operator()
    return started


def settle(stack, figures, name, expected, dense, started, *phases) -> dict:
    final = stack.wait_phase(name, *(phases or ("Active",)), timeout=240)
    figures["restart_to_settled_s"] = time.monotonic() - started
    end = wait_for(lambda: (c := stack.consistent(expected))["ok"] and c, timeout=60,
                   what=f"servers on {expected}")
    wait_for(lambda: dense_versions(stack.triton) == {dense} or
             (final["phase"] == "Active" and dense in dense_versions(stack.triton)),
             timeout=60, what=f"Triton serving {dense}")
    figures["versions_per_replica"] = str(end["actives"])
    figures["dense_versions"] = str(sorted(dense_versions(stack.triton)))
    return final


def test_killed_while_validating(stack, record_property):
    figures = Figures(record_property,
                      "operator SIGKILLed while Validating v1 (its S3 reads held by the proxy), "
                      "then restarted with S3 healed",
                      "v1 validated again and Active on every server and Triton")
    stack.operator_proxy.set(Fault("blackhole"))
    stack.version("v1", f"s3://{stack.bucket}/v1", dense=1)
    wait_for(lambda: stack.phase("v1") == "Validating", timeout=60, what="v1 Validating")
    time.sleep(2)
    figures["phase_at_kill"] = stack.phase("v1")
    stack.operator_proxy.heal()
    started = restart(stack, figures)
    final = settle(stack, figures, "v1", 1, 1, started)
    assert final["embeddingVersion"] == 1
    assert stack.model_status()["activeVersion"] == "v1"


def test_killed_while_loading_with_one_shard_loaded(stack, record_property):
    figures = Figures(record_property,
                      "operator SIGKILLed while Loading v2 with shard 0 loaded and shard 1's "
                      "S3 reads held; restarted, then S3 healed",
                      "no second load of shard 0; v2 Active everywhere; v1 released after "
                      "the window")
    stack.wait_phase("v1", "Active")
    wait_for(lambda: stack.status("v1").get("verifiedAt"), timeout=WINDOW + 60,
             what="v1 verified")
    stack.server_proxy.set(Fault("blackhole", path=r"shard-00001"))
    stack.version("v2", f"s3://{stack.bucket}/v2", dense=2)
    wait_for(lambda: [h.get(2) for h in stack.held()] == ["ready", "loading"], timeout=90,
             what="v2 loaded on shard 0 only")
    figures["phase_at_kill"] = stack.phase("v2")
    figures["shards_at_kill"] = str([s["state"] for s in stack.status("v2")["shards"]])
    started = restart(stack, figures)
    time.sleep(3)
    stack.server_proxy.heal()
    settle(stack, figures, "v2", 2, 2, started)
    wait_for(lambda: stack.status("v2").get("verifiedAt"), timeout=WINDOW + 60,
             what="v2 verified")
    assert all(1 not in h for h in stack.held()), "v1 released on every server"
    assert stack.phase("v1") == "Superseded"


def test_killed_after_commit_before_active(stack, record_property):
    figures = Figures(record_property,
                      "operator SIGKILLed as soon as every server has committed v3, before "
                      "it is Active (Triton still loading dense version 1)",
                      "the restarted operator does not load or commit again, finishes "
                      "Triton and marks v3 Active")
    stack.cluster.kubectl("-n", NS, "patch", "recmodel", MODEL, "--type=merge", "-p",
                          json.dumps({"spec": {"rollbackPolicy": {"window": f"{V3_WINDOW}s"}}}))
    stack.version("v3", f"s3://{stack.bucket}/v3", dense=1)
    deadline = time.monotonic() + 120
    while stack.actives() != [3, 3]:
        assert time.monotonic() < deadline, "v3 never committed"
        time.sleep(0.01)
    stack.kill_operator()
    phase = stack.phase("v3")
    figures["phase_at_kill"] = phase
    started = time.monotonic()
    stack.start_operator()
    settle(stack, figures, "v3", 3, 1, started)
    if phase != "Loading":
        figures.note("the kill came after v3 turned Active: the window was missed")


def test_killed_in_the_rollback_window(stack, record_property):
    figures = Figures(record_property,
                      "operator SIGKILLed while v3 is Active inside its rollback window",
                      "the restarted operator keeps watching until the window ends, then "
                      "verifies v3 and releases v2 on every server and Triton")
    status = stack.wait_phase("v3", "Active")
    assert not status.get("verifiedAt"), "the window must still be open"
    figures["phase_at_kill"] = "Active (window open)"
    started = restart(stack, figures)
    wait_for(lambda: stack.status("v3").get("verifiedAt"), timeout=V3_WINDOW + 90,
             what="v3 verified after the restart")
    figures["restart_to_verified_s"] = time.monotonic() - started
    wait_for(lambda: all(set(h) == {3} for h in stack.held()), timeout=60,
             what="v2 released on every server")
    wait_for(lambda: dense_versions(stack.triton) == {1}, timeout=60, what="dense 2 released")
    assert stack.model_status().get("lastCleanVersion") == "v3"


def test_killed_during_a_rollback(stack, record_property):
    figures = Figures(record_property,
                      "user rollback to the released v2 (reloaded from S3, reads held), "
                      "operator SIGKILLed during it, restarted, S3 healed",
                      "the rollback completes: v2 serves everywhere, v3 RolledBack and freed")
    stack.server_proxy.set(Fault("blackhole", path=r"/v2/tables/"))
    stack.cluster.kubectl("-n", NS, "patch", "recmodel", "ranker", "--type=merge",
                          "-p", json.dumps({"spec": {"activeVersion": "v2"}}))
    wait_for(lambda: stack.phase("v3") == "RolledBack"
             and all(h.get(2) == "loading" for h in stack.held()), timeout=60,
             what="rollback reloading v2")
    figures["phase_at_kill"] = "RolledBack (v2 reloading)"
    started = restart(stack, figures)
    time.sleep(3)
    stack.server_proxy.heal()
    final = settle(stack, figures, "v3", 2, 2, started, "RolledBack")
    assert final["reason"] == "UserRollback"
    wait_for(lambda: stack.phase("v2") == "Active", timeout=30, what="v2 Active again")
    assert stack.model_status()["activeVersion"] == "v2"
    wait_for(lambda: all(set(h) == {2} for h in stack.held()), timeout=60,
             what="v3 freed on every server")
