"""A version as the servers know it (plan.Target), read from its ModelVersion and the
chain of bases it is built on."""

from __future__ import annotations

from controllers.common.kube import Kube
from controllers.modelversion.plan import Target
from recop.api import MODELVERSION
from recop.api.common import API_VERSION
from recop.api.modelversion import ModelVersionSpec, ModelVersionStatus

# A chain longer than this (incrementals on incrementals) is a loop or a pipeline that
# never cuts a full checkpoint; either way it is not rebuilt.
MAX_CHAIN = 200


def target(name: str, spec: ModelVersionSpec, status: ModelVersionStatus,
           base: Target | None = None) -> Target:
    rules = spec.validation
    return Target(name, status.embedding_version or 0, spec.kind, spec.source, base,
                  status.dense_model_version, rules.golden_set is not None,
                  (rules.max_abs_value, rules.allow_non_finite))


def checks(*targets: Target | None) -> dict[int, tuple[float, bool]]:
    """The value checks of every version the servers may be asked to load."""
    return {t.number: t.checks for top in targets if top for t in top.chain()}


async def load_target(client: Kube, namespace: str, name: str | None,
                      depth: int = 0) -> Target | None:
    """The version `name` with its chain of bases, as far as they still exist."""
    if not name or depth > MAX_CHAIN:
        return None
    body = await client.get(API_VERSION, MODELVERSION.kind, namespace, name)
    if body is None:
        return None
    spec = ModelVersionSpec.model_validate(body["spec"])
    base = await load_target(client, namespace, spec.base_version, depth + 1) \
        if spec.kind == "incremental" else None
    return target(name, spec, ModelVersionStatus.model_validate(body.get("status") or {}),
                  base)
