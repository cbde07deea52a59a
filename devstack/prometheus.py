"""A real Prometheus (Debian's `prometheus` package) on a free loopback port.

Targets come from file-based service discovery, so a test or `recop-dev up` adds the
servers it starts (`set_targets`) and Prometheus picks them up within a second, with no
restart. Usage: `python -m devstack.prometheus build|up|down`.
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

from devstack.common import (
    LOOPBACK,
    ManagedProcess,
    free_port,
    remove_state,
    state_dir,
    stop_pid_file,
    wait_http_ready,
)

NAME = "prometheus"
CONFIG = """\
global:
  scrape_interval: {interval}
  evaluation_interval: {interval}
scrape_configs:
  - job_name: recop
    file_sd_configs:
      - files: ["{targets}/*.json"]
        refresh_interval: 1s
"""


def build() -> Path:
    binary = shutil.which("prometheus")
    if binary is None:
        raise RuntimeError("prometheus not found: run `apt-get install -y prometheus`")
    return Path(binary)


@dataclass
class PrometheusHandle:
    port: int
    targets_dir: Path
    process: ManagedProcess

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def set_targets(self, group: str, targets: list[str], labels: dict[str, str]) -> None:
        """Scrape `targets` (host:port) with `labels`; replaces the group's earlier list."""
        path = self.targets_dir / f"{group}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps([{"targets": targets, "labels": labels}]))
        tmp.rename(path)  # atomic, so discovery never reads half a file

    def query(self, promql: str) -> list[dict]:
        """An instant query's result vector."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
        if body.get("status") != "success":
            raise RuntimeError(f"query {promql!r} failed: {body}")
        return body["data"]["result"]

    def wait_for_target(self, label: str, value: str, timeout: float = 30) -> None:
        """Until a target with that label is scraped and up."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(r["value"][1] == "1" for r in self.query(f'up{{{label}="{value}"}}')):
                return
            time.sleep(0.2)
        raise TimeoutError(f"no healthy scrape target with {label}={value} in {timeout:.0f}s")

    def wait_ready(self, timeout: float) -> None:
        """Until /-/ready says 200: the port opens before the TSDB is loaded, and queries
        in between are answered 503."""
        wait_http_ready(f"{self.url}/-/ready", self.process, "prometheus", timeout)

    def stop(self) -> None:
        self.process.stop()


def start(port: int | None = None, interval: str = "1s", timeout: float = 30) -> PrometheusHandle:
    binary = build()
    port = port or free_port()
    workdir = state_dir(NAME) / str(port)
    targets = workdir / "targets"
    targets.mkdir(parents=True, exist_ok=True)
    config = workdir / "prometheus.yml"
    config.write_text(CONFIG.format(interval=interval, targets=targets))
    process = ManagedProcess(f"{NAME}-{port}", [
        str(binary), f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address={LOOPBACK}:{port}", "--storage.tsdb.retention.time=2h",
        "--web.enable-lifecycle",
    ], directory=workdir)
    process.wait_listening(port, timeout=timeout, what="prometheus")
    handle = PrometheusHandle(port, targets, process)
    handle.wait_ready(timeout)
    return handle


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("command", choices=["build", "up", "down"])
    parser.add_argument("--port", type=int, default=9090)
    args = parser.parse_args(argv)
    if args.command == "build":
        print(build())
    elif args.command == "up":
        handle = start(args.port)
        print(f"prometheus at {handle.url}; targets in {handle.targets_dir}")
    else:
        for pid in state_dir(NAME).glob("*/*.pid"):
            stop_pid_file(pid)
        remove_state(NAME)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
