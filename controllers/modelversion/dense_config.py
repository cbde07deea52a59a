"""Whether a Triton server runs the dense model with the spec's configuration, pure.

A Triton pod starts with the repository's config.pbtxt; the spec's configuration comes
only with the operator's loads (controllers/common/triton_config.py). So a server whose
versions look right may still batch and run instances as the repository says: the
drive and the catch-up count a version as loaded only where the config read back from
the server is the spec's.
"""

from __future__ import annotations

from controllers.common import triton_config
from recop.api.recmodel import Dense


def serving_shape(config: dict) -> tuple:
    """What the spec sets in a model config, comparable across its two forms: the one
    RecOp renders and the one Triton reports (protobuf JSON: 64-bit integers as strings,
    fields at their default value left out)."""
    groups = sorted((g.get("kind", "KIND_AUTO"), int(g.get("count", 0)))
                    for g in config.get("instance_group") or [])
    batching = config.get("dynamic_batching")
    if batching is not None:
        batching = (tuple(int(b) for b in batching.get("preferred_batch_size") or []),
                    int(batching.get("max_queue_delay_microseconds", 0)))
    return int(config.get("max_batch_size", 0)), tuple(groups), batching


def differences(reported: dict, dense: Dense) -> str | None:
    """How the config a server reports differs from the spec's (None: it is the spec's).

    Only what the spec sets is compared, as Triton fills the rest in: with no preferred
    batch sizes it prefers max_batch_size, and with dynamic batching off in the spec a
    backend may turn on a batcher of its own, which no load would change.
    """
    batch, groups, batching = serving_shape(reported)
    want_batch, want_groups, want_batching = serving_shape(triton_config.model_config(dense))
    out = []
    if batch != want_batch:
        out.append(f"max_batch_size {batch} (spec {want_batch})")
    if groups != want_groups:
        out.append(f"instance groups {list(groups)} (spec {list(want_groups)})")
    if want_batching is not None:
        sizes, delay = batching or ((), 0)
        want_sizes, want_delay = want_batching
        if batching is None or (want_sizes and sizes != want_sizes) or delay != want_delay:
            out.append(f"dynamic batching {batching} (spec {want_batching})")
    return "; ".join(out) or None
