"""The limit probe: 4 processes gathering rows with C (bench/limit_probe.c) and streaming
them over loopback TCP to one Python client, which reads the four sockets into one buffer.

    .venv/bin/python bench/limit_probe.py --row-bytes 256     # p50/p99 of 150,000 rows

bench/embedding_bench.py runs it in the same run as RecOp and Redis, with the same row
count, row size and shard split, so the ratio to it is the distance to what this machine
allows for those bytes. The compiled probe is cached in $RECOP_CACHE (~/.cache/recop).
"""

from __future__ import annotations

import argparse
import selectors
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from devstack.common import cache_dir, free_port, wait_for_port  # noqa: E402
from embedding.native import keep_freed_memory  # noqa: E402

SOURCE = Path(__file__).with_name("limit_probe.c")


def build() -> Path:
    binary = cache_dir() / "limit-probe" / f"limit_probe-{int(SOURCE.stat().st_mtime)}"
    if not binary.exists():
        binary.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cc", "-O2", "-o", str(binary), str(SOURCE)], check=True)
    return binary


class Probe:
    """`shards` C servers of `rows` rows each; `lookup` asks each for its share of rows."""

    def __init__(self, shards: int, rows: int, row_bytes: int):
        binary = build()
        self.row_bytes = row_bytes
        self.ports = [free_port() for _ in range(shards)]
        self.procs = [subprocess.Popen([str(binary), str(p), str(rows), str(row_bytes)])
                      for p in self.ports]
        for port, proc in zip(self.ports, self.procs, strict=True):
            wait_for_port(port, 30, proc=proc)
        self.socks = [socket.create_connection(("127.0.0.1", p)) for p in self.ports]
        for s in self.socks:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        keep_freed_memory()  # as the RecOp client does

    def lookup(self, positions: list[np.ndarray]) -> np.ndarray:
        """The rows of every shard's positions, shard after shard, in one fresh buffer."""
        total = sum(len(p) for p in positions) * self.row_bytes
        out = np.empty(total, np.uint8)
        view = memoryview(out)
        sel = selectors.DefaultSelector()
        at = 0
        for sock, pos in zip(self.socks, positions, strict=True):
            sock.sendall(np.uint64(len(pos)).tobytes() + pos.astype("<u8").tobytes())
            size = len(pos) * self.row_bytes
            sock.setblocking(False)
            sel.register(sock, selectors.EVENT_READ, [view[at:at + size], 0])
            at += size
        while sel.get_map():
            for key, _ in sel.select():
                state = key.data
                try:
                    n = key.fileobj.recv_into(state[0][state[1]:])
                except BlockingIOError:
                    continue
                state[1] += n
                if state[1] == len(state[0]):
                    sel.unregister(key.fileobj)
                    key.fileobj.setblocking(True)
        sel.close()
        return out

    def close(self) -> None:
        for s in self.socks:
            s.close()
        for proc in self.procs:
            proc.terminate()
            proc.wait()


def measure(probe: Probe, rows: int, batch: int, shards: int, iters: int,
            rng: np.random.Generator) -> list[float]:
    lat = []
    for i in range(iters + 3):
        share = rng.multinomial(batch, [1 / shards] * shards)
        positions = [rng.integers(0, rows, n).astype(np.uint64) for n in share]
        t0 = time.perf_counter()
        probe.lookup(positions)
        if i >= 3:
            lat.append(time.perf_counter() - t0)
    return lat


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--row-bytes", type=int, default=256)
    parser.add_argument("--rows", type=int, default=250_000, help="per shard")
    parser.add_argument("--batch", type=int, default=150_000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--iters", type=int, default=40)
    args = parser.parse_args()
    probe = Probe(args.shards, args.rows, args.row_bytes)
    try:
        lat = measure(probe, args.rows, args.batch, args.shards, args.iters,
                      np.random.default_rng(5))
    finally:
        probe.close()
    print(f"p50 {np.percentile(lat, 50) * 1e3:.1f} ms, p99 {np.percentile(lat, 99) * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
