"""What the alerting and dashboard e2e tests watch: real embedding-server processes
serving a checkpoint from a real MinIO, scraped by a real Prometheus with the target labels
a cluster's scrape config gives them (`namespace`, `recmodel`, `pod`), and a webhook that
records what Alertmanager sends."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from devstack import minio as local_minio
from devstack import prometheus as local_prometheus
from devstack.common import LOOPBACK
from devstack.shards import LocalCluster, ShardProcess, start_shard
from embedding.checkpoint import CheckpointWriter

NAMESPACE = "e2e-monitoring"
RECMODEL = "ranker"
SHARDS = 2
ROWS = 2000
DIM = 8
TABLE = "item"
IDS = np.arange(ROWS, dtype=np.int64)


@dataclass
class Servers:
    """Shard servers of one model and their Prometheus targets (one group per process,
    so one can die and its replacement take its place)."""

    s3: local_minio.MinioHandle
    bucket: str
    prometheus: local_prometheus.PrometheusHandle
    kafka_bootstrap: str = ""
    topic: str = ""
    cluster: LocalCluster = field(init=False)

    def __post_init__(self):
        self.cluster = LocalCluster(SHARDS, replicas=1, env=self.s3.env,
                                    kafka_bootstrap=self.kafka_bootstrap, topic=self.topic)
        for process in self.cluster.processes:
            self.scrape(process)

    def uri(self, version: int) -> str:
        return f"s3://{self.bucket}/v{version}"

    def write(self, version: int) -> None:
        values = np.full((ROWS, DIM), version / 100, np.float32)
        CheckpointWriter(self.s3.client(), self.uri(version), SHARDS).write_full(
            version, {TABLE: (IDS, values)})

    def scrape(self, process: ShardProcess) -> None:
        pod = f"{RECMODEL}-emb-{process.shard_index}-{process.metrics_port}"
        self.prometheus.set_targets(pod, [f"{LOOPBACK}:{process.metrics_port}"], {
            "job": "embedding", "namespace": NAMESPACE, "recmodel": RECMODEL, "pod": pod})

    def on_shard(self, shard: int) -> ShardProcess:
        return next(p for p in self.cluster.processes if p.shard_index == shard)

    def replace(self, shard: int, version: int) -> ShardProcess:
        """A new server for `shard` in place of the old (stopped) one, serving `version`."""
        old = self.on_shard(shard)
        new = start_shard(shard, SHARDS, env=self.s3.env, kafka_bootstrap=self.kafka_bootstrap,
                          topic=self.topic)
        self.cluster.processes[self.cluster.processes.index(old)] = new
        new.admin.load_full(version, self.uri(version))
        new.admin.wait_ready(version)
        new.admin.commit(version)
        self.scrape(new)
        return new

    def stop(self) -> None:
        self.cluster.stop()


class Webhook:
    """Alertmanager's webhook receiver: every notification it was sent, in order."""

    def __init__(self):
        self.notifications: list[dict] = []
        received = self.notifications

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.server.server_port}/alerts"

    def sent(self, alertname: str, status: str, **labels: str) -> list[dict]:
        """Alerts of that name and status ("firing", "resolved") it was sent."""
        return [a for n in self.notifications for a in n["alerts"]
                if a["labels"].get("alertname") == alertname and a["status"] == status
                and all(a["labels"].get(k) == v for k, v in labels.items())]

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join()
