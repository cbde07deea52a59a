"""Triton's model configuration, rendered once from the dense spec: the structure itself,
the load override the ModelVersion driver sends, and what a real tritonserver (CPU, PyPI
nvidia-pytriton) serves after the operator's first load."""

from __future__ import annotations

import asyncio
import json
import urllib.request

import pytest
import yaml

from controllers.common import triton_config
from controllers.modelversion.drivers import Triton
from devstack import triton as local_triton
from devstack.common import LOOPBACK
from recop.api.recmodel import RecModelSpec
from tests.examples import EXAMPLES

SPEC = RecModelSpec.model_validate({
    "tables": [{"name": "user", "dimension": 4, "rows": 10}],
    "dense": {"modelName": "mlp", "gpusPerPod": 0, "maxBatchSize": 64,
              "instanceGroups": [{"kind": "KIND_CPU", "count": 2}],
              "dynamicBatching": {"maxQueueDelayMicroseconds": 2000,
                                  "preferredBatchSizes": [8, 32]}},
    "storage": {"bucket": "models"}})


def example_dense():
    doc = yaml.safe_load((EXAMPLES / "valid" / "recmodel.yaml").read_text())
    return RecModelSpec.model_validate(doc["spec"]).dense


def test_the_config_carries_every_serving_setting_of_the_spec():
    config = triton_config.model_config(example_dense())
    assert config["name"] == "ctr-dense"
    assert config["max_batch_size"] == 2048
    assert config["instance_group"] == [{"kind": "KIND_GPU", "count": 2}]
    assert config["dynamic_batching"] == {"preferred_batch_size": [256, 1024],
                                          "max_queue_delay_microseconds": 200}


def test_no_dynamic_batching_when_disabled_or_the_model_does_not_batch():
    dense = example_dense()
    off = dense.model_copy(update={"dynamic_batching": dense.dynamic_batching.model_copy(
        update={"enabled": False})})
    assert "dynamic_batching" not in triton_config.model_config(off)
    unbatched = dense.model_copy(update={"max_batch_size": 0})
    assert "dynamic_batching" not in triton_config.model_config(unbatched)


def test_the_load_override_is_the_config_plus_the_versions_to_serve():
    dense = example_dense()
    override = json.loads(triton_config.load_config(dense, [3, 2]))
    assert override.pop("version_policy") == {"specific": {"versions": [2, 3]}}
    assert override == triton_config.model_config(dense)


@pytest.fixture(scope="module")
def triton():
    handle = local_triton.start(local_triton.TEST_MODELS)
    yield handle
    handle.stop()


def loaded_config(triton, model: str) -> dict:
    url = f"http://{LOOPBACK}:{triton.http_port}/v2/models/{model}/config"
    with urllib.request.urlopen(url, timeout=10) as reply:
        return json.load(reply)


def test_triton_serves_the_specs_batching_and_instances_after_the_operators_load(triton):
    async def load():
        await Triton([triton.grpc_address], "mlp", SPEC).load(1, None)

    # The repository's config.pbtxt (devstack/triton_models/mlp) has neither.
    asyncio.run(load())
    config = loaded_config(triton, "mlp")
    assert config["max_batch_size"] == 64
    assert [(g["kind"], g["count"]) for g in config["instance_group"]] == [("KIND_CPU", 2)]
    batching = config.get("dynamic_batching")
    assert batching is not None, "the load dropped the spec's dynamic batching"
    assert batching["preferred_batch_size"] == [8, 32]
    assert int(batching["max_queue_delay_microseconds"]) == 2000
