"""Serving ``/metrics``: a WSGI app, and a small threaded HTTP server around it.

The exposition is :meth:`CodebookMetrics.render` (pre-rendered series, no ``_created``),
followed by any ``prometheus_client`` registry you pass (process metrics, your own).
"""

from __future__ import annotations

import gzip
import ssl
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, generate_latest

from .metrics import CodebookMetrics

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
# A route answers (status, content type, body).
Route = Callable[[], tuple[int, str, bytes]]

_REASONS = {
    200: "OK",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}


def make_wsgi_app(
    metrics: CodebookMetrics,
    registry: CollectorRegistry | None = None,
    *,
    routes: Mapping[str, Route] | None = None,
    authenticate: Callable[[str | None], bool] | None = None,
) -> WsgiApp:
    """A WSGI app serving ``/metrics`` (any path not in ``routes``), for mounting anywhere.

    ``authenticate`` receives the Authorization header (or None) and returns whether to
    serve; ``routes`` adds paths such as ``/healthz``.
    """
    extra = dict(routes or {})

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if authenticate is not None and not authenticate(environ.get("HTTP_AUTHORIZATION")):
            start_response(
                "401 Unauthorized",
                [("Content-Type", "text/plain"), ("WWW-Authenticate", 'Basic realm="codebook"')],
            )
            return [b"Unauthorized\n"]
        if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
            start_response(
                "405 Method Not Allowed", [("Allow", "GET, HEAD"), ("Content-Type", "text/plain")]
            )
            return [b"Method Not Allowed\n"]
        route = extra.get(environ.get("PATH_INFO", "/"))
        if route is not None:
            code, ctype, body = route()
        else:
            body = metrics.render()
            if registry is not None:
                body += generate_latest(registry)
            code, ctype = 200, CodebookMetrics.CONTENT_TYPE
        headers = [("Content-Type", ctype)]
        if "gzip" in environ.get("HTTP_ACCEPT_ENCODING", "") and len(body) > 1024:
            body = gzip.compress(body, compresslevel=1)
            headers.append(("Content-Encoding", "gzip"))
        headers.append(("Content-Length", str(len(body))))
        start_response(f"{code} {_REASONS.get(code, 'OK')}", headers)
        return [b"" if environ.get("REQUEST_METHOD") == "HEAD" else body]

    return app


AsgiApp = Callable[
    [
        dict[str, Any],
        Callable[[], Awaitable[dict[str, Any]]],
        Callable[[dict[str, Any]], Awaitable[None]],
    ],
    Awaitable[None],
]


def make_asgi_app(metrics: CodebookMetrics, registry: CollectorRegistry | None = None) -> AsgiApp:
    """An ASGI app serving ``/metrics`` (Starlette, FastAPI, ...: mount it at ``/metrics``)."""

    async def app(
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[dict[str, Any]]],
        send: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> None:
        if scope.get("type") != "http":
            return
        body = metrics.render()
        if registry is not None:
            body += generate_latest(registry)
        status = 200
        if scope.get("method", "GET") not in ("GET", "HEAD"):
            status, body = 405, b"Method Not Allowed\n"
        headers = [
            (b"content-type", CodebookMetrics.CONTENT_TYPE.encode()),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send(
            {"type": "http.response.body", "body": b"" if scope.get("method") == "HEAD" else body}
        )

    return app


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not worth a log line each."""


class MetricsServer:
    """A running metrics HTTP server; ``close()`` stops it."""

    def __init__(self, server: WSGIServer, thread: threading.Thread, tls: bool) -> None:
        self._server = server
        self._thread = thread
        self.host = str(server.server_address[0])
        self.port = int(server.server_address[1])
        scheme = "https" if tls else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"{scheme}://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def start_metrics_server(
    metrics: CodebookMetrics,
    port: int = 9464,
    addr: str = "127.0.0.1",
    *,
    registry: CollectorRegistry | None = None,
    routes: Mapping[str, Route] | None = None,
    authenticate: Callable[[str | None], bool] | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> MetricsServer:
    """Serve ``/metrics`` on ``addr:port`` from a daemon thread (port 0 picks a free one)."""
    app = make_wsgi_app(metrics, registry, routes=routes, authenticate=authenticate)
    server_class = _ThreadingServer
    if ":" in addr:
        import socket

        class _V6(_ThreadingServer):
            address_family = socket.AF_INET6

        server_class = _V6
    httpd = make_server(addr, port, app, server_class=server_class, handler_class=_QuietHandler)
    if ssl_context is not None:
        httpd.socket = ssl_context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, name="codebook-metrics", daemon=True)
    thread.start()
    return MetricsServer(httpd, thread, ssl_context is not None)
