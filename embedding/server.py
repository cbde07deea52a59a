"""The embedding server process of one shard: `python -m embedding.server --shard-index I ...`.

Two gRPC services on separate ports: EmbeddingLookup (data plane, beside the standard
grpc.health.v1 service the kubelet probes, embedding/health.py) and EmbeddingAdmin
(embedding/admin.py: driven by the operator; a bearer token and TLS when configured).
Both run on grpc.aio; numpy work (lookups, loads, merges, delta batches) runs in thread
pools so the event loop never blocks, and numpy releases the GIL for the copies that
dominate. Settings, their flags and environment variables: embedding/config.py.

S3 endpoint and credentials come from the standard AWS_* environment variables.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2_grpc

from embedding import logs, native
from embedding.admin import AdminService, BearerToken
from embedding.config import COMMAND, MAX_IDS, ServerConfig, parse
from embedding.health import Health
from embedding.metrics import ServerMetrics
from embedding.proto import GRPC_OPTIONS, MAX_MESSAGE_BYTES
from embedding.proto import embedding_pb2 as pb
from embedding.proto import embedding_pb2_grpc as rpc
from embedding.realtime import RealtimeConsumer
from embedding.store import ShardStore, VersionError

log = logging.getLogger("embedding.server")


LOOKUP_SERVICE = "recop.embedding.v1.EmbeddingLookup"
# Requests up to this size (4,096 ids) are served on the event loop, larger ones in the
# lookup pool, so that a big request never holds up health checks and small lookups.
INLINE_REQUEST_BYTES = 32 << 10
# Reply buffers up to this size are reused from the heap (embedding/native.py): a
# 150,000-id dim-64 fp32 reply of one of 4 shards is 9.6 MB.
SERVER_HEAP_BLOCKS = 64 << 20


class LookupService:
    """EmbeddingLookup.Lookup on raw bytes: the request is parsed here, so that bytes that
    are no LookupRequest get INVALID_ARGUMENT and a message (gRPC's own deserialiser
    would answer UNKNOWN with a Python exception name), and the reply is the bytes the
    store's snapshot serialised in place (embedding/native.py), sent without a copy."""

    def __init__(self, store: ShardStore, metrics: ServerMetrics, pool: ThreadPoolExecutor,
                 max_ids: int):
        self.store = store
        self.metrics = metrics
        self.pool = pool
        self.max_ids = max_ids

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(LOOKUP_SERVICE, {
            "Lookup": grpc.unary_unary_rpc_method_handler(self.Lookup)})

    async def Lookup(self, request: bytes, context) -> bytes:
        loop = asyncio.get_running_loop()
        try:
            if len(request) <= INLINE_REQUEST_BYTES:
                # Tens of microseconds of native work: a hop to the pool and back would
                # cost more than the lookup itself (HPS's 2,000-key profile).
                return self.lookup(request)
            return await loop.run_in_executor(self.pool, self.lookup, request)
        except VersionError as err:
            code, message = grpc.StatusCode.NOT_FOUND, str(err)
        except KeyError as err:
            code, message = grpc.StatusCode.NOT_FOUND, f"unknown table {err}"
        except ValueError as err:
            code, message = grpc.StatusCode.INVALID_ARGUMENT, str(err)
        self.metrics.lookup_errors.labels(self.metrics.shard, code.name).inc()
        await context.abort(code, message)

    def lookup(self, raw: bytes) -> bytes:
        started = time.perf_counter()
        try:
            request = pb.LookupRequest.FromString(raw)
        except DecodeError:
            raise ValueError("the request is not a valid recop.embedding.v1.LookupRequest "
                             "(protobuf) message") from None
        ids = sum(len(item.ids) // 8 for item in request.tables)
        if ids > self.max_ids:
            # INVALID_ARGUMENT, not RESOURCE_EXHAUSTED: every replica would refuse it, so
            # clients must not fail over (embedding/client retries RESOURCE_EXHAUSTED).
            raise ValueError(
                f"{ids} ids in one request, above this server's limit of {self.max_ids}: "
                "split the request, or raise the limit (RecModel spec.embeddingServer."
                f"lookupLimits.maxIdsPerRequest, server flag {MAX_IDS.flag})")
        wire = request.wire_dtype
        if wire not in native.WIRE_BYTES:
            raise ValueError(f"unknown wire_dtype {wire}: one of "
                             f"{', '.join(pb.WireDtype.keys())}")
        snap = self.store.snapshot(request.version)
        queries = []
        for item in request.tables:
            if len(item.ids) % 8:
                raise ValueError(f"table {item.table}: ids are not packed int64")
            table = snap.tables.get(item.table)
            if table is None:
                raise KeyError(item.table)
            queries.append((item.table, table.dim, np.frombuffer(item.ids, "<i8")))
        rows = sum(len(q) for _, _, q in queries)
        size = native.WIRE_BYTES[wire] * sum(len(q) * dim for _, dim, q in queries) + (
            4 * rows if wire == native.INT8 else 0)
        if size > MAX_MESSAGE_BYTES:
            raise ValueError(f"the reply would be {size} bytes, above the {MAX_MESSAGE_BYTES} "
                             "byte gRPC message limit: split the request")
        reply = snap.reply([(name, q) for name, _, q in queries], wire)
        self.metrics.lookup_keys.inc(reply.keys)
        self.metrics.lookup_missing.inc(reply.missing)
        self.metrics.lookup_seconds.observe(time.perf_counter() - started)
        return reply.data


class EmbeddingServer:
    def __init__(self, config: ServerConfig):
        self.config = config
        self.store = ShardStore(config.shard_index, config.shard_count)
        self.metrics = ServerMetrics(config.shard_index)
        self.realtime = None
        if config.kafka_bootstrap:
            self.realtime = RealtimeConsumer(self.store, self.metrics, config.kafka_bootstrap,
                                             config.topic, config.realtime_start,
                                             config.stream_auth)
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
            ("grpc.max_receive_message_length", self.config.limits.max_request_bytes)])
        lookup.add_generic_rpc_handlers([LookupService(
            self.store, self.metrics, self.lookup_pool,
            self.config.limits.max_ids_per_request).handler()])
        health_pb2_grpc.add_HealthServicer_to_server(self.health.servicer, lookup)
        lookup.add_insecure_port(f"{self.config.host}:{self.config.lookup_port}")
        self._servers.append(lookup)
        self._servers.append(self.admin_server())
        for server in self._servers:
            await server.start()
        if self.config.metrics_port:
            self.metrics.serve(self.config.metrics_port, self.config.host)
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
    config = parse(argv, os.environ)
    if config.admin_token_file:
        # Fail at start, not on the first admin call, when the Secret is not mounted.
        try:
            BearerToken(config.admin_token_file).expected()
        except (OSError, ValueError) as err:
            raise SystemExit(f"{' '.join(COMMAND)}: error: admin token: {err}") from None
    return config


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
    logs.configure()
    native.keep_freed_memory(SERVER_HEAP_BLOCKS)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(parse_args()))


if __name__ == "__main__":
    main()
