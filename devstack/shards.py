"""A local set of shard server processes and the two-phase update an operator performs.

Used by the integration tests and the benchmarks; `AdminClient` is the admin API seen
from the operator's side (one stub per server process). `LocalAdminAuth` starts the
servers with a bearer token and/or TLS, as a RecModel's adminAuth does in a cluster.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from devstack.common import LOOPBACK, ManagedProcess, free_port, remove_state, state_dir
from embedding import config as contract
from embedding.proto import GRPC_OPTIONS
from embedding.proto import embedding_pb2 as pb
from embedding.proto import embedding_pb2_grpc as rpc


@dataclass(frozen=True)
class LocalAdminAuth:
    """What local servers' admin API asks of callers: a bearer token, and TLS with a
    certificate valid for 127.0.0.1 (its own CA: callers verify against it)."""

    token: str | None = None
    tls_cert: bytes | None = None  # PEM
    tls_key: bytes | None = None  # PEM

    def server_args(self, directory: Path) -> list[str]:
        """Server flags, with the secrets written to owner-only files in `directory`."""
        args = []
        for option, name, value in (
                (contract.ADMIN_TOKEN_FILE, "admin-token", self.token),
                (contract.ADMIN_TLS_CERT, "admin-tls.crt", self.tls_cert),
                (contract.ADMIN_TLS_KEY, "admin-tls.key", self.tls_key)):
            if value:
                path = directory / name
                path.touch(mode=0o600)
                path.write_bytes(value.encode() if isinstance(value, str) else value)
                args += [option.flag, str(path)]
        return args


class AdminClient:
    def __init__(self, address: str, token: str | None = None, ca_pem: bytes | None = None):
        self.address = address
        self.channel = (grpc.secure_channel(address, grpc.ssl_channel_credentials(ca_pem),
                                            options=GRPC_OPTIONS) if ca_pem
                        else grpc.insecure_channel(address, options=GRPC_OPTIONS))
        self.stub = rpc.EmbeddingAdminStub(self.channel)
        self.metadata = (("authorization", f"Bearer {token}"),) if token else None

    def load_full(self, version: int, uri: str, dense: int = 0) -> pb.AdminReply:
        return self.stub.LoadFull(pb.LoadFullRequest(version=version, uri=uri,
                                                     dense_version=dense),
                                  metadata=self.metadata)

    def apply_incremental(self, version: int, base: int, uri: str,
                          dense: int = 0) -> pb.AdminReply:
        return self.stub.ApplyIncremental(pb.ApplyIncrementalRequest(
            version=version, base_version=base, uri=uri, dense_version=dense),
            metadata=self.metadata)

    def commit(self, version: int) -> pb.AdminReply:
        return self.stub.Commit(pb.VersionRequest(version=version), metadata=self.metadata)

    def rollback(self, version: int) -> pb.AdminReply:
        return self.stub.Rollback(pb.VersionRequest(version=version), metadata=self.metadata)

    def drop(self, version: int) -> pb.AdminReply:
        return self.stub.Drop(pb.VersionRequest(version=version), metadata=self.metadata)

    def status(self) -> pb.StatusReply:
        return self.stub.Status(pb.StatusRequest(), metadata=self.metadata)

    def version(self, number: int) -> pb.VersionStatus | None:
        return next((v for v in self.status().versions if v.version == number), None)

    def wait_ready(self, number: int, timeout: float = 120) -> pb.VersionStatus:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            v = self.version(number)
            if v is not None and v.state in ("ready", "active"):
                return v
            if v is not None and v.state == "failed":
                raise RuntimeError(f"{self.address}: version {number} failed: {v.error}")
            time.sleep(0.02)
        raise TimeoutError(f"{self.address}: version {number} not ready in {timeout}s")

    def close(self) -> None:
        self.channel.close()


@dataclass
class ShardProcess:
    shard_index: int
    lookup_port: int
    admin_port: int
    metrics_port: int
    process: ManagedProcess
    auth: LocalAdminAuth = LocalAdminAuth()
    admin: AdminClient = field(init=False)

    def __post_init__(self):
        self.admin = AdminClient(f"{LOOPBACK}:{self.admin_port}", self.auth.token,
                                 self.auth.tls_cert)

    @property
    def lookup_address(self) -> str:
        return f"{LOOPBACK}:{self.lookup_port}"

    def stop(self) -> None:
        self.admin.close()
        self.process.stop()
        remove_state(self.process.name)


def start_shard(shard_index: int, shard_count: int, env: dict[str, str] | None = None,
                kafka_bootstrap: str = "", topic: str = "", extra: Sequence[str] = (),
                timeout: float = 30, auth: LocalAdminAuth = LocalAdminAuth()) -> ShardProcess:
    lookup, admin, metrics = free_port(), free_port(), free_port()
    name = f"embedding-{lookup}"
    argv = [sys.executable, *contract.COMMAND[1:]]
    for option, value in ((contract.SHARD_INDEX, shard_index),
                          (contract.SHARD_COUNT, shard_count), (contract.LOOKUP_PORT, lookup),
                          (contract.ADMIN_PORT, admin), (contract.METRICS_PORT, metrics)):
        argv += [option.flag, str(value)]
    argv += [*auth.server_args(state_dir(name)), *extra]
    if kafka_bootstrap:
        argv += [contract.KAFKA_BOOTSTRAP.flag, kafka_bootstrap, contract.TOPIC.flag, topic]
    process = ManagedProcess(name, argv, env=env)
    try:
        process.wait_listening(lookup, admin, timeout=timeout, what=f"shard {shard_index}")
    except RuntimeError:
        remove_state(name)  # its log tail is in the error
        raise
    return ShardProcess(shard_index, lookup, admin, metrics, process, auth)


class LocalCluster:
    """`replicas` server processes per shard, all on loopback."""

    def __init__(self, shard_count: int, replicas: int = 1, env: dict[str, str] | None = None,
                 kafka_bootstrap: str = "", topic: str = "", extra: Sequence[str] = (),
                 auth: LocalAdminAuth = LocalAdminAuth()):
        self.shard_count = shard_count
        self.processes: list[ShardProcess] = []
        try:
            for shard in range(shard_count):
                for _ in range(replicas):
                    self.processes.append(start_shard(shard, shard_count, env, kafka_bootstrap,
                                                      topic, extra, auth=auth))
        except Exception:
            self.stop()
            raise

    @property
    def lookup_addresses(self) -> list[list[str]]:
        return [[p.lookup_address for p in self.processes if p.shard_index == s]
                for s in range(self.shard_count)]

    def admins(self) -> list[AdminClient]:
        return [p.admin for p in self.processes]

    def prepare_full(self, version: int, uri: str, timeout: float = 300,
                     dense: int = 0) -> None:
        """Phase one: every server loads the version beside its current ones."""
        for admin in self.admins():
            admin.load_full(version, uri, dense)
        for admin in self.admins():
            admin.wait_ready(version, timeout)

    def prepare_incremental(self, version: int, base: int, uri: str,
                            timeout: float = 300, dense: int = 0) -> None:
        for admin in self.admins():
            admin.apply_incremental(version, base, uri, dense)
        for admin in self.admins():
            admin.wait_ready(version, timeout)

    def commit(self, version: int) -> None:
        """Phase two: switch every server to the version (clients pin across the gap)."""
        for admin in self.admins():
            admin.commit(version)

    def stop(self) -> None:
        for process in self.processes:
            process.stop()
