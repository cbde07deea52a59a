"""Helpers for e2e tests: the operator as a real process, polling, JSON reads."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from devstack.common import free_port, state_dir

REPO = Path(__file__).resolve().parent.parent


def wait_for(condition, timeout: float = 60, interval: float = 0.5, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def get_json(cluster, *args: str) -> dict:
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


class OperatorProcess:
    """`recop operator` against the test cluster, with its metrics on loopback.

    With a namespace it runs standalone in that namespace only, so other tests' objects
    neither wake it nor add writes; without one it runs cluster-wide with peering, as a
    replica of the chart's Deployment does.
    """

    def __init__(self, kubeconfig: Path, namespace: str | None = None, *,
                 name: str = "operator", args: tuple[str, ...] = (),
                 env: dict[str, str] | None = None):
        self.name = name
        self.metrics_port = free_port()
        self.health_port = free_port()
        self.log_path = state_dir("e2e-operator") / f"{name}.log"
        scope = ["--standalone", f"--namespace={namespace}"] if namespace else []
        full_env = {**os.environ, "KUBECONFIG": str(kubeconfig),
                    "RECOP_METRICS_PORT": str(self.metrics_port),
                    "RECOP_METRICS_ADDR": "127.0.0.1", **(env or {})}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "recop_operator.cli", "operator", *scope, *args,
                 f"--liveness=http://127.0.0.1:{self.health_port}/healthz"],
                stdout=log, stderr=subprocess.STDOUT, env=full_env, cwd=REPO)
        wait_for(self._healthy, timeout=60, what=f"{name} (log: {self.log_path})")

    def _healthy(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited:\n{self.log_tail()}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=1)
        except OSError:
            return False
        return True

    def writes(self) -> float:
        """Writes the operator has sent to the API server, from its own metrics."""
        text = urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).read().decode()
        return sum(float(v) for v in
                   re.findall(r"^recop_kube_writes_total\{[^}]*\} ([0-9.e+]+)$", text, re.M))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def restart_apiserver(cluster, down_for: float) -> float:
    """Stop only the local control plane's kube-apiserver, keep it down `down_for` seconds,
    start it again with the same arguments (etcd keeps the state) and wait until it is
    ready; returns how long it was unreachable. Local control plane only."""
    from devstack.common import ManagedProcess, stop_group

    directory = state_dir("cluster")
    pid_path = directory / "kube-apiserver.pid"
    if os.environ.get("RECOP_KUBECONFIG") or not pid_path.exists():
        raise AssertionError("restarting the API server needs the local control plane")
    pid = int(pid_path.read_text())
    argv = [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]]
    stopped = time.monotonic()
    stop_group(pid, timeout=30)
    time.sleep(down_for)
    ManagedProcess("kube-apiserver", argv, directory=directory)
    wait_for(lambda: cluster.kubectl("get", "--raw", "/readyz", check=False,
                                     timeout=10).returncode == 0,
             timeout=120, interval=0.5, what="the API server ready again")
    return time.monotonic() - stopped
