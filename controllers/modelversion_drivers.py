"""I/O for the ModelVersion controller: discovery, the embedding admin API, Triton,
Prometheus and S3. Everything is async or runs in a thread: the event loop never blocks."""

from __future__ import annotations

import asyncio
import base64
import json
import os

import aiohttp
import grpc
import numpy as np

from controllers import labels as L
from controllers.modelversion_plan import Replica
from embedding.proto import GRPC_OPTIONS
from embedding.proto import embedding_pb2 as pb
from embedding.proto import embedding_pb2_grpc as rpc
from recop.api.recmodel import RecModelSpec
from recop.kube import Kube

LOCALHOST = ".localhost"


def resolve(address: str) -> str:
    """RFC 6761: names under .localhost are loopback (local servers register FQDN slices
    because the API refuses loopback IPs)."""
    return "127.0.0.1" if address == "localhost" or address.endswith(LOCALHOST) else address


def slice_addresses(slices: list[dict], port_name: str, default_port: int) -> list[str]:
    """host:port of every ready endpoint; the port from the slice's own ports (a local
    process listens on its own port, not the Service's)."""
    out = []
    for s in slices:
        port = next((p["port"] for p in s.get("ports") or [] if p.get("name") == port_name),
                    default_port)
        for e in s.get("endpoints") or []:
            if (e.get("conditions") or {}).get("ready", True) is False:
                continue
            out += [f"{resolve(a)}:{port}" for a in e.get("addresses", [])[:1]]
    return out


async def discover(kube: Kube, namespace: str, model: str,
                   spec: RecModelSpec) -> tuple[dict[int, list[str]], list[str]]:
    """Admin addresses per shard, and Triton gRPC addresses."""
    slices = await kube.list("discovery.k8s.io/v1", "EndpointSlice", namespace,
                             labels=f"{L.MODEL}={model}")
    by_service: dict[str, list[dict]] = {}
    for s in slices:
        by_service.setdefault(s["metadata"].get("labels", {}).get(L.SERVICE_NAME, ""),
                              []).append(s)
    shards = {i: slice_addresses(by_service.get(L.embedding_name(model, i), []), "admin",
                                 spec.embedding_server.admin_port)
              for i in range(spec.sharding.shards)}
    triton = slice_addresses(by_service.get(L.triton_name(model), []), "grpc", 8001)
    return shards, triton


class Admin:
    """The embedding servers' admin API over grpc.aio, one channel per address."""

    def __init__(self):
        self._stubs: dict[str, rpc.EmbeddingAdminStub] = {}

    def stub(self, address: str) -> rpc.EmbeddingAdminStub:
        if address not in self._stubs:
            channel = grpc.aio.insecure_channel(address, options=GRPC_OPTIONS)
            self._stubs[address] = rpc.EmbeddingAdminStub(channel)
        return self._stubs[address]

    async def observe(self, shards: dict[int, list[str]]) -> tuple[list[Replica], list]:
        """Every reachable replica's versions, and their realtime reports."""
        replicas, realtime = [], []
        for shard, addresses in shards.items():
            for address in addresses:
                try:
                    reply = await self.stub(address).Status(pb.StatusRequest(), timeout=5)
                except grpc.aio.AioRpcError:
                    continue  # an unreachable replica is not counted as holding anything
                replicas.append(Replica(
                    address, shard, reply.active_version,
                    {v.version: v.state for v in reply.versions},
                    {v.version: v.progress for v in reply.versions},
                    {v.version: v.error for v in reply.versions}))
                rt = reply.realtime
                realtime.append({"enabled": rt.enabled, "lag": rt.lag, "applied": rt.applied,
                                 "malformed": rt.malformed,
                                 "freshness_p50_seconds": rt.freshness_p50_seconds,
                                 "freshness_p99_seconds": rt.freshness_p99_seconds})
        return replicas, realtime

    async def run(self, action: tuple) -> None:
        verb, address, number, *rest = action
        stub = self.stub(address)
        if verb == "load_full":
            await stub.LoadFull(pb.LoadFullRequest(version=number, uri=rest[0]), timeout=10)
        elif verb == "apply_incremental":
            await stub.ApplyIncremental(pb.ApplyIncrementalRequest(
                version=number, base_version=rest[0], uri=rest[1]), timeout=10)
        elif verb in ("commit", "rollback"):
            await stub.Commit(pb.VersionRequest(version=number), timeout=10)
        elif verb == "drop":
            await stub.Drop(pb.VersionRequest(version=number), timeout=10)
        else:
            raise ValueError(f"unknown action {verb}")


class Triton:
    """Explicit model control through tritonclient's gRPC repository API."""

    def __init__(self, addresses: list[str], model: str, spec: RecModelSpec):
        from tritonclient.grpc import aio as triton_aio

        self.clients = [triton_aio.InferenceServerClient(a) for a in addresses]
        self.model = model
        self.spec = spec

    async def ready_versions(self) -> frozenset[int]:
        """Dense versions READY on every Triton server."""
        common: set[int] | None = None
        for client in self.clients:
            index = await client.get_model_repository_index(as_json=True)
            ready = {int(m["version"]) for m in index.get("models", [])
                     if m.get("name") == self.model and m.get("state") == "READY"
                     and m.get("version")}
            common = ready if common is None else common & ready
        return frozenset(common or ())

    def config(self, versions: list[int]) -> str:
        dense = self.spec.dense
        return json.dumps({
            "name": self.model, "backend": dense.backend,
            "max_batch_size": dense.max_batch_size,
            "version_policy": {"specific": {"versions": sorted(versions)}},
            "instance_group": [{"kind": g.kind, "count": g.count}
                               for g in dense.instance_groups]})

    async def load(self, version: int, keep: int | None) -> None:
        """Load `version` (keeping `keep` loaded beside it), check readiness and a smoke
        inference on the new version; raises on any failure."""
        versions = [version] + ([keep] if keep and keep != version else [])
        for client in self.clients:
            await client.load_model(self.model, config=self.config(versions))
            if not await client.is_model_ready(self.model, str(version)):
                raise RuntimeError(f"Triton: {self.model} version {version} is not ready")
            await self._smoke(client, version)

    async def _smoke(self, client, version: int) -> None:
        from tritonclient.grpc import InferInput

        meta = await client.get_model_metadata(self.model, str(version), as_json=True)
        inputs = []
        for spec in meta["inputs"]:
            shape = [1 if int(d) < 0 else int(d) for d in spec["shape"]]
            item = InferInput(spec["name"], shape, spec["datatype"])
            item.set_data_from_numpy(np.zeros(shape, _NP[spec["datatype"]]))
            inputs.append(item)
        result = await client.infer(self.model, inputs, model_version=str(version))
        for out in meta["outputs"]:
            values = result.as_numpy(out["name"])
            if values is None or not np.isfinite(values.astype(np.float64)).all():
                raise RuntimeError(f"Triton smoke inference: output {out['name']} not finite")


_NP = {"FP32": np.float32, "FP16": np.float16, "INT64": np.int64, "INT32": np.int32}


async def prometheus_value(url: str, promql: str) -> float | None:
    """An instant query's single value; None when the series is absent."""
    async with aiohttp.ClientSession() as session, session.get(
            f"{url}/api/v1/query", params={"query": promql},
            timeout=aiohttp.ClientTimeout(total=10)) as response:
        body = await response.json()
    if body.get("status") != "success":
        raise RuntimeError(f"Prometheus: {body.get('error')}")
    result = body["data"]["result"]
    if body["data"]["resultType"] == "scalar":
        return float(result[1])
    return float(result[0]["value"][1]) if result else None


async def s3_client(kube: Kube, namespace: str, spec: RecModelSpec):
    """boto3 client for the model's storage; credentials only from its Secrets (or the
    operator's own AWS_* environment when the spec names none)."""
    import boto3

    storage = spec.storage
    kwargs = {"region_name": storage.region}
    if storage.endpoint:
        kwargs["endpoint_url"] = storage.endpoint
    if storage.access_key_id and storage.secret_access_key:
        for arg, ref in (("aws_access_key_id", storage.access_key_id),
                         ("aws_secret_access_key", storage.secret_access_key)):
            secret = await kube.get("v1", "Secret", namespace, ref.name)
            if secret is None or ref.key not in secret.get("data", {}):
                raise RuntimeError(f"Secret {ref.name} has no key {ref.key}")
            kwargs[arg] = base64.b64decode(secret["data"][ref.key]).decode()
    return await asyncio.to_thread(boto3.client, "s3", **kwargs)


def prometheus_url() -> str | None:
    return os.environ.get("RECOP_PROMETHEUS_URL") or None
