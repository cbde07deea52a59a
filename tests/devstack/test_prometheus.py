"""The local Prometheus scrapes what it is told to, and answers PromQL."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from devstack import prometheus
from devstack.common import free_port

pytestmark = pytest.mark.integration


def test_scrapes_a_target_added_at_run_time():
    registry = CollectorRegistry()
    Gauge("recop_test_value", "a value to scrape", registry=registry).set(42)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    prom = prometheus.start()
    try:
        prom.set_targets("probe", [f"127.0.0.1:{port}"], {"component": "probe"})
        prom.wait_for_target("component", "probe")
        [sample] = prom.query('recop_test_value{component="probe"}')
        assert float(sample["value"][1]) == 42
    finally:
        prom.stop()
        server.shutdown()
        thread.join()
