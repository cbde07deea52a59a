"""What the ModelVersion plan asks for, as values: the pure modules return these and
controllers/modelversion/executor.py is the one place that carries them out.

Server and Triton actions change what serves; the bookkeeping ones (pointers, phases,
Events) record it. Every action is idempotent against what the servers and the API
report, so a pass repeated after a restart does no harm.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import ClassVar

from recop.api.modelversion import ModelVersionStatus, Phase
from recop.api.recmodel import Freshness


class _Verb:
    verb: ClassVar[str]

    def __str__(self) -> str:
        """The verb and what it acts on, as failure messages name an action."""
        first = [str(getattr(self, f.name)) for f in fields(self)][:1]
        return " ".join([self.verb, *first])


@dataclass(frozen=True)
class LoadFull(_Verb):
    """A replica loads a full checkpoint beside the version it serves."""

    verb: ClassVar[str] = "load_full"
    replica: str  # host:adminPort
    version: int
    uri: str
    dense: int = 0  # the dense version that serves with it (embedding.proto), 0: none


@dataclass(frozen=True)
class ApplyIncremental(_Verb):
    """A replica builds `version` from `base`, which it holds, and the incremental's rows."""

    verb: ClassVar[str] = "apply_incremental"
    replica: str
    version: int
    base: int
    uri: str
    dense: int = 0


@dataclass(frozen=True)
class Emit(_Verb):
    """An Event on the ModelVersion being driven."""

    verb: ClassVar[str] = "event"
    reason: str
    message: str
    warning: bool = False


@dataclass(frozen=True)
class Commit(_Verb):
    """A replica serves `version`, which it holds (phase two of an update)."""

    verb: ClassVar[str] = "commit"
    replica: str
    version: int
    # Posted once the commit succeeded; not part of what the action does on the server.
    announce: Emit | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Rollback(_Verb):
    """A replica serves the earlier `version` again from memory (a commit of it)."""

    verb: ClassVar[str] = "rollback"
    replica: str
    version: int


@dataclass(frozen=True)
class Drop(_Verb):
    """A replica frees `version`, which it does not serve."""

    verb: ClassVar[str] = "drop"
    replica: str
    version: int


@dataclass(frozen=True)
class TritonLoad(_Verb):
    """Every ready Triton server (or only `server`, host:port) loads dense `version` with
    the spec's model config, keeping `keep` loaded beside it (None: only `version`
    stays), and passes a smoke inference."""

    verb: ClassVar[str] = "triton_load"
    version: int
    keep: int | None = None
    server: str | None = None


@dataclass(frozen=True)
class GoldenCheck(_Verb):
    """The golden set runs through the candidate and its reference; a mismatch fails it."""

    verb: ClassVar[str] = "golden"


@dataclass(frozen=True)
class PointModel(_Verb):
    """The RecModel's status pointers this controller owns (None: leave it as it is)."""

    verb: ClassVar[str] = "point_model"
    active: str | None = None
    clean: str | None = None


@dataclass(frozen=True)
class SetPhase(_Verb):
    """Another ModelVersion of the model changes phase (superseded, or active again)."""

    verb: ClassVar[str] = "set_phase"
    version: str
    phase: Phase


@dataclass(frozen=True)
class WriteStatus(_Verb):
    """The driven ModelVersion's own status (written only when it changed)."""

    verb: ClassVar[str] = "write_status"
    status: ModelVersionStatus


@dataclass(frozen=True)
class ReportFreshness(_Verb):
    """The RecModel's status.freshness, as the realtime version measures it (None:
    removed, once no realtime version applies the stream)."""

    verb: ClassVar[str] = "report_freshness"
    freshness: Freshness | None


ServerAction = LoadFull | ApplyIncremental | Commit | Rollback | Drop
Action = (ServerAction | TritonLoad | GoldenCheck | PointModel | SetPhase | Emit | WriteStatus
          | ReportFreshness)
# Actions that only start work on the servers: it finishes later, so the drive waits.
LOADS = (LoadFull, ApplyIncremental)
