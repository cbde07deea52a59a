"""grpc-health-probe, the standard grpc.health.v1 client (a Go module, built once per
version into the cache): the question a kubelet's `grpc` probe asks, asked from the host,
so a test can hold the kubelet's verdict against an independent client's.

    python -m devstack.grpc_probe build
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from devstack.common import go_install

MODULE = "github.com/grpc-ecosystem/grpc-health-probe"
VERSION = "v0.4.62"
# The probe's exit statuses (its README): 0 SERVING; 2 no connection; 3 the RPC failed;
# 4 an answer other than SERVING.
SERVING, CONNECTION_FAILED, RPC_FAILED, UNHEALTHY = 0, 2, 3, 4


@dataclass(frozen=True)
class Answer:
    code: int
    output: str

    @property
    def serving(self) -> bool:
        return self.code == SERVING


def build() -> Path:
    return go_install("grpc-health-probe", MODULE, VERSION)


def check(address: str, service: str, timeout: float = 5) -> Answer:
    """One health check of `service` at host:port, as the kubelet's probe makes it."""
    result = subprocess.run([str(build()), f"-addr={address}", f"-service={service}",
                             f"-connect-timeout={timeout:g}s", f"-rpc-timeout={timeout:g}s"],
                            capture_output=True, text=True, timeout=timeout * 2 + 10)
    return Answer(result.returncode, (result.stdout + result.stderr).strip())


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args != ["build"]:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    print(build())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
