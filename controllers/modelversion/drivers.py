"""I/O for the ModelVersion controller: discovery, the embedding admin API, Triton and
S3. Everything is async or runs in a thread: the event loop never blocks."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import grpc
import numpy as np

from controllers.common import labels as L
from controllers.common import triton_config
from controllers.common.admin_auth import admin_credentials
from controllers.common.endpointslices import endpoint_ready, model_slices
from controllers.common.kube import Kube
from controllers.common.secrets import secret_key
from controllers.modelversion import dense_config
from controllers.modelversion.plan import Replica
from embedding.admin_channel import AdminStub, admin_stub
from embedding.proto import embedding_pb2 as pb
from recop.api.recmodel import RecModelSpec


def slice_addresses(slices: list[dict], port_name: str, default_port: int,
                    ready_only: bool = True) -> list[str]:
    """host:port of the endpoints; the port from the slice's own ports (a local process
    listens on its own port, not the Service's). Without `ready_only`, replicas that are
    not ready yet count too (an embedding server is not ready until it serves a version,
    and the operator is what loads one); terminating ones never do."""
    out = []
    for s in slices:
        port = next((p["port"] for p in s.get("ports") or [] if p.get("name") == port_name),
                    default_port)
        for e in s.get("endpoints") or []:
            if (e.get("conditions") or {}).get("terminating") or (
                    ready_only and not endpoint_ready(e)):
                continue
            out += [f"{a}:{port}" for a in e.get("addresses", [])[:1]]
    return out


@dataclass(frozen=True)
class Endpoints:
    admin: dict[int, list[str]]  # shard -> admin addresses, ready or not
    lookup: dict[int, list[str]]  # shard -> lookup addresses, ready or not
    triton: list[str]  # ready Triton gRPC addresses


async def discover(kube: Kube, namespace: str, model: str, spec: RecModelSpec) -> Endpoints:
    by_service = await model_slices(kube, namespace, model)
    server = spec.embedding_server

    def per_shard(port_name: str, default_port: int) -> dict[int, list[str]]:
        return {i: slice_addresses(by_service.get(L.embedding_name(model, i), []), port_name,
                                   default_port, ready_only=False)
                for i in range(spec.sharding.shards)}

    return Endpoints(per_shard("admin", server.admin_port),
                     per_shard("lookup", server.lookup_port),
                     slice_addresses(by_service.get(L.triton_name(model), []), "grpc", 8001))


# A replica's Status answers in milliseconds; one that takes longer is treated as
# unreachable for this pass (the next pass asks again).
STATUS_DEADLINE_SECONDS = 5


class Admin:
    """The embedding servers' admin API over grpc.aio, one channel per address, carrying
    the model's admin token (and speaking TLS) when its spec sets `adminAuth`."""

    def __init__(self):
        self._stubs: dict[str, AdminStub] = {}
        self._shard: dict[str, int] = {}
        self._auth: tuple = (None, None, "", "")

    async def authenticate(self, kube: Kube, namespace: str, model: str,
                           spec: RecModelSpec) -> None:
        """Read the model's admin credentials (every pass: a rotated Secret takes effect
        without a restart); raises SecretError when a named Secret is unusable."""
        auth = (*await admin_credentials(kube, namespace, spec), namespace, model)
        if auth != self._auth:
            await self.close()
            self._auth = auth

    def stub(self, address: str) -> AdminStub:
        if address not in self._stubs:
            token, ca, namespace, model = self._auth
            # Servers are dialled by pod IP; their certificate names their shard Service.
            server_name = (f"{L.embedding_name(model, self._shard[address])}.{namespace}.svc"
                           if ca and address in self._shard else None)
            self._stubs[address] = admin_stub(address, token, ca, server_name)
        return self._stubs[address]

    async def close(self) -> None:
        stubs, self._stubs = self._stubs, {}
        for stub in stubs.values():
            await stub.channel.close()

    async def observe(self, shards: dict[int, list[str]]) -> tuple[list[Replica], list]:
        """Every reachable replica's versions, and their realtime reports: all replicas
        asked at once, under one deadline, so a pass costs one round trip however many
        replicas there are, and a hung one costs at most the deadline."""
        asked = [(shard, address) for shard, addresses in shards.items()
                 for address in addresses]
        for shard, address in asked:
            self._shard[address] = shard
        replies = await asyncio.gather(*(
            self.stub(address).Status(pb.StatusRequest(), timeout=STATUS_DEADLINE_SECONDS)
            for _, address in asked), return_exceptions=True)
        replicas, realtime = [], []
        for (shard, address), reply in zip(asked, replies, strict=True):
            if isinstance(reply, grpc.aio.AioRpcError):
                continue  # an unreachable replica is not counted as holding anything
            if isinstance(reply, BaseException):
                raise reply
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

    # Loads only start on the server (it reports their progress in Status), so every
    # call returns quickly; `checks` are the value checks it runs on every row it loads.
    async def load_full(self, address: str, version: int, uri: str,
                        checks: tuple[float, bool], dense: int = 0) -> None:
        await self.stub(address).LoadFull(pb.LoadFullRequest(
            version=version, uri=uri, checks=_checks(checks), dense_version=dense), timeout=10)

    async def apply_incremental(self, address: str, version: int, base: int, uri: str,
                                checks: tuple[float, bool], dense: int = 0) -> None:
        await self.stub(address).ApplyIncremental(pb.ApplyIncrementalRequest(
            version=version, base_version=base, uri=uri, checks=_checks(checks),
            dense_version=dense), timeout=10)

    async def commit(self, address: str, version: int) -> None:
        await self.stub(address).Commit(pb.VersionRequest(version=version), timeout=10)

    async def drop(self, address: str, version: int) -> None:
        await self.stub(address).Drop(pb.VersionRequest(version=version), timeout=10)


def _checks(checks: tuple[float, bool]) -> pb.ValueChecks:
    max_abs, non_finite = checks
    return pb.ValueChecks(max_abs_value=max_abs, allow_non_finite=non_finite)


class Triton:
    """Explicit model control through tritonclient's gRPC repository API, on the ready
    Triton servers one pass found."""

    def __init__(self, addresses: list[str], model: str, spec: RecModelSpec):
        from tritonclient.grpc import aio as triton_aio

        self.clients = {a: triton_aio.InferenceServerClient(a) for a in addresses}
        self.model = model
        self.spec = spec

    async def close(self) -> None:
        for client in self.clients.values():
            await client.close()

    async def versions(self) -> dict[str, frozenset[int]]:
        """Per server, the dense versions READY with the spec's model config: one still
        on the repository's config (a pod that started after the last load) holds none."""
        out = {}
        for address, client in self.clients.items():
            index = await client.get_model_repository_index(as_json=True)
            ready = {int(m["version"]) for m in index.get("models", [])
                     if m.get("name") == self.model and m.get("state") == "READY"
                     and m.get("version")}
            if ready and await self._config_differs(client):
                ready = set()
            out[address] = frozenset(ready)
        return out

    async def ready_versions(self) -> frozenset[int]:
        """Dense versions READY, with the spec's config, on every Triton server."""
        common: frozenset[int] | None = None
        for ready in (await self.versions()).values():
            common = ready if common is None else common & ready
        return common or frozenset()

    def config(self, versions: list[int]) -> str:
        return triton_config.load_config(self.spec.dense, versions)

    async def load(self, version: int, keep: int | None, server: str | None = None) -> None:
        """Load `version` (keeping `keep` loaded beside it) on every server or on
        `server`, check readiness, the config and a smoke inference on the new version;
        raises on any failure."""
        versions = [version] + ([keep] if keep and keep != version else [])
        if server is not None and server not in self.clients:
            raise RuntimeError(f"Triton server {server} is not ready")
        targets = [server] if server is not None else list(self.clients)
        for address in targets:
            client = self.clients[address]
            await client.load_model(self.model, config=self.config(versions))
            if not await client.is_model_ready(self.model, str(version)):
                raise RuntimeError(f"Triton: {self.model} version {version} is not ready")
            # Checked here, so a server that reports its config differently from the spec
            # fails the load instead of being loaded again on every pass.
            differs = await self._config_differs(client)
            if differs:
                raise RuntimeError(f"Triton {address}: {self.model} loaded with {differs}")
            await self._smoke(client, version)

    async def _config_differs(self, client) -> str | None:
        reply = await client.get_model_config(self.model, as_json=True)
        return dense_config.differences(reply.get("config") or {}, self.spec.dense)

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


@contextlib.asynccontextmanager
async def triton_servers(addresses: list[str], spec: RecModelSpec):
    """A Triton driver for the ready servers at `addresses` (None when there are none),
    its channels closed after the pass."""
    if not addresses:
        yield None
        return
    triton = Triton(addresses, spec.dense.model_name, spec)
    try:
        yield triton
    finally:
        await triton.close()


_NP = {"FP32": np.float32, "FP16": np.float16, "INT64": np.int64, "INT32": np.int32}


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
            kwargs[arg] = (await secret_key(kube, namespace, ref)).decode()
    return await asyncio.to_thread(boto3.client, "s3", **kwargs)
