"""Every query of the chart's Grafana dashboard (and of its template variables) run against
a real Prometheus scraping real components, each returning data with a finite value:
embedding-server processes serving a checkpoint from a real MinIO, answering lookups and
applying real-time deltas from a real Kafka broker; and the operator's metrics
(controllers/common/metrics.py) served by a process that records, through that module's
own functions, what the handlers record: a shard count, a rollback, a guardrail breach,
arms' weights and costs. Grafana's variables are replaced as Grafana does with "All"
selected."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import sys
import textwrap
import threading
from pathlib import Path

import grpc
import numpy as np
import pytest
from aiokafka import AIOKafkaProducer

from devstack import kafka as local_kafka
from devstack import minio as local_minio
from devstack import prometheus as local_prometheus
from devstack.common import LOOPBACK, ManagedProcess, free_port
from e2e.monitoring import DIM, NAMESPACE, RECMODEL, ROWS, SHARDS, TABLE, Servers
from e2e.support import wait_for
from embedding.client import EmbeddingClient
from embedding.realtime import encode_by_shard
from tests.dashboard.test_dashboard_schema import DASHBOARD

BUCKET = "recop-e2e-dashboard"
TOPIC = "dashboard-deltas"
# What Grafana puts in place of each variable: "All" is the variables' allValue.
VARIABLES = {"$namespace": ".*", "$recmodel": ".*", "$__rate_interval": "1m",
             "$__range": "10m"}

OPERATOR_METRICS = textwrap.dedent(f"""
    import time
    from prometheus_client import start_http_server
    from controllers.common import metrics
    metrics.handled("RecModel", ok=True)
    metrics.shard_ready("{NAMESPACE}", "{RECMODEL}", [1, 1])
    metrics.freshness_objective("{NAMESPACE}", "{RECMODEL}", 1.0)
    metrics.rolled_back("{NAMESPACE}", "{RECMODEL}", "{RECMODEL}-v3", "MetricBreach")
    metrics.guardrail_breached("{NAMESPACE}", "ctr", "variant")
    metrics.arm_figures("{NAMESPACE}", "ctr", "baseline", "{RECMODEL}", 90,
                        {{"cpuCoreSecondsPer1k": 2.5, "memoryBytes": 2e9}})
    metrics.arm_figures("{NAMESPACE}", "ctr", "variant", "{RECMODEL}-b", 0,
                        {{"cpuCoreSecondsPer1k": 3.0, "memoryBytes": 1e9}})
    start_http_server({{port}}, addr="{LOOPBACK}")
    while True:
        time.sleep(60)
""")


def queries() -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and every template variable."""
    board = json.loads(DASHBOARD.read_text())
    found = [(f"panel {p['title']!r} {t['refId']}", t["expr"])
             for p in board["panels"] for t in p.get("targets", [])]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            metric, label = re.fullmatch(r"label_values\((.+), (\w+)\)",
                                         variable["query"]["query"]).groups()
            found.append((f"variable {variable['name']}", f"group by ({label}) ({metric})"))
    return [(where, substitute(expr)) for where, expr in found]


def substitute(expr: str) -> str:
    for name in sorted(VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, VARIABLES[name])
    assert "$" not in expr, f"a variable the test does not know: {expr}"
    return expr


async def traffic(bootstrap: str, lookup_addresses, stop: threading.Event) -> None:
    """Until `stop`: lookups (some of unknown ids, some of an unknown table) and real-time
    deltas, a few per second, so every rate on the dashboard has increases to show; one
    malformed delta per shard."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()
    try:
        for partition in range(SHARDS):
            await producer.send(TOPIC, b"not a delta", partition=partition)
        ids = np.arange(100, dtype=np.int64)
        with EmbeddingClient(lookup_addresses) as client:
            round_ = 0
            while not stop.is_set():
                round_ += 1
                for partition, payload in encode_by_shard(
                        TABLE, ids, np.full((len(ids), DIM), round_, np.float32), SHARDS):
                    await producer.send(TOPIC, payload, partition=partition)
                await producer.flush()
                client.lookup({TABLE: np.arange(ROWS + 100, dtype=np.int64)})
                with contextlib.suppress(grpc.RpcError):  # refused: counted as an error
                    client.lookup({"no-such-table": ids})
                await asyncio.sleep(0.2)
    finally:
        await producer.stop()


@pytest.fixture(scope="module")
def prometheus():
    s3 = local_minio.start()
    kafka = local_kafka.start()
    prom = local_prometheus.start()
    servers = operator = thread = None
    stop = threading.Event()
    try:
        s3.client().create_bucket(Bucket=BUCKET)
        asyncio.run(local_kafka.create_topic(kafka.bootstrap, TOPIC, SHARDS))
        servers = Servers(s3, BUCKET, prom, kafka.bootstrap, TOPIC)
        for version in (1, 2):
            servers.write(version)
        servers.cluster.prepare_full(1, servers.uri(1))
        servers.cluster.commit(1)
        servers.cluster.prepare_full(2, servers.uri(2))  # loaded beside 1, not committed
        for admin in servers.cluster.admins():
            wait_for(lambda a=admin: a.status().realtime.assigned, what="consumer assigned")
        port = free_port()
        operator = ManagedProcess("dashboard-operator-metrics", [
            sys.executable, "-c", OPERATOR_METRICS.replace("{port}", str(port))],
            cwd=Path(__file__).resolve().parent.parent)
        operator.wait_listening(port, timeout=30, what="operator metrics")
        prom.set_targets("operator", [f"{LOOPBACK}:{port}"], {"job": "recop-operator"})
        # Discovery takes seconds: traffic before the first scrape would show no increase.
        wait_for(lambda: prom.query('count(up{job=~"embedding|recop-operator"} == 1) == 3'),
                 timeout=60, what="every target scraped")
        thread = threading.Thread(target=asyncio.run, args=(traffic(
            kafka.bootstrap, servers.cluster.lookup_addresses, stop),), daemon=True)
        thread.start()
        yield prom
    finally:
        stop.set()
        if thread is not None:
            thread.join(timeout=30)
        for part in (operator, servers, prom, kafka, s3):
            if part is not None:
                part.stop()


@pytest.mark.parametrize(("where", "expr"), queries(), ids=[w for w, _ in queries()])
def test_every_dashboard_query_returns_data(prometheus, where, expr):
    def finite():
        result = prometheus.query(expr)
        return [r for r in result if math.isfinite(float(r["value"][1]))]

    # Scrapes are 1s apart; the servers apply the deltas and the lookups within seconds.
    wait_for(finite, timeout=30, what=f"{where} to return data: {expr}")
