"""A RecModel's status, derived from what discovery shows (EndpointSlices)."""

from __future__ import annotations

from collections.abc import Sequence

from controllers.common import labels as L
from controllers.common.conditions import condition
from controllers.recmodel.causes import Cause
from controllers.recmodel.objects import TRITON_GRPC, TRITON_HTTP
from embedding.predict.contract import INFER_PATH
from recop.api.common import set_condition
from recop.api.recmodel import (
    FRESHNESS_BREACHED,
    Endpoints,
    Freshness,
    Phase,
    RecModelSpec,
    RecModelStatus,
)

# The RecModel controller's share of the status; the ModelVersion controller owns the
# version fields (activeVersion, lastCleanVersion) and its own conditions.
STATUS_MANAGER = "recop-recmodel"
OWNED_FIELDS = frozenset({"phase", "observedGeneration", "conditions", "shards", "readyShards",
                          "readyReplicas", "tritonReadyReplicas", "endpoints",
                          "readyGeneration"})
OWNED_CONDITIONS = frozenset({"Ready", "Progressing", "Degraded"})
# Causes told in a condition's message; one pod's reason usually stands for its shard's.
MAX_CAUSES = 3


def owned_status(status: dict) -> dict:
    mine = {k: v for k, v in status.items() if k in OWNED_FIELDS}
    mine["conditions"] = [c for c in status.get("conditions", [])
                          if c["type"] in OWNED_CONDITIONS]
    return mine


def summarize(spec: RecModelSpec, name: str, namespace: str, generation: int,
              shard_ready: list[int], triton_ready: int, previous: RecModelStatus,
              refusal: str | None, *, refusal_reason: str = "CannotPlace",
              causes: Sequence[Cause] = ()) -> RecModelStatus:
    """The status to report; `shard_ready[i]` counts ready replicas of shard i.

    `refusal`: why the controller builds no pods (`refusal_reason` names it); `causes`:
    why replicas are not ready (controllers/recmodel/causes.py), the first naming the
    reason of a model that is not complete and all of them told in its message."""
    want = spec.sharding.replicas_per_shard
    serving_shards = sum(1 for n in shard_ready if n > 0)
    dense_serving = spec.dense.replicas == 0 or triton_ready > 0
    serving = serving_shards == spec.sharding.shards and dense_serving and refusal is None
    complete = serving and not replicas_missing(spec, shard_ready, triton_ready)

    if refusal:
        phase, reason, message = Phase.FAILED, refusal_reason, refusal
    elif complete:
        phase, reason, message = Phase.READY, "AllReplicasReady", (
            f"{spec.sharding.shards} shard(s) x {want} replica(s) and "
            f"{triton_ready} Triton pod(s) ready")
    elif serving and previous.ready_generation == generation:
        phase, reason, message = Phase.DEGRADED, "ReplicasMissing", _missing(
            shard_ready, want, triton_ready, spec.dense.replicas)
    else:
        phase, reason, message = Phase.PROGRESSING, "RollingOut", _missing(
            shard_ready, want, triton_ready, spec.dense.replicas)
    breach = freshness_breach(previous.freshness)
    if phase == Phase.READY and breach:
        phase, reason, message = Phase.DEGRADED, FRESHNESS_BREACHED, breach
    if causes and not refusal and not complete:
        reason = causes[0].reason
        message = "; ".join([message, *(c.message for c in causes[:MAX_CAUSES])]) + (
            f"; and {len(causes) - MAX_CAUSES} more" if len(causes) > MAX_CAUSES else "")

    conditions = previous.conditions
    conditions = set_condition(conditions, condition(
        "Ready", serving, "Serving" if serving else reason,
        "every shard and the dense model have a ready replica" if serving else message,
        generation))
    progressing = phase == Phase.PROGRESSING
    conditions = set_condition(conditions, condition(
        "Progressing", progressing, reason if progressing else "Settled",
        message if progressing else "", generation))
    degraded = phase in (Phase.DEGRADED, Phase.FAILED)
    conditions = set_condition(conditions, condition(
        "Degraded", degraded, reason if degraded else "Healthy", message if degraded else "",
        generation))

    svc = f"{namespace}.svc"
    return previous.model_copy(update={
        "phase": phase,
        "observed_generation": generation,
        "conditions": conditions,
        "shards": spec.sharding.shards,
        "ready_shards": serving_shards,
        "ready_replicas": sum(shard_ready),
        "triton_ready_replicas": triton_ready,
        "ready_generation": generation if complete else previous.ready_generation,
        "endpoints": Endpoints(
            embedding=(f"{L.embedding_name(name, f'{{0..{spec.sharding.shards - 1}}}')}"
                       f".{svc}:{spec.embedding_server.lookup_port}"),
            triton_grpc=f"{L.triton_name(name)}.{svc}:{TRITON_GRPC}",
            triton_http=f"{L.triton_name(name)}.{svc}:{TRITON_HTTP}",
            predict=(f"http://{L.triton_name(name)}.{svc}:{TRITON_HTTP}{INFER_PATH}"
                     if spec.dense.entry_model.enabled else None)),
    })


def freshness_breach(freshness: Freshness | None) -> str | None:
    """Why the model is Degraded for its freshness (reported by its realtime version)."""
    if freshness is None or not freshness.breached:
        return None
    since = f" since {freshness.over_since:%Y-%m-%dT%H:%M:%SZ}" if freshness.over_since else ""
    return (f"freshness p99 {freshness.p99_seconds:.2g}s is over the objective of "
            f"{freshness.objective_p99_seconds:.2g}s{since} (ModelVersion "
            f"{freshness.version})")


def shows_freshness_breach(status: dict) -> bool:
    """Whether a RecModel's Degraded condition tells the freshness breach."""
    return any(c.get("type") == "Degraded" and c.get("status") == "True"
               and c.get("reason") == FRESHNESS_BREACHED
               for c in status.get("conditions") or [])


def replicas_missing(spec: RecModelSpec, shard_ready: list[int], triton_ready: int) -> bool:
    """Whether a shard or the dense model has fewer ready replicas than the spec asks."""
    return (any(n < spec.sharding.replicas_per_shard for n in shard_ready)
            or triton_ready < spec.dense.replicas)


def _missing(shard_ready: list[int], want: int, triton_ready: int, triton_want: int) -> str:
    short = [f"shard {i} {n}/{want}" for i, n in enumerate(shard_ready) if n < want]
    if triton_ready < triton_want:
        short.append(f"triton {triton_ready}/{triton_want}")
    return "waiting for ready replicas: " + ", ".join(short[:8]) + (
        f" and {len(short) - 8} more" if len(short) > 8 else "")
