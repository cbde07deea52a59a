"""A real Alertmanager (Debian's `prometheus-alertmanager` package) on a free loopback
port, sending every notification (firing and resolved) to one webhook, and the wiring
that makes a local Prometheus (devstack/prometheus.py) evaluate rule files and send its
alerts here. Gossip clustering is off, so nothing listens beyond 127.0.0.1.
Usage: `python -m devstack.alertmanager build|up|down`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from devstack.common import (
    LOOPBACK,
    ManagedProcess,
    free_port,
    remove_state,
    state_dir,
    stop_pid_file,
    wait_http_ready,
)
from devstack.prometheus import PrometheusHandle

NAME = "alertmanager"


def build() -> Path:
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if binary is None:
        raise RuntimeError("alertmanager not found: run scripts/install-system-deps "
                           "(Debian package prometheus-alertmanager)")
    return Path(binary)


def config(webhook_url: str | None) -> dict:
    """One route, no waiting: each alert is its own group and is sent at once, and so is
    its resolution."""
    receiver: dict = {"name": "webhook"}
    if webhook_url:
        receiver["webhook_configs"] = [{"url": webhook_url, "send_resolved": True}]
    return {"route": {"receiver": "webhook", "group_by": ["..."], "group_wait": "0s",
                      "group_interval": "1s", "repeat_interval": "1h"},
            "receivers": [receiver]}


@dataclass
class AlertmanagerHandle:
    port: int
    process: ManagedProcess

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def alerts(self, alertname: str | None = None) -> list[dict]:
        """The active alerts it holds (API v2), optionally of one name."""
        query = {"active": "true", "silenced": "false", "inhibited": "false"}
        if alertname:
            query["filter"] = f'alertname="{alertname}"'
        url = f"{self.url}/api/v2/alerts?" + urllib.parse.urlencode(query)
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.load(response)

    def wait_ready(self, timeout: float) -> None:
        wait_http_ready(f"{self.url}/-/ready", self.process, "alertmanager", timeout)

    def serve_prometheus(self, prometheus: PrometheusHandle, rule_files: list[Path],
                         timeout: float = 30) -> None:
        """Have `prometheus` evaluate `rule_files` and send its alerts here: its config
        gains both, then a reload (its lifecycle API is on); returns once it has found
        this Alertmanager. That takes up to 5 s after every reload, and an alert that
        fires before is sent again only after the resend delay (1m): a rule true from
        the start needs a `for:` longer than that."""
        path = prometheus.targets_dir.parent / "prometheus.yml"
        config = yaml.safe_load(path.read_text())
        config["rule_files"] = [str(p) for p in rule_files]
        config["alerting"] = {"alertmanagers": [
            {"static_configs": [{"targets": [f"{LOOPBACK}:{self.port}"]}]}]}
        path.write_text(yaml.safe_dump(config))
        request = urllib.request.Request(f"{prometheus.url}/-/reload", method="POST")
        with urllib.request.urlopen(request, timeout=30):
            pass
        if rule_files and not _get(prometheus, "/api/v1/rules")["groups"]:
            raise RuntimeError(f"prometheus loaded no rules from {rule_files}")
        deadline = time.monotonic() + timeout
        while not _get(prometheus, "/api/v1/alertmanagers")["activeAlertmanagers"]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"prometheus did not find {self.url} in {timeout:.0f}s")
            time.sleep(0.1)

    def stop(self) -> None:
        self.process.stop()


def _get(prometheus: PrometheusHandle, api: str) -> dict:
    with urllib.request.urlopen(prometheus.url + api, timeout=10) as response:
        return json.load(response)["data"]


def start(webhook_url: str | None = None, port: int | None = None,
          timeout: float = 30) -> AlertmanagerHandle:
    binary = build()
    port = port or free_port()
    workdir = state_dir(NAME) / str(port)
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "alertmanager.yml"
    config_path.write_text(yaml.safe_dump(config(webhook_url)))
    process = ManagedProcess(f"{NAME}-{port}", [
        str(binary), f"--config.file={config_path}", f"--storage.path={workdir / 'data'}",
        f"--web.listen-address={LOOPBACK}:{port}", "--cluster.listen-address=",
    ], directory=workdir)
    process.wait_listening(port, timeout=timeout, what="alertmanager")
    handle = AlertmanagerHandle(port, process)
    handle.wait_ready(timeout)
    return handle


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("command", choices=["build", "up", "down"])
    parser.add_argument("--port", type=int, default=9093)
    parser.add_argument("--webhook", help="where to send notifications")
    args = parser.parse_args(argv)
    if args.command == "build":
        print(build())
    elif args.command == "up":
        handle = start(args.webhook, args.port)
        print(f"alertmanager at {handle.url}")
    else:
        for pid in state_dir(NAME).glob("*/*.pid"):
            stop_pid_file(pid)
        remove_state(NAME)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
