"""Triton's model configuration, rendered once from a RecModel's dense spec.

Triton takes a model's configuration from its repository (config.pbtxt) or from a load
request; RecOp never writes into the repository, so every load the operator makes
(controllers/modelversion/drivers.py) carries this configuration, and it is what Triton
serves from the first load on.
"""

from __future__ import annotations

import hashlib
import json

from recop.api.recmodel import Dense


def model_config(dense: Dense) -> dict:
    """The ModelConfig message as a dict (Triton's JSON form, snake_case field names).

    Inputs and outputs are left to the backend's auto-complete (python and onnxruntime
    backends fill them from the model itself), so the spec stays about serving.
    """
    config: dict = {
        "name": dense.model_name,
        "backend": dense.backend,
        "max_batch_size": dense.max_batch_size,
        "instance_group": [{"kind": g.kind, "count": g.count} for g in dense.instance_groups],
    }
    batching = dense.dynamic_batching
    # Triton refuses dynamic batching on a model that does not batch (max_batch_size 0).
    if batching.enabled and dense.max_batch_size > 0:
        config["dynamic_batching"] = {
            **({"preferred_batch_size": list(batching.preferred_batch_sizes)}
               if batching.preferred_batch_sizes else {}),
            "max_queue_delay_microseconds": batching.max_queue_delay_microseconds}
    return config


def load_config(dense: Dense, versions: list[int]) -> str:
    """The `config` parameter of a load request: the model configuration, serving
    exactly `versions`."""
    return json.dumps({**model_config(dense),
                       "version_policy": {"specific": {"versions": sorted(versions)}}})


def digest(dense: Dense) -> str:
    """A short, stable hash of the model configuration."""
    canonical = json.dumps(model_config(dense), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
