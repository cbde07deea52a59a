"""ModelVersion handlers: the Kopf wiring, nothing more.

Events start drives (runner.py) and return: a version's drive (drive.py) while its
status says it has work (queue.needs_drive), a model's catch-up (catchup.py) when its
endpoints change. The events Kopf replays as it starts resume every drive after a
restart. A user rollback is only recorded here (rollback.py); the version's own drive
carries it out.
"""

from __future__ import annotations

import functools

import kopf
from pydantic import ValidationError

from controllers.common import labels as L
from controllers.common.settings import settings_of
from controllers.modelversion import rollback
from controllers.modelversion.catchup import start_catch_up
from controllers.modelversion.drive import drive
from controllers.modelversion.queue import needs_drive
from controllers.modelversion.runner import Runner
from recop.api import MODELVERSION, RECMODEL
from recop.api.common import GROUP, VERSION
from recop.api.modelversion import ModelVersionSpec, ModelVersionStatus

RESOURCE = (GROUP, VERSION, MODELVERSION.plural)
RUNNER = "modelversion_runner"  # the memo key of this controller's Runner


@kopf.on.startup(id="modelversion-runner")
async def start_runner(memo: kopf.Memo, **_):
    memo[RUNNER] = Runner()


@kopf.on.cleanup(id="modelversion-runner")
async def stop_runner(memo: kopf.Memo, **_):
    await memo[RUNNER].close()


@kopf.on.event(*RESOURCE, id="modelversion")
async def on_modelversion(type, namespace, name, spec, status, memo, logger, **_):
    if type == "DELETED":
        return  # a running drive sees it and stops
    try:
        kind = ModelVersionSpec.model_validate(dict(spec)).kind
    except ValidationError as exc:
        raise kopf.PermanentError(f"invalid spec: {exc}") from exc
    if needs_drive(ModelVersionStatus.model_validate(dict(status or {})), kind):
        runner = memo[RUNNER]
        runner.ensure(("drive", namespace, name), functools.partial(
            drive, runner, namespace, name, logger, settings_of(memo).prometheus_url), logger)


@kopf.on.event("discovery.k8s.io", "v1", "endpointslices", labels={L.MODEL: kopf.PRESENT},
               id="modelversion-replicas")
async def on_replicas(namespace, labels, memo, logger, **_):
    """A replica that joined, restarted empty or missed a commit shows up as a change of
    its shard's endpoints; a Triton server that started, as one of the Triton Service's."""
    start_catch_up(memo[RUNNER], namespace, labels[L.MODEL], logger)


@kopf.on.update(GROUP, VERSION, RECMODEL.plural, field="spec.activeVersion")
async def on_user_rollback(namespace, name, new, status, memo, **_):
    """A user points the RecModel at an earlier version: the one serving is marked for a
    rollback to it (re-activated from memory when the servers still hold it)."""
    await rollback.record(memo[RUNNER], namespace, name, (status or {}).get("activeVersion"),
                          new)
