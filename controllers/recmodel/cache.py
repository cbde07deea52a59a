"""What a RecModel reconcile reads of the cluster, from Kopf indexes over the watches
the operator holds anyway (the models, their children, the nodes): a child event costs
no API read, and a settled model none at all.

Kopf fills every index from its watch's initial list before any handler runs, and
updates an index before the handlers of the same event. An index can still trail a
write this operator just made (the watch event is on its way); a reconcile then sees
the older object and applies again, which server-side apply makes harmless.

What grows with the fleet: one cached copy of each model, each child and each node,
without managedFields (the largest part of a read object).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from controllers.common.nodes import parse_node
from costmodel import Node

# The kinds a RecModel has as children, each with its index's name (a Kopf handler
# kwarg): the serving objects it builds, and the pods and EndpointSlices that report
# on them.
CHILDREN: dict[str, tuple[str, str, str]] = {
    "Deployment": ("apps", "v1", "deployments"),
    "PodDisruptionBudget": ("policy", "v1", "poddisruptionbudgets"),
    "Service": ("", "v1", "services"),
    "ConfigMap": ("", "v1", "configmaps"),
    "NetworkPolicy": ("networking.k8s.io", "v1", "networkpolicies"),
    "EndpointSlice": ("discovery.k8s.io", "v1", "endpointslices"),
    "Pod": ("", "v1", "pods"),
}
MODELS_INDEX = "recmodel_bodies"
NODES_INDEX = "recmodel_nodes"
VERSIONS_INDEX = "recmodel_versions"


def api_version(kind: str) -> str:
    group, version, _ = CHILDREN[kind]
    return f"{group}/{version}" if group else version


def child_index(kind: str) -> str:
    return f"recmodel_{CHILDREN[kind][2]}"


def trimmed(body: Mapping) -> dict:
    """An object as the cache keeps it: everything but metadata.managedFields."""
    obj = dict(body)
    obj["metadata"] = {k: v for k, v in (body.get("metadata") or {}).items()
                       if k != "managedFields"}
    return obj


@dataclass(frozen=True)
class Cache:
    """Kopf's indexes, as a reconcile asks them: each maps a key to the values of the
    objects that produced it."""

    models: Mapping[Any, Iterable[dict]]
    children: Mapping[str, Mapping[Any, Iterable[dict]]]  # by kind
    nodes: Mapping[Any, Iterable[Node]]
    versions: Mapping[Any, Iterable[dict]]  # (namespace, model) -> version_entry

    @classmethod
    def of(cls, kwargs: Mapping[str, Any]) -> Cache:
        """From a Kopf handler's kwargs, which carry every index by its name."""
        return cls(models=kwargs[MODELS_INDEX],
                   children={kind: kwargs[child_index(kind)] for kind in CHILDREN},
                   nodes=kwargs[NODES_INDEX], versions=kwargs[VERSIONS_INDEX])

    def model(self, namespace: str, name: str) -> dict | None:
        return next(iter(self.models.get((namespace, name), ())), None)

    def children_of(self, kind: str, namespace: str, model: str) -> list[dict]:
        return list(self.children[kind].get((namespace, model), ()))

    def children_by_name(self, kind: str, namespace: str, model: str) -> dict[str, dict]:
        return {o["metadata"]["name"]: o for o in self.children_of(kind, namespace, model)}

    def versions_of(self, namespace: str, model: str) -> list[dict]:
        return list(self.versions.get((namespace, model), ()))

    def node_list(self) -> list[Node]:
        return [node for nodes in self.nodes.values() for node in nodes]


def version_entry(namespace: str, body: Mapping) -> dict[tuple[str, str], dict]:
    """The versions index's entry for one ModelVersion: what causes.version_cause reads
    of it (its name, age, kind and outcome), keyed by its model."""
    spec, status = body.get("spec") or {}, body.get("status") or {}
    if not spec.get("model"):  # the CRD requires it; a schema older than the operator may not
        return {}
    meta = body.get("metadata") or {}
    return {(namespace, spec["model"]): {
        "metadata": {k: meta[k] for k in ("name", "creationTimestamp") if k in meta},
        "spec": {k: spec[k] for k in ("model", "kind") if k in spec},
        "status": {k: status[k] for k in ("phase", "reason", "message") if k in status}}}


def node_entry(body: Mapping) -> dict[str, Node]:
    """The nodes index's entry for one Node: what the fit checks read of it."""
    return {"nodes": parse_node(body)}
