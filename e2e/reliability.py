"""What the fault tests share: figures for the reliability report, and a model stack of
real parts whose pieces a test can kill, restart or starve.

`Figures` records what a test did, what it checked and what it measured through pytest's
`record_property`; `python -m bench.reliability` collects them into bench/RELIABILITY.md.

`Stack` is one namespace with a RecModel whose sharded embedding servers run as local
processes (registered through FQDN EndpointSlices, as e2e/test_modelversion.py does),
checkpoints in a real MinIO behind two fault proxies (one for the servers, one for the
operator, so a test can starve either alone), optionally a Kafka broker and Triton, and
the operator as a real process. Every checkpoint is written with value = its version
number, so a row read back says which version served it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from devstack import minio as local_minio
from devstack.common import ManagedProcess
from devstack.external import external_model, s3_secret, shard_slice, triton_slice
from devstack.faultproxy import FaultProxy
from devstack.shards import ShardProcess, start_shard
from e2e.support import OperatorProcess, get_json, wait_for
from embedding.checkpoint import CheckpointWriter
from embedding.client import EmbeddingClient

REPO = Path(__file__).resolve().parent.parent
MODEL = "ranker"
TABLE = "user"
DIM = 16
ROWS = 20_000
API = "serving.recop.dev/v1alpha1"


class Figures:
    """What a fault test did, checked and measured, as user properties of its report."""

    def __init__(self, record_property, fault: str, checked: str):
        self._record = record_property
        self._record("fault", fault)
        self._record("checked", checked)

    def __setitem__(self, name: str, value) -> None:
        if isinstance(value, float):
            value = round(value, 2)
        self._record(name, value)

    def update(self, values: dict) -> None:
        for name, value in values.items():
            self[name] = value

    def note(self, text: str) -> None:
        """A finding worth a line in the report (a loss, a gap), beside the outcome."""
        self._record("finding", text)

    @contextlib.contextmanager
    def timer(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self[name] = time.monotonic() - started


def apply(cluster, obj: dict) -> None:
    cluster.kubectl("apply", "--server-side", "--field-manager=e2e-faults", "-f", "-",
                    input=json.dumps(obj))


def values_of(number: int, rows: int = ROWS) -> np.ndarray:
    return np.full((rows, DIM), number, np.float32)


class Stack:
    def __init__(self, cluster, namespace: str, shards: int = 2, replicas: int = 1,
                 kafka=None, topic: str = "", triton=None, rollback_window: str | None = None,
                 operator: bool = True, operator_args: tuple[str, ...] = (),
                 server_extra: tuple[str, ...] = ()):
        self.cluster, self.ns = cluster, namespace
        self.shard_count = shards
        self.bucket = f"recop-{namespace}"
        self.ids = np.arange(ROWS, dtype=np.int64)
        self.servers: list[ShardProcess] = []
        self.operators: list[OperatorProcess] = []
        self.kafka, self.topic, self.triton = kafka, topic, triton
        self.s3 = None
        self.proxies: list[FaultProxy] = []
        cluster.kubectl("delete", "namespace", namespace, "--wait=true", "--ignore-not-found",
                        timeout=180)
        cluster.kubectl("create", "namespace", namespace)
        try:
            self.s3 = local_minio.start()
            self.client = self.s3.client()
            self.client.create_bucket(Bucket=self.bucket)
            # Servers and operator each through their own proxy: faults for one only.
            self.server_proxy = FaultProxy("127.0.0.1", self.s3.port).start()
            self.operator_proxy = FaultProxy("127.0.0.1", self.s3.port).start()
            self.proxies = [self.server_proxy, self.operator_proxy]
            self.server_env = {**self.s3.env, "AWS_ENDPOINT_URL": self.server_proxy.endpoint}
            for shard in range(shards):
                for _ in range(replicas):
                    self.servers.append(start_shard(
                        shard, shards, self.server_env, kafka.bootstrap if kafka else "",
                        topic, extra=server_extra))
            self._apply_model(rollback_window)
            for proc in self.servers:
                self.register(proc)
            if triton is not None:
                self._register_triton()
            if operator:
                self.start_operator(*operator_args)
        except BaseException:
            self.stop()
            raise

    # ------------------------------------------------------------ objects

    def _apply_model(self, rollback_window: str | None) -> None:
        apply(self.cluster, s3_secret(self.ns, self.s3.access_key, self.s3.secret_key))
        spec = {}
        if rollback_window:
            # No Prometheus is given to the operator: the window runs, nothing breaches.
            spec["rollbackPolicy"] = {"metric": "vector(0)", "threshold": 1,
                                      "window": rollback_window}
        if self.kafka is not None:
            spec["stream"] = {"brokers": [self.kafka.bootstrap], "topic": self.topic}
        apply(self.cluster, external_model(
            self.ns, MODEL, [{"name": TABLE, "dimension": DIM, "rows": ROWS}],
            self.shard_count, self.bucket, self.operator_proxy.endpoint, **spec))

    def add_server(self, shard: int) -> ShardProcess:
        proc = start_shard(shard, self.shard_count, self.server_env,
                           self.kafka.bootstrap if self.kafka else "", self.topic)
        self.servers.append(proc)
        self.register(proc)
        return proc

    def register(self, proc: ShardProcess, ready: bool = True) -> None:
        """An FQDN slice per server process (the API refuses loopback IPs; see
        devstack.external)."""
        apply(self.cluster, shard_slice(
            self.ns, MODEL, proc.shard_index,
            {"lookup": proc.lookup_port, "admin": proc.admin_port},
            suffix=str(proc.lookup_port), ready=ready))

    def _register_triton(self) -> None:
        apply(self.cluster, triton_slice(self.ns, MODEL, self.triton.grpc_port))

    def write_full(self, number: int) -> str:
        uri = f"s3://{self.bucket}/v{number}"
        CheckpointWriter(self.client, uri, self.shard_count).write_full(
            number, {TABLE: (self.ids, values_of(number))})
        return uri

    def write_incremental(self, number: int, base: int, ids: np.ndarray) -> str:
        uri = f"s3://{self.bucket}/v{number}"
        CheckpointWriter(self.client, uri, self.shard_count).write_incremental(
            number, base, {TABLE: (ids, values_of(number, len(ids)))}, {}, {TABLE: DIM})
        return uri

    def version(self, name: str, uri: str | None, kind: str = "full", base: str | None = None,
                dense: int | None = None) -> None:
        spec: dict = {"model": MODEL, "kind": kind}
        if uri:
            spec["source"] = uri
        if base:
            spec["baseVersion"] = base
        if dense:
            spec["denseModelVersion"] = dense
        apply(self.cluster, {"apiVersion": API, "kind": "ModelVersion",
                             "metadata": {"name": name, "namespace": self.ns}, "spec": spec})

    # ------------------------------------------------------------ observation

    def status(self, name: str) -> dict:
        return get_json(self.cluster, "-n", self.ns, "modelversion", name).get("status", {})

    def phase(self, name: str) -> str | None:
        return self.status(name).get("phase")

    def model_status(self) -> dict:
        return get_json(self.cluster, "-n", self.ns, "recmodel", MODEL).get("status", {})

    def wait_phase(self, name: str, *phases: str, timeout: float = 120,
                   settled: bool = True) -> dict:
        """Until the version reaches one of `phases` (and, for RolledBack, completes)."""
        def reached():
            s = self.status(name)
            if s.get("phase") not in phases:
                return None
            if settled and s["phase"] == "RolledBack" and not s.get("completedAt"):
                return None
            return s
        return wait_for(reached, timeout=timeout, interval=0.5,
                        what=f"{name} in {phases} (operator log: "
                             f"{self.operators[-1].log_path if self.operators else '-'})")

    def server_status(self, proc: ShardProcess):
        try:
            return proc.admin.status()
        except Exception:  # a dead or restarting server reports nothing
            return None

    def actives(self) -> list[int | None]:
        out = []
        for proc in self.servers:
            s = self.server_status(proc)
            out.append(s.active_version if s else None)
        return out

    def held(self) -> list[dict[int, str]]:
        """Versions and their states on every server ({} for one that does not answer)."""
        out = []
        for proc in self.servers:
            s = self.server_status(proc)
            out.append({v.version: v.state for v in s.versions} if s else {})
        return out

    @property
    def lookup_addresses(self) -> list[list[str]]:
        return [[p.lookup_address for p in self.servers if p.shard_index == s]
                for s in range(self.shard_count)]

    def read_all(self, client: EmbeddingClient | None = None) -> tuple[int, np.ndarray]:
        own = client is None
        client = client or EmbeddingClient(self.lookup_addresses, timeout=10)
        try:
            result = client.lookup({TABLE: self.ids})
        finally:
            if own:
                client.close()
        return result.version, result.values[TABLE]

    def consistent(self, expected: int, values: np.ndarray | None = None) -> dict:
        """The end state every fault test checks: each server active on `expected`, no
        server still loading, every row read back at that version with its values."""
        actives = self.actives()
        held = self.held()
        version, rows = self.read_all()
        want = values if values is not None else values_of(expected)
        return {"actives": actives, "held": held, "read_version": version,
                "rows_wrong": int((~np.isclose(rows, want).all(axis=1)).sum()),
                "ok": (actives == [expected] * len(self.servers) and version == expected
                       and np.isclose(rows, want).all()
                       and not any("loading" in h.values() for h in held))}

    # ------------------------------------------------------------ faults

    def kill_server(self, proc: ShardProcess) -> None:
        """SIGKILL: no goodbye, everything in memory is gone. Its endpoint turns not ready,
        as the kubelet's readiness probe would make it."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.process.proc.pid, signal.SIGKILL)
        proc.process.proc.wait()
        self.register(proc, ready=False)

    def restart_server(self, proc: ShardProcess, extra: tuple[str, ...] = ()) -> None:
        """A new process for the same shard on the same ports (a container restart: the
        pod and its address stay, the memory does not); its endpoint is ready again."""
        argv = [*proc.process.proc.args, *extra]
        name = proc.process.name
        proc.process = ManagedProcess(name, argv, env=self.server_env)
        proc.process.wait_listening(proc.lookup_port, proc.admin_port, timeout=60,
                                    what=f"restarted shard {proc.shard_index}")
        self.register(proc, ready=True)

    def start_operator(self, *args: str, name: str | None = None, namespaced: bool = True,
                       env: dict[str, str] | None = None) -> OperatorProcess:
        operator = OperatorProcess(self.cluster.kubeconfig, self.ns if namespaced else None,
                                   name=name or f"{self.ns}-operator-{len(self.operators)}",
                                   args=args, env=env)
        self.operators.append(operator)
        return operator

    def kill_operator(self, operator: OperatorProcess | None = None) -> None:
        operator = operator or self.operators[-1]
        operator.proc.kill()
        operator.proc.wait()

    def stop(self) -> None:
        for operator in self.operators:
            with contextlib.suppress(Exception):
                operator.stop()
        for proc in self.servers:
            with contextlib.suppress(Exception):
                proc.stop()
        for proxy in self.proxies:
            proxy.stop()
        if self.s3 is not None:
            self.s3.stop()
        self.cluster.kubectl("delete", "namespace", self.ns, "--wait=false", check=False)


@contextlib.contextmanager
def serving_v1(cluster, namespace: str) -> Iterator[Stack]:
    """A Stack with full checkpoints 1 to 3 in S3 and v1 Active: the start of the fault
    tests that need an update in flight."""
    stack = Stack(cluster, namespace)
    try:
        for n in (1, 2, 3):
            stack.write_full(n)
        stack.version("v1", f"s3://{stack.bucket}/v1")
        stack.wait_phase("v1", "Active")
        yield stack
    finally:
        stack.stop()


class Reader:
    """Lookups in a loop from a thread while a fault is on: every answer must be one whole
    version (the old one until the commit, the new one after)."""

    def __init__(self, stack: Stack):
        self.stack = stack
        self.ok = self.failed = self.mixed = 0
        self.versions: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        client = EmbeddingClient(self.stack.lookup_addresses, timeout=10)
        try:
            while not self._stop.is_set():
                try:
                    version, rows = self.stack.read_all(client)
                except Exception:
                    self.failed += 1
                    time.sleep(0.05)
                    continue
                self.versions.add(version)
                if not (rows == version).all():
                    self.mixed += 1
                self.ok += 1
                time.sleep(0.02)
        finally:
            client.close()

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join(30)
        return {"lookups_ok": self.ok, "lookups_failed": self.failed,
                "mixed_reads": self.mixed, "versions_read": sorted(self.versions)}

