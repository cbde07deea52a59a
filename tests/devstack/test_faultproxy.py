"""The fault proxy: its pure decision and framing, then each fault against a real HTTP/1.1
server on loopback (the standard library's, keep-alive on)."""

from __future__ import annotations

import http.client
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from devstack.faultproxy import (
    Decider,
    Fault,
    FaultProxy,
    error_response,
    parse_head,
    response_has_body,
)

# ------------------------------------------------------------------ pure parts


def test_first_matching_fault_under_its_limit_wins():
    d = Decider((Fault("error", methods=frozenset({"PUT"})),
                 Fault("reset", path=r"/b/", limit=2),
                 Fault("stall", delay=1.0)))
    assert d.decide("PUT", "/b/x").action == "error"
    assert d.decide("GET", "/b/x").action == "reset"
    assert d.decide("GET", "/b/y").action == "reset"
    assert d.decide("GET", "/b/z").action == "stall"  # the reset's limit is used up
    assert d.decide("GET", "/a/x").action == "stall"
    assert d.requests == 5 and d.injected == {"error": 1, "reset": 2, "stall": 2}


def test_fraction_is_honoured_and_reproducible_for_a_seed():
    def run(seed):
        d = Decider((Fault("error", fraction=0.25),), seed)
        return [d.decide("GET", "/k") is not None for _ in range(4000)]

    first = run(7)
    assert first == run(7)
    assert first != run(8)
    assert 0.2 < sum(first) / len(first) < 0.3


def test_no_faults_and_zero_fraction_pass_everything():
    assert Decider().decide("GET", "/") is None
    d = Decider((Fault("reset", fraction=0.0),))
    assert all(d.decide("GET", "/") is None for _ in range(100))


def test_fault_text_form_and_bad_values():
    assert Fault.parse("error:0.5:500") == Fault("error", 0.5, status=500)
    assert Fault.parse("stall:1:2.5") == Fault("stall", 1.0, delay=2.5)
    assert Fault.parse("reset") == Fault("reset")
    with pytest.raises(ValueError):
        Fault("explode")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Fault("error", fraction=1.5)


def test_heads_parse_and_rebuild():
    head = parse_head(b"GET /b/k?x=1 HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n"
                      b"Content-Length: 3\r\n\r\n")
    assert head.request == ("GET", "/b/k?x=1")
    assert head.get("content-length") == "3" and head.keep_alive()
    assert parse_head(head.without("expect").encode()).get("expect") is None
    assert not parse_head(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n").keep_alive()
    assert parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").chunked()
    with pytest.raises(ValueError):
        parse_head(b"GET / HTTP/1.1\r\nno colon here\r\n\r\n")
    with pytest.raises(ValueError):
        parse_head(b"GET / HTTP/1.1\r\n")


def test_error_response_is_an_s3_error_document():
    raw = error_response(503, "/bucket/key")
    head_end = raw.index(b"\r\n\r\n") + 4
    head = parse_head(raw[:head_end])
    assert head.status == 503 and int(head.get("content-length")) == len(raw) - head_end
    assert b"<Code>SlowDown</Code>" in raw and b"/bucket/key" in raw
    assert b"<Code>InternalError</Code>" in error_response(500, "/")
    assert not response_has_body("HEAD", 200) and not response_has_body("GET", 204)


# ------------------------------------------------------------------ on real sockets

BODY = bytes(range(256)) * 64  # 16 KiB


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as MinIO

    def do_GET(self):
        if self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (BODY[:1000], BODY[1000:]):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def do_PUT(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def upstream():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy(upstream):
    with FaultProxy("127.0.0.1", upstream) as p:
        yield p


def _get(conn: http.client.HTTPConnection, path: str = "/k"):
    conn.request("GET", path)
    response = conn.getresponse()
    return response.status, response.read()


def test_passes_requests_through_on_one_kept_alive_connection(proxy):
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    assert _get(conn) == (200, BODY)
    assert _get(conn, "/chunked") == (200, BODY)
    conn.request("PUT", "/k", body=b"abc", headers={"Expect": "100-continue"})
    response = conn.getresponse()
    assert (response.status, response.read()) == (200, b"abc")
    assert proxy.stats() == {"requests": 3, "connections": 1}


def test_error_answers_an_s3_error_and_keeps_the_connection(proxy):
    proxy.set(Fault("error", status=500, limit=1))
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    status, body = _get(conn)
    assert status == 500 and b"InternalError" in body
    assert _get(conn) == (200, BODY)
    assert proxy.stats()["error"] == 1 and proxy.stats()["connections"] == 1


def test_reset_and_cut_break_the_connection(proxy):
    proxy.set(Fault("reset", limit=1))
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    with pytest.raises((ConnectionResetError, http.client.RemoteDisconnected)):
        _get(conn)
    proxy.set(Fault("cut"))
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    conn.request("GET", "/k")
    response = conn.getresponse()
    assert response.status == 200  # the head arrives: the body breaks half way
    with pytest.raises((http.client.IncompleteRead, ConnectionResetError)):
        response.read()


def test_stall_delays_and_blackhole_holds_until_healed(proxy):
    proxy.set(Fault("stall", delay=0.3))
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    started = time.monotonic()
    assert _get(conn) == (200, BODY)
    assert time.monotonic() - started >= 0.3  # held at least that long: the fault's effect

    proxy.set(Fault("blackhole"))
    outcome = {}

    def request():
        c = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
        try:
            outcome["result"] = _get(c)
        except (http.client.HTTPException, OSError) as err:
            outcome["error"] = err

    thread = threading.Thread(target=request)
    thread.start()
    thread.join(0.5)
    assert thread.is_alive(), "a blackholed request gets no answer while the fault is on"
    proxy.heal()
    thread.join(10)
    assert not thread.is_alive() and "error" in outcome  # closed unanswered
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    assert _get(conn) == (200, BODY)
