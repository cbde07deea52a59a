"""Shared plumbing for the real local parts (control plane, S3, broker, ...).

Everything binds to 127.0.0.1. Built binaries are cached outside the work tree, keyed
by version, so a second start takes seconds; run-time state lives in a state dir that
`down` removes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

LOOPBACK = "127.0.0.1"


def cache_dir() -> Path:
    """Where built binaries and downloaded artefacts live across runs and clones."""
    path = Path(os.environ.get("RECOP_CACHE", Path.home() / ".cache" / "recop"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def state_dir(name: str) -> Path:
    """Run-time state (data dirs, logs, pid files) of one local part."""
    root = Path(os.environ.get("RECOP_STATE", "/tmp/recop-state"))
    path = root / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def progress(message: str) -> None:
    """One line on stderr: long builds must say what they are doing."""
    print(f"[recop {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def port_busy(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def wait_for_port(port: int, timeout: float, host: str = LOOPBACK, proc=None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_busy(port, host):
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {host}:{port} opened")
        time.sleep(0.1)
    raise TimeoutError(f"{host}:{port} did not open within {timeout:.0f}s")


def go_install(name: str, package: str, version: str, workdir: Path | None = None) -> Path:
    """Build `package@version` with `go install` into the cache, once per version.

    `workdir` is a wrapper module (go.mod with replace directives) for packages whose own
    go.mod forbids a plain `go install pkg@version`; then `package` is built inside it.
    """
    bindir = cache_dir() / "bin" / f"{name}-{version}"
    binary = bindir / Path(package).name
    if binary.exists():
        return binary
    bindir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GOBIN": str(bindir), "CGO_ENABLED": os.environ.get("CGO_ENABLED", "0")}
    target = package if workdir is not None else f"{package}@{version}"
    progress(f"building {name} {version} from the Go module proxy (first time only)")
    started = time.monotonic()
    subprocess.run(["go", "install", target], cwd=workdir, env=env, check=True)
    progress(f"built {name} {version} in {time.monotonic() - started:.0f}s")
    return binary


class ManagedProcess:
    """A server process with its log file and pid file in a state dir."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str] | None = None,
                 cwd: Path | None = None, directory: Path | None = None):
        self.name = name
        # `directory` groups the processes of one part (e.g. the control plane's five
        # servers) in that part's state dir, so removing it removes all of them.
        self.dir = directory or state_dir(name)
        self.log_path = self.dir / f"{name}.log"
        self.pid_path = self.dir / f"{name}.pid"
        with open(self.log_path, "ab") as log:
            # A new session so that stop() can end the whole process group.
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                env={**os.environ, **(env or {})}, start_new_session=True,
            )
        self.pid_path.write_text(str(self.proc.pid))

    def wait_listening(self, *ports: int, timeout: float, what: str) -> None:
        """Until the process accepts connections on every port; if it exits or times out
        first, stop it and raise with the end of its log, which says why."""
        try:
            for port in ports:
                wait_for_port(port, timeout, proc=self.proc)
        except (RuntimeError, TimeoutError) as err:
            self.stop()
            raise RuntimeError(f"{what} did not start: {err}\n{self.log_tail()}") from err

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self, timeout: float = 10) -> None:
        # Its own process, not whatever the pid file names now: a second start of the same
        # part (one per test module, say) rewrites that file.
        stop_group(self.proc.pid, timeout)
        with contextlib.suppress(OSError, ValueError):
            if int(self.pid_path.read_text()) == self.proc.pid:
                self.pid_path.unlink()


def pid_alive(pid_path: Path) -> int | None:
    """The pid a pid file names, if that process still runs."""
    try:
        pid = int(pid_path.read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def wait_http_ready(url: str, process, name: str, timeout: float) -> None:
    """Until `url` answers 2xx; on a timeout, stop `process` and raise."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except (urllib.error.URLError, OSError):
            if time.monotonic() > deadline:
                process.stop()
                raise TimeoutError(f"{name} not ready in {timeout:.0f}s") from None
            time.sleep(0.1)


def stop_pid_file(pid_path: Path, timeout: float = 10) -> None:
    """Stop the process group recorded in a pid file: TERM, then KILL after `timeout`."""
    try:
        pid = int(pid_path.read_text())
    except (OSError, ValueError):
        return
    stop_group(pid, timeout)
    pid_path.unlink(missing_ok=True)


def stop_group(pid: int, timeout: float = 10) -> None:
    """TERM the process group led by `pid`, then KILL it after `timeout`."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0]:
                    break
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            os.killpg(pid, signal.SIGKILL)


def remove_state(name: str) -> None:
    root = Path(os.environ.get("RECOP_STATE", "/tmp/recop-state"))
    shutil.rmtree(root / name, ignore_errors=True)
