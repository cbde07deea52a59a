"""The Triton driver against a real tritonserver on the CPU (PyPI nvidia-pytriton):
explicit-control load of a dense version beside the old one, readiness, smoke inference,
release of the old version, and a rollback load; a server on the repository's own
config holds no version until the driver loads the spec's."""

from __future__ import annotations

import asyncio

import pytest

from controllers.modelversion.drivers import Triton
from devstack import triton as local_triton
from recop.api.recmodel import RecModelSpec

# Distinct from the repository's config.pbtxt (max_batch_size 64, one instance, no
# batcher), so the config read back tells which one the server runs.
SPEC = RecModelSpec.model_validate({
    "tables": [{"name": "user", "dimension": 4, "rows": 10}],
    "dense": {"modelName": "mlp", "gpusPerPod": 0, "maxBatchSize": 32,
              "dynamicBatching": {"preferredBatchSizes": [4, 16],
                                  "maxQueueDelayMicroseconds": 2500},
              "instanceGroups": [{"kind": "KIND_CPU", "count": 2}]},
    "storage": {"bucket": "models"}})


@pytest.fixture(scope="module")
def triton():
    handle = local_triton.start(local_triton.TEST_MODELS)
    yield handle
    handle.stop()


def test_load_smoke_release_and_rollback(triton):
    async def run():
        driver = Triton([triton.grpc_address], "mlp", SPEC)
        try:
            await driver.load(1, None)
            assert await driver.ready_versions() == {1}
            await driver.load(2, keep=1)  # the new version beside the old one
            assert await driver.ready_versions() == {1, 2}
            await driver.load(2, None)  # release the old version
            assert await driver.ready_versions() == {2}
            await driver.load(1, None)  # rollback
            assert await driver.ready_versions() == {1}
        finally:
            await driver.close()

    asyncio.run(run())


def test_a_server_on_the_repository_config_holds_nothing_until_loaded(triton):
    """As a pod that started on its own (--load-model): the repository's default version
    (the newest, 2) with config.pbtxt's settings."""
    address = triton.grpc_address

    async def run():
        driver = Triton([address], "mlp", SPEC)
        try:
            client = driver.clients[address]
            # Unloaded first: Triton keeps an earlier load's config over a load without one.
            await client.unload_model("mlp", unload_dependents=False)
            await client.load_model("mlp")  # no config: the repository's
            assert await client.is_model_ready("mlp", "2")
            assert await driver.versions() == {address: frozenset()}
            await driver.load(1, None, server=address)
            assert await driver.versions() == {address: frozenset({1})}
            config = (await client.get_model_config(
                "mlp", as_json=True))["config"]
            assert config["max_batch_size"] == 32
            assert config["dynamic_batching"]["preferred_batch_size"] == [4, 16]
            assert [(g["kind"], g["count"]) for g in config["instance_group"]] == [
                ("KIND_CPU", 2)]
            with pytest.raises(RuntimeError, match="not ready"):
                await driver.load(1, None, server="10.0.0.9:8001")
        finally:
            await driver.close()

    asyncio.run(run())
