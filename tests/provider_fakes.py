"""Test helpers for the provider instrumentors: scripted provider endpoints and a real pipeline.

``FakeProvider`` is a real HTTP(S) server on 127.0.0.1 that answers each (method, path) with
the next scripted answer (status, headers, body bytes as the provider sends them) and records
what it received. ``Pipeline`` is a real OpenTelemetry SDK ``TracerProvider`` with
``CodebookSpanProcessor`` in front of an ``InMemorySpanExporter``.
"""

from __future__ import annotations

import json
import ssl
import threading
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from exporter import CodebookSpanProcessor, Enricher
from tests.pki import Pki

Answer = tuple[int, dict[str, str], bytes]


def json_answer(status: int, doc: Any, **headers: str) -> Answer:
    """An answer with a JSON body, as the providers send it."""
    return status, {"Content-Type": "application/json; charset=utf-8", **headers}, json.dumps(
        doc).encode()


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class _State:
    answers: dict[tuple[str, str], deque[Answer]] = field(
        default_factory=lambda: defaultdict(deque))
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class FakeProvider:
    """A scripted provider endpoint on 127.0.0.1 (HTTPS when given a test PKI)."""

    def __init__(self, pki: Pki | None = None) -> None:
        state = self.state = _State()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args: object) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path.split("?", 1)[0]
                with state.lock:
                    state.received.append(Received(self.command, path, dict(self.headers), body))
                    queue = state.answers.get((self.command, path))
                    answer = queue.popleft() if queue else (404, {}, b"no script")
                status, headers, payload = answer
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.scheme = "http"
        if pki is not None:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(pki.server_crt, pki.server_key)
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
            self.scheme = "https"
        self.port = int(self.server.server_address[1])
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"{self.scheme}://{self.host}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def script(self, method: str, path: str, *answers: Answer) -> None:
        """Answer the next requests to (method, path) with ``answers``, in order."""
        with self.state.lock:
            self.state.answers[(method, path)].extend(answers)

    @property
    def received(self) -> list[Received]:
        with self.state.lock:
            return list(self.state.received)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Pipeline:
    """A real SDK pipeline: CodebookSpanProcessor -> SimpleSpanProcessor -> in-memory exporter."""

    def __init__(self) -> None:
        self.enricher = Enricher()
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(
            CodebookSpanProcessor(SimpleSpanProcessor(self.exporter), self.enricher))

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def coded(self) -> list[ReadableSpan]:
        """The finished spans carrying a provider code."""
        return [s for s in self.spans() if "provider.code" in (s.attributes or {})]

    def only_coded(self) -> ReadableSpan:
        coded = self.coded()
        assert len(coded) == 1, [(s.name, dict(s.attributes or {})) for s in self.spans()]
        return coded[0]

    def count(self, source: str, code: str, subcode: str = "", category: str = "") -> float:
        """provider_codes_total for (source, code, subcode), whatever the other labels (or
        only the series of ``category`` when one is given)."""
        total = 0.0
        labels = f'source="{source}",code="{code}",subcode="{subcode}",'
        if category:
            labels += f'category="{category}",'
        for line in self.enricher.metrics.render().decode().splitlines():
            if line.startswith("provider_codes_total{") and labels in line:
                total += float(line.rsplit(" ", 1)[1])
        return total

    def clear(self) -> None:
        self.exporter.clear()


def provider_attrs(attributes: Any) -> dict[str, Any]:
    """The ``provider.*`` attributes of a span or event."""
    return {k: v for k, v in dict(attributes or {}).items() if k.startswith("provider.")}


def results(span: ReadableSpan) -> list[dict[str, Any]]:
    """The provider.* attributes of each ``provider.result`` event of ``span``."""
    return [provider_attrs(e.attributes) for e in span.events if e.name == "provider.result"]
