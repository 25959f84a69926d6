"""The sidecar's webhook listener: :class:`WebhookHandler` served by waitress.

The same server stack as the OTLP/HTTP receiver (``otlp_http``): waitress reads requests with
non-blocking I/O on one thread and hands complete ones to ``threads`` workers; bodies over the
handler's ``max_body_bytes`` are refused while reading (413), and waitress's own refusals are
answered in JSON and counted like the handler's. Plain HTTP: TLS is the ingress's job.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from typing import Any

from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, create_server
from waitress.task import ErrorTask

from .webhook import OTHER_ROUTE, REASONS, ROUTES, WebhookHandler, WsgiAdapter


class _ErrorTask(ErrorTask):
    """Waitress's own refusals (413 while reading, 400 bad HTTP), with a JSON body, counted."""

    def execute(self) -> None:
        request: Any = self.request
        error = request.error
        status = int(getattr(error, "code", 400))
        body = json.dumps({"error": str(getattr(error, "body", "bad request"))}).encode()
        handler = getattr(self.channel.server, "codebook_handler", None)
        if handler is not None:
            route = ROUTES.get(getattr(request, "path", ""), OTHER_ROUTE)
            outcome = "too_large" if status == 413 else "malformed"
            handler.metrics.webhook_request(route, outcome)
            handler.metrics.telemetry_rejected("logs", "webhook", outcome)
        self.status = f"{status} {REASONS.get(status, 'Error')}"
        headers: Any = self.response_headers
        headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class _Channel(HTTPChannel):
    error_task_class = _ErrorTask


class WebhookListener:
    """The webhook handler served by waitress on ``host:port`` (port 0 picks a free one).

    Binds in the constructor (OSError when the address is taken). Plain HTTP: terminate TLS
    at the ingress in front of it (see the README). ``start()`` serves from a daemon thread;
    ``stop()`` stops accepting, drains for up to its timeout, then closes every connection.
    """

    def __init__(
        self,
        handler: WebhookHandler,
        host: str = "127.0.0.1",
        port: int = 8088,
        *,
        threads: int = 4,
        connection_limit: int = 100,
        idle_timeout_seconds: int = 60,
    ) -> None:
        self.handler = handler
        self._map: dict[int, Any] = {}
        logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # queue depth notices
        server = create_server(
            WsgiAdapter(handler),
            map=self._map,
            host=host,
            port=port,
            threads=max(1, threads),
            connection_limit=max(1, connection_limit),
            max_request_body_size=handler.max_body_bytes,
            channel_timeout=idle_timeout_seconds,
            asyncore_use_poll=True,
            ident="codebook",
            expose_tracebacks=False,
        )
        assert isinstance(server, BaseWSGIServer)
        self._server = server
        server.channel_class = _Channel
        server.codebook_handler = handler  # type: ignore[attr-defined]
        bound = server.getsockname()
        self.host = str(bound[0])
        self.port = int(bound[1])
        self._stopping = threading.Event()
        self._done = threading.Event()
        self._drain_seconds = 5.0
        self._thread: threading.Thread | None = None

    def start(self) -> WebhookListener:
        """Serve from a daemon thread; returns self."""
        self._thread = threading.Thread(target=self._run, name="codebook-webhooks", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                wasyncore.loop(timeout=0.2, map=self._map, use_poll=True, count=1)
            self._server.accepting = False
            self._server.del_channel()
            if self._server.socket is not None:
                self._server.socket.close()
            deadline = time.monotonic() + self._drain_seconds
            while time.monotonic() < deadline and self._busy():
                wasyncore.loop(timeout=0.05, map=self._map, use_poll=True, count=1)
        finally:
            for channel in list(self._map.values()):
                with contextlib.suppress(OSError):
                    channel.close()
            self._server.task_dispatcher.shutdown(cancel_pending=True, timeout=1)
            self._done.set()

    def _busy(self) -> bool:
        dispatcher = self._server.task_dispatcher
        if getattr(dispatcher, "queue", None) or getattr(dispatcher, "active_count", 0):
            return True
        return any(
            getattr(ch, "total_outbufs_len", 0) or getattr(ch, "requests", None)
            for ch in self._map.values()
            if isinstance(ch, HTTPChannel)
        )

    def stop(self, timeout_seconds: float = 5.0) -> None:
        """Stop accepting, drain for up to ``timeout_seconds``, close; idempotent."""
        self._drain_seconds = timeout_seconds
        self._stopping.set()
        if self._thread is None:
            self._server.close()
            return
        self._done.wait(timeout_seconds + 2)
