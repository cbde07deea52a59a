"""A user rollback: the RecModel's spec.activeVersion set to an earlier version.

The RecModel's handler only records the request on the version serving now (RolledBack,
reason UserRollback, the requested version as the one to restore); that version's own
drive, started by the status change, restores it like any other rollback: from memory
when the servers still hold it, else rebuilt from S3.
"""

from __future__ import annotations

from controllers.common.kubeapi import kube
from controllers.modelversion.pointers import write_status
from controllers.modelversion.runner import Runner
from recop.api import MODELVERSION
from recop.api.common import API_VERSION
from recop.api.modelversion import ModelVersionStatus, Phase


def wanted(new: str | None, current: str | None) -> bool:
    """Whether setting spec.activeVersion to `new` asks to leave `current`, which serves."""
    return bool(new) and current is not None and new != current


def request(status: ModelVersionStatus, new: str) -> ModelVersionStatus:
    """The serving version's status once a rollback to `new` is asked for."""
    return status.model_copy(update={
        "phase": Phase.ROLLED_BACK, "reason": "UserRollback", "previous_version": new,
        "completed_at": None, "message": f"RecModel.spec.activeVersion set to {new}"})


async def record(runner: Runner, namespace: str, model: str, current: str | None,
                 new: str | None) -> None:
    if not wanted(new, current):
        return
    client = await kube()
    async with runner.lock(namespace, model):  # not in the middle of a pass's write
        body = await client.get(API_VERSION, MODELVERSION.kind, namespace, current)
        if body is None:
            return
        status = ModelVersionStatus.model_validate(body.get("status") or {})
        await write_status(client, body, request(status, new))
