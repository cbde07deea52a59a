"""A model's EndpointSlices as discovery shows them: grouped by Service, with Kubernetes'
own rule for which endpoints are ready. The RecModel status and the ModelVersion
controller's server addresses both read them here."""

from __future__ import annotations

from collections import defaultdict

from controllers.common import labels as L
from controllers.common.kube import Kube

API_VERSION = "discovery.k8s.io/v1"
KIND = "EndpointSlice"


def endpoint_ready(endpoint: dict) -> bool:
    """The EndpointSlice API's rule: an unset `conditions.ready` (absent or null) is an
    unknown state that consumers take as ready; only an explicit false is not."""
    return (endpoint.get("conditions") or {}).get("ready") is not False


def ready_endpoints(slices: list[dict]) -> int:
    """Ready endpoints across a Service's slices."""
    return sum(1 for s in slices for e in s.get("endpoints") or [] if endpoint_ready(e))


def by_service(slices: list[dict]) -> dict[str, list[dict]]:
    """Service name (the kubernetes.io/service-name label) -> its slices; a Service
    without slices is absent."""
    out: defaultdict[str, list[dict]] = defaultdict(list)
    for s in slices:
        out[(s["metadata"].get("labels") or {}).get(L.SERVICE_NAME, "")].append(s)
    return dict(out)


async def model_slices(kube: Kube, namespace: str, model: str) -> dict[str, list[dict]]:
    """The slices of every Service of one model (those labelled with it), by Service."""
    return by_service(await kube.list(API_VERSION, KIND, namespace,
                                      labels=f"{L.MODEL}={model}"))
