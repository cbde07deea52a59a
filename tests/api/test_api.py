"""The API models: examples, refusals, defaults and round trips."""

from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from recop.api import BY_KIND, RESOURCES
from recop.api.common import (
    Condition,
    ConditionStatus,
    crossed,
    parse_duration,
    set_condition,
)
from recop.api.modelversion import ModelVersionSpec
from recop.api.recmodel import RecModelSpec
from tests.examples import invalid_examples, valid_examples


def _path(loc: tuple) -> str:
    """A pydantic error location written as Kubernetes writes field paths."""
    out = "spec"
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


@pytest.mark.parametrize("path", valid_examples(), ids=lambda p: p.stem)
def test_valid_example_parses_and_round_trips(path):
    doc = yaml.safe_load(path.read_text())
    model = BY_KIND[doc["kind"]].spec
    spec = model.model_validate(doc["spec"])
    assert model.model_validate(spec.to_wire()) == spec


def test_there_are_enough_distinct_invalid_examples():
    cases = invalid_examples()
    assert len(cases) >= 15
    assert len({(c.field, c.error) for c in cases}) == len(cases)


@pytest.mark.parametrize("case", invalid_examples(), ids=lambda c: c.id)
def test_invalid_example_is_refused_naming_the_field(case):
    model = BY_KIND[case.doc["kind"]].spec
    with pytest.raises(ValidationError) as info:
        model.model_validate(case.doc["spec"])
    errors = [(_path(e["loc"]), e["msg"]) for e in info.value.errors()]
    # A rule on an object is reported at the object; its fieldPath may point deeper.
    assert any(case.field == where or case.field.startswith((where + ".", where + "["))
               for where, msg in errors if case.error.lower() in msg.lower()), errors


def test_defaults_fill_a_minimal_recmodel():
    spec = RecModelSpec.model_validate({
        "tables": [{"name": "user", "dimension": 8, "rows": 1000}],
        "dense": {"modelName": "mlp"},
        "storage": {"bucket": "models"},
    })
    assert spec.sharding.shards == 1
    assert spec.sharding.replicas_per_shard == 2
    assert spec.tables[0].dtype == "fp32"
    assert spec.dense.instance_groups[0].kind == "KIND_GPU"
    assert spec.embedding_server.memory_headroom_percent == 30
    assert spec.stream is None


def test_bytes_per_shard_counts_dtype_and_int8_scale():
    spec = RecModelSpec.model_validate({
        "tables": [{"name": "a", "dimension": 64, "rows": 1000, "dtype": "fp16"},
                   {"name": "b", "dimension": 16, "rows": 100, "dtype": "int8"}],
        "sharding": {"shards": 4},
        "dense": {"modelName": "mlp"},
        "storage": {"bucket": "models"},
    })
    assert spec.bytes_per_shard() == -(-(1000 * 128 + 100 * (16 + 4)) // 4)


def test_wire_form_is_camel_case_and_omits_unset():
    spec = ModelVersionSpec(model="m", kind="full", source="s3://bucket/x")
    wire = spec.to_wire()
    assert "baseVersion" not in wire
    assert wire["validation"]["maxAbsValue"] == 1e4


def test_every_resource_has_printer_columns_and_short_names():
    for resource in RESOURCES:
        assert resource.short_names
        assert any(c.name == "Phase" for c in resource.columns)


def test_set_condition_keeps_transition_time_while_status_holds():
    first = set_condition([], Condition(type="Ready", status=ConditionStatus.FALSE))
    again = set_condition(first, Condition(type="Ready", status=ConditionStatus.FALSE,
                                           reason="Still"))
    assert again[0].last_transition_time == first[0].last_transition_time
    assert again[0].reason == "Still"
    flipped = set_condition(again, Condition(type="Ready", status=ConditionStatus.TRUE))
    assert len(flipped) == 1 and flipped[0].status == ConditionStatus.TRUE


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("15m", 900), ("1h30m", 5400),
                                               ("250ms", 0.25), ("2d", 172800)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


def test_a_threshold_is_crossed_strictly_in_the_direction_named():
    assert crossed(0.06, 0.05, "GreaterThan") and not crossed(0.05, 0.05, "GreaterThan")
    assert crossed(0.4, 0.5, "LessThan") and not crossed(0.5, 0.5, "LessThan")
    assert not crossed(0.6, 0.5, "LessThan")
