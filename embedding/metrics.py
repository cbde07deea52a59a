"""Prometheus metrics of one embedding server, in its own registry (several servers may
share a process in tests)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)
_FRESHNESS_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)


class ServerMetrics:
    def __init__(self, shard_index: int):
        self.registry = CollectorRegistry()
        labels = {"shard": str(shard_index)}
        r = self.registry
        self.lookup_seconds = Histogram(
            "recop_embedding_lookup_seconds", "Server-side lookup latency per request",
            ["shard"], buckets=_LATENCY_BUCKETS, registry=r).labels(**labels)
        # keys/s is rate() of this counter.
        self.lookup_keys = Counter(
            "recop_embedding_lookup_keys", "Ids looked up", ["shard"], registry=r
        ).labels(**labels)
        self.lookup_missing = Counter(
            "recop_embedding_lookup_missing_keys", "Ids looked up but not found", ["shard"],
            registry=r).labels(**labels)
        # Exported as recop_embedding_lookup_errors_total; `code` is the gRPC status name.
        self.lookup_errors = Counter(
            "recop_embedding_lookup_errors", "Lookups refused, by gRPC status code",
            ["shard", "code"], registry=r)
        self.active_version = Gauge(
            "recop_embedding_active_version", "Version serving unpinned reads", ["shard"],
            registry=r).labels(**labels)
        self.load_progress = Gauge(
            "recop_embedding_load_progress", "Fraction of a version's bytes loaded",
            ["shard", "version"], registry=r)
        self.table_bytes = Gauge(
            "recop_embedding_table_memory_bytes", "Serving memory per table and version",
            ["shard", "table", "version"], registry=r)
        self.realtime_lag = Gauge(
            "recop_embedding_realtime_lag_messages", "Real-time deltas published, not applied",
            ["shard"], registry=r).labels(**labels)
        self.realtime_applied = Counter(
            "recop_embedding_realtime_applied_messages", "Real-time deltas applied", ["shard"],
            registry=r).labels(**labels)
        self.realtime_malformed = Counter(
            "recop_embedding_realtime_malformed_messages", "Real-time deltas skipped as malformed",
            ["shard"], registry=r).labels(**labels)
        self.realtime_offsets_expired = Counter(
            "recop_embedding_realtime_offsets_expired",
            "Replays that started later than a version needed: Kafka no longer held its "
            "offset", ["shard"], registry=r).labels(**labels)
        self.realtime_freshness = Histogram(
            "recop_embedding_realtime_freshness_seconds", "Publish-to-visible time of deltas",
            ["shard"], buckets=_FRESHNESS_BUCKETS, registry=r).labels(**labels)
        self.shard = str(shard_index)

    def serve(self, port: int, host: str) -> None:
        """/metrics on the server's own bind address: loopback when started by hand, every
        interface in a pod, where Prometheus scrapes the pod IP."""
        start_http_server(port, addr=host, registry=self.registry)

    def set_versions(self, active: int, versions) -> None:
        """Refresh the per-version gauges from the store (cheap: a few versions)."""
        self.active_version.set(active)
        self.load_progress.clear()
        self.table_bytes.clear()
        for v in versions:
            self.load_progress.labels(self.shard, str(v.number)).set(v.progress)
            for table, nbytes in v.memory_by_table.items():
                self.table_bytes.labels(self.shard, table, str(v.number)).set(nbytes)
