"""The admin API of one shard server, driven by the operator: versions loaded in the
background beside the serving one, committed, rolled back, dropped, and reported.

A bearer token (BearerToken) guards it when configured; TLS is set up by the server.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import boto3
import grpc
from botocore.config import Config

from embedding import native
from embedding.checkpoint import ShardReader, read_manifest, split_uri
from embedding.config import ServerConfig
from embedding.health import Health
from embedding.metrics import ServerMetrics
from embedding.partition import PARTITION_FUNCTION
from embedding.proto import embedding_pb2 as pb
from embedding.proto import embedding_pb2_grpc as rpc
from embedding.realtime import RealtimeConsumer
from embedding.store import ShardStore, StateError, Table, Version, VersionError
from embedding.validation import scan_shard

log = logging.getLogger("embedding.server")


def s3_client(threads: int):
    return boto3.client("s3", config=Config(max_pool_connections=threads + 2,
                                            retries={"max_attempts": 5, "mode": "standard"}))


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
        finally:
            native.release_freed_memory()  # the load's temporaries

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
        # Refused here, not later in the background load: a caller sees why at once.
        await self._call(context, split_uri, request.uri)
        version = await self._call(context, self.store.begin, request.version, request.uri,
                                   0, request.dense_version)
        self._start(functools.partial(self._load_full, checks=request.checks), version)
        return pb.AdminReply(message=f"loading version {request.version}",
                             active_version=self.store.active)

    async def ApplyIncremental(self, request, context):
        if not request.base_version:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "base_version is required")
        await self._call(context, split_uri, request.uri)
        version = await self._call(context, self.store.begin, request.version, request.uri,
                                   request.base_version, request.dense_version)
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
        native.release_freed_memory()
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
                error=v.error, uri=v.uri, base_version=v.base_version,
                dense_version=v.dense_version))
        realtime = pb.RealtimeStatus(enabled=False)
        if self.realtime is not None:
            p50, p99 = self.realtime.freshness.quantiles()
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
