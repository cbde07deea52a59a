"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, controller-manager,
scheduler, and KWOK playing the kubelets of fake CPU and GPU nodes.

    python -m devstack.cluster build|up|down|status|env

RecOp is an operator, so its e2e tests need the real API server's behaviour (admission,
server-side apply, CRD validation, garbage collection, scheduling), not a mock. Nothing
runs containers: KWOK moves scheduled Pods to Running. Every listener is on 127.0.0.1 and
every port is picked free at start, so several checkouts can run side by side.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import shlex
import shutil
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from devstack import cluster_build, cluster_pki
from devstack.cluster_nodes import KWOK_NODE_ANNOTATION, kwok_nodes
from devstack.common import (
    LOOPBACK,
    ManagedProcess,
    cache_dir,
    free_port,
    pid_alive,
    progress,
    remove_state,
    state_dir,
    stop_pid_file,
    wait_for_port,
)

NAME = "cluster"
# No real networking exists, so any private range does; this one rarely clashes.
SERVICE_CIDR = "10.233.0.0/18"
SERVICE_IP = "10.233.0.1"
POD_CIDR = "10.234.0.1/16"
# Stopped in this order: clients before the API server, the API server before etcd.
COMPONENTS = ("kwok", "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd")
START_TIMEOUT = 180.0


class ClusterError(RuntimeError):
    """The control plane could not be built or started; the message says why."""


@dataclass(frozen=True)
class ClusterInfo:
    kubeconfig: Path
    server: str
    kubectl_bin: Path
    helm_bin: Path

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 120) -> subprocess.CompletedProcess:
        return _run([str(self.kubectl_bin), f"--kubeconfig={self.kubeconfig}", *args],
                    input=input, check=check, timeout=timeout)

    def helm(self, *args: str, check: bool = True,
             timeout: float = 300) -> subprocess.CompletedProcess:
        # Helm keeps repositories and caches under $HOME by default; keep them per cluster.
        helm_home = self.kubeconfig.parent / "helm"
        env = {
            "HELM_CACHE_HOME": str(helm_home / "cache"),
            "HELM_CONFIG_HOME": str(helm_home / "config"),
            "HELM_DATA_HOME": str(helm_home / "data"),
        }
        return _run([str(self.helm_bin), f"--kubeconfig={self.kubeconfig}", *args],
                    check=check, timeout=timeout, env=env)

    @property
    def bin_dirs(self) -> list[Path]:
        """Where the kubectl and helm that match this cluster are."""
        return [self.kubectl_bin.parent, self.helm_bin.parent]


class CommandFailed(subprocess.CalledProcessError):
    """A failed kubectl or helm call whose message carries what the tool said."""

    def __str__(self) -> str:
        return f"{super().__str__()}\n{self.stderr.strip()}"


def _run(argv: list[str], input: str | None = None, check: bool = True, timeout: float = 120,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, **(env or {})})
    if check and result.returncode != 0:
        raise CommandFailed(result.returncode, argv, result.stdout, result.stderr)
    return result


def build() -> cluster_build.Binaries:
    return cluster_build.build_all()


def ensure_up() -> ClusterInfo:
    """Start the control plane unless it already runs healthy; either way return it."""
    binaries = build()
    with _lock():
        info = running()
        if info is not None:
            return info
        _stop_processes()
        remove_state(NAME)
        started = time.monotonic()
        try:
            info = _start(binaries)
        except BaseException:
            # Leave the logs for the post-mortem, but no process behind.
            _stop_processes()
            raise
        progress(f"control plane up in {time.monotonic() - started:.1f}s at {info.server}")
        return info


def down() -> None:
    """Stop every process of the control plane and remove its state; the real node, if
    one runs, goes first."""
    # Imported here: devstack.node builds on this module.
    from devstack import node

    with _lock():
        node.down()
        _stop_processes()
        remove_state(NAME)


def running() -> ClusterInfo | None:
    """The cluster, if every process of a previous `up` is alive and the API is ready."""
    directory = _state()
    info_path = directory / "cluster.json"
    if not info_path.exists():
        return None
    if any(pid_alive(directory / f"{component}.pid") is None for component in COMPONENTS):
        return None
    saved = json.loads(info_path.read_text())
    info = ClusterInfo(Path(saved["kubeconfig"]), saved["server"], Path(saved["kubectl_bin"]),
                       Path(saved["helm_bin"]))
    pki = directory / "pki"
    try:
        _get(f"{info.server}/readyz", _client_tls(pki, "recop-admin"))
    except OSError:
        return None
    return info


def status() -> dict[str, str]:
    directory = _state()
    report = {}
    for component in reversed(COMPONENTS):
        pid = pid_alive(directory / f"{component}.pid")
        report[component] = f"running (pid {pid})" if pid else "stopped"
    info = running()
    report["api"] = f"ready at {info.server}" if info else "not ready"
    return report


def attach(kubeconfig: Path) -> ClusterInfo:
    """An existing cluster (kind, a real one) instead of the local control plane."""
    config = yaml.safe_load(kubeconfig.read_text())
    context = next(c["context"] for c in config["contexts"]
                   if c["name"] == config["current-context"])
    server = next(c["cluster"]["server"] for c in config["clusters"]
                  if c["name"] == context["cluster"])
    built = cache_dir() / "bin"
    return ClusterInfo(
        kubeconfig, server,
        _tool(built / f"kubernetes-{cluster_build.KUBERNETES_VERSION}" / "kubectl"),
        _tool(built / f"helm-{cluster_build.HELM_VERSION}" / "helm"),
    )


def _tool(built: Path) -> Path:
    """The pinned build if there is one: a kubectl on PATH may be Debian's 1.20, too old
    for server-side apply of today's CRDs. Else whatever PATH has."""
    if built.exists():
        return built
    found = shutil.which(built.name)
    if found is None:
        raise ClusterError(f"{built.name} is neither built nor on PATH: run "
                           "`python -m devstack.cluster build`")
    return Path(found)


def _state() -> Path:
    return state_dir(NAME)


@contextlib.contextmanager
def _lock() -> Iterator[None]:
    # Outside the state dir, which `down` removes: two `up`s at once (two pytest sessions,
    # a shell and a test run) must not both start a cluster.
    lock_path = _state().parent / f"{NAME}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield




def _stop_processes() -> None:
    directory = _state()
    for component in COMPONENTS:
        stop_pid_file(directory / f"{component}.pid")


def _start(binaries: cluster_build.Binaries) -> ClusterInfo:
    directory = _state()
    ports = {name: free_port() for name in
             ("etcd", "etcd-peer", "apiserver", "controller-manager", "scheduler", "kwok")}
    progress("generating certificates and the service-account key")
    pki = cluster_pki.generate(directory / "pki", SERVICE_IP)
    server = f"https://{LOOPBACK}:{ports['apiserver']}"
    # The admin's is the one users and tests get: <state>/cluster/kubeconfig.
    kubeconfigs = {user: _write_kubeconfig(directory / file, server, pki, user)
                   for file, user in (("kubeconfig", "recop-admin"),
                                      ("controller-manager.kubeconfig",
                                       "system:kube-controller-manager"),
                                      ("scheduler.kubeconfig", "system:kube-scheduler"),
                                      ("kwok.kubeconfig", "recop-kwok"))}

    etcd = _spawn("etcd", binaries.etcd, _etcd_args(directory, ports))
    _wait_http(etcd, f"http://{LOOPBACK}:{ports['etcd']}/health", None)

    apiserver = _spawn("kube-apiserver", binaries.kube_apiserver,
                       _apiserver_args(pki, ports))
    _wait_http(apiserver, f"{server}/readyz", _client_tls(pki.ca_cert.parent, "recop-admin"))

    kubeconfig = kubeconfigs["system:kube-controller-manager"]
    controller_manager = _spawn("kube-controller-manager", binaries.kube_controller_manager, [
        *_delegated_auth(kubeconfig, ports["controller-manager"]),
        "--leader-elect=false",
        # Each controller acts as its own service account, as in a real cluster, so RBAC
        # mistakes in what RecOp creates show up here too.
        "--use-service-account-credentials=true",
        f"--service-account-private-key-file={pki.sa_key}",
        f"--root-ca-file={pki.ca_cert}",
        f"--cluster-signing-cert-file={pki.ca_cert}",
        f"--cluster-signing-key-file={pki.ca_key}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
    ])
    scheduler = _spawn("kube-scheduler", binaries.kube_scheduler, [
        *_delegated_auth(kubeconfigs["system:kube-scheduler"], ports["scheduler"]),
        "--leader-elect=false",
    ])
    kwok = _spawn("kwok", binaries.kwok, [
        f"--kubeconfig={kubeconfigs['recop-kwok']}",
        f"--config={binaries.kwok_stages}",
        # Only the nodes created below; a real cluster reached by mistake is left alone.
        "--manage-all-nodes=false",
        f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
        f"--server-address={LOOPBACK}:{ports['kwok']}",
        f"--node-port={ports['kwok']}",
        f"--cidr={POD_CIDR}",
        # Nodes heartbeat through Leases, so the node-lifecycle controller sees them live.
        "--node-lease-duration-seconds=40",
    ])
    # Serving certificates of the controller-manager and the scheduler are self-signed in
    # memory; their /healthz is only probed here, on loopback.
    unverified = ssl._create_unverified_context()
    _wait_http(controller_manager, f"https://{LOOPBACK}:{ports['controller-manager']}/healthz",
               unverified)
    _wait_http(scheduler, f"https://{LOOPBACK}:{ports['scheduler']}/healthz", unverified)
    _wait_http(kwok, f"http://{LOOPBACK}:{ports['kwok']}/healthz", None)

    info = ClusterInfo(kubeconfigs["recop-admin"], server, binaries.kubectl, binaries.helm)
    progress("creating the KWOK nodes")
    info.kubectl("apply", "--server-side", "--field-manager=recop-cluster", "-f", "-",
                 input=json.dumps({"apiVersion": "v1", "kind": "List", "items": kwok_nodes()}))
    info.kubectl("wait", "--for=condition=Ready", "node", "--all", "--timeout=120s",
                 timeout=150)
    # Pods are refused until the service-account controller has made `default`: waiting
    # for it also proves the controller-manager works.
    _wait_until(lambda: info.kubectl("get", "serviceaccount", "default", "--namespace=default",
                                     check=False).returncode == 0,
                "the default service account", controller_manager)
    (directory / "cluster.json").write_text(json.dumps({
        "kubeconfig": str(info.kubeconfig), "server": server,
        "kubectl_bin": str(info.kubectl_bin), "helm_bin": str(info.helm_bin),
        "ports": ports,
    }, indent=2))
    return info


def _spawn(name: str, binary: Path, args: list[str]) -> ManagedProcess:
    progress(f"starting {name}")
    return ManagedProcess(name, [str(binary), *args], directory=_state())


def _etcd_args(directory: Path, ports: dict[str, int]) -> list[str]:
    client = f"http://{LOOPBACK}:{ports['etcd']}"
    peer = f"http://{LOOPBACK}:{ports['etcd-peer']}"
    return [
        "--name=recop",
        f"--data-dir={directory / 'etcd-data'}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=recop={peer}",
        # The data is thrown away at `down`: durability buys nothing, and fsync on a
        # shared CI disk is what makes a test cluster slow.
        "--unsafe-no-fsync",
        "--log-level=warn",
    ]


# Metadata of every request (who, verb, resource, response code), no bodies: enough for
# tests to check that a role grants exactly what a component uses.
AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
"""


def _apiserver_args(pki: cluster_pki.Pki, ports: dict[str, int]) -> list[str]:
    # Admission plugins, RBAC, API priority and fairness and the watch cache keep their
    # defaults: the point is a real API server.
    policy = _state() / "audit-policy.yaml"
    policy.write_text(AUDIT_POLICY)
    return [
        f"--audit-policy-file={policy}",
        # JSON lines, next to the kubeconfig: <state>/cluster/audit.log.
        f"--audit-log-path={_state() / 'audit.log'}",
        "--audit-log-format=json",
        f"--advertise-address={LOOPBACK}",
        f"--bind-address={LOOPBACK}",
        f"--secure-port={ports['apiserver']}",
        f"--etcd-servers=http://{LOOPBACK}:{ports['etcd']}",
        f"--tls-cert-file={pki.serving_cert}",
        f"--tls-private-key-file={pki.serving_key}",
        f"--client-ca-file={pki.ca_cert}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={pki.sa_pub}",
        f"--service-account-signing-key-file={pki.sa_key}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--authorization-mode=Node,RBAC",
        # The aggregation layer, set up as kubeadm does (see cluster_pki.Pki).
        f"--requestheader-client-ca-file={pki.front_proxy_ca}",
        f"--requestheader-allowed-names={cluster_pki.FRONT_PROXY_CLIENT}",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={pki.front_proxy_client.cert}",
        f"--proxy-client-key-file={pki.front_proxy_client.key}",
        "--allow-privileged=true",
        # The real node (devstack.node) registers under a name no resolver knows; its
        # kubelet authenticates the API server by this certificate.
        "--kubelet-preferred-address-types=InternalIP",
        f"--kubelet-client-certificate={pki.clients['kube-apiserver-kubelet-client'].cert}",
        f"--kubelet-client-key={pki.clients['kube-apiserver-kubelet-client'].key}",
        # The reconciler would publish 127.0.0.1 as the endpoint of the `kubernetes`
        # Service, which validation rejects (loopback); nothing here routes to it anyway.
        "--endpoint-reconciler-type=none",
        "--profiling=false",
    ]


def _delegated_auth(kubeconfig: Path, port: int) -> list[str]:
    """Flags shared by the controller-manager and the scheduler: API access, and the
    secure health port on loopback whose requests they authenticate through the API."""
    return [
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        f"--bind-address={LOOPBACK}",
        f"--secure-port={port}",
    ]


def _write_kubeconfig(path: Path, server: str, pki: cluster_pki.Pki, user: str) -> Path:
    client = pki.clients[user]

    def data(file: Path) -> str:
        return base64.b64encode(file.read_bytes()).decode()

    # Credentials embedded, so the file stays usable when copied (kopf, a CI artefact).
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "recop-local", "cluster": {
            "server": server, "certificate-authority-data": data(pki.ca_cert)}}],
        "users": [{"name": user, "user": {
            "client-certificate-data": data(client.cert),
            "client-key-data": data(client.key)}}],
        "contexts": [{"name": "recop-local", "context": {"cluster": "recop-local",
                                                         "user": user}}],
        "current-context": "recop-local",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


def _client_tls(pki_dir: Path, user: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki_dir / "ca.crt"))
    stem = user.replace(":", "-")
    context.load_cert_chain(str(pki_dir / f"{stem}.crt"), str(pki_dir / f"{stem}.key"))
    return context


def _get(url: str, context: ssl.SSLContext | None) -> None:
    with urllib.request.urlopen(url, timeout=5, context=context) as response:
        response.read()


def _wait_http(process: ManagedProcess, url: str, context: ssl.SSLContext | None) -> None:
    port = int(url.split(":")[2].split("/")[0])
    try:
        wait_for_port(port, START_TIMEOUT, proc=process.proc)
    except (RuntimeError, TimeoutError) as error:
        raise ClusterError(f"{process.name}: {error}\n{process.log_tail()}") from error

    def healthy() -> bool:
        try:
            _get(url, context)
        except (urllib.error.URLError, OSError):
            return False
        return True

    _wait_until(healthy, url, process)


def _wait_until(condition, what: str, process: ManagedProcess) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not condition():
        if process.proc.poll() is not None:
            raise ClusterError(f"{process.name} exited with {process.proc.returncode} while "
                               f"waiting for {what}; log {process.log_path}:\n"
                               f"{process.log_tail()}")
        if time.monotonic() > deadline:
            raise ClusterError(f"timed out after {START_TIMEOUT:.0f}s waiting for {what}; "
                               f"log {process.log_path}:\n{process.log_tail()}")
        time.sleep(0.25)


def main(argv: list[str] | None = None) -> int:
    command = (argv if argv is not None else sys.argv[1:]) or ["up"]
    match command:
        case ["build"]:
            for name, path in vars(build()).items():
                print(f"{name}: {path}")
        case ["up"]:
            info = ensure_up()
            print(f"export KUBECONFIG={info.kubeconfig}")
        case ["down"]:
            down()
        case ["status"]:
            for component, state in status().items():
                print(f"{component}: {state}")
        case ["env"]:
            info = running()
            if info is None:
                print("cluster is not running: `python -m devstack.cluster up`",
                      file=sys.stderr)
                return 1
            path = os.pathsep.join(shlex.quote(str(directory)) for directory in info.bin_dirs)
            print(f"export KUBECONFIG={shlex.quote(str(info.kubeconfig))}")
            print(f'export PATH={path}:"$PATH"')
        case _:
            print("usage: python -m devstack.cluster build|up|down|status|env",
                  file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
