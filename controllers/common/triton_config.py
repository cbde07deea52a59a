"""Triton's config.pbtxt, rendered from a RecModel's dense spec."""

from __future__ import annotations

from recop.api.recmodel import Dense


def render(dense: Dense) -> str:
    """Model configuration in Triton's protobuf text format.

    Inputs and outputs are left to the backend's auto-complete (python and onnxruntime
    backends fill them from the model itself), so the spec stays about serving.
    """
    lines = [
        f'name: "{dense.model_name}"',
        f'backend: "{dense.backend}"',
        f"max_batch_size: {dense.max_batch_size}",
        "instance_group [",
        ",\n".join(f"  {{ kind: {g.kind} count: {g.count} }}" for g in dense.instance_groups),
        "]",
    ]
    batching = dense.dynamic_batching
    if batching.enabled and dense.max_batch_size > 0:
        lines.append("dynamic_batching {")
        if batching.preferred_batch_sizes:
            sizes = ", ".join(str(b) for b in batching.preferred_batch_sizes)
            lines.append(f"  preferred_batch_size: [ {sizes} ]")
        lines.append(f"  max_queue_delay_microseconds: {batching.max_queue_delay_microseconds}")
        lines.append("}")
    return "\n".join(lines) + "\n"
