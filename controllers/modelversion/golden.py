"""Golden-set check: a candidate version's answers on fixed inputs, compared before it
commits with the active version's answers (or with the outputs the set itself carries).

The set is one `.npz` file in S3 (docs/checkpoint-format.md): `ids.<table>` int64 [n] for
every table the dense model takes as an input, and optionally `expected.<output>`.
Answers are the dense model's outputs on the looked-up rows, on Triton with each
version's dense model pinned; a model without a Triton server compares the rows.
"""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from controllers.common.kube import Kube
from controllers.modelversion.drivers import Endpoints, s3_client
from controllers.modelversion.plan import Target
from embedding.checkpoint import split_uri
from embedding.client import EmbeddingClient
from recop.api.modelversion import GoldenSet as GoldenRules
from recop.api.modelversion import GoldenSetResult
from recop.api.recmodel import RecModelSpec

IDS = "ids."
EXPECTED = "expected."
# Below this total magnitude the reference is treated as zero: differences then count
# absolutely, so an all-zero reference cannot divide by zero.
TINY = 1e-12


class GoldenMismatch(RuntimeError):
    """The candidate's answers differ from the reference beyond the tolerance."""


@dataclass(frozen=True)
class GoldenSet:
    ids: dict[str, np.ndarray]
    expected: dict[str, np.ndarray]

    @property
    def rows(self) -> int:
        return len(next(iter(self.ids.values())))


def parse(data: bytes) -> GoldenSet:
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        ids = {k[len(IDS):]: np.asarray(npz[k], np.int64) for k in npz.files
               if k.startswith(IDS)}
        expected = {k[len(EXPECTED):]: np.asarray(npz[k], np.float64) for k in npz.files
                    if k.startswith(EXPECTED)}
    if not ids:
        raise ValueError("the golden set has no ids.<table> arrays")
    if len({len(v) for v in ids.values()}) != 1:
        raise ValueError("the golden set's id arrays differ in length")
    return GoldenSet(ids, expected)


def read(s3, uri: str) -> GoldenSet:
    """Blocking (boto3): run in a thread."""
    bucket, key = split_uri(uri)
    return parse(s3.get_object(Bucket=bucket, Key=key.rstrip("/"))["Body"].read())


def relative_difference(candidate: dict[str, np.ndarray],
                        reference: dict[str, np.ndarray]) -> float:
    """sum |candidate - reference| / sum |reference| over every output: one figure that
    does not blow up on outputs near zero the way an element-wise ratio does."""
    missing = sorted(set(reference) - set(candidate))
    if missing:
        raise GoldenMismatch(f"the candidate gives no output {missing}")
    diff = total = 0.0
    for name, ref in reference.items():
        got = np.asarray(candidate[name], np.float64)
        ref = np.asarray(ref, np.float64)
        if got.shape != ref.shape:
            raise GoldenMismatch(f"output {name} is {list(got.shape)}, expected "
                                 f"{list(ref.shape)}")
        if not np.isfinite(got).all():
            raise GoldenMismatch(f"output {name} is not finite")
        diff += float(np.abs(got - ref).sum())
        total += float(np.abs(ref).sum())
    return diff / total if total > TINY else diff


def lookup(shards: list[list[str]], ids: dict[str, np.ndarray],
           version: int) -> dict[str, np.ndarray]:
    """Blocking (gRPC): rows of every table, all read at `version`."""
    with EmbeddingClient(shards) as client:
        return client.lookup(ids, version=version).values


async def infer(triton_address: str, model: str, version: int,
                rows: dict[str, np.ndarray], max_batch: int) -> dict[str, np.ndarray]:
    """The dense model's outputs, pinned to `version`; every input is a table's rows."""
    from tritonclient.grpc import InferInput
    from tritonclient.grpc import aio as triton_aio

    client = triton_aio.InferenceServerClient(triton_address)
    try:
        meta = await client.get_model_metadata(model, str(version), as_json=True)
        absent = [i["name"] for i in meta["inputs"] if i["name"] not in rows]
        if absent:
            raise GoldenMismatch(f"dense inputs {absent} are not tables of the golden set")
        n = len(next(iter(rows.values())))
        chunks: dict[str, list[np.ndarray]] = {o["name"]: [] for o in meta["outputs"]}
        for start in range(0, n, max(max_batch, 1)):
            inputs = []
            for spec in meta["inputs"]:
                part = np.ascontiguousarray(rows[spec["name"]][start:start + max_batch])
                item = InferInput(spec["name"], list(part.shape), spec["datatype"])
                item.set_data_from_numpy(part)
                inputs.append(item)
            result = await client.infer(model, inputs, model_version=str(version))
            for name, parts in chunks.items():
                parts.append(result.as_numpy(name))
        return {name: np.concatenate(parts) for name, parts in chunks.items()}
    finally:
        await client.close()


@dataclass(frozen=True)
class Side:
    """One version's answers: embedding version, and dense version (None: no Triton)."""

    embedding: int
    dense: int | None


async def answers(golden: GoldenSet, shards: list[list[str]], triton: str | None,
                  model: str, max_batch: int, side: Side) -> dict[str, np.ndarray]:
    rows = await asyncio.to_thread(lookup, shards, golden.ids, side.embedding)
    if triton is None or side.dense is None:
        return rows
    return await infer(triton, model, side.dense, rows, max_batch)


async def compare(golden: GoldenSet, shards: list[list[str]], triton: str | None,
                  model: str, max_batch: int, candidate: Side,
                  active: Side | None) -> tuple[float, str]:
    """(relative difference, what it was compared with)."""
    got = await answers(golden, shards, triton, model, max_batch, candidate)
    if golden.expected:
        return relative_difference(got, golden.expected), "the set's expected outputs"
    if active is None:
        raise GoldenMismatch("no active version to compare with and no expected outputs")
    reference = await answers(golden, shards, triton, model, max_batch, active)
    return relative_difference(got, reference), f"version {active.embedding}"


async def check(client: Kube, namespace: str, rules: GoldenRules, model: RecModelSpec,
                found: Endpoints, me: Target, previous: Target | None) -> GoldenSetResult:
    """The golden set through the candidate `me` and its reference; raises GoldenMismatch
    when they are further apart than the tolerance."""
    s3 = await s3_client(client, namespace, model)
    try:
        data = await asyncio.to_thread(read, s3, rules.uri)
    except Exception as err:  # unreadable or malformed: the version cannot be judged
        raise GoldenMismatch(f"cannot read {rules.uri}: {err}") from err
    shards = [found.lookup[i] for i in range(model.sharding.shards)]
    triton = found.triton[0] if found.triton else None
    active = Side(previous.number, previous.dense_version) if previous else None
    difference, reference = await compare(
        data, shards, triton, model.dense.model_name, model.dense.max_batch_size,
        Side(me.number, me.dense_version), active)
    if difference > rules.tolerance:
        raise GoldenMismatch(f"relative difference {difference:.4g} from "
                             f"{reference} exceeds {rules.tolerance:g}")
    return GoldenSetResult(checked_at=datetime.now(UTC).replace(microsecond=0),
                           rows=data.rows, relative_difference=round(difference, 6),
                           compared_with=reference)
