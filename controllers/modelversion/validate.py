"""Checks a checkpoint must pass before any server loads it.

The operator checks what the manifest and the object listing tell: the manifest against
the model (kind, shard count, tables, shapes and dtypes, row counts against the base),
and every file present at the size the manifest gives (a truncated upload is refused
here). It reads no rows: the servers verify every part's CRC32 and run the value checks
(NaN/Inf, magnitude: embedding.validation) on every row as they load it beside the
active version, so a bad version fails before anything can commit it, and the bytes
are read once, where they are needed. `check_manifest` is pure; `validate_uri` is the
thin S3 reader around it, run in a thread by the controller (boto3 blocks).
"""

from __future__ import annotations

import hashlib

from botocore.exceptions import ClientError

from controllers.modelversion.plan import Target
from embedding.checkpoint import split_uri
from embedding.manifest import MANIFEST, Manifest
from recop.api.modelversion import ModelVersionSpec, Validation
from recop.api.recmodel import RecModelSpec

# S3 answers that will not change by asking again: the checkpoint is refused.
PERMANENT = {"NoSuchKey", "NoSuchBucket", "AccessDenied", "InvalidAccessKeyId",
             "SignatureDoesNotMatch", "404", "403"}


class Invalid(ValueError):
    """A checkpoint that must never become active; the message says why."""


class Unavailable(RuntimeError):
    """S3 could not be read just now (timeouts, resets, 5xx): validate again later
    rather than refuse a checkpoint that may be good."""


def _read_error(what: str, err: Exception) -> Exception:
    code = err.response.get("Error", {}).get("Code") if isinstance(err, ClientError) else None
    if code in PERMANENT:
        return Invalid(f"cannot read {what}: {err}")
    return Unavailable(f"cannot read {what} now: {err}")


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


def _manifest_bytes(s3, uri: str) -> bytes:
    bucket, prefix = split_uri(uri)
    try:
        return s3.get_object(Bucket=bucket, Key=prefix + MANIFEST)["Body"].read()
    except Exception as err:  # classified: a missing object refuses, a timeout retries
        raise _read_error(f"{uri}/{MANIFEST}", err) from err


def manifest_rows(s3, uri: str) -> dict[str, int]:
    """Row counts per table of a (previous) full checkpoint, for the row-count check."""
    body = _manifest_bytes(s3, uri)
    return {n: t.rows for n, t in Manifest.from_json(body).tables.items()}


def rows_compared_with(kind: str, previous: Target | None) -> str | None:
    """The checkpoint whose row counts a new one is held against: the full version serving
    now, for a full one (an incremental carries only the rows it changes)."""
    if kind == "full" and previous is not None and previous.kind == "full":
        return previous.uri
    return None


def dense_version(spec: ModelVersionSpec, previous: Target | None) -> int | None:
    """The dense version a checkpoint pairs with: the spec's, else the one serving now."""
    return spec.dense_model_version or (previous.dense_version if previous else None)


def check_files(manifest: Manifest, sizes: dict[str, int]) -> None:
    """Every file the manifest names is listed at its size (keys relative to the prefix)."""
    for name, table in manifest.tables.items():
        for shard, entry in enumerate(table.shards):
            for file in entry.files.values():
                size = sizes.get(file.key)
                if size is None:
                    raise Invalid(f"table {name} shard {shard}: {file.key} is missing")
                if size != file.size:
                    raise Invalid(f"table {name} shard {shard}: {file.key} is {size} bytes, "
                                  f"the manifest says {file.size} (truncated or rewritten)")


def validate_uri(s3, uri: str, model: RecModelSpec, kind: str, base_number: int | None,
                 base_rows: dict[str, int] | None, rules: Validation,
                 manifest_sha256: str | None) -> Manifest:
    """Everything the operator checks (see the module docstring); returns the manifest
    (its version is the number). Raises Invalid, or Unavailable when S3 fails."""
    body = _manifest_bytes(s3, uri)
    if manifest_sha256 and hashlib.sha256(body).hexdigest() != manifest_sha256:
        raise Invalid("manifest.json does not match spec.manifestSha256")
    try:
        manifest = Manifest.from_json(body)
    except ValueError as err:
        raise Invalid(f"malformed manifest: {err}") from err
    check_manifest(manifest, model, kind, base_number, base_rows, rules)
    bucket, prefix = split_uri(uri)
    sizes: dict[str, int] = {}
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            sizes |= {o["Key"][len(prefix):]: o["Size"] for o in page.get("Contents", [])}
    except Exception as err:  # same classification as the manifest read
        raise _read_error(f"the listing of {uri}", err) from err
    check_files(manifest, sizes)
    return manifest
