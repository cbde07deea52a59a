"""Names and labels of the objects RecOp creates for a RecModel."""

from __future__ import annotations

MODEL = "recop.dev/model"
COMPONENT = "recop.dev/component"
SHARD = "recop.dev/shard"
MANAGED_BY = "app.kubernetes.io/managed-by"
SERVICE_NAME = "kubernetes.io/service-name"

MANAGER = "recop"  # the managed-by value

EMBEDDING = "embedding-server"
TRITON = "triton"


def embedding_name(model: str, shard: int | str) -> str:
    return f"{model}-emb-{shard}"


def triton_name(model: str) -> str:
    return f"{model}-triton"


def selector(model: str, component: str, shard: int | None = None) -> dict[str, str]:
    """The labels that select a component's pods (a stable subset of `labels`)."""
    out = {MODEL: model, COMPONENT: component}
    if shard is not None:
        out[SHARD] = str(shard)
    return out


def labels(model: str, component: str, shard: int | None = None) -> dict[str, str]:
    # No app.kubernetes.io/instance: Argo CD (before 3.0) tracks what it owns by that
    # label, and would take these objects for its own and prune them.
    return {
        **selector(model, component, shard),
        "app.kubernetes.io/name": component,
        "app.kubernetes.io/part-of": "recop",
        MANAGED_BY: MANAGER,
    }


def managed(obj: dict) -> bool:
    """Whether RecOp manages `obj` (it carries the labels `labels` gives)."""
    return (obj["metadata"].get("labels") or {}).get(MANAGED_BY) == MANAGER
