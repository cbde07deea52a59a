"""A real node beside the KWOK ones: containerd, runc, the CNI plugins, the kubelet,
kube-proxy and CoreDNS, so pods that RecOp builds actually run.

    python -m devstack.node build|up|down|status

The node lives in its own network namespace (devstack.netns) with the address the
kubelet registers; the API server, which listens on loopback, is reached there through
a forwarder on the host end of the veth. The kubelet is the same release as the control
plane, configured for this machine's cgroup v1 hierarchy (`failCgroupV1: false`, the
cgroupfs driver: no systemd here) and the static CPU manager, so Guaranteed pods get
cores of their own. The node is tainted: only pods that tolerate it land on it, so the
KWOK tests keep their fake pods. No image is pulled from a registry: containerd's pause
image and every image a pod runs are built here (devstack.images) and imported.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from devstack import cluster_build, images, netns
from devstack.cluster import SERVICE_CIDR, ClusterInfo
from devstack.common import (
    ManagedProcess,
    cache_dir,
    go_install,
    pid_alive,
    progress,
    remove_state,
    state_dir,
    stop_group,
    stop_pid_file,
    wait_for_port,
)

NAME = "node"
NODE_NAME = "recop-node"
POOL_LABEL = "devstack.dev/pool"
# Pods must ask for the real node: KWOK tests' pods name images no one built.
TAINT = {"key": "devstack.dev/real-node", "value": "true", "effect": "NoSchedule"}
TOLERATION = {"key": TAINT["key"], "operator": "Equal", "value": TAINT["value"],
              "effect": TAINT["effect"]}
SELECTOR = {POOL_LABEL: "real"}
COREDNS_VERSION = "v1.15.0"
CRICTL_VERSION = "v1.36.0"
CNI_BIN = Path("/usr/lib/cni")
# The pods' cgroups go under this root in every hierarchy, so `down` finds all of them.
CGROUP_ROOT = "recop-node"
KUBELET_PORT = 10250
KUBELET_HEALTHZ = 10248
PROXY_HEALTHZ = 10256
PROXY_METRICS = 10249
DNS_HEALTH = 8080
DNS_READY = 8181
CLUSTER_DOMAIN = "cluster.local"
# Stopped in this order: the kubelet first, so it restarts nothing while pods go.
COMPONENTS = ("kubelet", "coredns", "kube-proxy", "containerd", "apiserver-forward")
START_TIMEOUT = 120.0
FORWARD_PREFIX = "forward-"
# Which state dir holds the machine's one real node (see _claim).
OWNER = Path("/run/recop-node.owner")


class NodeError(RuntimeError):
    """The real node could not be started; the message says why."""


def ensure_up(info: ClusterInfo) -> None:
    """Start the node in `info`'s cluster unless it already runs there and is Ready."""
    if running(info):
        return
    down()
    _claim()
    started = time.monotonic()
    binaries = _binaries()
    pause = images.pause()
    try:
        _start(info, binaries, pause)
    except BaseException:
        down()
        raise
    progress(f"real node {NODE_NAME} Ready in {time.monotonic() - started:.1f}s")


def running(info: ClusterInfo) -> bool:
    directory = _state()
    if not all(pid_alive(directory / f"{c}.pid") for c in COMPONENTS):
        return False
    result = info.kubectl("get", "node", NODE_NAME, "-o",
                          "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
                          check=False)
    return result.returncode == 0 and result.stdout == "True"


def load(*refs: str) -> None:
    """Import images from buildah's storage into the node's containerd (those it lacks)."""
    present = set(_ctr("images", "list", "--quiet").split())
    missing = [ref for ref in refs if ref not in present]
    if not missing:
        return
    # Older tags of the same images go: the store is cached across `down`s, and containers
    # still running on one keep their snapshot.
    repositories = {ref.rsplit(":", 1)[0] for ref in missing}
    stale = [ref for ref in present if ref.rsplit(":", 1)[0] in repositories]
    if stale:
        _ctr("images", "remove", *stale)
    with tempfile.TemporaryDirectory(dir=_state()) as tmp:
        for ref in missing:
            started = time.monotonic()
            archive = images.save(ref, Path(tmp) / "image.tar")
            _ctr("images", "import", str(archive))
            archive.unlink()
            progress(f"loaded {ref} into the node in {time.monotonic() - started:.1f}s")


def expose(port: int) -> ManagedProcess:
    """Make a server that listens on loopback (MinIO, Kafka, Prometheus) reachable from
    the pods, at `netns.HOST_IP`:`port`. Stop the handle when done; `down` stops any
    left."""
    return _forward(f"{FORWARD_PREFIX}{port}", port)


def _forward(name: str, port: int) -> ManagedProcess:
    # Bound to the host end of the veth alone: only the node and its pods can reach it.
    process = ManagedProcess(name, [
        "socat", f"TCP-LISTEN:{port},bind={netns.HOST_IP},reuseaddr,fork",
        f"TCP:127.0.0.1:{port}"], directory=_state())
    try:
        wait_for_port(port, 10, host=netns.HOST_IP, proc=process.proc)
    except (RuntimeError, TimeoutError) as error:
        process.stop()
        raise NodeError(f"forwarder to 127.0.0.1:{port}: {error}\n{process.log_tail()}") \
            from error
    return process


def down() -> None:
    """Stop the node's pods and processes and remove everything it made: mounts, cgroups,
    the network namespace, the state dir. containerd's image store stays cached.

    The namespace, the veth and the cgroups have machine-wide names: a checkout (state
    dir) that does not hold the node leaves them alone, since its `cluster down` calls
    this too."""
    directory = _state()
    owner = _owner()
    if owner is not None and owner != directory and owner.exists():
        remove_state(NAME)
        return
    stop_pid_file(directory / "kubelet.pid")
    if pid_alive(directory / "containerd.pid"):
        # Through the CRI, so every sandbox's network is torn down by its CNI plugins
        # (pod namespaces, veths, IP leases) and its mounts are released.
        subprocess.run([str(_crictl()), f"--runtime-endpoint=unix://{_socket()}",
                        "--timeout=30s", "rmp", "--all", "--force"],
                       capture_output=True, timeout=120, check=False)
    for component in COMPONENTS[1:]:
        stop_pid_file(directory / f"{component}.pid")
    for pid_path in directory.glob(f"{FORWARD_PREFIX}*.pid"):
        stop_pid_file(pid_path)
    _kill_leftovers()
    _unmount_under(directory, _containerd_root())
    _remove_cgroups()
    netns.down()
    remove_state(NAME)
    OWNER.unlink(missing_ok=True)


def _owner() -> Path | None:
    try:
        return Path(OWNER.read_text())
    except OSError:
        return None


def _claim() -> None:
    """One real node per machine: its addresses and names are fixed."""
    owner = _owner()
    if owner is not None and owner != _state() and owner.exists():
        raise NodeError(f"the real node is held by the dev stack in {owner.parent} "
                        "(RECOP_STATE); stop it there first (`python -m devstack.node down`)")
    OWNER.write_text(str(_state()))


def status(info: ClusterInfo | None) -> dict[str, str]:
    directory = _state()
    report = {c: (f"running (pid {pid})" if (pid := pid_alive(directory / f"{c}.pid"))
                  else "stopped") for c in reversed(COMPONENTS)}
    report["node"] = "Ready" if info is not None and running(info) else "not ready"
    return report


def _binaries() -> dict[str, Path]:
    built = cluster_build.build_node()
    return {**built,
            "coredns": go_install("coredns", "github.com/coredns/coredns", COREDNS_VERSION),
            "crictl": _crictl()}


def _crictl() -> Path:
    return go_install("crictl", "sigs.k8s.io/cri-tools/cmd/crictl", CRICTL_VERSION)


def _state() -> Path:
    return state_dir(NAME)


def _socket() -> Path:
    return _state() / "containerd" / "containerd.sock"


def _containerd_root() -> Path:
    # In the cache, not the state dir: imported images survive `down`, so a warm start
    # imports nothing. `down` removes every pod first, so only images remain in it.
    return cache_dir() / "node" / "containerd"


def _ctr(*args: str) -> str:
    result = subprocess.run(["ctr", f"--address={_socket()}", "--namespace=k8s.io", *args],
                            capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise NodeError(f"ctr {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout




def _start(info: ClusterInfo, binaries: dict[str, Path], pause: str) -> None:
    directory = _state()
    api_port = urlsplit(info.server).port
    netns.up(SERVICE_CIDR)
    pki = info.kubeconfig.parent / "pki"
    kubeconfigs = {user: _kubeconfig(info, pki, user, directory / f"{stem}.kubeconfig",
                                     api_port)
                   for stem, user in (("kubelet", f"system:node:{NODE_NAME}"),
                                      ("kube-proxy", "system:kube-proxy"),
                                      ("coredns", "recop-coredns"))}

    # The node's components and the pods reach the API server here.
    _forward("apiserver-forward", api_port)
    _publish_api_endpoint(info, api_port)

    containerd = _spawn("containerd", ["containerd", f"--config={_containerd_config(pause)}"])
    _wait(containerd, lambda: _socket().exists() and subprocess.run(
        [str(binaries["crictl"]), f"--runtime-endpoint=unix://{_socket()}", "info"],
        capture_output=True).returncode == 0, "containerd's CRI")
    load(pause)

    _make_cgroup_root()
    kubelet = _spawn("kubelet", [
        str(binaries["kubelet"]),
        f"--config={_kubelet_config(pki)}",
        f"--kubeconfig={kubeconfigs[f'system:node:{NODE_NAME}']}",
        f"--root-dir={directory / 'kubelet'}",
        f"--cert-dir={directory / 'kubelet' / 'pki'}",
        f"--node-ip={netns.NODE_IP}",
        f"--hostname-override={NODE_NAME}",
        f"--node-labels={POOL_LABEL}=real,node.kubernetes.io/instance-type=local-real",
        "--v=1",
    ])
    kube_proxy = _spawn("kube-proxy", [
        str(binaries["kube-proxy"]),
        f"--config={_kube_proxy_config(kubeconfigs['system:kube-proxy'])}"])
    _rbac_for_coredns(info)
    coredns = _spawn("coredns", [str(binaries["coredns"]), "-conf",
                                 str(_corefile(kubeconfigs["recop-coredns"]))])
    for process, port, path in ((kubelet, KUBELET_HEALTHZ, "healthz"),
                                (kube_proxy, PROXY_HEALTHZ, "healthz"),
                                (coredns, DNS_READY, "ready")):
        _wait(process, lambda port=port, path=path: _http_ok(port, path),
              f"{process.name} health")
    info.kubectl("wait", "--for=condition=Ready", f"node/{NODE_NAME}",
                 f"--timeout={START_TIMEOUT:.0f}s", timeout=START_TIMEOUT + 30)


def _spawn(name: str, argv: list[str]) -> ManagedProcess:
    progress(f"starting {name} in the node's network namespace")
    return ManagedProcess(name, [*netns.enter(), *argv], directory=_state())


def _wait(process: ManagedProcess, condition, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not condition():
        if process.proc.poll() is not None or time.monotonic() > deadline:
            raise NodeError(f"{process.name} did not come up ({what}); log "
                            f"{process.log_path}:\n{process.log_tail()}")
        time.sleep(0.2)


def _http_ok(port: int, path: str) -> bool:
    # The health endpoints are plain HTTP on the node's address, reached through the veth.
    try:
        with urllib.request.urlopen(f"http://{netns.NODE_IP}:{port}/{path}", timeout=2):
            return True
    except OSError:
        return False


def _kubeconfig(info: ClusterInfo, pki: Path, user: str, path: Path, api_port: int) -> Path:
    """The admin kubeconfig's cluster, pointed at the forwarder, with `user`'s cert."""
    config = yaml.safe_load(info.kubeconfig.read_text())
    cluster = config["clusters"][0]["cluster"]
    cluster["server"] = f"https://{netns.HOST_IP}:{api_port}"
    # The serving certificate names loopback, not the veth address.
    cluster["tls-server-name"] = "localhost"
    stem = user.replace(":", "-")
    config["users"] = [{"name": user, "user": {
        "client-certificate": str(pki / f"{stem}.crt"),
        "client-key": str(pki / f"{stem}.key")}}]
    config["contexts"][0]["context"]["user"] = user
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


def _publish_api_endpoint(info: ClusterInfo, api_port: int) -> None:
    """The `kubernetes` Service's endpoint: the forwarder. The API server's own reconciler
    is off, since the address it would publish is loopback (devstack.cluster)."""
    endpoint_slice = {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {
            "kubernetes.io/service-name": "kubernetes",
            "endpointslice.kubernetes.io/managed-by": "devstack-node"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [netns.HOST_IP], "conditions": {"ready": True}}],
        "ports": [{"name": "https", "port": api_port, "protocol": "TCP"}],
    }
    info.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=devstack-node",
                 "-f", "-", input=json.dumps(endpoint_slice))


def _containerd_config(pause: str) -> Path:
    directory = _state() / "containerd"
    directory.mkdir(parents=True, exist_ok=True)
    cni = _state() / "cni"
    (cni / "net.d").mkdir(parents=True, exist_ok=True)
    (cni / "net.d" / "10-recop.conflist").write_text(json.dumps({
        "cniVersion": "0.4.0", "name": "recop", "plugins": [
            {"type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": False,
             "hairpinMode": True,
             "ipam": {"type": "host-local", "dataDir": str(cni / "ipam"),
                      "ranges": [[{"subnet": netns.POD_CIDR}]],
                      "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ]}, indent=2))
    config = f"""version = 2
root = "{_containerd_root()}"
state = "{directory / 'state'}"
# Snapshotters that need tools or filesystems this machine lacks.
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "{_socket()}"
[ttrpc]
  address = "{directory / 'containerd.ttrpc.sock'}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{directory / 'opt'}"
[plugins."io.containerd.grpc.v1.cri"]
  # Nothing can be pulled: the sandbox image is built here.
  sandbox_image = "{pause}"
  # Lowering oom_score_adj is not permitted here: without this every sandbox fails with
  # runc's "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  # `kubectl exec/logs` stream through the kubelet, which reaches this in the namespace.
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{cni / 'net.d'}"
"""
    path = directory / "config.toml"
    path.write_text(config)
    return path


def _kubelet_config(pki: Path) -> Path:
    directory = _state()
    # Pods with dnsPolicy Default get no nameserver: the host's is no place for them.
    resolv = directory / "resolv.conf"
    resolv.write_text("")
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "address": netns.NODE_IP, "port": KUBELET_PORT, "readOnlyPort": 0,
        "healthzBindAddress": netns.NODE_IP, "healthzPort": KUBELET_HEALTHZ,
        # As kubeadm sets it up: the API server's client certificate (CA-signed) is
        # authenticated, and what it may do is asked of the API server.
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(pki / "ca.crt")}},
        "authorization": {"mode": "Webhook"},
        # Cgroups here are v1 (hybrid), which the kubelet refuses from 1.35 on unless
        # told; no systemd, so the cgroupfs driver.
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{CGROUP_ROOT}",
        "containerRuntimeEndpoint": f"unix://{_socket()}",
        "clusterDNS": [netns.NODE_IP],
        "clusterDomain": CLUSTER_DOMAIN,
        "resolvConf": str(resolv),
        # Whole cores for Guaranteed pods with integer CPU requests (an ABTest baseline);
        # the reservation keeps core 0 out of exclusive use (the policy rounds it up to a
        # whole core) but, unlike reservedSystemCPUs: "0", costs only 0.1 core of
        # allocatable: on 2 cores that would leave 1, no room beside a whole-core pod.
        "cpuManagerPolicy": "static",
        "systemReserved": {"cpu": "100m"},
        "registerWithTaints": [TAINT],
        "podCIDR": netns.POD_CIDR,
        "failSwapOn": False,
        # The disk is shared with builds and caches: evict only when it is really full,
        # and never garbage-collect the images nobody can pull back.
        "evictionHard": {"memory.available": "200Mi", "nodefs.available": "2%",
                         "imagefs.available": "2%", "nodefs.inodesFree": "2%"},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        "rotateCertificates": False,
        "shutdownGracePeriod": "0s",
        "containerLogMaxSize": "10Mi",
    }
    path = directory / "kubelet.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _kube_proxy_config(kubeconfig: Path) -> Path:
    config = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": NODE_NAME,
        "mode": "iptables",
        "clusterCIDR": netns.POD_CIDR,
        "healthzBindAddress": f"{netns.NODE_IP}:{PROXY_HEALTHZ}",
        "metricsBindAddress": f"{netns.NODE_IP}:{PROXY_METRICS}",
        "nodePortAddresses": [f"{netns.NODE_IP}/32"],
        # The conntrack table size and timeouts are machine-wide sysctls: left alone.
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s",
                      "tcpCloseWaitTimeout": "0s"},
    }
    path = _state() / "kube-proxy.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _corefile(kubeconfig: Path) -> Path:
    # Cluster names only: there is no upstream to forward anything else to.
    corefile = f""".:53 {{
    bind {netns.NODE_IP}
    errors
    health {netns.NODE_IP}:{DNS_HEALTH}
    ready {netns.NODE_IP}:{DNS_READY}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig} recop-local
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }}
    cache 5
    loadbalance
}}
"""
    path = _state() / "Corefile"
    path.write_text(corefile)
    return path


def _rbac_for_coredns(info: ClusterInfo) -> None:
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "devstack:coredns"},
            "rules": [{"apiGroups": [""], "resources": ["services", "pods", "namespaces"],
                       "verbs": ["list", "watch"]},
                      {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                       "verbs": ["list", "watch"]}]}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": "devstack:coredns"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                           "name": "devstack:coredns"},
               "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                             "name": "recop-coredns"}]}
    info.kubectl("apply", "--server-side", "--field-manager=devstack-node", "-f", "-",
                 input=json.dumps({"apiVersion": "v1", "kind": "List",
                                   "items": [role, binding]}))


def _cgroup_hierarchies() -> list[Path]:
    return [p for p in Path("/sys/fs/cgroup").iterdir() if (p / "cgroup.procs").exists()]


def _make_cgroup_root() -> None:
    """The kubelet wants its cgroup root to exist in every hierarchy; cpuset children
    start with no CPUs or memory nodes in v1, so those are copied from the parent."""
    for hierarchy in _cgroup_hierarchies():
        root = hierarchy / CGROUP_ROOT
        root.mkdir(exist_ok=True)
        for name in ("cpuset.cpus", "cpuset.mems"):
            if (hierarchy / name).exists():
                (root / name).write_text((hierarchy / name).read_text())


def _remove_cgroups() -> None:
    for hierarchy in _cgroup_hierarchies():
        root = hierarchy / CGROUP_ROOT
        if not root.exists():
            continue
        # Deepest first: a cgroup is removed with rmdir once its children are gone.
        for current, _, _ in sorted(os.walk(root), key=lambda entry: -len(entry[0])):
            with contextlib.suppress(OSError):
                os.rmdir(current)


def _kill_leftovers() -> None:
    """Processes that outlive containerd when it was not stopped through the CRI: the
    runc shims (their own sessions) and whatever still runs in the pods' cgroups."""
    socket = str(_socket())
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if b"containerd-shim" in argv[0] and socket.encode() in argv:
                stop_group(int(proc.name), timeout=5)
    for hierarchy in _cgroup_hierarchies():
        root = hierarchy / CGROUP_ROOT
        for procs in root.rglob("cgroup.procs") if root.exists() else ():
            with contextlib.suppress(OSError, ValueError):
                for pid in procs.read_text().split():
                    os.kill(int(pid), 9)


def _unmount_under(*roots: Path) -> None:
    """Mounts left under the node's directories (volumes, container root filesystems,
    sandbox shm), deepest first, so removing the directories removes no data beneath."""
    prefixes = tuple(str(root) + "/" for root in roots)
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point.startswith(prefixes):
            mounts.append(point)
    for point in sorted(set(mounts), key=len, reverse=True):
        subprocess.run(["umount", "--lazy", point], capture_output=True, check=False)


def main(argv: list[str] | None = None) -> int:
    from devstack import cluster

    command = (argv if argv is not None else sys.argv[1:]) or ["up"]
    match command:
        case ["build"]:
            for name, path in _binaries().items():
                print(f"{name}: {path}")
            print(f"pause: {images.pause()}")
        case ["up"]:
            info = cluster.ensure_up()
            ensure_up(info)
            print(f"node {NODE_NAME} Ready at {netns.NODE_IP}")
        case ["down"]:
            down()
        case ["status"]:
            for component, state in status(cluster.running()).items():
                print(f"{component}: {state}")
        case _:
            print("usage: python -m devstack.node build|up|down|status", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
