"""OTLP/HTTP slow clients (slowloris): dribbling connections cannot hold the receiver's slots.

Real waitress receivers on 127.0.0.1 with a small connection limit and read deadline; every
loop is bounded in count and time, and nothing asserts a duration: a valid request either
gets its 200 or the client's own timeout fails the test.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from exporter import CodebookMetrics, Enricher, load_codebook
from exporter.sidecar.otlp import OtlpIntake
from exporter.sidecar.otlp_http import OtlpHttpReceiver

LIMIT = 16
READ_TIMEOUT = 2.0
HEAD = b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"


@contextlib.contextmanager
def running(read_timeout: float) -> Iterator[OtlpHttpReceiver]:
    intake = OtlpIntake(Enricher(load_codebook(), CodebookMetrics()))
    r = OtlpHttpReceiver(intake, "127.0.0.1", 0, threads=2, connection_limit=LIMIT,
                         read_timeout_seconds=read_timeout).start()
    try:
        yield r
    finally:
        r.stop(1)


@pytest.fixture
def receiver() -> Iterator[OtlpHttpReceiver]:
    with running(READ_TIMEOUT) as r:
        yield r


def body() -> bytes:
    span = Span(trace_id=bytes(range(1, 17)), span_id=bytes(range(1, 9)), name="send",
                attributes=[KeyValue(key="provider.source",
                                     value=AnyValue(string_value="vonage.sms")),
                            KeyValue(key="provider.code", value=AnyValue(string_value="1"))])
    return ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[span])])]
    ).SerializeToString()


def post(r: OtlpHttpReceiver, data: bytes, timeout: float = 15) -> int:
    conn = http.client.HTTPConnection(r.host, r.port, timeout=timeout)
    try:
        conn.request("POST", "/v1/traces", data, {"Content-Type": "application/x-protobuf"})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


class Dribbler:
    """``n`` connections each sending one more header byte every ``every`` seconds, for at
    most ``seconds``; records which ones the server closed."""

    def __init__(self, r: OtlpHttpReceiver, n: int, every: float, seconds: float) -> None:
        self.socks = [socket.create_connection((r.host, r.port), timeout=5) for _ in range(n)]
        self.closed: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every, seconds), daemon=True)
        self._thread.start()

    def _run(self, every: float, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        i = 0
        while not self._stop.is_set() and time.monotonic() < deadline:
            for k, s in enumerate(self.socks):
                if k in self.closed:
                    continue
                try:
                    s.sendall(HEAD[i % len(HEAD):i % len(HEAD) + 1])
                except OSError:
                    self.closed.add(k)
            i += 1
            self._stop.wait(every)

    def server_closed(self, k: int) -> bool:
        """Whether the server closed connection k (reads its end-of-stream, bounded)."""
        s = self.socks[k]
        s.settimeout(READ_TIMEOUT + 3)
        try:
            while s.recv(4096):
                pass
            return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for s in self.socks:
            with contextlib.suppress(OSError):
                s.close()


def test_valid_request_gets_a_slot_past_the_connection_limit() -> None:
    """Every slot held by a dribbling client, well inside a long read deadline: a valid
    request is still answered (before its client gives up, long before that deadline),
    because the receiver closes the longest-waiting incomplete connection to accept it."""
    with running(read_timeout=120) as receiver:
        slow = Dribbler(receiver, LIMIT, every=0.25, seconds=30)
        try:
            time.sleep(1.5)  # every slot is taken and has waited past the eviction grace
            for _ in range(3):
                assert post(receiver, body(), timeout=10) == 200
        finally:
            slow.stop()


def test_dribbling_connection_is_closed_at_the_read_deadline(receiver: OtlpHttpReceiver) -> None:
    """Below the connection limit, a request still arriving after read_timeout_seconds has its
    connection closed; its bytes kept coming, so the idle timeout alone never would."""
    slow = Dribbler(receiver, 4, every=0.25, seconds=READ_TIMEOUT + 8)
    try:
        assert all(slow.server_closed(k) for k in range(4))
    finally:
        slow.stop()


def test_slow_but_timely_request_is_answered(receiver: OtlpHttpReceiver) -> None:
    """A request that arrives in pieces but whole within the deadline is served normally."""
    data = body()
    head = HEAD + f"Content-Length: {len(data)}\r\n\r\n".encode()
    with socket.create_connection((receiver.host, receiver.port), timeout=10) as s:
        for part in (head[:10], head[10:], data[:5], data[5:]):
            s.sendall(part)
            time.sleep(READ_TIMEOUT / 8)
        reply = s.recv(4096)
    assert reply.startswith(b"HTTP/1.1 200 ")
