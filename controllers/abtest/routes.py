"""Pure builders: an ABTest's HTTPRoute and GRPCRoute (Gateway API v1).

Each arm is reached through its RecModel's Triton Service. Two kinds of rule:
- a header rule per arm: `x-recop-arm: <arm>` (recop.api.abtest.ARM_HEADER, set by
  recop.client from the user id and the test's salt) pins a request to that arm, which
  keeps a user on one arm; a stopped arm's header goes to the baseline;
- the default rule splits the rest by the current (ramped) weights.
Gateway API caps a route at 16 rules and a rule at 16 backendRefs, hence MAX_ARMS.
"""

from __future__ import annotations

from controllers.common import labels as L
from controllers.common.owners import controller_reference
from controllers.recmodel.objects import TRITON_GRPC, TRITON_HTTP
from recop.api import ABTEST
from recop.api.abtest import ARM_HEADER, ABTestSpec

GATEWAY_API = "gateway.networking.k8s.io/v1"
ABTEST_LABEL = "recop.dev/abtest"
MAX_ARMS = 15  # one header rule per arm plus the weighted rule <= 16


def _backend(model: str, port: int, weight: int | None = None) -> dict:
    ref = {"group": "", "kind": "Service", "name": L.triton_name(model), "port": port}
    if weight is not None:
        ref["weight"] = weight
    return ref


def _rules(spec: ABTestSpec, weights: dict[str, int], stopped: set[str],
           port: int) -> list[dict]:
    arms = [spec.baseline, *spec.variants]
    if len(arms) > MAX_ARMS:
        raise ValueError(f"{len(arms)} arms: a Gateway API route holds at most {MAX_ARMS}")
    rules = []
    for arm in arms:
        target = spec.baseline if arm.name in stopped else arm
        rules.append({"matches": [{"headers": [
            {"type": "Exact", "name": ARM_HEADER, "value": arm.name}]}],
            "backendRefs": [_backend(target.model, port)]})
    # Arms sharing a model share a backend: one ref with the summed weight.
    by_model: dict[str, int] = {}
    for arm in arms:
        by_model[arm.model] = by_model.get(arm.model, 0) + weights.get(arm.name, 0)
    rules.append({"backendRefs": [_backend(m, port, w) for m, w in by_model.items()]})
    return rules


def routes(name: str, namespace: str, uid: str, spec: ABTestSpec, weights: dict[str, int],
           stopped: set[str]) -> list[dict]:
    """The HTTPRoute (Triton HTTP, 8000) and GRPCRoute (8001), both named after the test
    and owned by it, so deleting the test deletes them."""
    parent = {"group": "gateway.networking.k8s.io", "kind": "Gateway",
              "name": spec.gateway.name, "namespace": spec.gateway.namespace or namespace}
    if spec.gateway.section_name:
        parent["sectionName"] = spec.gateway.section_name
    meta = {"name": name, "namespace": namespace,
            "labels": {ABTEST_LABEL: name, L.MANAGED_BY: "recop"},
            "ownerReferences": [controller_reference(ABTEST.kind, name, uid)]}
    return [{"apiVersion": GATEWAY_API, "kind": kind, "metadata": meta,
             "spec": {"parentRefs": [parent], "rules": _rules(spec, weights, stopped, port)}}
            for kind, port in (("HTTPRoute", TRITON_HTTP), ("GRPCRoute", TRITON_GRPC))]
