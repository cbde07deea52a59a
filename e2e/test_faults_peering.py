"""Two operator replicas with Kopf peering, as the chart runs them (cluster-wide, distinct
priorities, one ClusterKopfPeering): the leader is SIGKILLed in the middle of an update,
and the standby must take over once the leader's peering record expires (13 s after its
last keep-alive, operator/main.py) and finish it. Half a minute: CI runs it."""

from __future__ import annotations

import time

import pytest

from devstack.faultproxy import Fault
from e2e.reliability import REPO, Figures, Stack
from e2e.support import get_json, wait_for

NS = "e2e-faults-peering"


@pytest.fixture(scope="module")
def stack(cluster):
    cluster.kubectl("apply", "--server-side", "--field-manager=e2e-faults", "-f",
                    str(REPO / "charts" / "recop" / "crds" / "kopf-peering.yaml"))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                    "crd/clusterkopfpeerings.kopf.dev", timeout=90)
    # The chart's object; removed afterwards so that a Helm install (e2e/test_helm.py)
    # can own it again.
    created = cluster.kubectl("get", "clusterkopfpeering", "recop", check=False).returncode
    cluster.kubectl("apply", "--server-side", "--field-manager=e2e-faults", "-f", "-",
                    input='{"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", '
                          '"metadata": {"name": "recop"}}')
    stack = Stack(cluster, NS, operator=False)
    try:
        for n in (1, 2):
            stack.write_full(n)
        yield stack
    finally:
        stack.stop()
        if created != 0:
            cluster.kubectl("delete", "clusterkopfpeering", "recop", "--ignore-not-found",
                            check=False)


def test_standby_takes_over_a_killed_leader_mid_update(stack, record_property):
    figures = Figures(record_property,
                      "two peered operator replicas (priorities 200 and 100); the leader is "
                      "SIGKILLed while v2 loads (S3 held), S3 heals 3 s later",
                      "only the leader acts before; the standby resumes after the leader's "
                      "peering record expires and finishes: v2 Active everywhere")
    leader = stack.start_operator("--priority=200", name="peer-leader", namespaced=False,
                                  env={"POD_ID": "peer-leader"})
    standby = stack.start_operator("--priority=100", name="peer-standby", namespaced=False,
                                   env={"POD_ID": "peer-standby"})
    wait_for(lambda: "Pausing operations in favour of" in standby.log(), timeout=60,
             what="the standby to pause")
    stack.version("v1", f"s3://{stack.bucket}/v1")
    stack.wait_phase("v1", "Active", timeout=120)
    stack.server_proxy.set(Fault("blackhole", path=r"/tables/"))
    stack.version("v2", f"s3://{stack.bucket}/v2")
    wait_for(lambda: all(h.get(2) == "loading" for h in stack.held()), timeout=90,
             what="v2 loading")
    stack.kill_operator(leader)
    killed = time.monotonic()
    time.sleep(3)
    stack.server_proxy.heal()
    wait_for(lambda: "Resuming operations" in standby.log(), timeout=180, interval=1,
             what="the standby to resume")
    figures["kill_to_standby_resumed_s"] = time.monotonic() - killed
    final = stack.wait_phase("v2", "Active", "Failed", timeout=180)
    figures["kill_to_active_s"] = time.monotonic() - killed
    end = wait_for(lambda: (c := stack.consistent(2))["ok"] and c, timeout=60,
                   what="v2 on every server")
    figures["versions_per_replica"] = str(end["actives"])
    assert final["phase"] == "Active"
    assert standby.proc.poll() is None
    # The update completed once: one commit announced for v2 across both replicas.
    commits = [e for e in get_json(stack.cluster, "-n", NS, "events", "--field-selector",
                                   "involvedObject.name=v2")["items"]
               if e["reason"] == "Committed"]
    announced = sum(e.get("count") or 1 for e in commits)
    figures["commits_announced"] = announced
    assert announced == 1, commits
