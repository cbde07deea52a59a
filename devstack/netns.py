"""The real node's network: a network namespace joined to the host by a veth pair.

The kubelet refuses a loopback node address, so the node gets one on an interface made
here, as kind gives its node a container. containerd, the kubelet, kube-proxy and CoreDNS
run inside the namespace: the pods' bridge and kube-proxy's iptables rules live there
and never touch the host's tables. The host reaches the pods and the Service range
through two routes on its end of the veth, which vanish with it. Nothing here routes
anywhere else: the namespace has no default route and the host does not forward, so no
packet from a pod leaves the machine. `down` deletes the namespace and the veth, and
with them every address, route and rule made inside.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

NAME = "recop-node"
HOST_LINK = "recop-host"
NODE_LINK = "recop-node0"
# A /24 of its own for the veth, and another for the pods: neither meets the Service range
# (devstack.cluster.SERVICE_CIDR) nor the fake pod range KWOK hands out.
HOST_IP = "10.236.0.1"
NODE_IP = "10.236.0.2"
LINK_PREFIX = 24
POD_CIDR = "10.235.0.0/24"
NETNS_PATH = Path("/run/netns") / NAME


def enter() -> list[str]:
    """The argv prefix that runs a command inside the namespace.

    `nsenter --net`, not `ip netns exec`: the latter also gives the command a mount
    namespace of its own, and then the volumes the kubelet mounts would be invisible to
    containerd, which starts the containers.
    """
    return ["nsenter", f"--net={NETNS_PATH}", "--"]


def exists() -> bool:
    return NETNS_PATH.exists()


def up(service_cidr: str) -> None:
    """Create the namespace, the veth and the routes to the pods and to `service_cidr`
    (kube-proxy answers it inside); a leftover of an earlier run is removed first, so
    every start begins from the same state."""
    down()
    steps = [
        ["ip", "netns", "add", NAME],
        ["ip", "link", "add", HOST_LINK, "type", "veth", "peer", "name", NODE_LINK],
        ["ip", "link", "set", NODE_LINK, "netns", NAME],
        ["ip", "addr", "add", f"{HOST_IP}/{LINK_PREFIX}", "dev", HOST_LINK],
        ["ip", "link", "set", HOST_LINK, "up"],
        ["ip", "-n", NAME, "addr", "add", f"{NODE_IP}/{LINK_PREFIX}", "dev", NODE_LINK],
        ["ip", "-n", NAME, "link", "set", NODE_LINK, "up"],
        ["ip", "-n", NAME, "link", "set", "lo", "up"],
        # Per namespace: the node routes between its pods' bridge and the veth; the
        # host's own setting stays as it was.
        [*enter(), "sysctl", "-qw", "net.ipv4.ip_forward=1"],
        # Bridged pod-to-pod traffic must pass kube-proxy's rules, or a pod that reaches a
        # Service backed by a pod on the same bridge gets its reply from the wrong address.
        [*enter(), "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1"],
        ["ip", "route", "add", POD_CIDR, "via", NODE_IP, "dev", HOST_LINK],
        ["ip", "route", "add", service_cidr, "via", NODE_IP, "dev", HOST_LINK],
    ]
    try:
        for argv in steps:
            _run(argv)
    except BaseException:
        down()
        raise


def down() -> None:
    """Remove the namespace and the veth (its routes go with it). Pod namespaces made by
    the CNI plugins are not ours to remove here: the node removes its pods first."""
    if exists():
        _run(["ip", "netns", "delete", NAME])
    # Deleting the namespace destroys the node's end of the veth, and with it the pair
    # (a moment later), unless a process still holds the namespace open; then the host
    # end is deleted here.
    if Path("/sys/class/net", HOST_LINK).exists():
        _run(["ip", "link", "delete", HOST_LINK], gone_ok=True)


def _run(argv: list[str], gone_ok: bool = False) -> None:
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0 and not (gone_ok and "Cannot find device" in result.stderr):
        raise RuntimeError(f"{' '.join(argv)}: {result.stderr.strip()}")
