"""The entry model's metrics, on Triton's own /metrics beside `nv_inference_*`
(the python backend's custom metrics API)."""

from __future__ import annotations


class EntryMetrics:
    def __init__(self, pb_utils, model: str):
        family = pb_utils.MetricFamily
        self._model = model
        self._seconds = family(name="recop_predict_stage_seconds_total",
                               description="Time spent per stage (lookup, dense, total)",
                               kind=family.COUNTER)
        self._count = family(name="recop_predict_stage_count_total",
                             description="Calls per stage; seconds_total / count is the mean",
                             kind=family.COUNTER)
        self._rows_family = family(name="recop_predict_rows_fetched_total",
                                   description="Embedding rows fetched from the shard servers",
                                   kind=family.COUNTER)
        self._rows = self._rows_family.Metric(labels={"model": model})
        self._errors = family(name="recop_predict_errors_total",
                              description="Failed requests by kind", kind=family.COUNTER)
        self._retries_family = family(
            name="recop_predict_dense_retries_total",
            description="Dense calls tried again: the paired version was reloading or gone",
            kind=family.COUNTER)
        self._retries = self._retries_family.Metric(labels={"model": model})
        # Triton drops a family's metrics with the family: every family stays referenced.
        self._versions = family(name="recop_predict_version_served",
                                description="The versions of the last answer",
                                kind=family.GAUGE)
        self._embedding = self._versions.Metric(labels={"model": model, "half": "embedding"})
        self._dense = self._versions.Metric(labels={"model": model, "half": "dense"})
        self._defaults = family(
            name="recop_predict_default_rows_total",
            description="Requests answered with zero rows for a shard no replica answered "
                        "(whenShardUnavailable: ZeroRows), by shard", kind=family.COUNTER)
        self._stages: dict[str, tuple] = {}
        self._kinds: dict[str, object] = {}
        self._shards: dict[int, object] = {}

    def stage(self, name: str, seconds: float) -> None:
        if name not in self._stages:
            labels = {"model": self._model, "stage": name}
            self._stages[name] = (self._seconds.Metric(labels=labels),
                                  self._count.Metric(labels=labels))
        total, count = self._stages[name]
        total.increment(seconds)
        count.increment(1)

    def rows(self, n: int) -> None:
        self._rows.increment(n)

    def retry(self) -> None:
        self._retries.increment(1)

    def error(self, kind: str) -> None:
        if kind not in self._kinds:
            self._kinds[kind] = self._errors.Metric(labels={"model": self._model,
                                                            "kind": kind})
        self._kinds[kind].increment(1)

    def defaulted(self, shards: list[int]) -> None:
        for shard in shards:
            if shard not in self._shards:
                self._shards[shard] = self._defaults.Metric(labels={"model": self._model,
                                                                    "shard": str(shard)})
            self._shards[shard].increment(1)

    def served(self, embedding: int, dense: int) -> None:
        self._embedding.set(embedding)
        self._dense.set(dense)
