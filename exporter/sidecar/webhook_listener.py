"""The sidecar's webhook listener: :class:`WebhookHandler` served by waitress.

The same server stack as the OTLP/HTTP receiver (``waitress_serving``, slow-client guards
included): waitress reads requests with non-blocking I/O on one thread and hands complete ones
to ``threads`` workers; bodies over the handler's ``max_body_bytes`` are refused while reading
(413), and waitress's own refusals are answered in JSON and counted like the handler's. Plain
HTTP: TLS is the ingress's job.
"""

from __future__ import annotations

import json
from typing import Any

from waitress.task import ErrorTask

from .waitress_serving import GuardedChannel, WaitressServing
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


class _Channel(GuardedChannel):
    error_task_class = _ErrorTask


class WebhookListener(WaitressServing):
    """The webhook handler served by waitress on ``host:port`` (port 0 picks a free one).

    Binds in the constructor (OSError when the address is taken). Plain HTTP: terminate TLS
    at the ingress in front of it (see the README). ``start()`` serves from a daemon thread;
    ``stop()`` stops accepting, drains for up to its timeout, then closes every connection.
    Slow clients are guarded against as on the OTLP/HTTP receiver (``waitress_serving``): a
    request must arrive whole within ``read_timeout_seconds`` of its first byte.
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
        read_timeout_seconds: float = 10.0,
    ) -> None:
        self.handler = handler
        super().__init__(
            WsgiAdapter(handler),
            host,
            port,
            thread_name="codebook-webhooks",
            channel_class=_Channel,
            threads=threads,
            connection_limit=connection_limit,
            idle_timeout_seconds=idle_timeout_seconds,
            read_timeout_seconds=read_timeout_seconds,
            max_request_body_size=handler.max_body_bytes,
        )
        self._server.codebook_handler = handler  # type: ignore[attr-defined]
