"""The embedding server process of one shard: `python -m embedding.server --shard-index I ...`.

Two gRPC services on separate loopback ports: EmbeddingLookup (data plane, beside the
standard grpc.health.v1 service the kubelet probes) and EmbeddingAdmin (driven by the
operator; a bearer token and TLS when configured). Both run on grpc.aio; numpy work
(lookups, loads, merges, delta batches) runs in thread pools so the event loop never
blocks, and numpy releases the GIL for the copies that dominate.

S3 endpoint and credentials come from the standard AWS_* environment variables.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import hmac
import logging
import os
import time
import typing
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import boto3
import grpc
import numpy as np
from botocore.config import Config
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from devstack.common import LOOPBACK
from embedding.checkpoint import ShardReader, read_manifest
from embedding.metrics import ServerMetrics
from embedding.partition import PARTITION_FUNCTION
from embedding.proto import GRPC_OPTIONS, MAX_MESSAGE_BYTES
from embedding.proto import embedding_pb2 as pb
from embedding.proto import embedding_pb2_grpc as rpc
from embedding.realtime import KafkaAuth, RealtimeConsumer
from embedding.store import ShardStore, StateError, Table, Version, VersionError
from embedding.validation import scan_shard
from recop.api.recmodel import LookupLimits, StreamAuth

log = logging.getLogger("embedding.server")

LOOKUP_SERVICE = pb.DESCRIPTOR.services_by_name["EmbeddingLookup"].full_name
# Always SERVING while the process answers: the liveness probe asks for it, so a server
# that has no version yet (not ready) is not restarted for it.
LIVENESS_SERVICE = "liveness"
_DEFAULT_LIMITS = LookupLimits()
SASL_MECHANISMS = typing.get_args(StreamAuth.model_fields["mechanism"].annotation)


@dataclass
class ServerConfig:
    shard_index: int
    shard_count: int
    lookup_port: int
    admin_port: int
    metrics_port: int = 0  # 0: no metrics endpoint
    kafka_bootstrap: str = ""  # empty: no real-time updates
    topic: str = "recop-embedding-deltas"
    realtime_start: str = "latest"
    lookup_threads: int = 4
    load_threads: int = 10
    host: str = LOOPBACK
    max_ids: int = _DEFAULT_LIMITS.max_ids_per_request
    max_request_bytes: int = _DEFAULT_LIMITS.max_request_bytes
    admin_token_file: str = ""  # empty: the admin API takes any caller (loopback, dev)
    admin_tls_cert: str = ""  # PEM files; empty: plaintext admin API
    admin_tls_key: str = ""
    kafka_auth: KafkaAuth | None = None  # None: PLAINTEXT


def s3_client(threads: int):
    return boto3.client("s3", config=Config(max_pool_connections=threads + 2,
                                            retries={"max_attempts": 5, "mode": "standard"}))


class LookupService(rpc.EmbeddingLookupServicer):
    def __init__(self, store: ShardStore, metrics: ServerMetrics, pool: ThreadPoolExecutor,
                 max_ids: int):
        self.store = store
        self.metrics = metrics
        self.pool = pool
        self.max_ids = max_ids

    async def Lookup(self, request, context):
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.pool, self.lookup, request)
        except VersionError as err:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(err))
        except KeyError as err:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown table {err}")
        except ValueError as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))

    def lookup(self, request: pb.LookupRequest) -> pb.LookupResponse:
        started = time.perf_counter()
        ids = sum(len(item.ids) // 8 for item in request.tables)
        if ids > self.max_ids:
            # INVALID_ARGUMENT, not RESOURCE_EXHAUSTED: every replica would refuse it, so
            # clients must not fail over (embedding/client retries RESOURCE_EXHAUSTED).
            raise ValueError(
                f"{ids} ids in one request, above this server's limit of {self.max_ids}: "
                "split the request, or raise the limit (RecModel "
                "spec.embeddingServer.lookupLimits.maxIdsPerRequest, server flag --max-ids)")
        snap = self.store.snapshot(request.version)
        queries = []
        for item in request.tables:
            if len(item.ids) % 8:
                raise ValueError(f"table {item.table}: ids are not packed int64")
            table = snap.tables.get(item.table)
            if table is None:
                raise KeyError(item.table)
            queries.append((item.table, table.dim, np.frombuffer(item.ids, "<i8")))
        size = 4 * sum(len(q) * dim for _, dim, q in queries)
        if size > MAX_MESSAGE_BYTES:
            raise ValueError(f"the reply would be {size} bytes, above the {MAX_MESSAGE_BYTES} "
                             "byte gRPC message limit: split the request")
        out = np.empty(size // 4, np.float32)
        results, offset, keys, missing_total = [], 0, 0, 0
        for name, dim, query in queries:
            view = out[offset:offset + len(query) * dim].reshape(len(query), dim)
            missing = snap.lookup(name, query, view)
            results.append(pb.TableValues(table=name, dim=dim, rows=len(query), missing=missing))
            offset += view.size
            keys += len(query)
            missing_total += missing
        reply = pb.LookupResponse(version=snap.version, values=out.tobytes(), tables=results)
        self.metrics.lookup_keys.inc(keys)
        self.metrics.lookup_missing.inc(missing_total)
        self.metrics.lookup_seconds.observe(time.perf_counter() - started)
        return reply


class Health:
    """grpc.health.v1 on the lookup port: the lookup service (and the server overall)
    serves once a version is active; LIVENESS_SERVICE serves while the process runs."""

    def __init__(self):
        self.servicer = health.aio.HealthServicer()

    async def follow(self, active: int) -> None:
        status = (health_pb2.HealthCheckResponse.SERVING if active
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        for service in (health.OVERALL_HEALTH, LOOKUP_SERVICE):
            await self.servicer.set(service, status)
        await self.servicer.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)


class BearerToken(grpc.aio.ServerInterceptor):
    """Refuses admin calls without metadata `authorization: Bearer <token>`.

    The token file (a mounted Secret) is read on every call: the kubelet updates a mounted
    Secret in place, so a rotated token takes effect without a restart. Calls are few (the
    operator's polls), so the read costs nothing that matters.
    """

    def __init__(self, path: str):
        self.path = path

    def expected(self) -> bytes:
        with open(self.path, "rb") as f:
            token = f.read().strip()
        if not token:
            raise ValueError(f"{self.path} is empty")
        return token

    def problem(self, header: str | None) -> str | None:
        if header is None:
            return ("admin API: missing `authorization: Bearer <token>` metadata; the token "
                    "is the one in the Secret named by the RecModel's "
                    "spec.embeddingServer.adminAuth.tokenSecret")
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            return "admin API: the authorization metadata must read `Bearer <token>`"
        try:
            expected = self.expected()
        except (OSError, ValueError) as err:
            log.error("admin token unreadable: %s", err)
            return "admin API: this server cannot read its own token file"
        if not hmac.compare_digest(presented.strip().encode(), expected):
            return "admin API: wrong bearer token"
        return None

    async def intercept_service(self, continuation, details):
        metadata = dict(details.invocation_metadata or ())
        problem = self.problem(metadata.get("authorization"))
        if problem is None:
            return await continuation(details)
        log.warning("refused admin call %s: %s", details.method, problem)
        return _refusal(problem)


def _refusal(message: str) -> grpc.RpcMethodHandler:
    async def refuse(request, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    return grpc.unary_unary_rpc_method_handler(refuse)


class AdminService(rpc.EmbeddingAdminServicer):
    """Admin API. Loads run in the background; the operator polls Status for progress."""

    def __init__(self, store: ShardStore, metrics: ServerMetrics, config: ServerConfig,
                 realtime: RealtimeConsumer | None, health: Health):
        self.store = store
        self.metrics = metrics
        self.config = config
        self.realtime = realtime
        self.health = health
        self.loader = ThreadPoolExecutor(2, thread_name_prefix="loader")
        self._jobs: set[asyncio.Future] = set()

    def _start(self, fn, version: Version) -> None:
        job = asyncio.get_running_loop().run_in_executor(self.loader, self._guard, fn, version)
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)

    def _guard(self, fn, version: Version) -> None:
        try:
            fn(version)
            log.info("version %d ready", version.number)
        except Exception as err:  # any failure is reported through Status, not lost
            log.exception("version %d failed", version.number)
            self.store.fail(version, f"{type(err).__name__}: {err}")

    async def _call(self, context, fn, *args):
        try:
            return fn(*args)
        except VersionError as err:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(err))
        except StateError as err:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(err))
        except ValueError as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))

    async def LoadFull(self, request, context):
        version = await self._call(context, self.store.begin, request.version, request.uri)
        self._start(functools.partial(self._load_full, checks=request.checks), version)
        return pb.AdminReply(message=f"loading version {request.version}",
                             active_version=self.store.active)

    async def ApplyIncremental(self, request, context):
        if not request.base_version:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "base_version is required")
        version = await self._call(context, self.store.begin, request.version, request.uri,
                                   request.base_version)
        self._start(functools.partial(self._apply_incremental, checks=request.checks),
                    version)
        return pb.AdminReply(message=f"building version {request.version} from "
                                     f"{request.base_version}", active_version=self.store.active)

    async def Commit(self, request, context):
        previous = await self._call(context, self.store.activate, request.version)
        self._refresh_metrics()
        await self.health.follow(self.store.active)
        return pb.AdminReply(message=f"active {request.version} (was {previous})",
                             active_version=self.store.active)

    async def Rollback(self, request, context):
        return await self.Commit(request, context)

    async def Drop(self, request, context):
        await self._call(context, self.store.drop, request.version)
        self._refresh_metrics()
        await self.health.follow(self.store.active)
        return pb.AdminReply(message=f"dropped {request.version}",
                             active_version=self.store.active)

    async def Status(self, request, context):
        self._refresh_metrics()
        versions = []
        for v in sorted(self.store.versions.values(), key=lambda v: v.number):
            tables = []
            snap = v.snapshot
            if snap is not None:
                memory = v.memory_by_table
                tables = [pb.TableStatus(name=n, dim=t.dim, dtype=t.dtype, rows=len(t.ids),
                                         memory_bytes=memory[n],
                                         overlay_rows=len(snap.overlays[n].ids))
                          for n, t in snap.tables.items()]
            versions.append(pb.VersionStatus(
                version=v.number, state=v.state.value, progress=v.progress,
                bytes_loaded=v.bytes_loaded, bytes_total=v.bytes_total, tables=tables,
                error=v.error, uri=v.uri, base_version=v.base_version))
        realtime = pb.RealtimeStatus(enabled=False)
        if self.realtime is not None:
            p50, p99 = self.realtime.freshness_quantiles()
            realtime = pb.RealtimeStatus(
                enabled=True, topic=self.realtime.topic, assigned=self.realtime.assigned,
                lag=self.realtime.lag, applied=self.realtime.applied,
                malformed=self.realtime.malformed, freshness_p50_seconds=p50,
                freshness_p99_seconds=p99)
        return pb.StatusReply(
            shard_index=self.store.shard_index, shard_count=self.store.shard_count,
            active_version=self.store.active, versions=versions, realtime=realtime,
            memory_bytes=self.store.memory_bytes())

    def _refresh_metrics(self) -> None:
        self.metrics.set_versions(self.store.active, list(self.store.versions.values()))

    # ------------------------------------------------------------ background work

    def _manifest(self, s3, version: Version, kind: str):
        manifest = read_manifest(s3, version.uri)
        if manifest.kind != kind:
            raise ValueError(f"{version.uri} is a {manifest.kind} checkpoint, not {kind}")
        if manifest.version != version.number:
            raise ValueError(f"{version.uri} holds version {manifest.version}")
        if manifest.shard_count != self.store.shard_count:
            raise ValueError(f"checkpoint has {manifest.shard_count} shards, "
                             f"server expects {self.store.shard_count}")
        if manifest.partition != PARTITION_FUNCTION:
            raise ValueError(f"unknown partition function {manifest.partition!r}")
        version.bytes_total = manifest.shard_bytes(self.store.shard_index)
        return manifest

    def _read(self, s3, version: Version, manifest):
        return ShardReader(s3, version.uri, manifest, self.store.shard_index,
                           threads=self.config.load_threads,
                           on_bytes=version.add_bytes).read_all()

    @staticmethod
    def _check(data, checks: pb.ValueChecks) -> None:
        """The request's value checks on every row read; unset, NaN/Inf are refused."""
        if checks.max_abs_value > 0 or not checks.allow_non_finite:
            scan_shard(data, checks.max_abs_value, checks.allow_non_finite)

    def _load_full(self, version: Version, checks: pb.ValueChecks) -> None:
        s3 = s3_client(self.config.load_threads)
        manifest = self._manifest(s3, version, "full")
        data = self._read(s3, version, manifest)
        self._check(data, checks)
        tables = {name: Table.from_shard(name, manifest.tables[name].dim,
                                         manifest.tables[name].dtype, shard)
                  for name, shard in data.items()}
        self.store.finish(version, tables, stream_offsets=manifest.offsets_on(self.config.topic))

    def _apply_incremental(self, version: Version, checks: pb.ValueChecks) -> None:
        s3 = s3_client(self.config.load_threads)
        manifest = self._manifest(s3, version, "incremental")
        if manifest.base_version != version.base_version:
            raise ValueError(f"checkpoint is against {manifest.base_version}, "
                             f"not {version.base_version}")
        base = self.store.snapshot(version.base_version)
        for name, entry in manifest.tables.items():
            table = base.tables.get(name)
            if table is None or (table.dim, table.dtype) != (entry.dim, entry.dtype):
                raise ValueError(f"table {name} differs from the base version's")
        started = time.monotonic()
        data = self._read(s3, version, manifest)
        self._check(data, checks)
        fetched = time.monotonic()
        # Unchanged tables share the base's (immutable) arrays.
        tables = dict(base.tables)
        for name, shard in data.items():
            tables[name] = tables[name].merged(shard)
        self.store.finish(version, tables, stream_offsets=manifest.offsets_on(self.config.topic))
        log.info("version %d: fetched %d bytes in %.2fs, merged in %.2fs", version.number,
                 version.bytes_total, fetched - started, time.monotonic() - fetched)


class EmbeddingServer:
    def __init__(self, config: ServerConfig):
        self.config = config
        self.store = ShardStore(config.shard_index, config.shard_count)
        self.metrics = ServerMetrics(config.shard_index)
        self.realtime = None
        if config.kafka_bootstrap:
            self.realtime = RealtimeConsumer(self.store, self.metrics, config.kafka_bootstrap,
                                             config.topic, config.realtime_start,
                                             config.kafka_auth)
        self.lookup_pool = ThreadPoolExecutor(config.lookup_threads, thread_name_prefix="lookup")
        self.health = Health()
        self._servers: list[grpc.aio.Server] = []
        self._realtime_task: asyncio.Task | None = None
        self._metrics_task: asyncio.Task | None = None

    async def start(self) -> None:
        await self.health.follow(self.store.active)
        # gRPC refuses a larger request before it is read into memory, with
        # RESOURCE_EXHAUSTED "received message larger than max (N vs. M)".
        lookup = grpc.aio.server(options=[
            *(o for o in GRPC_OPTIONS if o[0] != "grpc.max_receive_message_length"),
            ("grpc.max_receive_message_length", self.config.max_request_bytes)])
        rpc.add_EmbeddingLookupServicer_to_server(
            LookupService(self.store, self.metrics, self.lookup_pool, self.config.max_ids),
            lookup)
        health_pb2_grpc.add_HealthServicer_to_server(self.health.servicer, lookup)
        lookup.add_insecure_port(f"{self.config.host}:{self.config.lookup_port}")
        self._servers.append(lookup)
        self._servers.append(self.admin_server())
        for server in self._servers:
            await server.start()
        if self.config.metrics_port:
            self.metrics.serve(self.config.metrics_port)
        if self.realtime is not None:
            self._realtime_task = asyncio.create_task(self.realtime.run())
        self._metrics_task = asyncio.create_task(self._refresh_metrics())

    async def _refresh_metrics(self) -> None:
        """Per-version gauges (load progress, memory) follow the store once a second, so a
        scrape shows a long load advancing without anyone calling Status."""
        while True:
            self.metrics.set_versions(self.store.active, list(self.store.versions.values()))
            await asyncio.sleep(1)

    def admin_server(self) -> grpc.aio.Server:
        """The admin endpoint: a bearer token and TLS when configured."""
        config = self.config
        interceptors = [BearerToken(config.admin_token_file)] if config.admin_token_file else []
        admin = grpc.aio.server(options=GRPC_OPTIONS, interceptors=interceptors)
        rpc.add_EmbeddingAdminServicer_to_server(
            AdminService(self.store, self.metrics, config, self.realtime, self.health), admin)
        address = f"{config.host}:{config.admin_port}"
        if config.admin_tls_cert:
            with open(config.admin_tls_key, "rb") as key, open(config.admin_tls_cert,
                                                                 "rb") as cert:
                pair = (key.read(), cert.read())
            admin.add_secure_port(address, grpc.ssl_server_credentials([pair]))
        else:
            admin.add_insecure_port(address)
        return admin

    async def wait(self) -> None:
        waits = [asyncio.create_task(s.wait_for_termination()) for s in self._servers]
        if self._realtime_task is not None:
            waits.append(self._realtime_task)
        done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()  # a crashed real-time consumer ends the process loudly

    async def stop(self) -> None:
        for task in (self._realtime_task, self._metrics_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for server in self._servers:
            await server.stop(grace=1)


def parse_args(argv=None) -> ServerConfig:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="python -m embedding.server")
    p.add_argument("--shard-index", type=int, default=int(env("RECOP_SHARD_INDEX", "0")))
    p.add_argument("--shard-count", type=int, default=int(env("RECOP_SHARD_COUNT", "1")))
    p.add_argument("--lookup-port", type=int, default=int(env("RECOP_LOOKUP_PORT", "50051")))
    p.add_argument("--admin-port", type=int, default=int(env("RECOP_ADMIN_PORT", "50052")))
    p.add_argument("--metrics-port", type=int, default=int(env("RECOP_METRICS_PORT", "0")))
    p.add_argument("--kafka-bootstrap", default=env("RECOP_KAFKA_BOOTSTRAP", ""))
    p.add_argument("--topic", default=env("RECOP_DELTA_TOPIC", "recop-embedding-deltas"))
    p.add_argument("--realtime-start", choices=["latest", "earliest"],
                   default=env("RECOP_REALTIME_START", "latest"))
    p.add_argument("--kafka-security-protocol",
                   choices=["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL"],
                   default=env("RECOP_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT"),
                   help="SASL_*: the password comes from RECOP_KAFKA_PASSWORD")
    p.add_argument("--kafka-sasl-mechanism", choices=SASL_MECHANISMS,
                   default=env("RECOP_KAFKA_SASL_MECHANISM"))
    p.add_argument("--kafka-username", default=env("RECOP_KAFKA_USERNAME", ""))
    p.add_argument("--lookup-threads", type=int, default=4)
    p.add_argument("--load-threads", type=int, default=10)
    p.add_argument("--host", default=env("RECOP_BIND_HOST", LOOPBACK))
    p.add_argument("--max-ids", type=int, help="most ids one lookup request may carry",
                   default=int(env("RECOP_LOOKUP_MAX_IDS", _DEFAULT_LIMITS.max_ids_per_request)))
    p.add_argument("--max-request-bytes", type=int, help="largest lookup request accepted",
                   default=int(env("RECOP_LOOKUP_MAX_REQUEST_BYTES",
                                   _DEFAULT_LIMITS.max_request_bytes)))
    p.add_argument("--admin-token-file", default=env("RECOP_ADMIN_TOKEN_FILE", ""),
                   help="file holding the bearer token admin calls must carry")
    p.add_argument("--admin-tls-cert", default=env("RECOP_ADMIN_TLS_CERT", ""),
                   help="PEM certificate (chain) of the admin endpoint; TLS when set")
    p.add_argument("--admin-tls-key", default=env("RECOP_ADMIN_TLS_KEY", ""))
    a = p.parse_args(argv)
    if not 0 <= a.shard_index < a.shard_count:
        p.error("need 0 <= shard-index < shard-count")
    try:
        LookupLimits(max_ids_per_request=a.max_ids, max_request_bytes=a.max_request_bytes)
    except ValueError as err:
        p.error(f"lookup limits: {err}")
    if bool(a.admin_tls_cert) != bool(a.admin_tls_key):
        p.error("--admin-tls-cert and --admin-tls-key go together")
    if a.admin_token_file:
        # Fail at start, not on the first admin call, when the Secret is not mounted.
        try:
            BearerToken(a.admin_token_file).expected()
        except (OSError, ValueError) as err:
            p.error(f"admin token: {err}")
    return ServerConfig(a.shard_index, a.shard_count, a.lookup_port, a.admin_port,
                        a.metrics_port, a.kafka_bootstrap, a.topic, a.realtime_start,
                        a.lookup_threads, a.load_threads, a.host, a.max_ids,
                        a.max_request_bytes, a.admin_token_file, a.admin_tls_cert,
                        a.admin_tls_key, _kafka_auth(p, a))


def _kafka_auth(p: argparse.ArgumentParser, a: argparse.Namespace) -> KafkaAuth | None:
    if a.kafka_security_protocol == "PLAINTEXT":
        return None
    # Only from the environment: a flag would show the password to anyone who can list
    # processes.
    password = os.environ.get("RECOP_KAFKA_PASSWORD", "")
    if not (a.kafka_sasl_mechanism and a.kafka_username and password):
        p.error(f"{a.kafka_security_protocol} needs --kafka-sasl-mechanism, "
                "--kafka-username and RECOP_KAFKA_PASSWORD")
    return KafkaAuth(a.kafka_security_protocol, a.kafka_sasl_mechanism, a.kafka_username,
                     password)


async def serve(config: ServerConfig) -> None:
    server = EmbeddingServer(config)
    await server.start()
    log.info("shard %d/%d: lookup :%d admin :%d (%s, %s)", config.shard_index,
             config.shard_count, config.lookup_port, config.admin_port,
             "token" if config.admin_token_file else "no token",
             "TLS" if config.admin_tls_cert else "plaintext")
    try:
        await server.wait()
    finally:
        await server.stop()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(parse_args()))


if __name__ == "__main__":
    main()
