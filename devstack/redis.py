"""Debian's redis-server on a free loopback port (never the system service).

`build` only checks that the binary exists: it comes from apt (`apt-get install
redis-server`). Persistence is off: the data is a benchmark's scratch copy.
Usage: `python -m devstack.redis build|up|down`.
"""

from __future__ import annotations

import argparse
import shutil
from dataclasses import dataclass
from pathlib import Path

from devstack.common import (
    LOOPBACK,
    ManagedProcess,
    free_port,
    remove_state,
    state_dir,
    stop_pid_file,
)

NAME = "redis"


def build() -> Path:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server not found: run `apt-get install -y redis-server`")
    return Path(binary)


@dataclass
class RedisHandle:
    port: int
    process: ManagedProcess

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    def stop(self) -> None:
        self.process.stop()


def start(port: int | None = None, timeout: float = 15) -> RedisHandle:
    binary = build()
    port = port or free_port()
    workdir = state_dir(NAME)
    process = ManagedProcess(NAME, [
        str(binary), "--port", str(port), "--bind", LOOPBACK, "--save", "",
        "--appendonly", "no", "--dir", str(workdir), "--protected-mode", "yes",
    ])
    process.wait_listening(port, timeout=timeout, what="redis")
    return RedisHandle(port=port, process=process)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m devstack.redis")
    parser.add_argument("command", choices=["build", "up", "down"])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    if args.command == "build":
        print(build())
    elif args.command == "up":
        print(f"redis up: {start(port=args.port or None).url}")
    else:
        stop_pid_file(state_dir(NAME) / f"{NAME}.pid")
        remove_state(NAME)


if __name__ == "__main__":
    main()
