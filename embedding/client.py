"""Client of the sharded embedding servers.

Routes ids to shards with the partition function, fans out one request per shard in
parallel (gRPC futures, no threads), reassembles rows in request order, fails over between
replicas of a shard, and guarantees that every row of a result comes from one version.
Replies are not parsed by protobuf: their rows are read in place from the received bytes
and written once, dequantised to fp32, into the result (embedding/native.py).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import grpc
import numpy as np

from embedding import native
from embedding.native import ParsedReply
from embedding.proto import GRPC_OPTIONS
from embedding.proto import embedding_pb2 as pb

LOOKUP_METHOD = "/recop.embedding.v1.EmbeddingLookup/Lookup"
# Rows on the wire: fp32 as stored, or half / a quarter of the bytes (int8 adds a scale
# per row); the result is fp32 either way.
WIRE_DTYPES = {"fp32": pb.WIRE_FP32, "fp16": pb.WIRE_FP16, "int8": pb.WIRE_INT8}

# Errors after which another replica may answer; others (NOT_FOUND, INVALID_ARGUMENT) are
# the same on every replica.
_RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
              grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED}


class EmbeddingLookupFailed(RuntimeError):
    pass


class NoHealthyReplica(EmbeddingLookupFailed):
    pass


class MixedVersions(EmbeddingLookupFailed):
    """The shards share no version (one was dropped mid-rollout): retry later."""


@dataclass
class LookupResult:
    version: int
    values: dict[str, np.ndarray]  # table -> [len(ids), dim] fp32, in request order
    missing: dict[str, int]
    # The dense model version paired with `version` (0: none named): what an entry model
    # runs the dense half at, so that one answer never mixes two versions.
    dense_version: int = 0
    # Shards no replica answered, whose ids got zero rows (lookup's `default_rows`).
    defaulted_shards: list[int] = field(default_factory=list)


class _Replica:
    def __init__(self, address: str):
        self.address = address
        self.channel = grpc.insecure_channel(address, options=GRPC_OPTIONS)
        # The reply stays bytes (no response deserialiser): see _assemble.
        self.lookup = self.channel.unary_unary(
            LOOKUP_METHOD, request_serializer=pb.LookupRequest.SerializeToString)
        self.down_until = 0.0


class _Shard:
    def __init__(self, addresses: Sequence[str]):
        if not addresses:
            raise ValueError("a shard needs at least one replica address")
        self.replicas = [_Replica(a) for a in addresses]
        self._turn = itertools.count()

    def order(self) -> list[_Replica]:
        """Healthy replicas first (rotating, to spread load), then the ones marked down."""
        start = next(self._turn) % len(self.replicas)
        rotated = self.replicas[start:] + self.replicas[:start]
        now = time.monotonic()
        return sorted(rotated, key=lambda r: r.down_until > now)


class EmbeddingClient:
    """`shards[i]` lists the lookup addresses (host:port) of shard i's replicas.

    `keep_freed_memory` (default on) keeps freed large buffers in this process's heap
    (glibc mallopt, process-wide): each lookup receives and returns buffers of the same
    sizes, and faulting fresh pages in costs more than the copies (embedding/native.py).
    """

    def __init__(self, shards: Sequence[Sequence[str]], timeout: float = 5.0,
                 down_for: float = 2.0, keep_freed_memory: bool = True):
        if keep_freed_memory:
            native.keep_freed_memory()
        self.shards = [_Shard(addresses) for addresses in shards]
        self.timeout = timeout
        self.down_for = down_for

    def close(self) -> None:
        for shard in self.shards:
            for replica in shard.replicas:
                replica.channel.close()

    def __enter__(self) -> EmbeddingClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def lookup(self, tables: Mapping[str, np.ndarray], version: int = 0,
               wire_dtype: str = "fp32",
               default_rows: Mapping[str, int] | None = None) -> LookupResult:
        """Rows of `tables[name]` ids for every table, all read at one version (the active
        one unless `version` pins another loaded version). `wire_dtype` fp16 or int8 asks
        the servers for compact rows (half or a quarter of the bytes), dequantised here.
        `default_rows` (table -> dim): a shard none of whose replicas answers gives zero
        rows for its ids (LookupResult.defaulted_shards) instead of NoHealthyReplica, as
        long as one shard answers."""
        wire = WIRE_DTYPES.get(wire_dtype)
        if wire is None:
            raise ValueError(f"wire_dtype {wire_dtype!r}: one of {', '.join(WIRE_DTYPES)}")
        routes = self._route(tables)
        requests = {}
        for s in range(len(self.shards)):
            if any(len(route.packed[s]) for route in routes.values()):
                requests[s] = pb.LookupRequest(version=version, wire_dtype=wire, tables=[
                    pb.TableIds(table=name, ids=route.packed[s])
                    for name, route in routes.items()])
        replies, defaulted = self._fan_out(requests, default_rows is not None)
        versions = {r.version for _, r in replies.values()}
        if version == 0 and len(versions) > 1:
            replies = self._one_version(requests, replies, versions)
        result = self._assemble(tables, routes, replies)
        for name, route in routes.items():
            if defaulted and result.values[name].shape[1] == 0:
                # Every shard that holds this table's ids is down: all its rows default.
                result.values[name] = np.zeros((route.size, default_rows[name]), np.float32)
            for shard in defaulted:
                result.values[name][route.rows_of(shard)] = 0
        result.defaulted_shards = sorted(defaulted)
        return result

    # ------------------------------------------------------------ internals

    def _route(self, tables: Mapping[str, np.ndarray]) -> dict[str, _Route]:
        routes = {}
        for name, ids in tables.items():
            ids = np.ascontiguousarray(ids, dtype="<i8")
            order, starts, packed = native.route(ids, len(self.shards))
            routes[name] = _Route(len(ids), order, starts, packed)
        return routes

    def _fan_out(self, requests: dict[int, pb.LookupRequest], tolerate: bool = False
                 ) -> tuple[dict[int, tuple[bytes, ParsedReply]], set[int]]:
        """The replies by shard, and (with `tolerate`) the shards no replica answered."""
        pending = {s: (self.shards[s].order(), 0) for s in requests}
        futures = {s: self._send(pending[s][0][0], requests[s]) for s in requests}
        replies, unanswered = {}, set()
        while futures:
            shard, future = futures.popitem()
            replicas, attempt = pending[shard]
            try:
                raw = future.result()
                replies[shard] = (raw, native.parse_reply(raw))
            except grpc.RpcError as err:
                if err.code() not in _RETRYABLE:
                    raise
                replicas[attempt].down_until = time.monotonic() + self.down_for
                if attempt + 1 < len(replicas):
                    pending[shard] = (replicas, attempt + 1)
                    futures[shard] = self._send(replicas[attempt + 1], requests[shard])
                elif tolerate:
                    unanswered.add(shard)
                else:
                    raise NoHealthyReplica(f"shard {shard}: no replica answered: "
                                           f"{err.code().name} {err.details()}") from err
        if unanswered and not replies:
            raise NoHealthyReplica(f"shards {sorted(unanswered)}: no replica answered")
        return replies, unanswered

    def _send(self, replica: _Replica, request: pb.LookupRequest):
        return replica.lookup.future(request, timeout=self.timeout)

    def _one_version(self, requests, replies, versions):
        """Shards answered from different versions (a commit is rolling across them):
        re-read the odd ones pinned to the newest version, else all to the oldest one
        (a shard keeps its previous version until the operator drops it)."""
        for target in (max(versions), min(versions)):
            redo = {s: pb.LookupRequest(version=target, wire_dtype=requests[s].wire_dtype,
                                        tables=requests[s].tables)
                    for s, (_, reply) in replies.items() if reply.version != target}
            try:
                return {**replies, **self._fan_out(redo)[0]}
            except grpc.RpcError as err:
                if err.code() != grpc.StatusCode.NOT_FOUND:
                    raise
        raise MixedVersions(f"shards answered versions {sorted(versions)} and share none")

    @staticmethod
    def _assemble(tables, routes: dict[str, _Route], replies) -> LookupResult:
        out: dict[str, np.ndarray] = {}
        missing = dict.fromkeys(tables, 0)
        version = dense_version = 0
        for shard, (raw, reply) in replies.items():
            version, dense_version = reply.version, reply.dense_version
            for i, item in enumerate(reply.tables):
                route = routes[item.table]
                if item.table not in out:
                    # Every id routes to exactly one shard, so every row gets written.
                    out[item.table] = np.empty((route.size, item.dim), np.float32)
                native.scatter_rows(out[item.table], route.rows_of(shard), raw, reply, i)
                missing[item.table] += item.missing
        for name, route in routes.items():
            # A table none of whose ids reached a server (empty id list).
            out.setdefault(name, np.zeros((route.size, 0), np.float32))
        return LookupResult(version=version, values=out, missing=missing,
                            dense_version=dense_version)


@dataclass(frozen=True)
class _Route:
    """One table's ids split by shard (embedding/native.py `route`)."""

    size: int
    order: np.ndarray  # request positions grouped by shard
    starts: list[int]  # shard s's positions are order[starts[s]:starts[s + 1]]
    packed: list[bytes]  # shard s's ids, packed little-endian int64

    def rows_of(self, shard: int) -> np.ndarray:
        return self.order[self.starts[shard]:self.starts[shard + 1]]
