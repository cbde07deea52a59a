"""Client of the sharded embedding servers.

Routes ids to shards with the partition function, fans out one request per shard in
parallel (gRPC futures, no threads), reassembles rows in request order, fails over between
replicas of a shard, and guarantees that every row of a result comes from one version.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import grpc
import numpy as np

from embedding.partition import shard_of
from embedding.proto import GRPC_OPTIONS
from embedding.proto import embedding_pb2 as pb
from embedding.proto import embedding_pb2_grpc as rpc
from embedding.store import rows_view

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


class _Replica:
    def __init__(self, address: str):
        self.address = address
        self.channel = grpc.insecure_channel(address, options=GRPC_OPTIONS)
        self.stub = rpc.EmbeddingLookupStub(self.channel)
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
    """`shards[i]` lists the lookup addresses (host:port) of shard i's replicas."""

    def __init__(self, shards: Sequence[Sequence[str]], timeout: float = 5.0,
                 down_for: float = 2.0):
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

    def lookup(self, tables: Mapping[str, np.ndarray], version: int = 0) -> LookupResult:
        """Rows of `tables[name]` ids for every table, all read at one version (the active
        one unless `version` pins another loaded version)."""
        routes = self._route(tables)
        requests = {}
        for s in range(len(self.shards)):
            if any(len(per_shard[s]) for _, per_shard in routes.values()):
                requests[s] = pb.LookupRequest(version=version, tables=[
                    pb.TableIds(table=name, ids=ids[per_shard[s]].tobytes())
                    for name, (ids, per_shard) in routes.items()])
        replies = self._fan_out(requests)
        versions = {r.version for r in replies.values()}
        if version == 0 and len(versions) > 1:
            replies = self._one_version(requests, replies, versions)
        return self._assemble(tables, routes, replies)

    # ------------------------------------------------------------ internals

    def _route(self, tables: Mapping[str, np.ndarray]):
        """table -> (ids, [row indices of the ids owned by shard s, for each s])."""
        routes = {}
        for name, ids in tables.items():
            ids = np.asarray(ids, dtype="<i8")
            owner = shard_of(ids, len(self.shards))
            routes[name] = (ids, [np.flatnonzero(owner == s) for s in range(len(self.shards))])
        return routes

    def _fan_out(self, requests: dict[int, pb.LookupRequest]) -> dict[int, pb.LookupResponse]:
        pending = {s: (self.shards[s].order(), 0) for s in requests}
        futures = {s: self._send(pending[s][0][0], requests[s]) for s in requests}
        replies = {}
        while futures:
            shard, future = futures.popitem()
            replicas, attempt = pending[shard]
            try:
                replies[shard] = future.result()
            except grpc.RpcError as err:
                if err.code() not in _RETRYABLE:
                    raise
                replicas[attempt].down_until = time.monotonic() + self.down_for
                if attempt + 1 >= len(replicas):
                    raise NoHealthyReplica(f"shard {shard}: no replica answered: "
                                           f"{err.code().name} {err.details()}") from err
                pending[shard] = (replicas, attempt + 1)
                futures[shard] = self._send(replicas[attempt + 1], requests[shard])
        return replies

    def _send(self, replica: _Replica, request: pb.LookupRequest):
        return replica.stub.Lookup.future(request, timeout=self.timeout)

    def _one_version(self, requests, replies, versions):
        """Shards answered from different versions (a commit is rolling across them):
        re-read the odd ones pinned to the newest version, else all to the oldest one
        (a shard keeps its previous version until the operator drops it)."""
        for target in (max(versions), min(versions)):
            redo = {s: pb.LookupRequest(version=target, tables=r.tables)
                    for s, r in requests.items() if replies[s].version != target}
            try:
                return {**replies, **self._fan_out(redo)}
            except grpc.RpcError as err:
                if err.code() != grpc.StatusCode.NOT_FOUND:
                    raise
        raise MixedVersions(f"shards answered versions {sorted(versions)} and share none")

    @staticmethod
    def _assemble(tables, routes, replies) -> LookupResult:
        out: dict[str, np.ndarray] = {}
        missing = dict.fromkeys(tables, 0)
        version = 0
        for shard, reply in replies.items():
            version = reply.version
            flat = np.frombuffer(reply.values, np.float32)
            offset = 0
            for item in reply.tables:
                rows = flat[offset:offset + item.rows * item.dim].reshape(item.rows, item.dim)
                offset += rows.size
                ids, per_shard = routes[item.table]
                if item.table not in out:
                    # Every id routes to exactly one shard, so every row gets written.
                    out[item.table] = np.empty((len(ids), item.dim), np.float32)
                _scatter_rows(out[item.table], per_shard[shard], rows)
                missing[item.table] += item.missing
        for name, (ids, _) in routes.items():
            # A table none of whose ids reached a server (empty id list).
            out.setdefault(name, np.zeros((len(ids), 0), np.float32))
        return LookupResult(version=version, values=out, missing=missing)


def _scatter_rows(out: np.ndarray, index: np.ndarray, rows: np.ndarray) -> None:
    """out[index] = rows, copying whole rows (see rows_view)."""
    if len(index):
        np.put(rows_view(out), index, rows_view(np.ascontiguousarray(rows)))
