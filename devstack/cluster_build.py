"""Build the local control plane's binaries from Go modules, once per pinned version.

None of kube-apiserver, etcd >= 3.5, KWOK or helm exists in Debian, PyPI or npm, so they
are built from the Go module proxy into the cache (see common.cache_dir), keyed by
version: the first build takes many minutes on 2 cores, every later start reuses it.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from devstack.common import cache_dir, go_install, progress

KUBERNETES_VERSION = "v1.36.3"
# The newest 3.6 patch: Kubernetes 1.36 is tested against etcd 3.6.x.
ETCD_VERSION = "v3.6.16"
KWOK_VERSION = "v0.8.0"
HELM_VERSION = "v4.3.1"

KUBE_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
NODE_COMMANDS = ("kubelet", "kube-proxy")


@dataclass(frozen=True)
class Binaries:
    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kubectl: Path
    kwok: Path
    kwok_stages: Path
    helm: Path


def build_all() -> Binaries:
    """Build (or find in the cache) every binary the cluster needs. One build at a time
    per cache: concurrent test processes would otherwise compile into the same
    `.partial` directory and move each other's binaries away."""
    lock_path = cache_dir() / "build.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _build_all()


def _build_all() -> Binaries:
    etcd = build_etcd()
    kube = build_kubernetes()
    kwok = go_install("kwok", "sigs.k8s.io/kwok/cmd/kwok", KWOK_VERSION)
    helm = go_install("helm", "helm.sh/helm/v4/cmd/helm", HELM_VERSION)
    return Binaries(
        etcd=etcd,
        kube_apiserver=kube["kube-apiserver"],
        kube_controller_manager=kube["kube-controller-manager"],
        kube_scheduler=kube["kube-scheduler"],
        kubectl=kube["kubectl"],
        kwok=kwok,
        kwok_stages=kwok_stages(kwok.parent),
        helm=helm,
    )


def build_etcd() -> Path:
    """etcd's server module replaces its sibling modules with local paths, so `go install
    go.etcd.io/etcd/server/v3@v` is refused; a wrapper module that requires it resolves
    the siblings to their published releases of the same version instead."""
    bindir = cache_dir() / "bin" / f"etcd-{ETCD_VERSION}"
    binary = bindir / "etcd"
    if binary.exists():
        return binary
    workdir = _wrapper_module("etcd", ETCD_VERSION, "recop.local/etcd-wrapper",
                              requires={"go.etcd.io/etcd/server/v3": ETCD_VERSION}, replaces={})
    # The server module's main package is named after its directory ("server").
    _go_build(workdir, bindir, {"etcd": "go.etcd.io/etcd/server/v3"}, ETCD_VERSION,
              ldflags="-s -w")
    return binary


def build_kubernetes() -> dict[str, Path]:
    return _build_kube_commands("kubernetes", KUBE_COMMANDS)


def build_node() -> dict[str, Path]:
    """The real node's kubelet and kube-proxy: the same release and wrapper module as the
    control plane, in a cache dir of their own, so a cluster with KWOK nodes only never
    waits for them."""
    with (cache_dir() / "build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _build_kube_commands("kubernetes-node", NODE_COMMANDS)


def _build_kube_commands(flavour: str, commands: tuple[str, ...]) -> dict[str, Path]:
    """k8s.io/kubernetes replaces every k8s.io/* staging module with ./staging/...; the
    wrapper pins each of them to its published v0.Y.Z twin, read from the tag's own go.mod
    (the list changes between releases), as kubernetes-sigs/scheduler-plugins does."""
    bindir = cache_dir() / "bin" / f"{flavour}-{KUBERNETES_VERSION}"
    binaries = {name: bindir / name for name in commands}
    if all(path.exists() for path in binaries.values()):
        return binaries
    staging_version = "v0." + KUBERNETES_VERSION.removeprefix("v1.")
    replaces = {module: staging_version for module in _staging_modules(KUBERNETES_VERSION)}
    workdir = _wrapper_module(
        "kubernetes", KUBERNETES_VERSION, "recop.local/kubernetes-wrapper",
        requires={"k8s.io/kubernetes": KUBERNETES_VERSION}, replaces=replaces,
    )
    major, minor = KUBERNETES_VERSION.removeprefix("v").split(".")[:2]
    # Without these stamps the binaries report v0.0.0-master: kubectl and helm would see a
    # server version that no chart's kubeVersion constraint accepts.
    stamps = {
        "gitVersion": KUBERNETES_VERSION,
        "gitMajor": major,
        "gitMinor": minor,
        "gitTreeState": "clean",
        "buildDate": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    ldflags = " ".join(
        f"-X {package}.{key}={value}"
        for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
        for key, value in stamps.items()
    )
    # One invocation for all the commands: they share most of the package graph, which
    # is compiled once.
    _go_build(workdir, bindir, {name: f"k8s.io/kubernetes/cmd/{name}" for name in commands},
              KUBERNETES_VERSION, ldflags=f"-s -w {ldflags}")
    return binaries


# The stages kwokctl uses by default ("fast" nodes and pods, node leases as heartbeat).
# The kwok binary alone has no stage built in, so they are taken from the same release's
# module source rather than written here.
KWOK_STAGE_FILES = (
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
)


def kwok_stages(bindir: Path) -> Path:
    """KWOK's stage configuration (one multi-document YAML) next to its binary."""
    path = bindir / "stages.yaml"
    if path.exists():
        return path
    # Run in bindir, outside any module, so no go.mod around it interferes.
    download = subprocess.run(
        ["go", "mod", "download", "-json", f"sigs.k8s.io/kwok@{KWOK_VERSION}"],
        cwd=bindir, capture_output=True, text=True, check=True,
    )
    source = Path(json.loads(download.stdout)["Dir"])
    documents = [(source / name).read_text() for name in KWOK_STAGE_FILES]
    partial = path.with_suffix(".partial")
    partial.write_text("\n---\n".join(documents))
    partial.rename(path)
    return path


def _staging_modules(version: str) -> list[str]:
    """Modules the tag's go.mod replaces with a local ./staging path."""
    url = f"{_goproxy()}/k8s.io/kubernetes/@v/{version}.mod"
    with urllib.request.urlopen(url, timeout=60) as response:
        gomod = response.read().decode()
    modules = re.findall(r"^\s*(k8s\.io/\S+)\s+=>\s+\./staging/", gomod, re.MULTILINE)
    if not modules:
        raise RuntimeError(f"no staging replace directives found in {url}")
    return modules


def _goproxy() -> str:
    """The first HTTP proxy in GOPROXY (the go tool's own setting, so CI mirrors apply)."""
    setting = subprocess.run(["go", "env", "GOPROXY"], capture_output=True, text=True,
                             check=True).stdout.strip()
    for entry in re.split(r"[,|]", setting):
        if entry.startswith(("https://", "http://")):
            return entry.rstrip("/")
    return "https://proxy.golang.org"


def _wrapper_module(name: str, version: str, module: str, requires: dict[str, str],
                    replaces: dict[str, str]) -> Path:
    workdir = cache_dir() / "src" / f"{name}-{version}"
    workdir.mkdir(parents=True, exist_ok=True)
    lines = [f"module {module}", "", "go 1.26", ""]
    lines += [f"require {path} {ver}" for path, ver in requires.items()]
    lines += [f"replace {path} => {path} {ver}" for path, ver in sorted(replaces.items())]
    (workdir / "go.mod").write_text("\n".join(lines) + "\n")
    return workdir


def _go_build(workdir: Path, bindir: Path, outputs: dict[str, str], version: str,
              ldflags: str) -> None:
    """Resolve the wrapper's module graph, then build each package to bindir/<name>.

    Built into a temporary directory and renamed, so an interrupted build never leaves a
    binary that a later run would take for a finished one.
    """
    env = {**os.environ, "CGO_ENABLED": os.environ.get("CGO_ENABLED", "0")}
    packages = list(outputs.values())
    progress(f"resolving modules for {', '.join(outputs)} in {workdir}")
    # With an explicit @version: a bare `go get pkg` would upgrade to the latest release.
    subprocess.run(["go", "get", *(f"{package}@{version}" for package in packages)],
                   cwd=workdir, env=env, check=True)
    partial = bindir.with_name(bindir.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    progress(f"compiling {', '.join(outputs)} (first time only; tens of minutes on 2 cores)")
    started = time.monotonic()
    # `go build -o DIR/` with several packages writes each binary under its own name, and
    # shares one compilation of the common packages.
    subprocess.run(["go", "build", "-trimpath", f"-ldflags={ldflags}", "-o", f"{partial}/",
                    *packages], cwd=workdir, env=env, check=True)
    bindir.mkdir(parents=True, exist_ok=True)
    for name, package in outputs.items():
        built = partial / _default_binary_name(package)
        built.rename(bindir / name)
    partial.rmdir()
    progress(f"built {', '.join(outputs)} in {time.monotonic() - started:.0f}s")


def _default_binary_name(package: str) -> str:
    """The name `go build` gives a main package: its last path element, skipping a /vN."""
    parts = package.split("/")
    if re.fullmatch(r"v\d+", parts[-1]):
        return parts[-2]
    return parts[-1]
