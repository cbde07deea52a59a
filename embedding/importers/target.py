"""What a checkpoint is cut for: the RecModel's shard count and each table's dimension and
storage dtype; and the error that refuses bad input."""

from __future__ import annotations

from dataclasses import dataclass, field

from embedding.manifest import DTYPES


class ImportRefused(ValueError):
    """Bad input, found before anything is written: the message names the file, the table
    and the row."""

    def __init__(self, path: object, table: str, row: int | None, reason: str):
        where = f"{path}: table {table}" + (f", row {row}" if row is not None else "")
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True)
class TableSpec:
    dim: int
    dtype: str = "fp32"


@dataclass(frozen=True)
class Target:
    """`tables` empty: every table the sources hold, at its own dimension, fp32."""

    shard_count: int
    tables: dict[str, TableSpec] = field(default_factory=dict)

    def __post_init__(self):
        if self.shard_count < 1:
            raise ValueError("shard_count must be at least 1")
        for name, spec in self.tables.items():
            if spec.dtype not in DTYPES:
                raise ValueError(f"table {name}: dtype {spec.dtype!r} is none of {DTYPES}")


def target_from_recmodel(doc: dict) -> Target:
    """A Target from a RecModel object (its YAML as a dict): spec.sharding.shards and
    spec.tables[].{name, dimension, dtype}."""
    spec = doc.get("spec") or {}
    tables = {t["name"]: TableSpec(int(t["dimension"]), t.get("dtype", "fp32"))
              for t in spec.get("tables") or []}
    return Target(int((spec.get("sharding") or {}).get("shards", 1)), tables)
