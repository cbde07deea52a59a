"""The Triton driver against a real tritonserver on the CPU (PyPI nvidia-pytriton):
explicit-control load of a dense version beside the old one, readiness, smoke inference,
release of the old version, and a rollback load."""

from __future__ import annotations

import asyncio

import pytest

from controllers.modelversion.drivers import Triton
from devstack import triton as local_triton
from recop.api.recmodel import RecModelSpec

SPEC = RecModelSpec.model_validate({
    "tables": [{"name": "user", "dimension": 4, "rows": 10}],
    "dense": {"modelName": "mlp", "gpusPerPod": 0, "maxBatchSize": 64,
              "instanceGroups": [{"kind": "KIND_CPU"}]},
    "storage": {"bucket": "models"}})


@pytest.fixture(scope="module")
def triton():
    handle = local_triton.start(local_triton.TEST_MODELS)
    yield handle
    handle.stop()


def test_load_smoke_release_and_rollback(triton):
    async def run():
        driver = Triton([triton.grpc_address], "mlp", SPEC)
        await driver.load(1, None)
        assert await driver.ready_versions() == {1}
        await driver.load(2, keep=1)  # the new version beside the old one
        assert await driver.ready_versions() == {1, 2}
        await driver.load(2, None)  # release the old version
        assert await driver.ready_versions() == {2}
        await driver.load(1, None)  # rollback
        assert await driver.ready_versions() == {1}

    asyncio.run(run())
