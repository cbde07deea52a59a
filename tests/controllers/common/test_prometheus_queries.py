"""controllers.common.prometheus and the ABTest's cost PromQL against a real Prometheus, scraping an
exporter whose counters grow at rates the test sets, so the figures are known exactly.

The exporter stands in for what a cluster's Prometheus scrapes from an arm's pods:
cAdvisor's container_* series and Triton's nv_* series, with the namespace and pod
labels a pod scrape adds. Every series comes from one target, so all share each scrape's
timestamp and a ratio of two rates is exact (rate's extrapolation cancels).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from controllers.abtest import costs
from controllers.abtest.verdict import count_queries
from controllers.common.prometheus import PrometheusError, query_range_values, query_value
from devstack import prometheus
from devstack.common import LOOPBACK, free_port
from tests.controllers.abtest.test_controller import spec
from tests.controllers.abtest.test_placement import models

pytestmark = pytest.mark.integration

GIB = 2**30
BASE = ("ranker-triton-5d8f7c9b4-abcde", "ranker-triton-5d8f7c9b4-fghij")
WIDE = "ranker-wide-triton-6c7d8e9f0-klmno"
# Per pod: Triton container cores busy, requests/s, model execution us/s, memory bytes.
RATES = {BASE[0]: (0.5, 200, 0.3e6, 3 * GIB), BASE[1]: (0.3, 100, 0.1e6, 2 * GIB),
         WIDE: (0.2, 40, 0.02e6, 5 * GIB)}


def triton_counter(name: str) -> Metric:
    """A counter under Triton's own name: prometheus_client's counter families would
    expose it as `<name>_total`, which Triton's counters are not."""
    return Metric(name, "Triton", "unknown")


class ArmPods:
    """Counters that are `rate x seconds since start` at each scrape."""

    def __init__(self):
        self.started = time.time()

    def collect(self):
        elapsed = time.time() - self.started
        cpu = CounterMetricFamily("container_cpu_usage_seconds_total", "cAdvisor",
                                  labels=["namespace", "pod", "container"])
        memory = GaugeMetricFamily("container_memory_working_set_bytes", "cAdvisor",
                                   labels=["namespace", "pod", "container"])
        success = triton_counter("nv_inference_request_success")
        compute = triton_counter("nv_inference_compute_infer_duration_us")
        gpu_memory = GaugeMetricFamily("nv_gpu_memory_used_bytes", "Triton",
                                       labels=["namespace", "pod", "gpu_uuid"])
        clicks = CounterMetricFamily("recop_clicks", "clicks", labels=["arm"])
        shows = CounterMetricFamily("recop_impressions", "impressions", labels=["arm"])
        for pod, (cores, qps, busy_us, mem) in RATES.items():
            cpu.add_metric(["ns", pod, "triton"], cores * elapsed)
            # The pod's own cgroup (container=""): counting it would count twice.
            cpu.add_metric(["ns", pod, ""], 2 * cores * elapsed)
            memory.add_metric(["ns", pod, "triton"], mem)
            memory.add_metric(["ns", pod, ""], 2 * mem)
            labels = {"namespace": "ns", "pod": pod, "model": "mlp", "version": "1"}
            success.add_sample(success.name, labels, qps * elapsed)
            compute.add_sample(compute.name, labels, busy_us * elapsed)
            gpu_memory.add_metric(["ns", pod, f"GPU-{pod[-5:]}"], mem + GIB)
        for arm, rate in (("control", 10.0), ("deep", 12.5)):
            clicks.add_metric([arm], rate * elapsed)
            shows.add_metric([arm], 100 * elapsed)
        yield from (cpu, memory, success, compute, gpu_memory, clicks, shows)


@pytest.fixture(scope="module")
def prom():
    registry = CollectorRegistry()
    registry.register(ArmPods())
    port = free_port()
    server, thread = start_http_server(port, addr=LOOPBACK, registry=registry)
    handle = prometheus.start()
    try:
        handle.set_targets("arm-pods", [f"{LOOPBACK}:{port}"], {"job": "arm-pods"})
        handle.wait_for_target("job", "arm-pods")
        # rate() needs two scrapes inside the window.
        deadline = time.monotonic() + 60
        while not handle.query("count_over_time(nv_inference_request_success[1m]) >= 3"):
            assert time.monotonic() < deadline, "Prometheus did not scrape three times in 60 s"
            time.sleep(0.5)
        yield handle
    finally:
        handle.stop()
        server.shutdown()
        thread.join()


def run(coro):
    return asyncio.run(coro)


def test_instant_queries_give_one_number_or_none(prom):
    assert run(query_value(prom.url, "1 + 1")) == 2.0
    assert run(query_value(prom.url, 'max(container_memory_working_set_bytes'
                                     '{container="triton"})')) == 5 * GIB
    assert run(query_value(prom.url, 'absent_series_of_this_test{a="b"}')) is None
    # 0/0 (no requests yet) is no data, not a figure.
    assert run(query_value(prom.url, "sum(rate(nv_inference_request_success[1m])) * 0 "
                                     "/ 0")) is None


def test_failures_raise_with_prometheus_message(prom):
    with pytest.raises(PrometheusError, match="parse error"):
        run(query_value(prom.url, "sum(rate(nv_inference_request_success[1m]"))
    with pytest.raises(PrometheusError, match="3 series, not one"):
        run(query_value(prom.url, 'container_memory_working_set_bytes{container="triton"}'))
    with pytest.raises(PrometheusError, match="gives a matrix"):
        run(query_value(prom.url, "nv_inference_request_success[1m]"))
    with pytest.raises(PrometheusError, match="ClientConnectorError"):
        run(query_value(f"http://{LOOPBACK}:{free_port()}", "1", timeout=5))


def test_range_queries_give_the_series_values(prom):
    now = datetime.now(UTC)
    values = run(query_range_values(
        prom.url, f'max(container_memory_working_set_bytes{{pod="{WIDE}",container="triton"}})',
        now - timedelta(seconds=5), now))
    assert values and set(values) == {5 * GIB}
    assert run(query_range_values(prom.url, "absent_series_of_this_test",
                                  now - timedelta(seconds=5), now)) == []


async def _figures(prom, s):
    queries = costs.cost_queries(s, "ns", models(), set())
    values = dict(zip(queries, await asyncio.gather(
        *(query_value(prom.url, q) for q in queries)), strict=True))
    weights = {"control": 60, "wide": 20, "deep": 20}
    return {c.name: c for c in costs.model_costs(s, "ns", models(), weights, set(), values)}


def test_cost_figures_are_measured_from_the_arm_pods(prom):
    out = run(_figures(prom, spec(cost={"expectedQps": 1000, "window": "1m"})))
    control, wide, deep = out["control"], out["wide"], out["deep"]
    # Both baseline pods: 0.8 cores for 300 requests/s, the pod cgroup not counted.
    assert control.cpu_core_seconds_per_1k.value == pytest.approx(1000 * 0.8 / 300, rel=1e-9)
    assert control.cpu_core_seconds_per_1k.source.startswith(
        "prometheus:1000 * sum(rate(container_cpu_usage_seconds_total{namespace=\"ns\"")
    assert control.memory_bytes.value == 3 * GIB  # the larger of its two pods
    assert control.gpu_memory_bytes.value == 4 * GIB
    # 0.4 s of model execution per second for 300 requests/s: 1.333 s per 1k requests,
    # at the baseline's 1,000 qps 1.333 GPUs busy.
    assert control.gpu_utilisation.value == pytest.approx(0.4e6 / 1000 / 300, rel=1e-9)
    assert control.gpu_utilisation.source.endswith("x 1000qps")
    # The wide arm's pods are told apart from the baseline's by the pod name pattern.
    assert wide.cpu_core_seconds_per_1k.value == pytest.approx(1000 * 0.2 / 40, rel=1e-9)
    assert wide.memory_bytes.value == 5 * GIB
    assert wide.gpu_utilisation.value == pytest.approx(0.02e6 / 1000 / 40 * 200 / 1000,
                                                       rel=1e-9)
    # No pods of the deep arm yet: its RecModel's requests.
    assert deep.cpu_core_seconds_per_1k.source == "spec:RecModel ranker-deep"
    assert deep.gpu_utilisation.source == "default"
    sources = {(c.arm, c.figure): c.source for c in costs.cost_sources(list(out.values()))}
    assert sources[("wide", "memoryBytes")].startswith("prometheus:max(max_over_time(")


def test_success_counts_over_the_test(prom):
    s = spec(analysis={"test": "two-proportion-z"},
             successMetric={"name": "ctr",
                            "successes": 'sum(increase(recop_clicks_total{arm="$arm"}[$window]))',
                            "trials": 'sum(increase(recop_impressions_total{arm="$arm"}'
                                      "[$window]))"})
    now = datetime.now(UTC)
    queries = count_queries(s, now - timedelta(seconds=30), now)

    async def counts(arm):
        return [await query_value(prom.url, q, at=now) for q in queries[arm]]

    clicks, shows = run(counts("deep"))
    assert shows > 0 and clicks / shows == pytest.approx(0.125, rel=1e-9)
    assert run(counts("wide")) == [None, None]
