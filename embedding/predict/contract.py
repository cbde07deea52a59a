"""What the entry model takes and answers, and the checks on a request: pure, so that
they are tested without Triton."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

# Inputs and outputs besides the tables' and the dense model's.
VERSION_INPUT = "version"  # optional INT64 [1]: pin the embedding version
EMBEDDING_VERSION_OUTPUT = "embedding_version"
DENSE_VERSION_OUTPUT = "dense_version"
CONFIG_PARAMETER = "recop"
# In RecOp's Triton image: the model's repository, and its settings in the pod's env
# when the model starts with the server (--load-model) rather than by a config override.
ENTRY_MODEL = "predict"
ENTRY_REPOSITORY = "/opt/recop/models"
CONFIG_ENV = "RECOP_ENTRY_MODEL"
INFER_PATH = f"/v2/models/{ENTRY_MODEL}/infer"  # KServe v2, on Triton's HTTP port


class BadRequest(ValueError):
    """A request the caller must change: the message names the input."""


@dataclass(frozen=True)
class EntryConfig:
    dense_model: str
    # Per shard, its replicas' lookup addresses (host:port): a name resolves to every
    # address it has (a headless Service's ready pods).
    shards: list[list[str]]
    tables: dict[str, int]  # sparse input (= table) -> dim; the dense input of that name
    outputs: list[str]  # the dense model's outputs that the answer carries (FP32)
    dense_inputs: dict[str, int] = field(default_factory=dict)  # passed through: FP32 width
    max_ids: int = 150_000
    timeout_seconds: float = 5.0
    zero_rows_when_shard_unavailable: bool = False

    def to_json(self) -> str:
        return json.dumps({"denseModel": self.dense_model, "shards": self.shards,
                           "tables": self.tables, "outputs": self.outputs,
                           "denseInputs": self.dense_inputs, "maxIds": self.max_ids,
                           "timeoutSeconds": self.timeout_seconds,
                           "zeroRowsWhenShardUnavailable":
                               self.zero_rows_when_shard_unavailable}, sort_keys=True)

    @classmethod
    def parse(cls, text: str) -> EntryConfig:
        try:
            raw = json.loads(text)
            config = cls(dense_model=str(raw["denseModel"]),
                         shards=[[str(a) for a in s] for s in raw["shards"]],
                         tables={str(k): int(v) for k, v in raw["tables"].items()},
                         outputs=[str(o) for o in raw["outputs"]],
                         dense_inputs={str(k): int(v)
                                       for k, v in raw.get("denseInputs", {}).items()},
                         max_ids=int(raw.get("maxIds", cls.max_ids)),
                         timeout_seconds=float(raw.get("timeoutSeconds", cls.timeout_seconds)),
                         zero_rows_when_shard_unavailable=bool(
                             raw.get("zeroRowsWhenShardUnavailable", False)))
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"the {CONFIG_PARAMETER!r} parameter is not a valid entry "
                             f"model configuration: {err!r}") from None
        if not config.shards or not all(config.shards):
            raise ValueError("every shard needs at least one address")
        if not config.tables:
            raise ValueError("the entry model needs at least one table")
        return config

    def io(self) -> tuple[list[dict], list[dict]]:
        """The model config's inputs and outputs (Triton's auto-complete form)."""
        inputs = [{"name": t, "data_type": "TYPE_INT64", "dims": [-1]} for t in self.tables]
        inputs += [{"name": n, "data_type": "TYPE_FP32", "dims": [-1, w]}
                   for n, w in self.dense_inputs.items()]
        inputs.append({"name": VERSION_INPUT, "data_type": "TYPE_INT64", "dims": [1],
                       "optional": True})
        outputs = [{"name": o, "data_type": "TYPE_FP32", "dims": [-1, -1]}
                   for o in self.outputs]
        outputs += [{"name": n, "data_type": "TYPE_INT64", "dims": [1]}
                    for n in (EMBEDDING_VERSION_OUTPUT, DENSE_VERSION_OUTPUT)]
        return inputs, outputs

    def check(self, ids: dict, dense: dict) -> None:
        """Refuses what Triton's own checks of the declared dims let through: rows that
        do not line up, and more ids than the shard servers take."""
        total = sum(len(v) for v in ids.values())
        if total > self.max_ids:
            raise BadRequest(f"{total} ids in one request ({', '.join(ids)}), above the "
                             f"limit of {self.max_ids}: split the request")
        sizes = {name: len(v) for name, v in {**ids, **dense}.items()}
        if len(set(sizes.values())) > 1:
            raise BadRequest("every input needs one entry per candidate row: got "
                             + ", ".join(f"{n}: {s}" for n, s in sizes.items()))
