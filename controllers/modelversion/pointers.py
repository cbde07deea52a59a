"""The ModelVersion controller's writes to the API: a version's own status, another
version's phase, and the RecModel status fields it owns (activeVersion and
lastCleanVersion under one field manager, freshness under another). Each is a
server-side apply."""

from __future__ import annotations

from controllers.common.kube import Kube
from controllers.modelversion.conditions import with_lifecycle
from recop.api import MODELVERSION, RECMODEL
from recop.api.common import API_VERSION
from recop.api.modelversion import ModelVersionStatus, Phase
from recop.api.recmodel import Freshness

STATUS_MANAGER = "recop-modelversion"
# Its own manager: applying the pointers without it must not remove it, and removing it
# (an empty apply) must not touch the pointers.
FRESHNESS_MANAGER = "recop-modelversion-freshness"


async def write_status(client: Kube, body: dict, status: ModelVersionStatus) -> None:
    """Apply `status` to the ModelVersion `body`, with the lifecycle conditions its phase
    implies, unless that is what it holds already."""
    meta = body["metadata"]
    status = with_lifecycle(status, body["spec"]["kind"], meta.get("generation"))
    if status.to_wire() != (body.get("status") or {}):
        await client.apply_status(API_VERSION, MODELVERSION.kind, meta["namespace"],
                                  meta["name"], status.to_wire(), STATUS_MANAGER)


async def set_model(client: Kube, namespace: str, model: str, active: str | None = None,
                    clean: str | None = None) -> None:
    """Move the RecModel's pointers (None: keep it).

    Both go in every apply: server-side apply removes a field its manager stops sending.
    """
    body = await client.get(API_VERSION, RECMODEL.kind, namespace, model) or {}
    current = body.get("status") or {}
    wire = {"activeVersion": active or current.get("activeVersion"),
            "lastCleanVersion": clean or current.get("lastCleanVersion")}
    wire = {k: v for k, v in wire.items() if v}
    await client.apply_status(API_VERSION, RECMODEL.kind, namespace, model, wire,
                              STATUS_MANAGER)


async def set_freshness(client: Kube, namespace: str, model: str,
                        freshness: Freshness | None) -> None:
    wire = {"freshness": freshness.to_wire()} if freshness else {}
    await client.apply_status(API_VERSION, RECMODEL.kind, namespace, model, wire,
                              FRESHNESS_MANAGER)


async def set_phase(client: Kube, namespace: str, name: str, phase: Phase) -> None:
    body = await client.get(API_VERSION, MODELVERSION.kind, namespace, name)
    if body is not None:
        status = ModelVersionStatus.model_validate(body.get("status") or {})
        await write_status(client, body, status.model_copy(update={"phase": phase}))
