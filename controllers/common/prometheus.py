"""The operator's Prometheus client: instant and range queries over the HTTP API (aiohttp),
so a slow Prometheus never blocks the event loop.

A failed query raises PrometheusError with Prometheus' own message (a typo in a
user's PromQL must reach the user, not turn into "no data").
"""

from __future__ import annotations

import json
import math
from datetime import datetime

import aiohttp


class PrometheusError(RuntimeError):
    """Prometheus refused or failed a query; the message is Prometheus' own."""


async def _get(url: str, endpoint: str, params: dict[str, str], timeout: float) -> dict:
    address = url.rstrip("/") + endpoint
    try:
        async with (aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s,
                    s.get(address, params=params) as response):
            text = await response.text()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise PrometheusError(f"{address}: {type(exc).__name__}: {exc}") from exc
    try:
        body = json.loads(text)
    except ValueError:
        raise PrometheusError(f"{address}: HTTP {response.status}: {text[:500]}") from None
    if body.get("status") != "success":
        # 400 bad_data (a PromQL syntax error), 422 execution, 503 timeout: each carries
        # errorType and error.
        raise PrometheusError(f"query {params['query']!r} failed: "
                              f"{body.get('errorType', 'error')}: {body.get('error', text)}")
    return body["data"]


def _number(text: str) -> float | None:
    """A sample value; NaN (0/0, e.g. a rate ratio with no requests yet) is no data."""
    value = float(text)
    return None if math.isnan(value) else value


async def query_value(url: str, promql: str, timeout: float = 10,
                      at: datetime | None = None) -> float | None:
    """The value of an instant query that yields one number: a scalar or a one-series
    vector, evaluated now or `at` (queries that must see the same samples, such as the
    two counts of a proportion, pass one time). None: no series (no data yet) or NaN.
    More than one series raises, since which one was meant is a guess: aggregate in the
    query (sum, max, ...)."""
    params = {"query": promql} | ({"time": str(at.timestamp())} if at else {})
    data = await _get(url, "/api/v1/query", params, timeout)
    kind, result = data["resultType"], data["result"]
    if kind == "scalar":
        return _number(result[1])
    if kind != "vector":
        raise PrometheusError(f"query {promql!r} gives a {kind}, not one number")
    if len(result) > 1:
        raise PrometheusError(f"query {promql!r} gives {len(result)} series, not one: "
                              "aggregate it (e.g. sum(...) or max(...))")
    return _number(result[0]["value"][1]) if result else None


async def query_range_values(url: str, promql: str, start: datetime, end: datetime,
                             timeout: float = 30) -> list[float]:
    """The values (NaNs dropped) of a range query's one series from start to end, at
    most ~10,000 points (Prometheus refuses more than 11,000 per series)."""
    step = max(1, int((end - start).total_seconds() // 10_000))
    data = await _get(url, "/api/v1/query_range",
                      {"query": promql, "start": str(start.timestamp()),
                       "end": str(end.timestamp()), "step": str(step)}, timeout)
    result = data["result"]
    if len(result) > 1:
        raise PrometheusError(f"query {promql!r} gives {len(result)} series, not one: "
                              "aggregate it (e.g. sum(...) or max(...))")
    values = (_number(v) for _, v in result[0]["values"]) if result else ()
    return [v for v in values if v is not None]
