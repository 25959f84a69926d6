"""Serving ``/metrics``: a WSGI app, and a small threaded HTTP(S) server around it.

The exposition is :meth:`CodebookMetrics.render` (pre-rendered series, no ``_created``),
followed by any ``prometheus_client`` registry you pass (process metrics, your own).

Connections (:func:`start_metrics_server`): the accept thread only accepts. Each connection
is served on a thread of its own, at most ``max_connections`` at once; past that, new
connections are closed as soon as they are accepted, so a flood of idle connections cannot
exhaust threads or file descriptors. With TLS the handshake runs on the connection's thread,
not in the accept loop, and every socket operation of a connection (the handshake, reading
the request, writing the response) times out after ``timeout_seconds``. A client that
connects and sends nothing, or speaks plaintext to the TLS port, holds one slot until its
handshake fails or times out, and never delays another scrape.
"""

from __future__ import annotations

import gzip
import logging
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import CollectorRegistry, generate_latest

from .metrics import CodebookMetrics

_log = logging.getLogger(__name__)

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
# A route answers (status, content type, body).
Route = Callable[[], tuple[int, str, bytes]]

METRICS_PATH = "/metrics"
_LANDING = b"Codebook exporter: metrics at /metrics\n"

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
    auth_excluded_paths: Collection[str] = (),
    headers: Sequence[tuple[str, str]] = (),
) -> WsgiApp:
    """A WSGI app serving ``/metrics``, for running alone or mounting anywhere.

    Paths: ``/metrics``; ``/`` answers a one-line pointer to it; mounted under a prefix
    (``SCRIPT_NAME`` set, e.g. at ``/metrics``), the mount point itself (path ``""`` or ``/``)
    serves the metrics. ``routes`` adds paths such as ``/healthz``; any other path is 404.
    ``authenticate`` receives the Authorization header (or None) and returns whether to
    serve; requests for ``auth_excluded_paths`` (health probes) skip it. ``routes`` adds
    paths such as ``/healthz``. ``headers`` are added to every response, refusals included.
    Called on the server's connection threads; never raises.
    """
    extra = dict(routes or {})
    excluded = frozenset(auth_excluded_paths)
    added = list(headers)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if (
            authenticate is not None
            and path not in excluded
            and not authenticate(environ.get("HTTP_AUTHORIZATION"))
        ):
            start_response(
                "401 Unauthorized",
                [
                    ("Content-Type", "text/plain"),
                    ("WWW-Authenticate", 'Basic realm="codebook"'),
                    *added,
                ],
            )
            return [b"Unauthorized\n"]
        if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
            start_response(
                "405 Method Not Allowed",
                [("Allow", "GET, HEAD"), ("Content-Type", "text/plain"), *added],
            )
            return [b"Method Not Allowed\n"]
        route = extra.get(path)
        mounted = bool(environ.get("SCRIPT_NAME")) and path in ("", "/")
        if route is not None:
            code, ctype, body = route()
        elif path == METRICS_PATH or mounted:
            body = metrics.render()
            if registry is not None:
                body += generate_latest(registry)
            code, ctype = 200, CodebookMetrics.CONTENT_TYPE
        elif path in ("", "/"):
            code, ctype, body = 200, "text/plain; charset=utf-8", _LANDING
        else:
            code, ctype, body = 404, "text/plain; charset=utf-8", b"Not Found: see /metrics\n"
        response_headers = [("Content-Type", ctype)]
        if "gzip" in environ.get("HTTP_ACCEPT_ENCODING", "") and len(body) > 1024:
            body = gzip.compress(body, compresslevel=1)
            response_headers.append(("Content-Encoding", "gzip"))
        response_headers.append(("Content-Length", str(len(body))))
        response_headers.extend(added)
        start_response(f"{code} {_REASONS.get(code, 'OK')}", response_headers)
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
    """An ASGI app serving ``/metrics`` (Starlette, FastAPI, ...: mount it at ``/metrics``).

    The same paths as :func:`make_wsgi_app`: ``/metrics``; mounted under a prefix
    (``root_path`` set), the mount point itself; ``/`` a one-line pointer; anything else 404.
    """

    async def app(
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[dict[str, Any]]],
        send: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> None:
        if scope.get("type") != "http":
            return
        root = str(scope.get("root_path", "") or "")
        path = str(scope.get("path", "/"))
        if root and path.startswith(root):  # servers that keep the full path (ASGI 3 spec)
            path = path[len(root):]
        ctype = CodebookMetrics.CONTENT_TYPE
        if scope.get("method", "GET") not in ("GET", "HEAD"):
            status, body, ctype = 405, b"Method Not Allowed\n", "text/plain"
        elif path == METRICS_PATH or (root and path in ("", "/")):
            status, body = 200, metrics.render()
            if registry is not None:
                body += generate_latest(registry)
        elif path in ("", "/"):
            status, body, ctype = 200, _LANDING, "text/plain; charset=utf-8"
        else:
            status, body = 404, b"Not Found: see /metrics\n"
            ctype = "text/plain; charset=utf-8"
        headers = [
            (b"content-type", ctype.encode()),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send(
            {"type": "http.response.body", "body": b"" if scope.get("method") == "HEAD" else body}
        )

    return app


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not worth a log line each."""


class _Server(WSGIServer):
    """wsgiref's server with bounded per-connection threads and per-connection TLS."""

    allow_reuse_address = True
    request_queue_size = 64

    def __init__(
        self,
        address: tuple[str, int],
        *,
        ssl_context: ssl.SSLContext | None,
        max_connections: int,
        timeout_seconds: float,
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        # Read once per connection, so a reload (MetricsServer.reconfigure) applies to the
        # connections accepted after it.
        self.ssl_context = ssl_context
        self.timeout_seconds = timeout_seconds
        self._slots = threading.BoundedSemaphore(max(1, max_connections))
        self._refused_logged = False
        super().__init__(address, _QuietHandler)

    def process_request(self, request: Any, client_address: Any) -> None:
        """On the accept thread: hand the connection to a thread of its own, or close it."""
        if not self._slots.acquire(blocking=False):
            if not self._refused_logged:
                self._refused_logged = True
                _log.warning(
                    "codebook: /metrics server at its connection limit; closing new connections"
                )
            self.shutdown_request(request)
            return
        try:
            threading.Thread(
                target=self._serve,
                args=(request, client_address),
                name=f"codebook-metrics-conn:{self.server_address[1]}",
                daemon=True,
            ).start()
        except RuntimeError:  # no thread can be started now: drop this connection
            self._slots.release()
            self.shutdown_request(request)

    def _serve(self, sock: socket.socket, client_address: Any) -> None:
        """On the connection's thread: the TLS handshake, then one request; never raises."""
        conn = sock
        try:
            sock.settimeout(self.timeout_seconds)
            ctx = self.ssl_context
            if ctx is not None:
                conn = ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
                conn.do_handshake()
            self.finish_request(conn, client_address)
        except OSError as exc:  # TLS failures, timeouts, resets: the client's, not ours
            _log.debug("codebook: /metrics connection from %s: %s", client_address, exc)
        except Exception:
            _log.debug("codebook: /metrics connection from %s failed", client_address,
                       exc_info=True)
        finally:
            self.shutdown_request(conn)
            self._slots.release()


class MetricsServer:
    """A running metrics HTTP server; ``close()`` stops it."""

    def __init__(
        self,
        server: _Server,
        thread: threading.Thread,
        build_app: Callable[..., WsgiApp],
    ) -> None:
        self._server = server
        self._thread = thread
        self._build_app = build_app
        self.tls = server.ssl_context is not None
        self.host = str(server.server_address[0])
        self.port = int(server.server_address[1])
        scheme = "https" if self.tls else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"{scheme}://{host}:{self.port}/metrics"

    def reconfigure(
        self,
        *,
        ssl_context: ssl.SSLContext | None,
        authenticate: Callable[[str | None], bool] | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Swap the TLS context, the authentication and the added headers, whole.

        Connections accepted afterwards use the new ones; requests in flight finish with the
        old. TLS cannot be turned on or off (the URL's scheme would change): raises
        ValueError when ``ssl_context`` is None on a TLS server or set on a plain one.
        """
        if (ssl_context is not None) != self.tls:
            raise ValueError("a running metrics server cannot switch between HTTP and HTTPS")
        app = self._build_app(authenticate=authenticate, headers=headers)
        self._server.set_app(app)
        self._server.ssl_context = ssl_context

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
    auth_excluded_paths: Collection[str] = (),
    headers: Sequence[tuple[str, str]] = (),
    ssl_context: ssl.SSLContext | None = None,
    max_connections: int = 32,
    timeout_seconds: float = 10.0,
) -> MetricsServer:
    """Serve ``/metrics`` on ``addr:port`` from a daemon thread (port 0 picks a free one).

    See :func:`make_wsgi_app` for ``routes``, ``authenticate``, ``auth_excluded_paths`` and
    ``headers``, and the module docstring for ``max_connections`` and ``timeout_seconds``.
    Binds before returning (raises OSError when the address is taken).
    """

    def build_app(
        *,
        authenticate: Callable[[str | None], bool] | None,
        headers: Sequence[tuple[str, str]],
    ) -> WsgiApp:
        return make_wsgi_app(
            metrics,
            registry,
            routes=routes,
            authenticate=authenticate,
            auth_excluded_paths=auth_excluded_paths,
            headers=headers,
        )

    httpd = _Server(
        (addr, port),
        ssl_context=ssl_context,
        max_connections=max_connections,
        timeout_seconds=timeout_seconds,
    )
    httpd.set_app(build_app(authenticate=authenticate, headers=headers))
    thread = threading.Thread(target=httpd.serve_forever, name="codebook-metrics", daemon=True)
    thread.start()
    return MetricsServer(httpd, thread, build_app)
