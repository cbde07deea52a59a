"""Gateway API CRDs (HTTPRoute, GRPCRoute, ...): not built into kube-apiserver, so the
e2e tests install them from the Go module sigs.k8s.io/gateway-api, fetched with the Go
toolchain into the cache. Usage: `python -m devstack.gateway_api build`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from devstack.common import cache_dir, progress

MODULE = "sigs.k8s.io/gateway-api"
VERSION = "v1.4.1"
# The standard channel: the kinds RecOp writes are GA there (HTTPRoute, GRPCRoute).
CRDS = ("gatewayclasses", "gateways", "httproutes", "grpcroutes", "referencegrants")


def build() -> list[Path]:
    """Paths of the standard-channel CRDs, downloading the module once."""
    env = {**os.environ, "GOMODCACHE": str(cache_dir() / "gomod"), "GOFLAGS": "-mod=mod"}
    progress(f"go mod download {MODULE}@{VERSION}")
    result = subprocess.run(["go", "mod", "download", "-json", f"{MODULE}@{VERSION}"],
                            capture_output=True, text=True, env=env, timeout=600,
                            cwd=cache_dir())
    if result.returncode:
        raise RuntimeError(f"go mod download {MODULE}@{VERSION} failed: "
                           f"{result.stdout[-2000:]}{result.stderr[-2000:]}")
    directory = Path(json.loads(result.stdout)["Dir"]) / "config" / "crd" / "standard"
    paths = [directory / f"gateway.networking.k8s.io_{name}.yaml" for name in CRDS]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise RuntimeError(f"{MODULE}@{VERSION} lacks {missing}")
    return paths


if __name__ == "__main__":
    if sys.argv[1:] != ["build"]:
        sys.exit("usage: python -m devstack.gateway_api build")
    print("\n".join(str(p) for p in build()))
