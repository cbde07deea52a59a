"""Triton Inference Server on the CPU, from the PyPI `nvidia-pytriton` wheel.

The wheel ships a real `tritonserver` (2.51) with the python backend; it is unpacked once
under the cache (`build`), the python backend stub is put beside the backend, and the stub
finds numpy through the venv's `bin` first on PATH and libpython through LD_LIBRARY_PATH.
Usage: `python -m devstack.triton build`.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from pathlib import Path

from devstack.common import (
    LOOPBACK,
    ManagedProcess,
    cache_dir,
    free_port,
    progress,
    state_dir,
)

VERSION = "0.7.0"
NAME = "triton"
# A python-backend model whose output is a real function of its embedding inputs.
TEST_MODELS = Path(__file__).resolve().parent / "triton_models"


def build() -> Path:
    """The unpacked server dir (bin/, backends/, libs/), downloaded once with pip."""
    root = cache_dir() / f"triton-{VERSION}"
    if (root / "bin" / "tritonserver").exists():
        return root
    wheels = cache_dir() / "triton-wheel"
    wheel = next(wheels.glob(f"nvidia_pytriton-{VERSION}-*.whl"), None)
    if wheel is None:
        progress(f"downloading nvidia-pytriton {VERSION} from PyPI")
        subprocess.run([sys.executable, "-m", "pip", "download", f"nvidia-pytriton=={VERSION}",
                        "--no-deps", "-d", str(wheels)], check=True)
        wheel = next(wheels.glob(f"nvidia_pytriton-{VERSION}-*.whl"))
    unpacked = cache_dir() / f"triton-{VERSION}.tmp"
    shutil.rmtree(unpacked, ignore_errors=True)
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(unpacked)
    shutil.move(unpacked / "pytriton" / "tritonserver", root)
    shutil.move(unpacked / "nvidia_pytriton.libs", root / "libs")
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / py / "triton_python_backend_stub"
    shutil.copy2(stub, root / "backends" / "python" / "triton_python_backend_stub")
    for binary in (root / "bin" / "tritonserver",
                   root / "backends" / "python" / "triton_python_backend_stub"):
        binary.chmod(0o755)
    shutil.rmtree(unpacked, ignore_errors=True)
    return root


@dataclass
class TritonHandle:
    http_port: int
    grpc_port: int
    metrics_port: int
    process: ManagedProcess

    @property
    def grpc_address(self) -> str:
        return f"{LOOPBACK}:{self.grpc_port}"

    def stop(self) -> None:
        self.process.stop()


def start(model_repository: Path, timeout: float = 60, *more: Path,
          env: dict[str, str] | None = None) -> TritonHandle:
    """`more`: further model repositories (Triton serves the union of their models);
    `env`: more environment for the server and its backends' processes."""
    root = build()
    http, grpc, metrics = free_port(), free_port(), free_port()
    work = state_dir(NAME) / str(grpc)
    (work / "cache").mkdir(parents=True, exist_ok=True)
    libdir = sysconfig.get_config_var("LIBDIR")
    server_env = {"LD_LIBRARY_PATH": f"{root / 'libs'}:{libdir}",
                  "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", **(env or {})}
    process = ManagedProcess(f"{NAME}-{grpc}", [
        str(root / "bin" / "tritonserver"),
        *(f"--model-repository={r}" for r in (model_repository, *more)),
        "--model-control-mode=explicit", f"--backend-directory={root / 'backends'}",
        f"--cache-directory={work / 'cache'}", f"--http-address={LOOPBACK}",
        f"--grpc-address={LOOPBACK}", f"--http-port={http}", f"--grpc-port={grpc}",
        f"--metrics-port={metrics}", "--allow-metrics=true"], env=server_env, directory=work)
    process.wait_listening(grpc, timeout=timeout, what="tritonserver")
    return TritonHandle(http, grpc, metrics, process)


if __name__ == "__main__":
    print(build())
