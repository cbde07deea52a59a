"""The chart's alerting rules in a real Prometheus, firing at a real Alertmanager (Debian's
prometheus-alertmanager) when a fault is injected into real embedding-server processes,
and resolving once it is repaired: replicas left on two versions (RecOpVersionSkew),
lookups of ids the checkpoint lacks (RecOpLookupMissingKeys), a shard's only server
killed (RecOpShardNoReadyReplica: no operator is scraped, so the servers' own metrics
decide, and RecOpOperatorNotReconciling fires from the start). The rules are the shipped
file with every `for:` cut to seconds; Prometheus scrapes and evaluates every second."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
import yaml

from devstack import alertmanager as local_alertmanager
from devstack import minio as local_minio
from devstack import prometheus as local_prometheus
from e2e.monitoring import NAMESPACE, RECMODEL, ROWS, TABLE, Servers, Webhook
from e2e.support import wait_for
from embedding.client import EmbeddingClient
from tests.alerts.test_alerts_rules import RULES

BUCKET = "recop-e2e-alerts"


def quick_rules(path) -> None:
    """The shipped rules, exprs untouched, each `for:` 1s (the test cannot wait minutes),
    but 15s for the one true from the start (no operator here): it must not fire before
    Prometheus has found Alertmanager (see serve_prometheus)."""
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "15s" if rule["alert"] == "RecOpOperatorNotReconciling" else "1s"
    path.write_text(yaml.safe_dump(rules))


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s3 = local_minio.start()
    prometheus = local_prometheus.start()
    webhook = Webhook()
    alertmanager = servers = None
    try:
        s3.client().create_bucket(Bucket=BUCKET)
        servers = Servers(s3, BUCKET, prometheus)
        for version in (1, 2):
            servers.write(version)
        servers.cluster.prepare_full(1, servers.uri(1))
        servers.cluster.commit(1)
        alertmanager = local_alertmanager.start(webhook.url)
        rules = tmp_path_factory.mktemp("rules") / "alerts.yaml"
        quick_rules(rules)
        alertmanager.serve_prometheus(prometheus, [rules])
        prometheus.wait_for_target("job", "embedding")
        yield servers, alertmanager, webhook
    finally:
        for part in (servers, alertmanager, prometheus, s3):
            if part is not None:
                part.stop()
        webhook.stop()


def fired(stack, alertname: str, **labels: str) -> None:
    """Alertmanager holds the alert and notified the webhook of it."""
    _, alertmanager, webhook = stack
    wait_for(lambda: webhook.sent(alertname, "firing", **labels) and any(
        all(a["labels"].get(k) == v for k, v in labels.items())
        for a in alertmanager.alerts(alertname)), timeout=60, what=f"{alertname} firing")


def resolved(stack, alertname: str, **labels: str) -> None:
    _, alertmanager, webhook = stack
    wait_for(lambda: webhook.sent(alertname, "resolved", **labels)
             and not alertmanager.alerts(alertname), timeout=90,
             what=f"{alertname} resolved")


def test_alertmanager_listens_on_loopback_only(stack):
    _, alertmanager, _ = stack
    pid = alertmanager.process.proc.pid
    sockets = [line.split()[4] for line in subprocess.run(
        ["ss", "-H", "-ltnup"], capture_output=True, text=True, check=True).stdout.splitlines()
        if f"pid={pid}," in line]
    assert sockets and all(s.startswith("127.0.0.1:") for s in sockets), sockets


def test_a_healthy_model_pages_nobody_but_a_missing_operator_does(stack):
    _, alertmanager, _ = stack
    fired(stack, "RecOpOperatorNotReconciling", severity="critical")
    assert {a["labels"]["alertname"] for a in alertmanager.alerts()} == {
        "RecOpOperatorNotReconciling"}


def test_replicas_left_on_two_versions_fire_until_the_commit_completes(stack):
    servers, _, _ = stack
    servers.cluster.prepare_full(2, servers.uri(2))
    servers.on_shard(0).admin.commit(2)  # shard 1 stays on version 1
    fired(stack, "RecOpVersionSkew", namespace=NAMESPACE, recmodel=RECMODEL)
    servers.on_shard(1).admin.commit(2)
    resolved(stack, "RecOpVersionSkew", namespace=NAMESPACE, recmodel=RECMODEL)


def test_lookups_of_unknown_ids_fire_until_healthy_traffic_dilutes_them(stack):
    servers, _, _ = stack
    with EmbeddingClient(servers.cluster.lookup_addresses) as client:
        unknown = np.arange(10 * ROWS, 10 * ROWS + 200, dtype=np.int64)
        for _ in range(5):
            assert client.lookup({TABLE: unknown}).missing[TABLE] == len(unknown)
        fired(stack, "RecOpLookupMissingKeys", namespace=NAMESPACE, recmodel=RECMODEL)
        known = np.arange(ROWS, dtype=np.int64)

        def healthy_traffic_resolves() -> bool:
            for _ in range(10):
                assert client.lookup({TABLE: known}).missing[TABLE] == 0
            _, alertmanager, webhook = stack
            return bool(webhook.sent("RecOpLookupMissingKeys", "resolved")
                        and not alertmanager.alerts("RecOpLookupMissingKeys"))

        wait_for(healthy_traffic_resolves, timeout=90, what="RecOpLookupMissingKeys resolved")


def test_a_killed_shard_fires_until_a_replacement_serves(stack):
    servers, _, _ = stack
    servers.on_shard(1).stop()
    fired(stack, "RecOpShardNoReadyReplica", namespace=NAMESPACE, recmodel=RECMODEL,
          shard="1", severity="critical")
    _, alertmanager, _ = stack
    assert {a["labels"]["shard"] for a in alertmanager.alerts("RecOpShardNoReadyReplica")} == {
        "1"}, "shard 0 still serves"
    servers.replace(1, 2)
    resolved(stack, "RecOpShardNoReadyReplica", namespace=NAMESPACE, recmodel=RECMODEL,
             shard="1")
