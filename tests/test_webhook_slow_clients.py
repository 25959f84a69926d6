"""The webhook listener, which faces the internet, under slow clients (slowloris).

Same guards as the OTLP/HTTP receiver (exporter/sidecar/waitress_serving.py): a real listener
on 127.0.0.1 with a small connection limit; loops bounded in count and time; nothing asserts a
duration (a valid request gets its answer or the client's own timeout fails the test).
"""

from __future__ import annotations

import contextlib
import http.client
import time
from collections.abc import Iterator

from test_otlp_http_slow_clients import LIMIT, READ_TIMEOUT, Dribbler

from exporter import CodebookMetrics, Enricher, load_codebook
from exporter.sidecar.webhook import WebhookHandler
from exporter.sidecar.webhook_listener import WebhookListener

DLR = "/webhooks/vonage/dlr?messageId=0B00000127FDBC63&status=delivered&err-code=0"


@contextlib.contextmanager
def running(read_timeout: float) -> Iterator[WebhookListener]:
    handler = WebhookHandler(Enricher(load_codebook(), CodebookMetrics()))
    listener = WebhookListener(handler, "127.0.0.1", 0, threads=2, connection_limit=LIMIT,
                               read_timeout_seconds=read_timeout).start()
    try:
        yield listener
    finally:
        listener.stop(1)


def get(listener: WebhookListener, path: str, timeout: float = 10) -> int:
    conn = http.client.HTTPConnection(listener.host, listener.port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def test_delivery_report_gets_a_slot_past_the_connection_limit() -> None:
    """Every slot held by a dribbling client: a provider's delivery report is still answered,
    because the listener closes the longest-stalled incomplete connection to accept it."""
    with running(read_timeout=120) as listener:
        slow = Dribbler(listener, LIMIT, every=0.25, seconds=30)  # type: ignore[arg-type]
        try:
            time.sleep(1.5)  # every slot is taken and has waited past the eviction grace
            for i in range(3):
                assert get(listener, f"{DLR}&nonce-id={i}") == 200
        finally:
            slow.stop()


def test_dribbling_connection_is_closed_at_the_read_deadline() -> None:
    """A request still arriving after read_timeout_seconds has its connection closed."""
    with running(read_timeout=READ_TIMEOUT) as listener:
        slow = Dribbler(listener, 4, every=0.25, seconds=READ_TIMEOUT + 8)  # type: ignore[arg-type]
        try:
            assert all(slow.server_closed(k) for k in range(4))
        finally:
            slow.stop()
