"""A small async Kubernetes client: server-side apply, status patches, lists.

Built on kubernetes_asyncio's ApiClient (auth, TLS, kubeconfig) but addressed by
apiVersion/kind, because the controllers handle plain manifests produced by pure
builder functions, not generated model classes.
"""

from __future__ import annotations

import json
from typing import Any

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException
from prometheus_client import Counter

from recop import quantity
from recop.api import API_VERSION, RESOURCES

FIELD_MANAGER = "recop"

WRITES = Counter("recop_kube_writes_total", "Writes the operator sent to the API server",
                 ["verb", "kind"])
# Reads this client sends; Kopf's own watches (and the indexes built on them) are not
# counted here.
READS = Counter("recop_kube_reads_total", "Reads the operator sent to the API server",
                ["verb", "kind"])

# Plural and scope of every kind RecOp reads or writes; a static table keeps the
# operator free of discovery calls.
_KINDS: dict[tuple[str, str], tuple[str, bool]] = {
    ("v1", "ConfigMap"): ("configmaps", True),
    ("v1", "Service"): ("services", True),
    ("v1", "Pod"): ("pods", True),
    ("v1", "Secret"): ("secrets", True),
    ("v1", "Node"): ("nodes", False),
    ("apps/v1", "Deployment"): ("deployments", True),
    ("policy/v1", "PodDisruptionBudget"): ("poddisruptionbudgets", True),
    ("networking.k8s.io/v1", "NetworkPolicy"): ("networkpolicies", True),
    ("discovery.k8s.io/v1", "EndpointSlice"): ("endpointslices", True),
    **{(API_VERSION, r.kind): (r.plural, True) for r in RESOURCES},
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): ("httproutes", True),
    ("gateway.networking.k8s.io/v1", "GRPCRoute"): ("grpcroutes", True),
}


def path(api_version: str, kind: str, namespace: str | None = None,
         name: str | None = None, subresource: str | None = None) -> str:
    plural, namespaced = _KINDS[(api_version, kind)]
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    if namespaced:
        if namespace is None:
            raise ValueError(f"{kind} is namespaced: a namespace is needed")
        base += f"/namespaces/{namespace}"
    base += f"/{plural}"
    if name:
        base += f"/{name}"
    if subresource:
        base += f"/{subresource}"
    return base


def is_subset(desired: Any, live: Any) -> bool:
    """Whether every field RecOp sets already has its value in the live object.

    Fields the API server adds (defaults, status) are ignored; quantities compare by
    value because the server rewrites them canonically ("1024Mi" -> "1Gi").
    """
    if isinstance(desired, dict):
        # Go's `omitempty` drops empty strings: a field set to "" is absent when read back.
        return isinstance(live, dict) and all(
            is_subset(v, live[k]) if k in live else v == ""
            for k, v in desired.items())
    if isinstance(desired, list):
        return (isinstance(live, list) and len(desired) == len(live)
                and all(is_subset(d, v) for d, v in zip(desired, live, strict=True)))
    if desired != live and quantity.is_quantity(desired) and quantity.is_quantity(live):
        return quantity.parse(desired) == quantity.parse(live)
    return desired == live


class Kube:
    def __init__(self, api: client.ApiClient):
        self.api = api

    @classmethod
    async def connect(cls) -> Kube:
        """From $KUBECONFIG (or ~/.kube/config), else the in-cluster service account."""
        try:
            await config.load_kube_config()
        except config.ConfigException:
            config.load_incluster_config()
        return cls(client.ApiClient())

    async def close(self) -> None:
        await self.api.close()

    async def _call(self, method: str, url: str, body: Any = None,
                    query: list[tuple[str, str]] | None = None,
                    content_type: str = "application/json") -> dict:
        response = await self.api.call_api(
            url, method, query_params=query or [],
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body, auth_settings=["BearerToken"], _preload_content=False,
            _return_http_data_only=True)
        data = await response.read()
        # Without preloading, the client does not raise on errors: a 403 or 422 must not
        # pass for success.
        if not 200 <= response.status < 300:
            raise ApiException(status=response.status, reason=f"{method} {url}: "
                               + data.decode(errors="replace")[:2000])
        return json.loads(data)

    async def get(self, api_version: str, kind: str, namespace: str | None,
                  name: str) -> dict | None:
        READS.labels("get", kind).inc()
        try:
            return await self._call("GET", path(api_version, kind, namespace, name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def list(self, api_version: str, kind: str, namespace: str | None = None,
                   labels: str | None = None) -> list[dict]:
        READS.labels("list", kind).inc()
        query = [("labelSelector", labels)] if labels else []
        result = await self._call("GET", path(api_version, kind, namespace), query=query)
        return result.get("items", [])

    async def apply(self, obj: dict) -> dict:
        """Server-side apply as RecOp's field manager, taking over conflicting fields:
        RecOp owns what it builds, so a hand edit is reverted, not merged."""
        meta = obj["metadata"]
        WRITES.labels("apply", obj["kind"]).inc()
        return await self._call(
            "PATCH", path(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"]),
            body=obj, query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
            content_type="application/apply-patch+yaml")

    async def apply_status(self, api_version: str, kind: str, namespace: str, name: str,
                           status: dict, manager: str) -> dict:
        """Server-side apply of the status fields `manager` owns.

        Each controller applies its own part under its own manager, and conditions are
        merged by type, so two controllers reporting on one object never overwrite each
        other's fields (a merge patch of a stale read would).
        """
        WRITES.labels("apply-status", kind).inc()
        body = {"apiVersion": api_version, "kind": kind,
                "metadata": {"name": name, "namespace": namespace}, "status": status}
        return await self._call(
            "PATCH", path(api_version, kind, namespace, name, "status"), body=body,
            query=[("fieldManager", manager), ("force", "true")],
            content_type="application/apply-patch+yaml")

    async def delete(self, api_version: str, kind: str, namespace: str | None,
                     name: str) -> None:
        WRITES.labels("delete", kind).inc()
        try:
            await self._call("DELETE", path(api_version, kind, namespace, name))
        except ApiException as exc:
            if exc.status != 404:
                raise
