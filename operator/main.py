"""RecOp's Kopf entry point: settings and wiring; the handlers live in controllers/.

Run with `recop operator` (operator/cli.py), which reads the settings
(operator/settings.py), serves the metrics and hands the settings to the handlers.
"""

from __future__ import annotations

import logging

import kopf

import controllers.abtest.handlers  # registers the ABTest handlers
import controllers.modelversion.handlers  # registers the ModelVersion handlers
import controllers.recmodel.handlers  # noqa: F401  (registers the RecModel handlers)
from controllers.common import kubeapi

PREFIX = "recop.dev"
PEERING_LIFETIME_SECONDS = 13


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_):
    # The CRD schemas are structural, so the API server prunes any status field they
    # do not declare: Kopf's own progress and diff-base go to annotations instead.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration")
    settings.persistence.finalizer = f"{PREFIX}/finalizer"
    settings.posting.level = logging.INFO
    settings.peering.name = "recop"
    settings.peering.mandatory = False
    # A replica is presumed dead this long after its last keep-alive (Kopf renews every
    # lifetime - 5..10 s): a standby acts within about 13 s of the leader's death, as
    # with controller-runtime's 15 s leader lease, instead of Kopf's default 60 s.
    settings.peering.lifetime = PEERING_LIFETIME_SECONDS
    settings.watching.server_timeout = 300
    settings.networking.error_backoffs = [1, 2, 5, 10]


@kopf.on.cleanup()
async def close(**_):
    await kubeapi.close()
