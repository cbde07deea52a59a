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
    settings.watching.server_timeout = 300
    settings.networking.error_backoffs = [1, 2, 5, 10]


@kopf.on.cleanup()
async def close(**_):
    await kubeapi.close()
