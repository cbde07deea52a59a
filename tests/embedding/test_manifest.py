"""The manifest parser: what the writer emits reads back the same, and what the format
does not allow is refused with a ValueError naming the field."""

from __future__ import annotations

import copy
import json

import pytest

from embedding.manifest import FORMAT, FileEntry, Manifest, ShardEntry, TableEntry


def written() -> Manifest:
    files = {"ids": FileEntry(key="tables/t/shard-0.ids", size=80, part_crc32=[123]),
             "values": FileEntry(key="tables/t/shard-0.values", size=320, part_crc32=[4, 5],
                                 part_size=256)}
    table = TableEntry(dim=4, dtype="fp16", rows=10, shards=[ShardEntry(rows=10, files=files)])
    return Manifest(kind="incremental", version=3, base_version=2, shard_count=1,
                    created_at=1.5, tables={"t": table}, stream_topic="deltas",
                    stream_offsets={0: 17, 3: 2})


def test_what_is_written_reads_back_the_same():
    manifest = written()
    assert Manifest.from_json(manifest.to_json()) == manifest
    assert Manifest.from_json(manifest.to_json().encode()) == manifest
    doc = json.loads(manifest.to_json())
    assert doc["format"] == FORMAT and doc["stream_offsets"] == {"0": 17, "3": 2}


def test_defaults_and_unknown_fields():
    manifest = Manifest.from_json(json.dumps({
        "kind": "full", "version": 1, "shard_count": 2, "created_at": 0, "tables": {},
        "written_by": "a newer writer"}))
    assert (manifest.format, manifest.base_version, manifest.stream_offsets) == (
        FORMAT, None, None)
    assert manifest.created_at == 0.0 and isinstance(manifest.created_at, float)


def broken(path: tuple, value) -> str:
    doc = json.loads(written().to_json())
    target = doc
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = copy.deepcopy(value)
    return json.dumps(doc)


@pytest.mark.parametrize("path,value,needle", [
    (("version",), KeyError, "version: missing"),
    (("version",), 0, "version: 0 is below 1"),
    (("shard_count",), "2", "shard_count: expected int"),
    (("kind",), "partial", "kind: 'partial' is none of full, incremental"),
    (("created_at",), True, "created_at: expected float"),
    (("tables",), [], "tables: expected dict"),
    (("tables", "t", "dim"), 0, "tables.t.dim: 0 is below 1"),
    (("tables", "t", "dtype"), "bf16", "tables.t.dtype"),
    (("tables", "t", "shards"), [7], "tables.t.shards.0: expected an object"),
    (("tables", "t", "shards", 0, "files", "ids", "size"), 1.5,
     "tables.t.shards.0.files.ids.size: expected int"),
    (("tables", "t", "shards", 0, "files", "ids", "part_crc32"), [1, "x"],
     "part_crc32: expected a list of integers"),
    (("stream_offsets",), {"first": 1}, "stream_offsets"),
])
def test_malformed_manifests_are_refused_naming_the_field(path, value, needle):
    with pytest.raises(ValueError) as err:
        Manifest.from_json(broken(path, value))
    assert needle in str(err.value)


@pytest.mark.parametrize("body", ["[]", "not json", "null"])
def test_a_body_that_is_no_json_object_is_refused(body):
    with pytest.raises(ValueError):
        Manifest.from_json(body)
