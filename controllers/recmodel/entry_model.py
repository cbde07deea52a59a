"""The predict entry model's settings for a RecModel's Triton pods (embedding/predict):
the shards by their headless Services' names, which resolve to every ready replica."""

from __future__ import annotations

from controllers.common import labels as L
from embedding.predict.contract import (
    CONFIG_ENV,
    ENTRY_MODEL,
    ENTRY_REPOSITORY,
    EntryConfig,
)
from recop.api.recmodel import RecModelSpec


def entry_config(name: str, namespace: str, spec: RecModelSpec) -> EntryConfig:
    server, entry = spec.embedding_server, spec.dense.entry_model
    return EntryConfig(
        dense_model=spec.dense.model_name,
        shards=[[f"{L.embedding_name(name, s)}.{namespace}.svc:{server.lookup_port}"]
                for s in range(spec.sharding.shards)],
        tables={t.name: t.dimension for t in spec.tables},
        outputs=list(entry.outputs), dense_inputs=dict(entry.dense_inputs),
        max_ids=server.lookup_limits.max_ids_per_request,
        timeout_seconds=entry.timeout_seconds,
        zero_rows_when_shard_unavailable=entry.when_shard_unavailable == "ZeroRows")


def triton_args(spec: RecModelSpec) -> list[str]:
    """Arguments the Triton container gains: RecOp's repository and the model, loaded
    with the server (it finds the shards by itself, so no operator call is needed)."""
    if not spec.dense.entry_model.enabled:
        return []
    return [f"--model-repository={ENTRY_REPOSITORY}", f"--load-model={ENTRY_MODEL}"]


def triton_env(name: str, namespace: str, spec: RecModelSpec) -> list[dict]:
    if not spec.dense.entry_model.enabled:
        return []
    return [{"name": CONFIG_ENV, "value": entry_config(name, namespace, spec).to_json()}]
