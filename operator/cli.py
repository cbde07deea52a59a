"""`recop`: run the operator, print the CRDs. The local default is `recop-dev` (devstack)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import zlib

from recop import crdgen
from recop.api import RESOURCES


def _operator(args: argparse.Namespace) -> int:
    import kopf

    import recop_operator.main  # noqa: F401  (registers handlers and settings)

    if args.prometheus_url:
        # Read by controllers/modelversion_drivers for the rollback policy's queries.
        os.environ["RECOP_PROMETHEUS_URL"] = args.prometheus_url

    kopf.configure(verbose=args.verbose, log_format=kopf.LogFormat[args.log_format.upper()])
    asyncio.run(kopf.operator(
        clusterwide=not args.namespace, namespaces=args.namespace or (),
        standalone=args.standalone, liveness_endpoint=args.liveness,
        priority=args.priority if args.priority is not None else _pod_priority()))
    return 0


def _pod_priority() -> int:
    """Distinct peering priorities for replicas of one Deployment.

    Kopf pauses every operator that sees a peer with its own priority, so identical
    replicas would all stand still; a priority from the pod name lets exactly one act
    and another take over when its peering record expires.
    """
    return zlib.crc32(os.environ.get("POD_NAME", "").encode()) % 10_000 + 1


def _crds(_: argparse.Namespace) -> int:
    sys.stdout.write("---\n".join(crdgen.render(r) for r in RESOURCES))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="recop", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    op = sub.add_parser("operator", help="run the operator against the current kubeconfig")
    op.add_argument("--namespace", action="append", help="watch only these (repeatable)")
    op.add_argument("--standalone", action="store_true",
                    help="no peering: for a single replica or local runs")
    op.add_argument("--priority", type=int, default=None,
                    help="peering priority; the highest-priority replica acts "
                         "(default: derived from $POD_NAME)")
    op.add_argument("--liveness", default="http://0.0.0.0:8081/healthz")
    op.add_argument("--log-format", choices=["json", "full", "plain"], default="json",
                    help="json: one structured object per line, for log pipelines")
    op.add_argument("--verbose", action="store_true", help="debug-level logs")
    op.add_argument("--prometheus-url", default=None,
                    help="Prometheus the rollback policies query (else $RECOP_PROMETHEUS_URL)")
    op.set_defaults(func=_operator)
    crds = sub.add_parser("crds", help="print the CRDs generated from the API models")
    crds.set_defaults(func=_crds)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
