"""A server's dense model config is the spec's, or how it differs, in the form Triton
reports it (the JSON below is what tritonserver 2.x returns for the test model)."""

from __future__ import annotations

from controllers.modelversion.dense_config import differences
from recop.api.recmodel import Dense

SPEC = Dense.model_validate({
    "modelName": "mlp", "gpusPerPod": 0, "maxBatchSize": 32,
    "dynamicBatching": {"preferredBatchSizes": [4, 16], "maxQueueDelayMicroseconds": 2500},
    "instanceGroups": [{"kind": "KIND_CPU", "count": 2}]})
LOADED = {"name": "mlp", "version_policy": {"specific": {"versions": ["1"]}},
          "max_batch_size": 32,
          "instance_group": [{"name": "mlp_0", "count": 2, "kind": "KIND_CPU"}],
          "dynamic_batching": {"preferred_batch_size": [4, 16],
                               "max_queue_delay_microseconds": "2500"},
          "backend": "python"}
# config.pbtxt of the repository as a pod that started on its own serves it.
REPOSITORY = {"name": "mlp", "max_batch_size": 64, "backend": "python",
              "instance_group": [{"name": "mlp_0", "count": 1, "kind": "KIND_CPU"}]}


def test_the_spec_config_as_triton_reports_it_matches():
    assert differences(LOADED, SPEC) is None


def test_the_repository_config_differs_and_says_how():
    message = differences(REPOSITORY, SPEC)
    assert "max_batch_size 64 (spec 32)" in message
    assert "instance groups" in message and "dynamic batching None" in message


def test_only_what_the_spec_sets_is_compared():
    # Triton prefers max_batch_size when the spec names no preferred sizes.
    plain = Dense.model_validate({"modelName": "mlp", "gpusPerPod": 0, "maxBatchSize": 64,
                                  "instanceGroups": [{"kind": "KIND_CPU"}]})
    filled = {**REPOSITORY, "dynamic_batching": {"preferred_batch_size": [64],
                                                 "max_queue_delay_microseconds": "500"}}
    assert differences(filled, plain) is None
    off = plain.model_copy(update={"dynamic_batching": plain.dynamic_batching.model_copy(
        update={"enabled": False})})
    assert differences(filled, off) is None
    slower = {**filled, "dynamic_batching": {"max_queue_delay_microseconds": "900"}}
    assert "dynamic batching" in differences(slower, plain)
