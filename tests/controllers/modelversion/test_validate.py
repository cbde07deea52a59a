"""Checkpoint validation: manifest against the model, files against the manifest, and the
value scan the servers run on every row they load."""

from __future__ import annotations

import numpy as np
import pytest

from controllers.modelversion.plan import Target
from controllers.modelversion.validate import (
    Invalid,
    check_files,
    check_manifest,
    dense_version,
    rows_compared_with,
)
from embedding.manifest import FileEntry, Manifest, ShardEntry, TableEntry
from embedding.validation import InvalidValues, scan_values
from recop.api.modelversion import ModelVersionSpec, Validation
from recop.api.recmodel import RecModelSpec

MODEL = RecModelSpec.model_validate({
    "tables": [{"name": "user", "dimension": 4, "rows": 100}],
    "sharding": {"shards": 2}, "dense": {"modelName": "mlp"},
    "storage": {"bucket": "models"}})


def manifest(rows=(50, 50), dim=4, dtype="fp32", kind="full", base=None, shards=2) -> Manifest:
    entry = TableEntry(dim=dim, dtype=dtype, rows=sum(rows),
                       shards=[ShardEntry(rows=r, files={}) for r in rows])
    return Manifest(kind=kind, version=7, base_version=base, shard_count=shards,
                    created_at=0, tables={"user": entry})


def check(m, kind="full", base=None, base_rows=None):
    check_manifest(m, MODEL, kind, base, base_rows, Validation())


def test_a_matching_manifest_passes():
    check(manifest())
    check(manifest(kind="incremental", base=6), kind="incremental", base=6)


@pytest.mark.parametrize("m,kwargs,needle", [
    (manifest(kind="incremental", base=6), {}, "the ModelVersion says full"),
    (manifest(rows=(100,), shards=1), {}, "cut for 1 shards"),
    (manifest(dim=8), {}, "the model wants [4] fp32"),
    (manifest(dtype="fp16"), {}, "fp16"),
    (manifest(kind="incremental", base=5), {"kind": "incremental", "base": 6}, "applies to"),
    (manifest(rows=(10, 10)), {"base_rows": {"user": 100}}, "80% change"),
])
def test_bad_manifests_are_refused_with_the_reason(m, kwargs, needle):
    with pytest.raises(Invalid, match=None) as err:
        check(m, **kwargs)
    assert needle in str(err.value)


def test_row_count_change_within_the_limit_passes():
    check(manifest(rows=(60, 60)), base_rows={"user": 100})


def test_every_file_must_be_listed_at_its_manifest_size():
    m = manifest()
    m.tables["user"].shards[0].files["values"] = FileEntry(key="a.values", size=800,
                                                           part_crc32=[0])
    check_files(m, {"a.values": 800})
    with pytest.raises(Invalid, match=r"a\.values is missing"):
        check_files(m, {})
    with pytest.raises(Invalid, match="400 bytes, the manifest says 800"):
        check_files(m, {"a.values": 400})


def test_value_scan_refuses_non_finite_and_huge_values():
    rules = Validation()
    good = np.ones((3, 4), np.float32)
    scan_values("user", good, rules.max_abs_value, rules.allow_non_finite)
    bad = good.copy()
    bad[1, 2] = np.nan
    with pytest.raises(InvalidValues, match="1 NaN/Inf"):
        scan_values("user", bad, rules.max_abs_value, False)
    scan_values("user", bad, rules.max_abs_value, True)
    with pytest.raises(InvalidValues, match="above 100"):
        scan_values("user", good * 1e3, 100, False)


def test_row_counts_compare_full_with_full_and_dense_follows_the_serving_version():
    full = Target("v1", 1, "full", "s3://bucket/v1", dense_version=3)
    inc = Target("v2", 2, "incremental", "s3://bucket/v2", base=full)
    assert rows_compared_with("full", full) == "s3://bucket/v1"
    assert rows_compared_with("full", inc) is None  # carries only the rows it changed
    assert rows_compared_with("incremental", full) is None
    assert rows_compared_with("full", None) is None
    spec = ModelVersionSpec(model="m", kind="full", source="s3://bucket/v3")
    assert dense_version(spec, full) == 3 and dense_version(spec, None) is None
    pinned = spec.model_copy(update={"dense_model_version": 5})
    assert dense_version(pinned, full) == 5
