"""Types shared by the three custom resources.

The pydantic models in this package are the one source of truth: the CRD schemas in
crds/ are generated from them (`python -m recop.crdgen`). Field names are snake_case in
Python and camelCase on the wire, as Kubernetes users expect.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic.alias_generators import to_camel

GROUP = "serving.recop.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# A Kubernetes object name (RFC 1123 subdomain, kept to label length so it can be
# used in derived object names such as `<model>-shard-3`).
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN, min_length=1, max_length=63)]

# Kubernetes resource quantities ("500m", "2", "16Gi"): validated here so that a typo
# is refused at admission instead of failing later when a Pod is created.
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|Ki|Mi|Gi|Ti|Pi)?$"
Quantity = Annotated[str, StringConstraints(pattern=QUANTITY_PATTERN, max_length=32)]

# Durations in the compact form Prometheus and users both write: "90s", "15m", "1h30m".
DURATION_PATTERN = r"^([0-9]+(ms|s|m|h|d))+$"
Duration = Annotated[str, StringConstraints(pattern=DURATION_PATTERN, max_length=32)]

S3_URI_PATTERN = r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$"
S3Uri = Annotated[str, StringConstraints(pattern=S3_URI_PATTERN, max_length=1024)]

_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds in a Duration string such as "1h30m"."""
    return sum(float(n) * _DURATION_UNITS[unit]
               for n, unit in re.findall(r"([0-9]+)(ms|s|m|h|d)", text))


# How a watched metric is held against its threshold (ABTest guardrails, RecModel
# rollback policies).
Comparison = Literal["GreaterThan", "LessThan"]


def crossed(value: float, threshold: float, comparison: Comparison) -> bool:
    """Whether `value` is past `threshold` in the direction `comparison` names (equal is
    not past)."""
    return value > threshold if comparison == "GreaterThan" else value < threshold


class Rule(NamedTuple):
    """A cross-field rule, declared once and enforced in two places.

    `cel` goes into the CRD (x-kubernetes-validations) so the API server refuses a bad
    spec at admission; `check` enforces the same rule when Python parses a spec, so unit
    tests and the operator see exactly what admission sees. `check=None` marks a
    transition rule (uses oldSelf) that only the API server can evaluate.
    """

    cel: str
    message: str
    check: Any = None
    field_path: str | None = None


class ApiModel(BaseModel):
    """Base of every API type: camelCase on the wire, unknown fields refused.

    Refusing unknown fields mirrors the API server, which prunes them: a misspelt field
    must be an error, not a silently ignored setting.
    """

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True,
                              extra="forbid")
    cross_field_rules: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="after")
    def _check_rules(self):
        for rule in self.cross_field_rules:
            if rule.check is not None and not rule.check(self):
                raise ValueError(rule.message)
        return self

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema, handler):
        schema = handler(core_schema)
        if cls.cross_field_rules:
            target = handler.resolve_ref_schema(schema)
            target["x-kubernetes-validations"] = [
                {"rule": r.cel, "message": r.message}
                | ({"fieldPath": r.field_path} if r.field_path else {})
                for r in cls.cross_field_rules
            ]
        return schema

    def to_wire(self) -> dict:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(ApiModel):
    """A standard Kubernetes condition (metav1.Condition)."""

    type: Annotated[str, StringConstraints(max_length=316)]
    status: ConditionStatus
    reason: Annotated[str, StringConstraints(max_length=1024)] = ""
    message: Annotated[str, StringConstraints(max_length=32768)] = ""
    observed_generation: int | None = Field(default=None, ge=0)
    last_transition_time: datetime | None = None


def conditions_field():
    """A status `conditions` list, merged by type under server-side apply, so that two
    controllers (each its own field manager) can own different conditions of one object."""
    return Field(default_factory=list, max_length=32, json_schema_extra={
        "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]})


def set_condition(conditions: list[Condition], new: Condition) -> list[Condition]:
    """Return conditions with `new` replacing its type, keeping the transition time
    when the status did not change (as kubectl and GitOps tools expect)."""
    now = datetime.now(UTC).replace(microsecond=0)
    result: list[Condition] = []
    for cond in conditions:
        if cond.type != new.type:
            result.append(cond)
            continue
        unchanged = cond.status == new.status
        stamp = cond.last_transition_time if unchanged else now
        new = new.model_copy(update={"last_transition_time": stamp})
    if new.last_transition_time is None:
        new = new.model_copy(update={"last_transition_time": now})
    result.append(new)
    return result


class SecretKeyRef(ApiModel):
    """A key in a Secret of the resource's own namespace."""

    name: Name
    key: Annotated[str, StringConstraints(min_length=1, max_length=253)]


class Toleration(ApiModel):
    key: Annotated[str, StringConstraints(max_length=316)] | None = None
    operator: Literal["Equal", "Exists"] = "Equal"
    value: Annotated[str, StringConstraints(max_length=63)] | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None


class PodPlacement(ApiModel):
    """Where a group of pods may run, on top of what RecOp sets itself."""

    node_selector: dict[str, Annotated[str, StringConstraints(max_length=63)]] = Field(
        default_factory=dict, max_length=32)
    tolerations: list[Toleration] = Field(default_factory=list, max_length=32)


class ResourceList(ApiModel):
    cpu: Quantity | None = None
    memory: Quantity | None = None


class Resources(ApiModel):
    """Requests and limits as Kubernetes quantities."""

    requests: ResourceList = Field(default_factory=ResourceList)
    limits: ResourceList = Field(default_factory=ResourceList)
