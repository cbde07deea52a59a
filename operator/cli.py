"""`recop`: run the operator, print the CRDs, import checkpoints. The local default is
`recop-dev` (devstack)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from recop import crdgen
from recop.api import RESOURCES


def _operator(args: argparse.Namespace) -> int:
    import kopf
    from prometheus_client import start_http_server

    import recop_operator.main  # noqa: F401  (registers handlers and settings)
    from controllers.common.settings import MEMO_KEY
    from recop_operator import settings

    config = settings.load(prometheus_url=args.prometheus_url)
    kopf.configure(verbose=args.verbose, log_format=kopf.LogFormat[args.log_format.upper()])
    if config.metrics_port:
        start_http_server(config.metrics_port, addr=config.metrics_addr)
        logging.getLogger("recop").info("metrics on :%d/metrics", config.metrics_port)
    asyncio.run(kopf.operator(
        clusterwide=not args.namespace, namespaces=args.namespace or (),
        standalone=args.standalone, liveness_endpoint=args.liveness,
        priority=args.priority if args.priority is not None else config.pod_priority,
        # Kopf copies this memo into every resource's: how handlers get the settings.
        memo=kopf.Memo({MEMO_KEY: config.controllers})))
    return 0


def _checkpoint_import(argv: list[str]) -> int:
    # Lazily: the importers' libraries (pyarrow, safetensors, torch) are optional extras.
    from embedding.importers.__main__ import main as import_main

    return import_main(argv)


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
                    help="Prometheus the rollback policies and ABTests query "
                         "(else $RECOP_PROMETHEUS_URL)")
    op.set_defaults(func=_operator)
    crds = sub.add_parser("crds", help="print the CRDs generated from the API models")
    crds.set_defaults(func=_crds)
    checkpoint = sub.add_parser("checkpoint", help="checkpoints in S3")
    checkpoint_sub = checkpoint.add_subparsers(dest="action", required=True)
    checkpoint_sub.add_parser(
        "import", add_help=False,
        help="convert safetensors, Parquet, .npz or PyTorch state dicts into a checkpoint "
             "(`recop checkpoint import --help`; needs the `import` extra)")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:2] == ["checkpoint", "import"]:
        # The importer parses its own arguments (its --help included).
        return _checkpoint_import(argv[2:])
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
