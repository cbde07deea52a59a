"""RecOp's API (group serving.recop.dev, version v1alpha1) as pydantic models."""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel

from recop.api.abtest import ABTestSpec, ABTestStatus
from recop.api.common import API_VERSION, GROUP, VERSION
from recop.api.modelversion import ModelVersionSpec, ModelVersionStatus
from recop.api.recmodel import RecModelSpec, RecModelStatus


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    json_path: str
    type: str = "string"
    priority: int = 0


@dataclass(frozen=True)
class Resource:
    """A custom resource: its names and the models of its spec and status."""

    kind: str
    plural: str
    short_names: tuple[str, ...]
    spec: type[BaseModel]
    status: type[BaseModel]
    columns: tuple[PrinterColumn, ...] = field(default=())

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"


_AGE = PrinterColumn("Age", ".metadata.creationTimestamp", "date")

RECMODEL = Resource(
    kind="RecModel", plural="recmodels", short_names=("rmodel",),
    spec=RecModelSpec, status=RecModelStatus,
    columns=(
        PrinterColumn("Phase", ".status.phase"),
        PrinterColumn("Shards", ".spec.sharding.shards", "integer"),
        PrinterColumn("Ready-Shards", ".status.readyShards", "integer"),
        PrinterColumn("Active", ".status.activeVersion"),
        _AGE,
    ),
)
MODELVERSION = Resource(
    kind="ModelVersion", plural="modelversions", short_names=("mv", "mver"),
    spec=ModelVersionSpec, status=ModelVersionStatus,
    columns=(
        PrinterColumn("Model", ".spec.model"),
        PrinterColumn("Kind", ".spec.kind"),
        PrinterColumn("Phase", ".status.phase"),
        PrinterColumn("Reason", ".status.reason", priority=1),
        _AGE,
    ),
)
ABTEST = Resource(
    kind="ABTest", plural="abtests", short_names=("abt",),
    spec=ABTestSpec, status=ABTestStatus,
    columns=(
        PrinterColumn("Baseline", ".spec.baseline.name"),
        PrinterColumn("Phase", ".status.phase"),
        PrinterColumn("Winner", ".status.verdict.winner"),
        _AGE,
    ),
)
RESOURCES = (RECMODEL, MODELVERSION, ABTEST)
BY_KIND = {r.kind: r for r in RESOURCES}

__all__ = ["ABTEST", "API_VERSION", "BY_KIND", "GROUP", "MODELVERSION", "RECMODEL",
           "RESOURCES", "VERSION", "PrinterColumn", "Resource"]
