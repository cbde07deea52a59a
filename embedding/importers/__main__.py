"""`python -m embedding.importers`: an import from the command line (the `recop
checkpoint import` command calls `main`). S3 comes from the usual AWS_* variables
(AWS_ENDPOINT_URL for MinIO and other S3-compatible stores)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from embedding.importers.run import Options, Source, import_checkpoint
from embedding.importers.target import ImportRefused, TableSpec, Target, target_from_recmodel

EPILOG = """\
SOURCE is PATH or TABLE=PATH. Formats by suffix: .parquet, or a directory of .parquet
part files (one table: TABLE, default the name's stem); .safetensors, .npz and PyTorch
state dicts (.pt .pth .bin .ckpt): every 2-D float array is a table, named by its key
(TorchRec's embedding_bags.T.weight and embeddings.T.weight: T; K.weight: K), with ids
0..n-1 unless an int64 array `<key less .weight>.ids` holds them; an archive of just
`ids` and `values` is the one table TABLE. Tables the RecModel lacks are left out.
"""


def _pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def _source(text: str) -> Source:
    name, sep, path = text.partition("=")
    return Source(Path(path), name) if sep and not Path(text).exists() else Source(Path(text))


def _table(text: str) -> tuple[str, TableSpec]:
    name, value = _pair(text)
    dim, _, dtype = value.partition(":")
    return name, TableSpec(int(dim), dtype or "fp32")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m embedding.importers", epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Convert trainers' embeddings into a RecOp "
                                "checkpoint in S3.")
    p.add_argument("sources", nargs="+", type=_source, metavar="SOURCE")
    p.add_argument("--uri", required=True, help="s3://bucket/prefix of the checkpoint")
    p.add_argument("--version", type=int, required=True)
    p.add_argument("--base-version", type=int,
                   help="write an incremental checkpoint on this version")
    model = p.add_mutually_exclusive_group(required=True)
    model.add_argument("--recmodel", type=Path,
                       help="RecModel YAML: shard count, tables, dimensions, dtypes")
    model.add_argument("--shards", type=int, help="shard count (with --table, or all tables)")
    p.add_argument("--table", type=_table, action="append", default=[],
                   metavar="NAME=DIM[:DTYPE]", help="a table to import (with --shards)")
    p.add_argument("--rename", type=_pair, action="append", default=[],
                   metavar="SOURCE=TABLE", help="a source table's name in the RecModel")
    p.add_argument("--id-column", default="id", help="Parquet id column (int64)")
    p.add_argument("--vector-column", help="Parquet vector column (default: embedding, "
                   "vector or values)")
    p.add_argument("--spill-dir", type=Path, help="local scratch space (as much as the data)")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.recmodel:
        target = target_from_recmodel(yaml.safe_load(args.recmodel.read_text()))
    else:
        target = Target(args.shards, dict(args.table))
    for source in args.sources:
        source.id_column, source.vector_column = args.id_column, args.vector_column
    import boto3

    try:
        manifest = import_checkpoint(
            args.sources, boto3.client("s3"), args.uri, target, args.version,
            base_version=args.base_version,
            options=Options(renames=dict(args.rename), progress=not args.no_progress,
                            spill_dir=args.spill_dir))
    except (ImportRefused, ValueError, FileNotFoundError, ImportError) as err:
        print(f"refused: {err}", file=sys.stderr)
        return 2
    rows = {name: t.rows for name, t in manifest.tables.items()}
    print(f"wrote {manifest.kind} version {manifest.version} to {args.uri}: "
          + ", ".join(f"{n} {r} rows" for n, r in rows.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
