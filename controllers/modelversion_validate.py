"""Checks a checkpoint must pass before any server loads it.

`check_manifest` and `scan_values` are pure (a manifest, numpy arrays); `validate_uri`
is the thin S3 reader around them, run in a thread by the controller (boto3 blocks).
Checksums of every part are verified by reading the files through the servers' own
reader (embedding.checkpoint.ShardReader), so both sides agree on the format.
"""

from __future__ import annotations

import hashlib

import numpy as np

from embedding.checkpoint import MANIFEST, Manifest, ShardReader, dequantize, split_uri
from recop.api.modelversion import Validation
from recop.api.recmodel import RecModelSpec


class Invalid(ValueError):
    """A checkpoint that must never become active; the message says why."""


def check_manifest(manifest: Manifest, model: RecModelSpec, kind: str,
                   base_number: int | None, base_rows: dict[str, int] | None,
                   rules: Validation) -> None:
    if manifest.kind != kind:
        raise Invalid(f"the checkpoint is {manifest.kind}, the ModelVersion says {kind}")
    if manifest.shard_count != model.sharding.shards:
        raise Invalid(f"cut for {manifest.shard_count} shards, the model has "
                      f"{model.sharding.shards}")
    if kind == "incremental" and manifest.base_version != base_number:
        raise Invalid(f"applies to version {manifest.base_version}, the base serves as "
                      f"{base_number}")
    tables = {t.name: t for t in model.tables}
    for name, entry in manifest.tables.items():
        want = tables.get(name)
        if want is None:
            raise Invalid(f"table {name} is not in the model")
        if (entry.dim, entry.dtype) != (want.dimension, want.dtype):
            raise Invalid(f"table {name} is [{entry.dim}] {entry.dtype}, the model wants "
                          f"[{want.dimension}] {want.dtype}")
        if len(entry.shards) != manifest.shard_count:
            raise Invalid(f"table {name} lists {len(entry.shards)} shards")
        if sum(s.rows for s in entry.shards) != entry.rows:
            raise Invalid(f"table {name}: shard rows do not add up to {entry.rows}")
    if kind == "full":
        absent = sorted(set(tables) - set(manifest.tables))
        if absent:
            raise Invalid(f"table(s) {absent} missing from a full checkpoint")
        for name, rows in (base_rows or {}).items():
            new = manifest.tables[name].rows if name in manifest.tables else 0
            change = abs(new - rows) * 100 / max(rows, 1)
            if change > rules.max_row_count_change_percent:
                raise Invalid(f"table {name}: {rows} -> {new} rows ({change:.0f}% change, "
                              f"at most {rules.max_row_count_change_percent}%)")


def scan_values(name: str, values: np.ndarray, rules: Validation) -> None:
    """NaN/Inf and magnitude scan of one table's rows (fp32, after dequantizing)."""
    if values.size == 0:
        return
    finite = np.isfinite(values)
    if not rules.allow_non_finite and not finite.all():
        raise Invalid(f"table {name}: {int((~finite).sum())} NaN/Inf values")
    peak = float(np.abs(np.where(finite, values, 0)).max())
    if peak > rules.max_abs_value:
        raise Invalid(f"table {name}: |value| up to {peak:g}, above {rules.max_abs_value:g}")


def manifest_rows(s3, uri: str) -> dict[str, int]:
    """Row counts per table of a (previous) full checkpoint, for the row-count check."""
    bucket, prefix = split_uri(uri)
    body = s3.get_object(Bucket=bucket, Key=prefix + MANIFEST)["Body"].read()
    return {n: t.rows for n, t in Manifest.model_validate_json(body).tables.items()}


def validate_uri(s3, uri: str, model: RecModelSpec, kind: str, base_number: int | None,
                 base_rows: dict[str, int] | None, rules: Validation,
                 manifest_sha256: str | None) -> Manifest:
    """Everything but the golden set; returns the manifest (its version is the number)."""
    bucket, prefix = split_uri(uri)
    try:
        body = s3.get_object(Bucket=bucket, Key=prefix + MANIFEST)["Body"].read()
    except Exception as err:  # missing object, no bucket, no access: all refuse it
        raise Invalid(f"cannot read {uri}/{MANIFEST}: {err}") from err
    if manifest_sha256 and hashlib.sha256(body).hexdigest() != manifest_sha256:
        raise Invalid("manifest.json does not match spec.manifestSha256")
    try:
        manifest = Manifest.model_validate_json(body)
    except ValueError as err:
        raise Invalid(f"malformed manifest: {err}") from err
    check_manifest(manifest, model, kind, base_number, base_rows, rules)
    for shard in range(manifest.shard_count):
        try:
            data = ShardReader(s3, uri, manifest, shard, threads=4).read_all()
        except Exception as err:  # checksum, size or read errors
            raise Invalid(f"shard {shard}: {err}") from err
        for name, part in data.items():
            values = np.empty(part.values.shape, np.float32)
            dequantize(part.values, part.scales, values)
            scan_values(name, values, rules)
    return manifest
