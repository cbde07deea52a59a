"""Carries out the plan's actions: the one place that turns an action into calls on
the embedding servers, Triton or the API. Raises what the call raised; the drive
decides what a failure means."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import kopf

from controllers.common import metrics
from controllers.common.kube import Kube
from controllers.modelversion import pointers
from controllers.modelversion.actions import (
    Action,
    ApplyIncremental,
    Commit,
    Drop,
    Emit,
    GoldenCheck,
    LoadFull,
    PointModel,
    ReportFreshness,
    Rollback,
    SetPhase,
    TritonLoad,
    WriteStatus,
)
from controllers.modelversion.drivers import Admin, Triton
from recop.api.modelversion import GoldenSetResult

NO_CHECKS = (0.0, False)


@dataclass
class Executor:
    admin: Admin
    # Value checks per version number, which the servers run on every row they load.
    checks: dict[int, tuple[float, bool]] = field(default_factory=dict)
    client: Kube | None = None
    body: dict | None = None  # the ModelVersion driven: its status and Events
    model: str | None = None  # its RecModel
    triton: Triton | None = None
    golden: Callable[[], Awaitable[GoldenSetResult]] | None = None
    # The reason of the status this executor wrote last: what a rollback it announces
    # is counted under (controllers/common/metrics.py).
    written_reason: str | None = None

    async def run(self, action: Action) -> GoldenSetResult | None:
        """Carry out `action`; a golden check returns its result."""
        match action:
            case LoadFull(replica, version, uri, dense):
                await self.admin.load_full(replica, version, uri,
                                           self.checks.get(version, NO_CHECKS), dense)
            case ApplyIncremental(replica, version, base, uri, dense):
                await self.admin.apply_incremental(replica, version, base, uri,
                                                   self.checks.get(version, NO_CHECKS), dense)
            case Commit(replica, version) | Rollback(replica, version):
                await self.admin.commit(replica, version)
                if isinstance(action, Commit) and action.announce:
                    await self.run(action.announce)
            case Drop(replica, version):
                await self.admin.drop(replica, version)
            case TritonLoad(version, keep, server):
                await self._need(self.triton).load(version, keep, server)
            case GoldenCheck():
                return await self._need(self.golden)()
            case WriteStatus(status):
                await pointers.write_status(self._need(self.client), self._need(self.body),
                                            status)
                self.written_reason = status.reason
            case PointModel(active, clean):
                await pointers.set_model(self._need(self.client), self._namespace(),
                                         self._need(self.model), active=active, clean=clean)
            case ReportFreshness(freshness):
                await pointers.set_freshness(self._need(self.client), self._namespace(),
                                             self._need(self.model), freshness)
            case SetPhase(version, phase):
                await pointers.set_phase(self._need(self.client), self._namespace(),
                                         version, phase)
            case Emit(reason, message, warning):
                post = kopf.warn if warning else kopf.info
                post(self._need(self.body), reason=reason, message=message)
                if reason == "RolledBack":
                    metrics.rolled_back(self._namespace(), self._need(self.model),
                                        self._need(self.body)["metadata"]["name"],
                                        self.written_reason or "")
            case _:
                raise ValueError(f"unknown action {action!r}")
        return None

    def _namespace(self) -> str:
        return self._need(self.body)["metadata"]["namespace"]

    @staticmethod
    def _need(value):
        """What an action needs from the context it is run in (a plan bug when absent)."""
        if value is None:
            raise RuntimeError("the executor lacks the context this action needs")
        return value
