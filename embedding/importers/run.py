"""An import from start to manifest, in three passes so that bad input writes nothing:
read every source, checking each batch, into per-shard spill files on local disk; sort
every shard and refuse repeated ids; only then upload the shard files, and the manifest
last (as CheckpointWriter does: a reader never sees a manifest whose files are missing)."""

from __future__ import annotations

import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from embedding.checkpoint import quantize, split_uri
from embedding.importers.containers import npz_tables, safetensors_tables, torch_tables
from embedding.importers.parquet import parquet_table
from embedding.importers.sources import TableSource
from embedding.importers.spill import Spill
from embedding.importers.target import ImportRefused, TableSpec, Target
from embedding.importers.upload import S3File
from embedding.manifest import MANIFEST, PART_SIZE, Manifest, ShardEntry, TableEntry
from embedding.partition import shard_of

BATCH_BYTES = 64 << 20  # values read per batch
SHARDS_AT_ONCE = 2  # shards uploading at once (each up to IN_FLIGHT parts)
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


@dataclass
class Source:
    """A file (or a Parquet directory); `table` names the table of a one-table source
    (Parquet, or an ids/values pair), default: the file's stem."""

    path: Path
    table: str | None = None
    id_column: str = "id"
    vector_column: str | None = None


@dataclass
class Options:
    renames: dict[str, str] = field(default_factory=dict)  # source table -> target table
    progress: bool = True
    spill_dir: Path | None = None
    batch_bytes: int = BATCH_BYTES


def open_source(source: Source) -> list[TableSource]:
    path = Path(source.path)
    if not path.exists():
        raise FileNotFoundError(path)
    if path.is_dir() or path.suffix == ".parquet":
        return [parquet_table(path, source.table, source.id_column, source.vector_column)]
    if path.suffix == ".safetensors":
        return safetensors_tables(path, source.table)
    if path.suffix == ".npz":
        return npz_tables(path, source.table)
    if path.suffix in TORCH_SUFFIXES:
        return torch_tables(path, source.table)
    raise ValueError(f"{path}: unknown format (.parquet or a directory of them, "
                     f".safetensors, .npz, or a PyTorch state dict: {', '.join(TORCH_SUFFIXES)})")


def plan(sources: list[Source], target: Target, options: Options,
         incremental: bool) -> dict[str, tuple[TableSource, TableSpec]]:
    """Each target table's source, dims checked; tables the target lacks are left out."""
    found: dict[str, TableSource] = {}
    for source in sources:
        for table in open_source(source):
            name = options.renames.get(table.table, table.table)
            if name in found:
                raise ImportRefused(table.path, name, None,
                                    f"also in {found[name].path}: name one source per table")
            table.table = name
            found[name] = table
    specs = target.tables or {n: TableSpec(t.dim) for n, t in found.items()}
    chosen = {}
    for name, spec in specs.items():
        table = found.get(name)
        if table is None:
            if not incremental:
                raise ImportRefused(", ".join(str(s.path) for s in sources), name, None,
                                    f"in none of the sources (they hold: "
                                    f"{', '.join(sorted(found)) or 'no tables'})")
            continue
        if table.dim != spec.dim:
            raise ImportRefused(table.path, name, 0, f"vectors of {table.dim} values, but "
                                f"the RecModel's table has dimension {spec.dim}")
        chosen[name] = (table, spec)
    if not chosen:
        raise ValueError(f"no table of the target in the sources (they hold: "
                         f"{', '.join(sorted(found)) or 'none'})")
    return chosen


def _bar(total: int, desc: str, enabled: bool):
    try:
        from tqdm import tqdm
    except ImportError:  # the `import` extra brings it; without it, no bar
        enabled = False
        tqdm = None
    if not enabled:
        return _NoBar()
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, file=sys.stderr)


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def import_checkpoint(sources: list[Source], s3, uri: str, target: Target, version: int,
                      base_version: int | None = None,
                      deletes: dict[str, np.ndarray] | None = None,
                      options: Options | None = None) -> Manifest:
    """Write `sources` as checkpoint `version` at `uri` (s3://bucket/prefix) for `target`:
    a full checkpoint, or with `base_version` an incremental one whose rows are upserts
    (and `deletes`: ids removed, per table). Raises ImportRefused, having written nothing,
    on bad input."""
    options = options or Options()
    incremental = base_version is not None
    deletes = {k: np.unique(np.asarray(v, np.int64)) for k, v in (deletes or {}).items()}
    chosen = plan(sources, target, options, incremental)
    if not incremental and deletes:
        raise ValueError("deletes need base_version: a full checkpoint has no deletes")
    if set(deletes) - set(chosen):
        raise ValueError(f"deletes for tables not imported: {sorted(set(deletes) - set(chosen))}")
    bucket, prefix = split_uri(uri)
    with tempfile.TemporaryDirectory(prefix="recop-import-", dir=options.spill_dir) as tmp:
        spills = _read(chosen, target.shard_count, Path(tmp), options)
        for name, spill in spills.items():
            gone = deletes.get(name, np.zeros(0, np.int64))
            for shard in range(target.shard_count):
                upserted = spill.sort(shard)
                both = np.intersect1d(upserted, gone)
                if both.size:
                    raise ImportRefused(chosen[name][0].path, name, None,
                                        f"id {both[0]} is both upserted and deleted")
        entries = _write(s3, bucket, prefix, chosen, spills, deletes, target.shard_count,
                         incremental, options)
    manifest = Manifest(kind="incremental" if incremental else "full", version=version,
                        base_version=base_version, shard_count=target.shard_count,
                        created_at=time.time(), tables=entries)
    s3.put_object(Bucket=bucket, Key=prefix + MANIFEST, Body=manifest.to_json().encode(),
                  ContentType="application/json")
    return manifest


def _read(chosen, shard_count: int, directory: Path, options: Options) -> dict[str, Spill]:
    bar = _bar(sum(t.nbytes for t, _ in chosen.values()), "reading", options.progress)
    spills = {}
    try:
        for name, (table, spec) in chosen.items():
            spill = spills[name] = Spill(directory, name, shard_count, spec.dim)
            try:
                rows = max(1, options.batch_bytes // (4 * spec.dim))
                for batch in table.batches(rows):
                    bad = np.flatnonzero(~np.isfinite(batch.values).all(axis=1))
                    if bad.size:
                        raise ImportRefused(batch.path, name, batch.first_row + int(bad[0]),
                                            "NaN or Inf in its vector")
                    spill.add(batch)
                    bar.update(batch.values.nbytes)
            finally:
                spill.close()
    finally:
        bar.close()
    return spills


def _write(s3, bucket: str, prefix: str, chosen, spills: dict[str, Spill],
           deletes: dict[str, np.ndarray], shard_count: int, incremental: bool,
           options: Options) -> dict[str, TableEntry]:
    """Every table's shards, SHARDS_AT_ONCE at a time (their parts share one pool)."""
    bar = _bar(sum(sum(s.rows) * s.dim * 4 for s in spills.values()), "writing",
               options.progress)
    entries = {}
    try:
        with ThreadPoolExecutor(8) as parts, ThreadPoolExecutor(SHARDS_AT_ONCE) as shards:
            for name, spill in spills.items():
                dtype = chosen[name][1].dtype
                gone = deletes.get(name, np.zeros(0, np.int64))
                shard = _ShardWriter(s3, bucket, prefix, name, spill, dtype, shard_count,
                                     parts, bar)
                written = list(shards.map(
                    lambda s, w=shard, g=gone: w.write(s, g[shard_of(g, shard_count) == s]
                                                       if incremental else None),
                    range(shard_count)))
                entries[name] = TableEntry(dim=spill.dim, dtype=dtype, rows=sum(spill.rows),
                                           shards=written)
    finally:
        bar.close()
    return entries


class _ShardWriter:
    """One table's shard files: ids, the dtype's stored parts, deleted ids (incremental)."""

    def __init__(self, s3, bucket, prefix, name, spill: Spill, dtype: str, shard_count: int,
                 pool: ThreadPoolExecutor, bar):
        self.s3, self.bucket, self.prefix, self.pool, self.bar = s3, bucket, prefix, pool, bar
        self.name, self.spill, self.dtype, self.shard_count = name, spill, dtype, shard_count
        # The files the dtype stores: values, and scales (int8, int4) or bias (int4).
        self.parts = [k for k, v in quantize(np.zeros((0, spill.dim), np.float32),
                                             dtype)._asdict().items() if v is not None]

    def write(self, shard: int, gone: np.ndarray | None) -> ShardEntry:
        base = f"tables/{self.name}/shard-{shard:05d}-of-{self.shard_count:05d}"
        files = {k: S3File(self.s3, self.bucket, self.prefix, f"{base}.{k}", self.pool)
                 for k in ("ids", *self.parts, *(("deleted",) if gone is not None else ()))}
        try:
            chunk = max(1, PART_SIZE // (4 * self.spill.dim))
            for ids, values in self.spill.ordered(shard, chunk):
                files["ids"].write(ids)
                for k, array in quantize(values, self.dtype)._asdict().items():
                    if k in files:
                        files[k].write(np.ascontiguousarray(array))
                self.bar.update(values.nbytes)
            if gone is not None:
                files["deleted"].write(gone)
            written = {k: f.close() for k, f in files.items()}
        except BaseException:
            for f in files.values():
                f.abort()
            raise
        return ShardEntry(rows=self.spill.rows[shard], deleted=0 if gone is None else len(gone),
                          files=written)
