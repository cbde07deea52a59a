"""ModelVersion: one checkpoint of a RecModel, and how it is landing."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from recop.api.common import ApiModel, Condition, Name, Rule, S3Uri, conditions_field


class GoldenSet(ApiModel):
    """Inference on fixed inputs, compared with the active version before serving."""

    uri: S3Uri = Field(description=(
        "An .npz file: ids.<table> inputs, optionally expected.<output> "
        "(see docs/checkpoint-format.md)."))
    tolerance: float = Field(default=0.01, ge=0, le=1, description=(
        "Largest allowed relative difference, sum|new - reference| / sum|reference| over "
        "the outputs, against the set's expected outputs, else the active version's."))


class Validation(ApiModel):
    """Checks a checkpoint must pass before it can serve."""

    max_abs_value: float = Field(default=1e4, gt=0, description=(
        "Any embedding value beyond this magnitude fails the checkpoint."))
    allow_non_finite: bool = Field(default=False, description="Accept NaN/Inf values.")
    max_row_count_change_percent: int = Field(default=50, ge=0, le=10000, description=(
        "Largest change of a table's row count against the base version."))
    golden_set: GoldenSet | None = None


class Offset(ApiModel):
    """Where a real-time version starts reading its stream."""

    position: Literal["latest", "earliest", "timestamp"] = "latest"
    timestamp: datetime | None = None

    cross_field_rules = (
        Rule("self.position != 'timestamp' || has(self.timestamp)",
             "position timestamp needs a timestamp",
             lambda o: o.position != "timestamp" or o.timestamp is not None),
    )


class ModelVersionSpec(ApiModel):
    """A checkpoint of a RecModel (full, incremental or real-time), validated before it
    serves and rolled back by itself when it makes live metrics worse."""

    model: Name = Field(description="The RecModel (same namespace) this checkpoint belongs to.")
    kind: Literal["full", "incremental", "realtime"]
    source: S3Uri | None = Field(default=None, description=(
        "Checkpoint location: s3://bucket/prefix holding manifest.json."))
    base_version: Name | None = Field(default=None, description=(
        "For incremental and realtime: the version these rows apply on top of."))
    manifest_sha256: Annotated[str, StringConstraints(pattern=r"^[a-f0-9]{64}$")] | None = (
        Field(default=None, description="Expected SHA-256 of manifest.json, if pinned."))
    dense_model_version: int | None = Field(default=None, ge=1, description=(
        "Triton model version to load with this checkpoint; unchanged when unset."))
    start_offset: Offset | None = Field(default=None, description="For realtime versions.")
    validation: Validation = Field(default_factory=Validation)

    cross_field_rules = (
        Rule("self.kind == 'realtime' || has(self.source)",
             "source is required for full and incremental versions",
             lambda s: s.kind == "realtime" or s.source is not None),
        Rule("self.kind != 'realtime' || !has(self.source)",
             "realtime versions read the RecModel's stream and take no source",
             lambda s: s.kind != "realtime" or s.source is None),
        Rule("self.kind != 'incremental' || has(self.baseVersion)",
             "baseVersion is required for incremental versions",
             lambda s: s.kind != "incremental" or s.base_version is not None),
        Rule("self.kind != 'full' || !has(self.baseVersion)",
             "full versions stand alone and take no baseVersion",
             lambda s: s.kind != "full" or s.base_version is None),
        Rule("self.kind == 'realtime' || !has(self.startOffset)",
             "startOffset applies only to realtime versions",
             lambda s: s.kind == "realtime" or s.start_offset is None),
        Rule("self == oldSelf",
             "a ModelVersion is immutable: create a new ModelVersion instead"),
    )


class Phase(StrEnum):
    PENDING = "Pending"
    VALIDATING = "Validating"
    LOADING = "Loading"
    ACTIVE = "Active"
    SUPERSEDED = "Superseded"
    FAILED = "Failed"
    ROLLED_BACK = "RolledBack"


class ShardProgress(ApiModel):
    shard: int = Field(ge=0)
    replica: Annotated[str, StringConstraints(max_length=253)] = Field(description=(
        "The embedding server (pod or endpoint) this entry reports."))
    state: Literal["Pending", "Loading", "Loaded", "Committed", "Failed"] = "Pending"
    fraction: float = Field(default=0, ge=0, le=1)
    bytes_loaded: int = Field(default=0, ge=0)


class RealtimeProgress(ApiModel):
    """The stream as the embedding servers report it (worst replica)."""

    lag: int = Field(default=0, description="Messages published but not yet applied.")
    applied: int = Field(default=0, ge=0, description="Messages applied (sum over replicas).")
    malformed: int = Field(default=0, ge=0, description="Messages skipped as malformed.")
    freshness_p50_seconds: float = Field(default=0, ge=0)
    freshness_p99_seconds: float = Field(default=0, ge=0)
    over_objective_since: datetime | None = Field(default=None, description=(
        "Since when the p99 has been over the RecModel's freshness objective."))


class GoldenSetResult(ApiModel):
    """The golden-set comparison made before this version committed."""

    checked_at: datetime
    rows: int = Field(ge=0)
    relative_difference: float = Field(ge=0)
    compared_with: str = Field(description="The reference: expected outputs or a version.")


class ModelVersionStatus(ApiModel):
    phase: Phase = Phase.PENDING
    observed_generation: int | None = None
    conditions: list[Condition] = conditions_field()
    shards: list[ShardProgress] = Field(default_factory=list)
    started_at: datetime | None = None
    activated_at: datetime | None = None
    completed_at: datetime | None = None
    reason: str | None = None
    message: str | None = None
    embedding_version: int | None = Field(default=None, ge=1, description=(
        "The version number on the embedding servers: the checkpoint manifest's version, "
        "so a restarted operator finds the same number on the servers."))
    dense_model_version: int | None = Field(default=None, ge=1, description=(
        "The Triton model version serving with this one (the spec's, else inherited)."))
    previous_version: Name | None = Field(default=None, description=(
        "The ModelVersion that served before this one: what a rollback restores."))
    watch_until: datetime | None = Field(default=None, description=(
        "End of the rollback policy's window after activation."))
    verified_at: datetime | None = Field(default=None, description=(
        "When the window passed without a breach; the previous version was released."))
    golden_set: GoldenSetResult | None = None
    realtime: RealtimeProgress | None = None
