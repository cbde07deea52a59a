"""`kubectl recop`: a RecModel's versions, shards and replicas at a glance, rollback and
A/B promotion without a hand-written patch.

    kubectl recop tree <recmodel> [-o json]
    kubectl recop status [-o json]
    kubectl recop rollback <recmodel> [--to <modelversion>]
    kubectl recop promote <abtest> <arm>
    kubectl recop abort <abtest>

Installed as the `kubectl-recop` executable, which kubectl finds on PATH as a plugin. It
runs kubectl itself (with the -n, --context and --kubeconfig given here), so it reaches
whatever cluster and credentials kubectl does and needs no other client setup.

rollback, promote and abort write the spec, as a user would: under GitOps, change the
source of truth instead, or the sync undoes them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys

from controllers.common import labels as L
from recop_operator import plugin_view as view

GROUP = "serving.recop.dev"


class KubectlError(RuntimeError):
    pass


class Kubectl:
    def __init__(self, namespace: str | None, context: str | None, kubeconfig: str | None):
        binary = os.environ.get("KUBECTL") or shutil.which("kubectl")
        if not binary:
            raise KubectlError("kubectl is not on PATH (or set $KUBECTL)")
        self.base = [binary]
        if kubeconfig:
            self.base.append(f"--kubeconfig={kubeconfig}")
        if context:
            self.base.append(f"--context={context}")
        if namespace:
            self.base.append(f"--namespace={namespace}")

    def run(self, *args: str) -> str:
        done = subprocess.run([*self.base, *args], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise KubectlError(done.stderr.strip() or f"kubectl {' '.join(args)} failed")
        return done.stdout

    def get(self, kind: str, name: str) -> dict:
        return json.loads(self.run("get", f"{kind}.{GROUP}", name, "-o", "json"))

    def items(self, kind: str, selector: str | None = None) -> list[dict]:
        args = ["get", kind if "." in kind or kind == "pods" else f"{kind}.{GROUP}",
                "-o", "json"]
        if selector:
            args += ["-l", selector]
        return json.loads(self.run(*args))["items"]

    def merge_patch(self, kind: str, name: str, patch: dict) -> None:
        self.run("patch", f"{kind}.{GROUP}", name, "--type=merge", "-p", json.dumps(patch))


def _colour(args: argparse.Namespace) -> bool:
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR") and args.output != "json"


def _emit(args: argparse.Namespace, data: dict, text: str) -> None:
    print(json.dumps(data, indent=2) if args.output == "json" else text)


def _tree(kube: Kubectl, args: argparse.Namespace) -> int:
    model = kube.get("recmodels", args.recmodel)
    tree = view.model_tree(model, kube.items("modelversions"),
                           kube.items("pods", f"{L.MODEL}={args.recmodel}"))
    _emit(args, tree, view.render_tree(tree, _colour(args)))
    return 0


def _status(kube: Kubectl, args: argparse.Namespace) -> int:
    status = view.namespace_status(kube.items("recmodels"), kube.items("modelversions"),
                                   kube.items("abtests"))
    _emit(args, status, view.render_status(status))
    return 0


def _rollback(kube: Kubectl, args: argparse.Namespace) -> int:
    model = kube.get("recmodels", args.recmodel)
    to = view.rollback_target(model, kube.items("modelversions"), args.to)
    kube.merge_patch("recmodels", args.recmodel, {
        "metadata": {"resourceVersion": model["metadata"]["resourceVersion"]},
        "spec": {"activeVersion": to}})
    print(f"recmodel/{args.recmodel}: spec.activeVersion set to {to}; "
          f"`kubectl recop tree {args.recmodel}` follows the rollback")
    return 0


def _set_weights(kube: Kubectl, name: str, arm: str | None) -> str:
    test = kube.get("abtests", name)
    kube.merge_patch("abtests", name, view.weights_for(test, arm))
    return arm or test["spec"]["baseline"]["name"]


def _promote(kube: Kubectl, args: argparse.Namespace) -> int:
    arm = _set_weights(kube, args.abtest, args.arm)
    print(f"abtest/{args.abtest}: all traffic to {arm}")
    return 0


def _abort(kube: Kubectl, args: argparse.Namespace) -> int:
    arm = _set_weights(kube, args.abtest, None)
    print(f"abtest/{args.abtest}: aborted, all traffic back to the baseline {arm}")
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="kubectl recop", description=__doc__.split("\n\n")[0])
    top.add_argument("-n", "--namespace")
    top.add_argument("--context")
    top.add_argument("--kubeconfig")
    sub = top.add_subparsers(dest="command", required=True)
    tree = sub.add_parser("tree", help="a RecModel's versions, shards and replicas")
    tree.add_argument("recmodel")
    status = sub.add_parser("status", help="every RecModel and ABTest in the namespace")
    for command in (tree, status):
        command.add_argument("-o", "--output", choices=["text", "json"], default="text")
    rollback = sub.add_parser("rollback", help="serve an earlier version again")
    rollback.add_argument("recmodel")
    rollback.add_argument("--to", help="the ModelVersion to serve (default: the last "
                                       "clean one, else the one before the active)")
    promote = sub.add_parser("promote", help="send all of a test's traffic to one arm")
    promote.add_argument("abtest")
    promote.add_argument("arm")
    abort = sub.add_parser("abort", help="send all of a test's traffic to its baseline")
    abort.add_argument("abtest")
    for command in (rollback, promote, abort):
        command.set_defaults(output="text")
    tree.set_defaults(run=_tree)
    status.set_defaults(run=_status)
    rollback.set_defaults(run=_rollback)
    promote.set_defaults(run=_promote)
    abort.set_defaults(run=_abort)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(Kubectl(args.namespace, args.context, args.kubeconfig), args)
    except (KubectlError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
