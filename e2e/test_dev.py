"""README's first command, `recop-dev up`, end to end in a state dir of its own: a second
control plane from the cached binaries with the machine's real node joined to it, the
images built and loaded, MinIO, Kafka and Prometheus reachable from the pods, the chart's
operator pods installed by helm, a RecModel whose shard and Triton pods run on the real
node Ready with its ModelVersion Active, a lookup and an inference answered by those
pods; then `down` leaves no process, no state, no node and no release.

The real node is one per machine: the test takes it from the session's cluster and starts
it there again afterwards if it ran there.
"""

from __future__ import annotations

import ipaddress
import os
import re
import subprocess
import sys

import pytest

from devstack import netns, node

pytestmark = [
    pytest.mark.skipif(bool(os.environ.get("RECOP_KUBECONFIG")),
                       reason="`recop-dev up` runs the local control plane and its real node"),
]


def recop_dev(*args: str, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "devstack.dev", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def pods(stdout: str) -> dict[str, tuple[str, str, str]]:
    """`kubectl get pods -A -o wide` rows of the demo and the chart: name -> (status,
    pod IP, node)."""
    out = {}
    for line in stdout.splitlines():
        fields = line.split()
        if fields and fields[0] in ("recop-system", "recop-demo"):
            # RESTARTS may read "1 (5s ago)": the IP and the node are found by their form.
            ip = next((f for f in fields if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", f)), "")
            out[fields[1]] = (fields[3], ip,
                              node.NODE_NAME if node.NODE_NAME in fields else "")
    return out


def in_pod_range(address: str) -> bool:
    return ipaddress.ip_address(address) in ipaddress.ip_network(netns.POD_CIDR)


# Cold, it builds the images when the tree changed (minutes on 2 cores).
@pytest.mark.timeout(2400)
def test_dev_up_status_down(cluster, tmp_path):
    had_node = node.running(cluster)
    node.down()
    state = tmp_path / "state"
    env = {**os.environ, "RECOP_STATE": str(state)}
    try:
        up = recop_dev("up", env=env, timeout=1800)
        print(up.stderr[-3000:], up.stdout, sep="\n")  # the phases' timings, for the README
        assert up.returncode == 0, up.stderr[-3000:]
        running = pods(up.stdout)
        expected = {"operator": (r"recop-demo-", 2), "shard 0": (r"demo-emb-0-", 1),
                    "shard 1": (r"demo-emb-1-", 1), "Triton": (r"demo-triton-", 1)}
        for what, (prefix, count) in expected.items():
            found = {n: v for n, v in running.items() if n.startswith(prefix)}
            assert len(found) == count, (what, running)
            for name, (status, ip, where) in found.items():
                assert status == "Running" and where == node.NODE_NAME, (name, status, where)
                assert in_pod_range(ip), (name, ip)
        assert up.stdout.count("containerd://") == len(running), up.stdout

        lines = {line.split()[0]: line for line in up.stdout.splitlines() if line.strip()}
        assert "Ready" in lines["recmodel/demo"] and "active demo-v1" in lines["recmodel/demo"]
        assert "Active" in lines["modelversion/demo-v1"]
        assert "-> version 1" in lines["lookup"]
        # Answered by the shard pods, at their pod IPs.
        answered = re.search(r"\(shard pods (.*)\)", lines["lookup"]).group(1).split(", ")
        shard_ips = {ip for name, (_, ip, _) in running.items() if "-emb-" in name}
        assert {a.rsplit(":", 1)[0] for a in answered} == shard_ips, (answered, shard_ips)
        assert "scores [" in lines["infer"] and "Service demo-triton" in lines["infer"]
        # The entry model's answer, in one call, equals the two-call one (dev.py checks).
        assert "at embedding version 1, dense version 1" in lines["predict"], lines

        again = recop_dev("up", env=env)
        assert again.returncode == 0, again.stderr[-3000:]
        assert "already running" in again.stderr
        assert "-> version 1" in again.stdout
        status = recop_dev("status", env=env)
        assert status.returncode == 0 and "2/2 shards" in status.stdout
    finally:
        down = recop_dev("down", env=env)
        try:
            assert down.returncode == 0, down.stderr
            assert not state.exists(), list(state.rglob("*"))
            left = subprocess.run(["pgrep", "-af", str(state)], capture_output=True, text=True)
            assert left.stdout == "", f"processes left behind: {left.stdout}"
            assert not netns.exists(), "the real node's network namespace is left"
            releases = cluster.helm("list", "-A", "-q").stdout.split()
            assert "recop-demo" not in releases, releases
        finally:
            if had_node:
                node.ensure_up(cluster)
