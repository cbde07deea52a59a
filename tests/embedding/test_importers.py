"""Checkpoint import (embedding/importers) from files the real libraries write (pyarrow,
safetensors, NumPy), into a real MinIO, read back with the servers' own ShardReader
(every part's CRC checked): values, id order per shard, dtypes, incremental checkpoints,
the manifest last, and bad input refused with file, table and row, having written nothing.
PyTorch state dicts: test_importers_torch.py."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from safetensors.numpy import save_file

from embedding.checkpoint import ShardReader, dequantize, read_manifest, split_uri
from embedding.importers import (
    ImportRefused,
    Options,
    Source,
    TableSpec,
    Target,
    import_checkpoint,
    target_from_recmodel,
)
from embedding.partition import shard_of

pytestmark = pytest.mark.integration
QUIET = Options(progress=False)


def vectors(ids: np.ndarray, dim: int) -> np.ndarray:
    """Row values that name their id, so a read-back shows each row went where it should."""
    return (ids[:, None] * 0.001 + np.arange(dim)[None, :] * 0.01).astype(np.float32)


def read_back(s3, uri: str) -> tuple[object, dict[str, dict[int, np.ndarray]]]:
    """The manifest, and every table's rows by id, as fp32, checking each shard holds
    only its own ids in ascending order."""
    manifest = read_manifest(s3.client, uri)
    tables: dict[str, dict[int, np.ndarray]] = {}
    for shard in range(manifest.shard_count):
        for name, data in ShardReader(s3.client, uri, manifest, shard).read_all().items():
            assert (np.diff(data.ids) > 0).all(), "ids sorted, no repeats"
            assert (shard_of(data.ids, manifest.shard_count) == shard).all()
            rows = np.empty(data.values.shape, np.float32)
            dequantize(data.values, data.scales, rows)
            tables.setdefault(name, {}).update(zip(data.ids.tolist(), rows, strict=True))
    return manifest, tables


def nothing_written(s3, uri: str) -> bool:
    bucket, prefix = split_uri(uri)
    return s3.client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("KeyCount", 0) == 0


def write_parquet(path, ids, values, fixed: bool = True, row_group: int = 10_000,
                  id_type: str = "int64") -> None:
    dim = values.shape[1]
    flat = pa.array(values.reshape(-1), pa.float32())
    column = (pa.FixedSizeListArray.from_arrays(flat, dim) if fixed
              else pa.ListArray.from_arrays(pa.array(np.arange(len(ids) + 1) * dim,
                                                     pa.int32()), flat))
    pq.write_table(pa.table({"id": pa.array(ids, getattr(pa, id_type)()), "embedding": column}),
                   path,
                   row_group_size=row_group)


class Recording:
    """An S3 client that records the keys it writes, in order."""

    def __init__(self, client):
        self.client, self.keys = client, []

    def __getattr__(self, name):
        call = getattr(self.client, name)
        if name in ("put_object", "complete_multipart_upload"):
            def record(**kwargs):
                self.keys.append(kwargs["Key"])
                return call(**kwargs)
            return record
        return call


def test_a_parquet_dataset_becomes_a_full_checkpoint_in_bounded_batches(s3, tmp_path):
    rng = np.random.default_rng(1)
    ids = rng.permutation(80_000).astype(np.int64) * 7  # shuffled, sparse
    dim = 64  # 10 MiB of values per shard: multipart uploads with several CRC'd parts
    dataset = tmp_path / "item_embeddings"
    dataset.mkdir()
    write_parquet(dataset / "part-00000.parquet", ids[:50_000], vectors(ids[:50_000], dim))
    write_parquet(dataset / "part-00001.parquet", ids[50_000:], vectors(ids[50_000:], dim))
    uri = s3.uri("import-parquet")
    recording = Recording(s3.client)
    manifest = import_checkpoint(
        [Source(dataset, "item")], recording, uri, Target(2, {"item": TableSpec(dim)}), 1,
        options=Options(progress=False, batch_bytes=1 << 20))
    assert recording.keys[-1].endswith("manifest.json")
    assert manifest.tables["item"].rows == len(ids)
    assert max(len(s.files["values"].part_crc32) for s in manifest.tables["item"].shards) > 1
    _, tables = read_back(s3, uri)
    assert len(tables["item"]) == len(ids)
    np.testing.assert_array_equal(np.stack([tables["item"][i] for i in ids[:1000].tolist()]),
                                  vectors(ids[:1000], dim))


def test_dtypes_and_shards_come_from_the_recmodel(s3, tmp_path):
    recmodel = {"spec": {"sharding": {"shards": 3}, "tables": [
        {"name": "user", "dimension": 8, "dtype": "fp16"},
        {"name": "item", "dimension": 8, "dtype": "int8"}]}}
    ids = np.arange(3000, dtype=np.int64)
    write_parquet(tmp_path / "user.parquet", ids, vectors(ids, 8), fixed=False)
    write_parquet(tmp_path / "item.parquet", ids, vectors(ids, 8))
    uri = s3.uri("import-dtypes")
    import_checkpoint([Source(tmp_path / "user.parquet"), Source(tmp_path / "item.parquet")],
                      s3.client, uri, target_from_recmodel(recmodel), 4, options=QUIET)
    manifest, tables = read_back(s3, uri)
    assert manifest.shard_count == 3
    assert {n: t.dtype for n, t in manifest.tables.items()} == {"user": "fp16", "item": "int8"}
    got = np.stack([tables["item"][i] for i in range(3000)])
    np.testing.assert_allclose(got, vectors(ids, 8), atol=np.abs(vectors(ids, 8)).max() / 127)
    np.testing.assert_allclose(np.stack([tables["user"][i] for i in range(3000)]),
                               vectors(ids, 8), rtol=1e-3)


def test_safetensors_with_ids_and_npz_pairs(s3, tmp_path):
    ids = np.array([5, 900, 42, 7_000_000_000], dtype=np.int64)
    save_file({"user.weight": vectors(ids, 4), "user.ids": ids,
               "proj.bias": np.zeros(4, np.float32)}, str(tmp_path / "model.safetensors"))
    rows = np.arange(50, dtype=np.int64)
    np.savez_compressed(tmp_path / "item.npz", ids=rows, values=vectors(rows, 6))
    uri = s3.uri("import-tensors")
    target = Target(2, {"user": TableSpec(4), "item": TableSpec(6)})
    import_checkpoint([Source(tmp_path / "model.safetensors"), Source(tmp_path / "item.npz")],
                      s3.client, uri, target, 2, options=QUIET)
    _, tables = read_back(s3, uri)
    assert sorted(tables["user"]) == sorted(ids.tolist())
    np.testing.assert_array_equal(tables["user"][7_000_000_000], vectors(ids[3:], 4)[0])
    np.testing.assert_array_equal(tables["item"][49], vectors(rows[49:], 6)[0])


def test_an_incremental_checkpoint_upserts_and_deletes(s3, tmp_path):
    ids = np.array([1, 2, 3, 10], dtype=np.int64)
    np.savez(tmp_path / "delta.npz", **{"user": vectors(ids, 4), "user.ids": ids})
    uri = s3.uri("import-incremental")
    manifest = import_checkpoint([Source(tmp_path / "delta.npz")], s3.client, uri,
                                 Target(2, {"user": TableSpec(4), "item": TableSpec(4)}), 6,
                                 base_version=5, deletes={"user": np.array([77, 78])},
                                 options=QUIET)
    assert (manifest.kind, manifest.base_version) == ("incremental", 5)
    assert set(manifest.tables) == {"user"}, "a table absent from the sources is unchanged"
    assert sum(s.deleted for s in manifest.tables["user"].shards) == 2
    deleted = [d for s in range(2) for d in ShardReader(s3.client, uri, manifest, s).read_all()[
        "user"].deleted.tolist()]
    assert sorted(deleted) == [77, 78]


@pytest.mark.parametrize(("make", "message"), [
    ("int32_ids", "ids (id) are int32, not int64"),
    ("ragged", "row 3: ragged vectors: 5 values where the table has 4"),
    ("duplicate", "b.parquet: table t, row 1: duplicate id 2, first at"),
    ("dim", "vectors of 4 values, but the RecModel's table has dimension 8"),
    ("nan", "row 2: NaN or Inf in its vector"),
    ("null", "row 1: embedding is null"),
])
def test_bad_input_is_refused_naming_file_table_and_row_and_writes_nothing(
        s3, tmp_path, make, message):
    ids = np.arange(6, dtype=np.int64)
    values = vectors(ids, 4)
    sources = [Source(tmp_path / "a.parquet", "t")]
    dim = 4
    if make == "int32_ids":
        write_parquet(tmp_path / "a.parquet", ids, values, id_type="int32")
    elif make == "ragged":
        flat = pa.array(np.concatenate([values[:3].reshape(-1), np.zeros(5), np.zeros(8)]),
                        pa.float32())
        offsets = pa.array([0, 4, 8, 12, 17, 21, 25], pa.int32())
        pq.write_table(pa.table({"id": ids, "embedding": pa.ListArray.from_arrays(
            offsets, flat)}), tmp_path / "a.parquet")
    elif make == "duplicate":
        (tmp_path / "ds").mkdir()
        write_parquet(tmp_path / "ds" / "a.parquet", ids, values)
        write_parquet(tmp_path / "ds" / "b.parquet", np.array([9, 2], np.int64), values[:2])
        sources = [Source(tmp_path / "ds", "t")]
    elif make == "dim":
        write_parquet(tmp_path / "a.parquet", ids, values)
        dim = 8
    elif make == "nan":
        values[2, 1] = np.nan
        write_parquet(tmp_path / "a.parquet", ids, values)
    elif make == "null":
        pq.write_table(pa.table({"id": ids, "embedding": pa.array(
            [list(v) if i != 1 else None for i, v in enumerate(values)],
            pa.list_(pa.float32()))}), tmp_path / "a.parquet")
    uri = s3.uri(f"import-bad-{make}")
    with pytest.raises(ImportRefused) as refused:
        import_checkpoint(sources, s3.client, uri, Target(2, {"t": TableSpec(dim)}), 1,
                          options=QUIET)
    assert message in str(refused.value)
    assert "a.parquet" in str(refused.value) or "b.parquet" in str(refused.value)
    assert nothing_written(s3, uri)


def test_a_table_the_sources_lack_is_refused(s3, tmp_path):
    np.savez(tmp_path / "x.npz", user=np.ones((3, 4), np.float32))
    uri = s3.uri("import-missing")
    with pytest.raises(ImportRefused, match="table item: in none of the sources"):
        import_checkpoint([Source(tmp_path / "x.npz")], s3.client, uri,
                          Target(1, {"user": TableSpec(4), "item": TableSpec(4)}), 1,
                          options=QUIET)
    assert nothing_written(s3, uri)


def test_the_command_line_imports_and_refuses(s3, tmp_path):
    ids = np.arange(100, dtype=np.int64)
    write_parquet(tmp_path / "item.parquet", ids, vectors(ids, 4))
    (tmp_path / "recmodel.yaml").write_text(
        "spec:\n  sharding: {shards: 2}\n  tables: [{name: item, dimension: 4, dtype: fp16}]\n")
    uri = s3.uri("import-cli")
    argv = [sys.executable, "-m", "embedding.importers", str(tmp_path / "item.parquet"),
            "--uri", uri, "--version", "3", "--recmodel", str(tmp_path / "recmodel.yaml")]
    done = subprocess.run(argv, env={**s3.env, "PATH": "/usr/bin:/bin"}, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "wrote full version 3" in done.stdout and "item 100 rows" in done.stdout
    assert "reading" in done.stderr and "writing" in done.stderr  # the progress bars
    assert read_back(s3, uri)[0].tables["item"].dtype == "fp16"
    bad = s3.uri("import-cli-bad")
    done = subprocess.run([*argv[:5], bad, "--version", "3", "--shards", "2", "--table",
                           "item=8"], env={**s3.env, "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "item.parquet: table item, row 0: vectors of 4 values" in done.stderr
    assert nothing_written(s3, bad)
