"""Checkpoint import throughput: a 1 GiB Parquet table (int64 ids, 64 fp32 values per row
as a fixed-size list) imported into a real MinIO, against pyarrow alone reading the same
file the same way (batches, converted to NumPy), each in its own process; prints MB/s of
the Parquet file for both and each one's peak RSS, and for scale the time the project's
CheckpointWriter takes to write the same rows, already in memory, to the same MinIO.

    .venv/bin/python bench/import_bench.py                 # 1 GiB, 8 shards, fp32
    .venv/bin/python bench/import_bench.py --gib 0.25 --dtype fp16

The table is generated once into $RECOP_STATE/import-bench (and kept for reruns).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from devstack import minio as local_minio  # noqa: E402
from devstack.common import state_dir  # noqa: E402

BUCKET = "recop-import-bench"
PYARROW_ALONE = """
import sys, numpy as np, pyarrow.parquet as pq
rows = 0
for batch in pq.ParquetFile(sys.argv[1]).iter_batches(batch_size=int(sys.argv[2])):
    ids = batch.column(0).to_numpy()
    values = batch.column(1).flatten().to_numpy().reshape(len(ids), -1)
    rows += len(ids)
print(rows)
"""

WRITER_ALONE = """
import sys, time, boto3, pyarrow.parquet as pq
from embedding.checkpoint import CheckpointWriter
t = pq.read_table(sys.argv[1])
ids = t.column(0).to_numpy()
values = t.column(1).combine_chunks().flatten().to_numpy().reshape(len(ids), -1)
started = time.perf_counter()
CheckpointWriter(boto3.client("s3"), sys.argv[2], int(sys.argv[3])).write_full(
    1, {"item": (ids, values)}, {"item": sys.argv[4]})
print(time.perf_counter() - started)
"""


def table(gib: float, dim: int) -> Path:
    path = state_dir("import-bench") / f"table-{gib:g}gib-{dim}.parquet"
    if path.exists():
        return path
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = int(gib * (1 << 30)) // (8 + 4 * dim)
    rng = np.random.default_rng(0)
    ids = rng.permutation(rows).astype(np.int64) * 3
    chunk = 250_000
    schema = pa.schema([("id", pa.int64()), ("embedding", pa.list_(pa.float32(), dim))])
    tmp = path.with_suffix(".tmp")
    with pq.ParquetWriter(tmp, schema) as writer:
        for start in range(0, rows, chunk):
            part = ids[start:start + chunk]
            values = rng.standard_normal((len(part), dim), dtype=np.float32)
            writer.write_table(pa.table({"id": part, "embedding": pa.FixedSizeListArray
                                         .from_arrays(pa.array(values.reshape(-1)), dim)},
                                        schema=schema))
    tmp.rename(path)
    return path


def timed(argv: list[str], env: dict | None = None) -> tuple[float, int, int, str]:
    """Seconds, peak RSS, peak anonymous RSS (bytes: RSS less the file pages it maps,
    e.g. the import's spill files, which the kernel can drop) and stdout of a child."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, cwd=ROOT,
                                env={**os.environ, **(env or {})})
        anon = 0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            anon = max(anon, _anonymous(proc.pid))
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode:
            raise RuntimeError(f"{argv[:3]} failed:\n{err.read().decode()[-2000:]}")
        return elapsed, usage.ru_maxrss * 1024, anon, out.read().decode()


def _anonymous(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    line = next((x for x in status.splitlines() if x.startswith("RssAnon:")), "RssAnon: 0 kB")
    return int(line.split()[1]) * 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "int8"])
    args = parser.parse_args()
    path = table(args.gib, args.dim)
    size = path.stat().st_size
    batch_rows = (64 << 20) // (4 * args.dim)  # the importer's default batch
    print(f"table: {path} ({size / 1e6:.0f} MB, {args.dim} fp32 per row)", flush=True)
    alone, alone_rss, alone_anon, _ = timed([sys.executable, "-c", PYARROW_ALONE, str(path),
                                 str(batch_rows)])
    s3 = local_minio.start()
    try:
        client = s3.client()
        client.create_bucket(Bucket=BUCKET)
        uri = f"s3://{BUCKET}/bench-{int(time.time())}"
        spent, rss, anon, out = timed([sys.executable, "-m", "embedding.importers", f"item={path}",
                                 "--uri", uri, "--version", "1", "--shards", str(args.shards),
                                 "--table", f"item={args.dim}:{args.dtype}",
                                 "--no-progress"], env=s3.env)
        _, _, _, ceiling = timed([sys.executable, "-c", WRITER_ALONE, str(path), f"{uri}-writer",
                               str(args.shards), args.dtype], env=s3.env)
    finally:
        s3.stop()
    ceiling = float(ceiling)
    mb = size / 1e6
    print(f"pyarrow alone (iter_batches -> NumPy): {alone:6.1f} s  {mb / alone:7.1f} MB/s"
          f"  peak RSS {alone_rss / 2**20:5.0f} MiB (anonymous {alone_anon / 2**20:4.0f})")
    print(f"recop import -> MinIO ({args.shards} shards, {args.dtype}): {spent:6.1f} s  "
          f"{mb / spent:7.1f} MB/s  peak RSS {rss / 2**20:5.0f} MiB (anonymous "
          f"{anon / 2**20:4.0f})")
    print(f"import / pyarrow alone: {alone / spent:.2f}x the throughput")
    print(f"the S3 writes alone (CheckpointWriter, same rows from memory): {ceiling:6.1f} s  "
          f"{mb / ceiling:7.1f} MB/s")
    print(out.strip())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
