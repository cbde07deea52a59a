"""An HTTP/1.1 proxy on loopback that injects faults between S3 clients and MinIO.

MinIO itself cannot be told to fail one request in ten, stall, or drop a connection in the
middle of a body, so the fault tests put this proxy in front of it: the embedding servers
(and the operator) talk to the proxy's endpoint, and a test switches faults on and off at
run time while a load is under way. It parses requests and responses (Content-Length,
chunked, keep-alive), so a fault hits one S3 request, not a whole connection.

Faults, each with the fraction of matching requests it hits:
- error: an S3 error response (503 SlowDown by default, or 500 InternalError);
- reset: the connection is reset (RST) as soon as the request arrives;
- cut: the response head and half its body are relayed, then the connection is reset;
- stall: the request is held `delay` seconds, then forwarded;
- blackhole: the request is held, unanswered, until the fault is switched off, and then the
  connection is closed without an answer (a client with a shorter timeout gives up first).

    proxy = FaultProxy("127.0.0.1", minio_port).start()
    proxy.set(Fault("error", fraction=0.3))   # from the test's thread, at any time
    proxy.heal()

The decision (`Decider`) is pure and seeded, so a run is reproducible and unit-tested; the
proxy runs an asyncio server in its own thread. `python -m devstack.faultproxy
--upstream 127.0.0.1:9000 --fault error:0.2` runs one by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import re
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

from devstack.common import LOOPBACK

Action = Literal["error", "reset", "cut", "stall", "blackhole"]
ACTIONS: tuple[str, ...] = ("error", "reset", "cut", "stall", "blackhole")
_REASONS = {500: "Internal Server Error", 503: "Service Unavailable", 429: "Too Many Requests"}
_CODES = {500: "InternalError", 503: "SlowDown", 429: "SlowDown"}
_MAX_HEAD = 64 << 10


@dataclass(frozen=True)
class Fault:
    action: Action
    fraction: float = 1.0
    status: int = 503  # error only
    delay: float = 0.0  # stall only
    methods: frozenset[str] = frozenset()  # empty: every method
    path: str = ""  # regex searched in the request target; empty: every target
    limit: int | None = None  # inject at most this many times, then let requests pass

    def __post_init__(self):
        if self.action not in ACTIONS:
            raise ValueError(f"unknown fault action {self.action!r}")
        if not 0.0 <= self.fraction <= 1.0:
            raise ValueError("fraction must be within [0, 1]")

    def matches(self, method: str, target: str) -> bool:
        return ((not self.methods or method.upper() in self.methods)
                and (not self.path or re.search(self.path, target) is not None))

    @classmethod
    def parse(cls, text: str) -> Fault:
        """`action[:fraction[:arg]]`: arg is the status for error, seconds for stall."""
        action, *rest = text.split(":")
        fraction = float(rest[0]) if rest else 1.0
        if action == "error" and len(rest) > 1:
            return cls("error", fraction, status=int(rest[1]))
        if action == "stall" and len(rest) > 1:
            return cls("stall", fraction, delay=float(rest[1]))
        return cls(action, fraction)  # type: ignore[arg-type]


@dataclass
class Decider:
    """Which fault, if any, a request gets: the first matching fault still under its
    limit, drawn with its fraction from a seeded generator."""

    faults: tuple[Fault, ...] = ()
    seed: int = 0
    used: list[int] = field(default_factory=list)
    requests: int = 0
    injected: Counter = field(default_factory=Counter)

    def __post_init__(self):
        self._rng = random.Random(self.seed)
        self.used = [0] * len(self.faults)
        self._lock = threading.Lock()

    def decide(self, method: str, target: str) -> Fault | None:
        with self._lock:
            self.requests += 1
            for i, fault in enumerate(self.faults):
                if not fault.matches(method, target):
                    continue
                if fault.limit is not None and self.used[i] >= fault.limit:
                    continue
                # A draw per matching fault keeps the sequence reproducible for a seed.
                if self._rng.random() < fault.fraction:
                    self.used[i] += 1
                    self.injected[fault.action] += 1
                    return fault
            return None

    def holds(self, fault: Fault) -> bool:
        """Whether `fault` is still switched on (a blackholed request waits for this)."""
        return any(f is fault for f in self.faults)


# ------------------------------------------------------------------ HTTP/1.1 framing


@dataclass
class Head:
    start: str  # request line or status line
    headers: list[tuple[str, str]]

    def get(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)

    def without(self, name: str) -> Head:
        return Head(self.start, [(k, v) for k, v in self.headers if k.lower() != name.lower()])

    def encode(self) -> bytes:
        lines = [self.start, *(f"{k}: {v}" for k, v in self.headers), "", ""]
        return "\r\n".join(lines).encode("latin-1")

    @property
    def request(self) -> tuple[str, str]:
        method, target, _ = self.start.split(" ", 2)
        return method, target

    @property
    def status(self) -> int:
        return int(self.start.split(" ", 2)[1])

    def keep_alive(self) -> bool:
        connection = (self.get("connection") or "").lower()
        if self.start.endswith("HTTP/1.0") or self.start.startswith("HTTP/1.0"):
            return connection == "keep-alive"
        return connection != "close"

    def chunked(self) -> bool:
        return "chunked" in (self.get("transfer-encoding") or "").lower()


def parse_head(raw: bytes) -> Head:
    """A request or response head (through the blank line) -> Head; ValueError if bad."""
    text = raw.decode("latin-1")
    lines = text.split("\r\n")
    if len(lines) < 2 or lines[-1] != "" or lines[-2] != "":
        raise ValueError("incomplete HTTP head")
    start = lines[0]
    if len(start.split(" ", 2)) < 2:
        raise ValueError(f"bad start line {start!r}")
    headers = []
    for line in lines[1:-2]:
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"bad header line {line!r}")
        headers.append((name.strip(), value.strip()))
    return Head(start, headers)


def error_response(status: int, target: str) -> bytes:
    """An S3-style XML error, as MinIO or AWS would send it."""
    code = _CODES.get(status, "InternalError")
    body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
            f"<Message>injected by recop faultproxy</Message><Resource>{target}</Resource>"
            "<RequestId>recop-faultproxy</RequestId></Error>").encode()
    head = Head(f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}", [
        ("Content-Type", "application/xml"), ("Content-Length", str(len(body))),
        ("x-amz-request-id", "recop-faultproxy"), ("Retry-After", "0")])
    return head.encode() + body


def response_has_body(method: str, status: int) -> bool:
    return method.upper() != "HEAD" and status >= 200 and status not in (204, 304)


async def _read_head(reader: asyncio.StreamReader) -> bytes | None:
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as err:
        if err.partial:
            raise ConnectionError("connection closed inside an HTTP head") from err
        return None
    except asyncio.LimitOverrunError as err:
        raise ConnectionError("HTTP head too large") from err


async def _read_chunked(reader: asyncio.StreamReader, sink=None) -> bytes:
    """The raw bytes of a chunked body (sizes, data, trailers), passed on as they come."""
    out = bytearray()

    async def take(data: bytes):
        if sink is None:
            out.extend(data)
        else:
            await sink(data)

    while True:
        line = await reader.readuntil(b"\r\n")
        await take(line)
        size = int(line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            while True:  # trailers up to the blank line
                trailer = await reader.readuntil(b"\r\n")
                await take(trailer)
                if trailer == b"\r\n":
                    return bytes(out)
        await take(await reader.readexactly(size + 2))


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                length: int | None) -> None:
    """`length` bytes (None: up to EOF) from reader to writer."""
    left = length
    while left is None or left > 0:
        data = await reader.read(65536 if left is None else min(65536, left))
        if not data:
            if left is None:
                return
            raise ConnectionError("upstream closed inside a body")
        writer.write(data)
        await writer.drain()
        if left is not None:
            left -= len(data)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST rather than a FIN: what a crashed peer or a middlebox does."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


# ------------------------------------------------------------------ the proxy


class FaultProxy:
    """A loopback proxy to `upstream_host:upstream_port`, in a thread of its own."""

    def __init__(self, upstream_host: str, upstream_port: int, port: int = 0,
                 host: str = LOOPBACK):
        self.upstream = (upstream_host, upstream_port)
        self.host = host
        self.port = port
        self._decider = Decider()
        self._history: list[Decider] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.connections = 0

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -------------------------------------------------------------- control (any thread)

    def start(self) -> FaultProxy:
        ready = threading.Event()
        failure: list[BaseException] = []

        def run():
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._serve, self.host, self.port, limit=_MAX_HEAD))
                self.port = self._server.sockets[0].getsockname()[1]
            except BaseException as err:  # reported to the caller of start()
                failure.append(err)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, name=f"faultproxy-{self.port}", daemon=True)
        self._thread.start()
        ready.wait(30)
        if failure:
            raise failure[0]
        return self

    def set(self, *faults: Fault, seed: int = 0) -> None:
        """Replace the faults; requests already held by a blackhole that is no longer
        listed are released (closed unanswered)."""
        self._history.append(self._decider)
        self._decider = Decider(tuple(faults), seed)

    def heal(self) -> None:
        self.set()

    def clear_stats(self) -> None:
        self._history = []
        self._decider = Decider(self._decider.faults, self._decider.seed)
        self.connections = 0

    def stats(self) -> dict[str, int]:
        """Requests seen and faults injected, over every set() since start (or the last
        clear_stats)."""
        deciders = [*self._history, self._decider]
        out: Counter = Counter()
        for d in deciders:
            out["requests"] += d.requests
            out.update(d.injected)
        out["connections"] = self.connections
        return dict(out)

    def stop(self) -> None:
        self._stopping = True
        loop, server = self._loop, self._server
        if loop is None or server is None:
            return

        async def close():
            server.close()
            for task in [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]:
                task.cancel()

        with contextlib.suppress(RuntimeError):
            asyncio.run_coroutine_threadsafe(close(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -------------------------------------------------------------- the data path

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.connections += 1
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while not self._stopping:
                raw = await _read_head(reader)
                if raw is None:
                    return
                head = parse_head(raw)
                method, target = head.request
                decider = self._decider
                fault = decider.decide(method, target)
                if fault is not None and fault.action == "reset":
                    _reset(writer)
                    return
                if fault is not None and fault.action == "blackhole":
                    while not self._stopping and (self._decider is decider
                                                  or self._decider.holds(fault)):
                        await asyncio.sleep(0.05)
                    writer.transport.abort()
                    return
                if (head.get("expect") or "").lower() == "100-continue":
                    # Answered here so that the body comes before the decision to forward.
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                    await writer.drain()
                    head = head.without("expect")
                body = await self._request_body(reader, head)
                if fault is not None and fault.action == "error":
                    writer.write(error_response(fault.status, target))
                    await writer.drain()
                    if not head.keep_alive():
                        return
                    continue
                if fault is not None and fault.action == "stall":
                    await asyncio.sleep(fault.delay)
                if upstream is None:
                    upstream = await asyncio.open_connection(*self.upstream, limit=_MAX_HEAD)
                up_reader, up_writer = upstream
                up_writer.write(head.encode() + body)
                await up_writer.drain()
                keep = await self._relay_response(up_reader, writer, method, fault)
                if not keep or not head.keep_alive():
                    return
        except (ConnectionError, asyncio.IncompleteReadError, ValueError, OSError):
            _reset(writer)
        except asyncio.CancelledError:
            writer.transport.abort()
            raise
        finally:
            if upstream is not None:
                upstream[1].transport.abort()
            if not writer.transport.is_closing():
                writer.close()

    @staticmethod
    async def _request_body(reader: asyncio.StreamReader, head: Head) -> bytes:
        if head.chunked():
            return await _read_chunked(reader)
        length = int(head.get("content-length") or 0)
        return await reader.readexactly(length) if length else b""

    async def _relay_response(self, up_reader, writer, method: str,
                              fault: Fault | None) -> bool:
        """Relay one response; False when the connection must close after it."""
        raw = await _read_head(up_reader)
        if raw is None:
            raise ConnectionError("upstream closed before answering")
        head = parse_head(raw)
        if 100 <= head.status < 200:  # an interim answer: the real one follows
            writer.write(raw)
            return await self._relay_response(up_reader, writer, method, fault)
        writer.write(raw)
        has_body = response_has_body(method, head.status)
        length = head.get("content-length")
        if fault is not None and fault.action == "cut":
            half = int(length) // 2 if length and has_body else 0
            await _copy(up_reader, writer, half)
            _reset(writer)
            return False
        if not has_body:
            await writer.drain()
        elif head.chunked():
            async def sink(data: bytes):
                writer.write(data)
                await writer.drain()

            await _read_chunked(up_reader, sink)
        elif length is not None:
            await _copy(up_reader, writer, int(length))
        else:
            await _copy(up_reader, writer, None)
            return False
        return head.keep_alive()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.faultproxy")
    parser.add_argument("--upstream", required=True, help="host:port of the S3 server")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--fault", action="append", default=[],
                        help="action[:fraction[:status|seconds]] (repeatable)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    host, _, port = args.upstream.rpartition(":")
    proxy = FaultProxy(host, int(port), args.port).start()
    proxy.set(*(Fault.parse(f) for f in args.fault), seed=args.seed)
    print(f"faultproxy {proxy.endpoint} -> {args.upstream}", flush=True)
    try:
        while True:
            time.sleep(5)
            print(proxy.stats(), flush=True)
    except KeyboardInterrupt:
        proxy.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
