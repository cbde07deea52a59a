"""Predict path benchmark: a ranking request through the entry model, side by side in one
run with the two-call client path and with the sum of its parts.

    .venv/bin/python bench/predict_bench.py            # writes bench/PREDICT.md
    .venv/bin/python bench/predict_bench.py --runs 1 --seconds 2 --no-write

Starts MinIO, two shard servers (one replica each) and a CPU tritonserver through devstack,
writes a checkpoint of 26 tables (dim 64) and serves it with the benchmark's dense model
(bench/predict_models/rank: a 1664-256-1 MLP over the 26 embeddings of a candidate) behind
the entry model, started as a RecModel's Triton pod starts it. Two requests: a ranking one (1 user x
500 candidates x 26 sparse features = 13,000 ids) and the heavy one (26 x 5,769 = 149,994
ids, under the default limit of 150,000). For each, at concurrency 1 and 8:

- (a) the entry model, driven by Triton's own load generator, perf_analyzer (gRPC);
- (b) the two-call client path: embedding.client, then tritonclient with the rows (the
  dense version pinned to the one the rows came with, as a correct client must), in
  Python threads;
- (c) the sum of its parts: the lookup alone (embedding.client, Python threads) plus the
  dense model alone (perf_analyzer, random rows of the same shape).

(a) is also driven from the same Python threads as (b), so that the client's own cost
cancels between those two. p50/p99 and requests/s per run; the median over the runs is
reported, with the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import perf_analyzer  # noqa: E402
from devstack import minio as local_minio  # noqa: E402
from devstack import triton as local_triton  # noqa: E402
from devstack.shards import LocalCluster  # noqa: E402
from embedding.checkpoint import CheckpointWriter  # noqa: E402
from embedding.client import EmbeddingClient  # noqa: E402
from embedding.predict.contract import CONFIG_ENV, ENTRY_MODEL, EntryConfig  # noqa: E402

BUCKET = "recop-bench"
MODELS = ROOT / "bench" / "predict_models"
ENTRY_REPOSITORY = ROOT / "embedding" / "predict" / "repository"
DENSE = "rank"
TABLES = [f"f{i:02d}" for i in range(26)]
DIM, ROWS, SHARDS = 64, 20_000, 2
CASES = {"ranking (13,000 ids)": 500, "heavy (149,994 ids)": 5_769}  # candidates per request
CONCURRENCY = (1, 8)
PATHS = ("a: entry model (perf_analyzer)", "a: entry model (Python threads)",
         "b: two calls (Python threads)", "c: lookup alone (Python threads)",
         "c: dense alone (perf_analyzer)")


def say(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


@dataclass(frozen=True)
class Figures:
    p50: float  # seconds
    p99: float
    rps: float


def median_figures(runs: list[Figures]) -> Figures:
    return Figures(statistics.median(f.p50 for f in runs), statistics.median(f.p99 for f in runs),
                   statistics.median(f.rps for f in runs))


class Stack:
    """MinIO, the shard servers and tritonserver, with version 1 committed and loaded."""

    def __init__(self):
        self.s3 = local_minio.start()
        self.s3.client().create_bucket(Bucket=BUCKET)
        uri = f"s3://{BUCKET}/predict-{uuid.uuid4().hex[:6]}"
        rng = np.random.default_rng(1)
        say(f"writing {len(TABLES)} tables x {ROWS:,} rows x dim {DIM} to {uri}")
        CheckpointWriter(self.s3.client(), uri, SHARDS).write_full(1, {
            t: (np.arange(ROWS, dtype=np.int64),
                rng.standard_normal((ROWS, DIM), dtype=np.float32)) for t in TABLES})
        self.cluster = LocalCluster(SHARDS, 1, env=self.s3.env)
        # As a RecModel's Triton pod starts the entry model: its repository's config and
        # the settings in the environment (controllers/recmodel/entry_model).
        config = EntryConfig(DENSE, self.cluster.lookup_addresses, dict.fromkeys(TABLES, DIM),
                             ["score"])
        self.triton = local_triton.start(MODELS, 60, ENTRY_REPOSITORY,
                                         env={CONFIG_ENV: config.to_json()})
        self.cluster.prepare_full(1, uri, dense=1)
        self.cluster.commit(1)
        self._load(DENSE)
        self._load(ENTRY_MODEL)
        self.instances = {m: self._instances(m) for m in (ENTRY_MODEL, DENSE)}

    @property
    def grpc(self) -> str:
        return self.triton.grpc_address

    def _http(self, path: str, body: dict | None = None) -> dict:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.triton.http_port}{path}",
            None if body is None else json.dumps(body).encode(),
            {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            text = response.read()
        return json.loads(text) if text else {}

    def _load(self, model: str) -> None:
        self._http(f"/v2/repository/models/{model}/load", {})

    def _instances(self, model: str) -> str:
        groups = self._http(f"/v2/models/{model}/config").get("instance_group", [])
        return ", ".join(f"{g.get('count')} x {g.get('kind')}" for g in groups) or "default"

    def stop(self) -> None:
        self.triton.stop()
        self.cluster.stop()
        self.s3.stop()


def requests_for(candidates: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(candidates)
    return {t: rng.integers(0, ROWS, candidates, dtype=np.int64) for t in TABLES}


def threads(call, concurrency: int, seconds: float) -> Figures:
    """`concurrency` threads calling back to back for `seconds` (after one warm-up call
    each): per-call latency and completed calls per second."""
    latencies: list[float] = []
    lock = threading.Lock()
    go = threading.Barrier(concurrency + 1)

    def worker():
        state = call()  # the warm-up call returns the worker's per-thread callable
        go.wait()
        mine, end = [], time.perf_counter() + seconds
        while (start := time.perf_counter()) < end:
            state()
            mine.append(time.perf_counter() - start)
        with lock:
            latencies.extend(mine)

    pool = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in pool:
        t.start()
    go.wait()
    started = time.perf_counter()
    for t in pool:
        t.join()
    wall = time.perf_counter() - started
    return Figures(float(np.percentile(latencies, 50)), float(np.percentile(latencies, 99)),
                   len(latencies) / wall)


def entry_call(stack: Stack, ids: dict[str, np.ndarray]):
    import tritonclient.grpc as grpcclient

    def per_thread():
        client = grpcclient.InferenceServerClient(stack.grpc)
        inputs = []
        for table, values in ids.items():
            tensor = grpcclient.InferInput(table, list(values.shape), "INT64")
            tensor.set_data_from_numpy(values)
            inputs.append(tensor)
        outputs = [grpcclient.InferRequestedOutput("score")]

        def call():
            client.infer(ENTRY_MODEL, inputs, outputs=outputs)
        call()
        return call
    return per_thread


def two_call(stack: Stack, lookup: EmbeddingClient, ids: dict[str, np.ndarray]):
    import tritonclient.grpc as grpcclient

    def per_thread():
        client = grpcclient.InferenceServerClient(stack.grpc)
        outputs = [grpcclient.InferRequestedOutput("score")]

        def call():
            looked = lookup.lookup(ids)
            inputs = []
            for table, rows in looked.values.items():
                tensor = grpcclient.InferInput(table, list(rows.shape), "FP32")
                tensor.set_data_from_numpy(np.ascontiguousarray(rows))
                inputs.append(tensor)
            client.infer(DENSE, inputs, model_version=str(looked.dense_version),
                         outputs=outputs)
        call()
        return call
    return per_thread


def lookup_call(lookup: EmbeddingClient, ids: dict[str, np.ndarray]):
    def per_thread():
        def call():
            lookup.lookup(ids)
        call()
        return call
    return per_thread


def perf(stack: Stack, model: str, concurrency: int, seconds: float, work: Path,
         data: Path | None = None, shapes: list[str] = ()) -> Figures:
    csv = work / f"{model}-{concurrency}.csv"
    args = ["-m", model, "-u", stack.grpc, "-i", "grpc",
            "--concurrency-range", f"{concurrency}:{concurrency}",
            "--measurement-interval", str(int(seconds * 1000)), "-f", str(csv),
            # Three windows within 25 % of each other: 10 % (the default) is rarely met
            # on 2 cores shared with the servers.
            "--stability-percentage", "25", "--max-trials", "20"]
    if data is not None:
        args += ["--input-data", str(data)]
    for shape in shapes:
        args += ["--shape", shape]
    perf_analyzer.run(args)
    row = perf_analyzer.parse_csv(csv)
    return Figures(row["p50 latency"] / 1e6, row["p99 latency"] / 1e6, row["Inferences/Second"])


def entry_data(ids: dict[str, np.ndarray], work: Path) -> Path:
    path = work / f"ids-{len(next(iter(ids.values())))}.json"
    path.write_text(json.dumps({"data": [{t: {"content": v.tolist(), "shape": [len(v)]}
                                          for t, v in ids.items()}]}))
    return path


def measure(stack: Stack, lookup: EmbeddingClient, runs: int, seconds: float,
            ) -> dict[tuple[str, int, str], list[Figures]]:
    found: dict[tuple[str, int, str], list[Figures]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = {case: (ids := requests_for(n), entry_data(ids, work))
                for case, n in CASES.items()}
        for run in range(runs):
            for case, candidates in CASES.items():
                ids, path = data[case]
                for concurrency in CONCURRENCY:
                    say(f"run {run + 1}/{runs}: {case}, concurrency {concurrency}")
                    got = {
                        PATHS[0]: perf(stack, ENTRY_MODEL, concurrency, seconds, work, path),
                        PATHS[1]: threads(entry_call(stack, ids), concurrency, seconds),
                        PATHS[2]: threads(two_call(stack, lookup, ids), concurrency, seconds),
                        PATHS[3]: threads(lookup_call(lookup, ids), concurrency, seconds),
                        PATHS[4]: perf(stack, DENSE, concurrency, seconds, work,
                                       shapes=[f"{t}:{candidates},{DIM}" for t in TABLES]),
                    }
                    for name, figures in got.items():
                        found.setdefault((case, concurrency, name), []).append(figures)
                        say(f"  {name}: p50 {ms(figures.p50)}, p99 {ms(figures.p99)}, "
                            f"{figures.rps:.1f} req/s")
    return found


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms" if seconds >= 0.01 else f"{seconds * 1e3:.2f} ms"


def sum_of_parts(found, case: str, concurrency: int) -> Figures:
    """Per run, lookup + dense latencies, and the rate of the two run back to back on the
    same cores (1 / (1/r_lookup + 1/r_dense)); the median over the runs."""
    lookups, denses = found[case, concurrency, PATHS[3]], found[case, concurrency, PATHS[4]]
    return median_figures([Figures(lk.p50 + d.p50, lk.p99 + d.p99,
                                   1 / (1 / lk.rps + 1 / d.rps))
                           for lk, d in zip(lookups, denses, strict=True)])


def report(found, stack: Stack, command: str, runs: int, seconds: float, started: float,
           load_before: float) -> str:
    rows, verdicts = [], []
    for case in CASES:
        for concurrency in CONCURRENCY:
            medians = {name: median_figures(found[case, concurrency, name]) for name in PATHS}
            parts = sum_of_parts(found, case, concurrency)
            for name, f in [*medians.items(), ("c: sum of the parts", parts)]:
                rows.append(f"| {case} | {concurrency} | {name} | {ms(f.p50)} | {ms(f.p99)} "
                            f"| {f.rps:.1f} |")
            entry, ours, two = medians[PATHS[0]], medians[PATHS[1]], medians[PATHS[2]]
            verdicts.append(
                f"| {case} | {concurrency} | {entry.p50 / parts.p50:.2f}x "
                f"| {parts.rps / entry.rps:.2f}x | {ours.p50 / two.p50:.2f}x "
                f"| {ours.rps / two.rps:.2f}x |")
    return "\n".join([
        "# Predict path benchmark",
        "",
        f"Produced by `{command}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
        f"({platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{runs} runs of {seconds:g} s per figure, run took {time.time() - started:.0f} s). "
        f"Load average (1 min): {load_before:.1f} before, {os.getloadavg()[0]:.1f} at the "
        "end; the benchmark's own processes are most of it. Everything shares the "
        "machine's cores: MinIO, two shard servers, tritonserver (the entry model and the "
        "dense model in their python-backend stubs) and the clients.",
        "",
        f"Model: {len(TABLES)} tables of {ROWS:,} rows, dim {DIM}, fp32, over {SHARDS} shard "
        f"servers (one replica each); the dense model `{DENSE}` is a 1664-256-1 MLP in "
        "numpy (bench/predict_models/rank). Triton instances: "
        + "; ".join(f"`{m}` {n}" for m, n in stack.instances.items()) + ". "
        "perf_analyzer is the `tritonclient==2.41.1` wheel's binary (bench/perf_analyzer.py) "
        "over gRPC, one fixed request (--input-data) for the entry model and random rows "
        "of the same shape for the dense model alone; the Python-thread figures use "
        "tritonclient over gRPC and embedding.client, one client per thread, calls back to "
        "back. Latencies are per request; the median over the runs of each run's p50 and "
        "p99 is shown.",
        "",
        "| request | concurrency | path | p50 | p99 | requests/s |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        "Goals: (a) within 1.2x of (c), and faster than (b). (a) against (c) takes the "
        "entry model as perf_analyzer drives it; (a) against (b) takes both from the same "
        "Python threads, so the client's cost is the same on both sides.",
        "",
        "| request | concurrency | p50 (a) / (c) | requests/s (c) / (a) "
        "| p50 (a) / (b) | requests/s (b) / (a) |",
        "|---|---|---|---|---|---|",
        *verdicts,
        "",
    ])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3, help="medians over this many runs")
    parser.add_argument("--seconds", type=float, default=5.0, help="per figure and run")
    parser.add_argument("--no-write", action="store_true", help="do not write PREDICT.md")
    args = parser.parse_args()
    started, load_before = time.time(), os.getloadavg()[0]
    perf_analyzer.ensure()
    stack = Stack()
    try:
        lookup = EmbeddingClient(stack.cluster.lookup_addresses)
        found = measure(stack, lookup, args.runs, args.seconds)
        lookup.close()
        text = report(found, stack, "python bench/predict_bench.py " + " ".join(sys.argv[1:]),
                      args.runs, args.seconds, started, load_before)
    finally:
        stack.stop()
    print(text)
    if not args.no_write:
        (ROOT / "bench" / "PREDICT.md").write_text(text)


if __name__ == "__main__":
    main()
