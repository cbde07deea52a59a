"""Triton's `perf_analyzer` load generator, made runnable on this CPU-only Debian machine.

    python bench/perf_analyzer.py      # sets it up once, prints the binary and its version

PyPI's `perf-analyzer` package is a 0.1.0 placeholder with no binary in it; the real
binary ships in the `tritonclient==2.41.1` wheel (manylinux1) as a data script, so pip
puts it in the venv's `bin/`. Later tritonclient wheels no longer carry it, and the
project's venv pins a newer tritonclient, so it gets a venv of its own in the cache.

The binary links two libraries the wheel does not bring: `libcudart.so.12` (loaded even
when no GPU is used), which PyPI's `nvidia-cuda-runtime-cu12` provides inside that venv,
and `libb64.so.0d`, Debian's `libb64-0d`. The .deb is fetched with `apt-get download` and
unpacked into the cache rather than installed: that takes no dpkg lock, so it cannot
collide with another apt-get (scripts/install-system-deps), and leaves the system as is.
"""

from __future__ import annotations

import csv
import fcntl
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from devstack.common import cache_dir, progress  # noqa: E402

TRITONCLIENT = "tritonclient==2.41.1"
# 12.3 is the CUDA that Triton 23.12 (client 2.41) was built against.
CUDA_RUNTIME = "nvidia-cuda-runtime-cu12==12.3.101"
LIBB64 = "libb64-0d"
SYSTEM_LIBB64 = Path("/usr/lib/x86_64-linux-gnu/libb64.so.0d")
PYTHON = f"python{sys.version_info.major}.{sys.version_info.minor}"


def _venv() -> Path:
    return cache_dir() / "perf-analyzer-venv"


def _cudart_dir() -> Path:
    return _venv() / "lib" / PYTHON / "site-packages" / "nvidia" / "cuda_runtime" / "lib"


def _libb64_dir() -> Path:
    return cache_dir() / "perf-analyzer-libb64" / "usr" / "lib" / "x86_64-linux-gnu"


def _environment() -> dict[str, str]:
    dirs = [str(_cudart_dir())]
    if not SYSTEM_LIBB64.exists():
        dirs.append(str(_libb64_dir()))
    if os.environ.get("LD_LIBRARY_PATH"):
        dirs.append(os.environ["LD_LIBRARY_PATH"])
    return {**os.environ, "LD_LIBRARY_PATH": ":".join(dirs)}


def _install_venv() -> None:
    venv = _venv()
    # A venv is not relocatable, so it is built in place; the marker written last says
    # it is complete, and a half-built one from an interrupted run is started over.
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", TRITONCLIENT, CUDA_RUNTIME],
                   check=True)
    (venv / ".installed").write_text(f"{TRITONCLIENT}\n{CUDA_RUNTIME}\n")


def _fetch_libb64() -> None:
    target = _libb64_dir().parents[2]
    debs = target.parent / "perf-analyzer-debs"
    debs.mkdir(parents=True, exist_ok=True)
    # The cache is root's, out of reach of apt's `_apt` download user.
    download = ["apt-get", "download", "-qq", "-o", "APT::Sandbox::User=root", LIBB64]
    # Fails only when the package lists are missing or stale (a fresh image): refresh once.
    if subprocess.run(download, cwd=debs).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(download, cwd=debs, check=True)
    deb = next(debs.glob(f"{LIBB64}_*.deb"))
    shutil.rmtree(target, ignore_errors=True)
    subprocess.run(["dpkg-deb", "-x", str(deb), str(target)], check=True)


def ensure() -> tuple[Path, dict[str, str]]:
    """The perf_analyzer binary and the environment to run it with; set up on first use."""
    binary = _venv() / "bin" / "perf_analyzer"
    # Two benchmarks starting at once must not build the same venv over each other.
    with open(cache_dir() / "perf-analyzer.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (_venv() / ".installed").exists():
            progress(f"installing {TRITONCLIENT} for perf_analyzer (first time only)")
            started = time.monotonic()
            _install_venv()
            progress(f"installed perf_analyzer in {time.monotonic() - started:.0f}s")
        if not SYSTEM_LIBB64.exists() and not (_libb64_dir() / SYSTEM_LIBB64.name).exists():
            progress(f"fetching Debian's {LIBB64} into the cache (first time only)")
            _fetch_libb64()
    return binary, _environment()


def run(args: list[str], timeout: float = 600) -> str:
    """perf_analyzer's stdout; RuntimeError with the end of its output if it fails."""
    binary, env = ensure()
    try:
        done = subprocess.run([str(binary), *args], env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as err:
        # On a timeout the captured output comes back as bytes, whatever `text` said.
        output = b"".join(part or b"" for part in (err.stdout, err.stderr))
        raise RuntimeError(f"perf_analyzer timed out after {timeout:.0f}s:\n"
                           f"{_tail(output.decode(errors='replace'))}") from err
    if done.returncode != 0:
        raise RuntimeError(f"perf_analyzer exited with {done.returncode}:\n"
                           f"{_tail(done.stdout + done.stderr)}")
    return done.stdout


def _tail(output: str, lines: int = 30) -> str:
    return "\n".join(output.splitlines()[-lines:])


def parse_csv(path: str | Path) -> dict[str, float | str]:
    """The first row of a `-f file.csv` report; latencies are in microseconds, as written.

    With --collect-metrics off, 2.41.1 writes one row per concurrency (or request rate).
    """
    with open(path, newline="") as report:
        row = next(csv.DictReader(report))
    return {key: _number(value) for key, value in row.items()}


def _number(value: str) -> float | str:
    try:
        return float(value)
    except ValueError:
        return value


if __name__ == "__main__":
    binary, env = ensure()
    print(binary)
    # 2.41.1 prints its version on stderr.
    version = subprocess.run([str(binary), "--version"], env=env, capture_output=True,
                             text=True, check=True)
    print(version.stderr.strip())
