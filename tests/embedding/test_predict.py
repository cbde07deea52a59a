"""The predict entry model in a real tritonserver (CPU, python backend) over real shard
server processes and MinIO: one request in, scores out, with the embedding and dense
versions that made them, never a mix of two versions, through a full update and a
rollback under continuous traffic; bad input refused with a message naming it."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest

from controllers.modelversion.drivers import Triton
from devstack import triton as local_triton
from devstack.shards import LocalCluster
from embedding.checkpoint import CheckpointWriter
from embedding.partition import shard_of
from embedding.predict import contract
from recop.api.recmodel import RecModelSpec

pytestmark = pytest.mark.integration

DIM = 4
ROWS = 1000
IDS = np.arange(ROWS, dtype=np.int64)
REPOSITORY = contract.__file__.rsplit("/", 1)[0] + "/repository"
SPEC = RecModelSpec.model_validate({
    "tables": [{"name": "user", "dimension": DIM, "rows": ROWS},
               {"name": "item", "dimension": DIM, "rows": ROWS}],
    "dense": {"modelName": "mlp", "gpusPerPod": 0, "maxBatchSize": 512,
              "instanceGroups": [{"kind": "KIND_CPU", "count": 1}]},
    "storage": {"bucket": "models"}})
# Row values per embedding version; mlp's version d scales by d: every (embedding,
# dense) pair gives its own score, so a mixed answer cannot pass for a clean one.
VALUE = {1: 0.5, 2: 0.25}


def dense_load(triton, version: int, keep: int | None = None) -> None:
    """The ModelVersion controller's own Triton driver loads the dense version."""
    async def run():
        driver = Triton([triton.grpc_address], "mlp", SPEC)
        try:
            await driver.load(version, keep)
        finally:
            await driver.close()
    asyncio.run(run())


def score(embedding: int, dense: int) -> float:
    return float(np.tanh(DIM * VALUE[embedding] ** 2 * dense))


@pytest.fixture(scope="module")
def stack(s3):
    shards = LocalCluster(2, 2, env=s3.env)
    uris = {version: s3.uri(f"p{version}") for version in (1, 2)}
    for version, uri in uris.items():
        CheckpointWriter(s3.client, uri, 2).write_full(version, {
            t: (IDS, np.full((ROWS, DIM), VALUE[version], np.float32))
            for t in ("user", "item")})
    triton = local_triton.start(local_triton.TEST_MODELS, 60, REPOSITORY)
    try:
        shards.prepare_full(1, uris[1], dense=1)
        shards.commit(1)
        dense_load(triton, 1)
        load_entry(triton, shards)
        yield shards, triton, uris
    finally:
        triton.stop()
        shards.stop()


def load_entry(triton, shards: LocalCluster, **settings) -> None:
    """As the operator's pod spec gives it (controllers/recmodel/entry_model), here by a
    config override."""
    config = {"denseModel": "mlp", "shards": shards.lookup_addresses,
              "tables": {"user": DIM, "item": DIM}, "outputs": ["score"], "maxIds": 4000,
              "timeoutSeconds": 2, **settings}
    url = f"http://127.0.0.1:{triton.http_port}/v2/repository/models/predict/load"
    body = {"parameters": {"config": json.dumps({
        "name": "predict", "backend": "python", "max_batch_size": 0,
        "parameters": {"recop": {"string_value": json.dumps(config)}}})}}
    urllib.request.urlopen(urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}),
        timeout=60).read()


def predict(triton, inputs: list[dict]) -> tuple[int, dict]:
    """A KServe v2 JSON request, as `curl -d` sends it."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{triton.http_port}/v2/models/predict/infer",
        json.dumps({"inputs": inputs}).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def ids(name: str, values) -> dict:
    values = list(values)
    return {"name": name, "datatype": "INT64", "shape": [len(values)], "data": values}


def outputs(answer: dict) -> dict:
    return {o["name"]: o["data"] for o in answer["outputs"]}


def test_a_prediction_names_its_versions(stack):
    _, triton, _ = stack
    code, answer = predict(triton, [ids("user", [7] * 500), ids("item", range(500))])
    assert code == 200, answer
    got = outputs(answer)
    assert got["embedding_version"] == [1] and got["dense_version"] == [1]
    np.testing.assert_allclose(got["score"], score(1, 1), rtol=1e-5)
    assert len(got["score"]) == 500


def test_bad_input_is_refused_with_a_message_naming_it(stack):
    _, triton, _ = stack
    cases = {
        "too many ids": ([ids("user", range(2500)), ids("item", range(2500))], "above the limit"),
        "unknown table": ([ids("user", [1]), ids("item", [1]), ids("color", [1])], "color"),
        "wrong dtype": ([ids("user", [1]), {"name": "item", "datatype": "FP32", "shape": [1],
                                            "data": [1.0]}], "item"),
        "rows that do not line up": ([ids("user", [1, 2]), ids("item", [1])], "user: 2"),
        "a version not loaded": ([ids("user", [1]), ids("item", [1]),
                                  {"name": "version", "datatype": "INT64", "shape": [1],
                                   "data": [9]}], "version 9"),
    }
    for case, (inputs, words) in cases.items():
        code, answer = predict(triton, inputs)
        assert code in (400, 404), (case, answer)
        assert words in answer["error"], (case, answer)
        assert "Traceback" not in answer["error"], (case, answer)
    # The backend survived all of them.
    assert predict(triton, [ids("user", [1]), ids("item", [1])])[0] == 200


def test_no_answer_mixes_versions_through_an_update_and_a_rollback(stack):
    """Two-phase update (load beside, commit shard by shard) and the dense version loaded
    beside the old one, as the ModelVersion controller does it, then back again."""
    shards, triton, uris = stack
    seen, bad, stop = [], [], threading.Event()

    def traffic():
        while not stop.is_set():
            code, answer = predict(triton, [ids("user", range(200)), ids("item", range(200))])
            if code != 200:
                bad.append(answer)
                continue
            got = outputs(answer)
            pair = (got["embedding_version"][0], got["dense_version"][0])
            seen.append(pair)
            if not np.allclose(got["score"], score(*pair), rtol=1e-5):
                bad.append(("mixed", pair, got["score"][:3]))

    workers = [threading.Thread(target=traffic) for _ in range(2)]
    for w in workers:
        w.start()
    try:
        dense_load(triton, 2, keep=1)
        shards.prepare_full(2, uris[2], dense=2)
        shards.commit(2)
        dense_load(triton, 2)  # the old dense version goes
        while (2, 2) not in seen[-5:]:
            threading.Event().wait(0.05)
        # Rollback: the old version comes back on Triton first, then on the shards.
        dense_load(triton, 1, keep=2)
        for admin in shards.admins():
            admin.rollback(1)
        dense_load(triton, 1)
        count = len(seen)
        while len(seen) < count + 20:
            threading.Event().wait(0.05)
    finally:
        stop.set()
        for w in workers:
            w.join()
    assert not bad, bad[:5]
    assert {(1, 1), (2, 2)} <= set(seen) <= {(1, 1), (2, 2)}
    assert seen[-1] == (1, 1)
    metrics = urllib.request.urlopen(
        f"http://127.0.0.1:{triton.metrics_port}/metrics", timeout=10).read().decode()
    for name in ("recop_predict_stage_seconds_total", "recop_predict_rows_fetched_total",
                 "recop_predict_version_served", "nv_inference_request_success"):
        assert name in metrics, name


def test_a_shard_with_no_replica_fails_the_request_or_gives_zero_rows_as_configured(stack):
    """Last in the module: shard 1 loses both replicas."""
    shards, triton, _ = stack
    for process in shards.processes:
        if process.shard_index == 1:
            process.stop()
    request = [ids("user", range(50)), ids("item", range(50))]
    code, answer = predict(triton, request)
    assert code == 503 and "shard 1" in answer["error"], answer
    load_entry(triton, shards, zeroRowsWhenShardUnavailable=True)
    code, answer = predict(triton, request)
    assert code == 200, answer
    got = outputs(answer)
    # A row scores from its two embeddings: zero when either id is on the missing shard.
    either = shard_of(np.arange(50, dtype=np.int64), 2) == 1
    np.testing.assert_allclose(got["score"], np.where(either, 0.0, score(1, 1)), atol=1e-6)
    metrics = urllib.request.urlopen(
        f"http://127.0.0.1:{triton.metrics_port}/metrics", timeout=10).read().decode()
    counted = [line for line in metrics.splitlines()
               if line.startswith(("recop_predict_default_rows_total{",
                                   "recop_predict_errors_total{"))]
    assert any('shard="1"' in line for line in counted), counted
    assert any('kind="shard_unavailable"' in line for line in counted), counted
