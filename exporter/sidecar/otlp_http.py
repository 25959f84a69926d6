"""The OTLP/HTTP receiver: ``POST /v1/traces``, ``/v1/metrics``, ``/v1/logs``.

Server: waitress, a production WSGI server (pure Python, used under Pyramid and Plone for a
decade). It reads requests with non-blocking I/O on one thread and hands only complete
requests to a fixed pool of worker threads, so idle keep-alive connections and slow clients
hold no worker. Every resource has an explicit bound: ``connection_limit`` connections (past
it waitress stops accepting; the kernel backlog holds the rest), bodies up to
``max_request_bytes`` (waitress refuses longer ones while reading), ``threads`` workers, and a
task queue that cannot exceed one request per connection. When more than
``max_pending_requests`` complete requests wait for a worker, the receiver sheds load with
``503`` + ``Retry-After`` (retryable per the OTLP spec) instead of letting latency grow.

Slow clients (slowloris): waitress's idle timeout restarts on every byte, so a client that
dribbles one header byte every few seconds would hold its connection slot forever, and about
``connection_limit`` of them deny every other client. Two bounds close that: each request
must arrive whole (request line, headers and body) within ``read_timeout_seconds`` of its
first byte, checked every second, or its connection is closed; and at ``connection_limit``
the receiver closes the connection stalled longest (idle keep-alive silent for a second, or a
request arriving for a second at under 16 KiB/s) instead of refusing to accept, so a valid
client gets a slot as soon as it connects. A connection whose request is
being processed or answered is never closed early.

Protocol (OTLP/HTTP, opentelemetry-proto v1): protobuf (``application/x-protobuf``) and JSON
(``application/json``: hex trace/span ids, integer enums, unknown fields ignored); request
bodies identity, gzip or deflate; the reply in the request's encoding. Failures answer with a
``google.rpc.Status`` body: 400 malformed, 413 too large (wire or decompressed: gzip bombs stop
at the limit), 415 unsupported content type or encoding, 404/405 wrong path or method, 503
overloaded. Items that are invalid are dropped with a partial-success reply.

Threads: ``start()`` runs the I/O loop on a daemon thread; the WSGI app runs on waitress's
workers and never raises (an unexpected error becomes a 500 with a Status body).
"""

from __future__ import annotations

import base64
import json
import logging
import zlib
from collections.abc import Callable, Iterable
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import status_pb2
from waitress.task import ErrorTask

from ..metrics import CodebookMetrics
from .budget import InFlightBudget
from .otlp import REQUEST_TYPES, MalformedRequest, OtlpIntake
from .waitress_serving import GuardedChannel, WaitressServing

_log = logging.getLogger(__name__)

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
PATHS = {"/v1/traces": "traces", "/v1/metrics": "metrics", "/v1/logs": "logs"}
_ID_KEYS = frozenset(("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"))
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
# gRPC status codes for the Status body (the HTTP status is what clients act on).
_GRPC_CODES = {400: 3, 404: 12, 405: 12, 413: 8, 415: 3, 500: 13, 503: 14}

StartResponse = Callable[..., Any]


class BadPayload(Exception):
    """The body cannot be decoded; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


def status_body(status: int, message: str, as_json: bool) -> bytes:
    """A ``google.rpc.Status`` body for an error reply, in protobuf or JSON."""
    msg = status_pb2.Status(code=_GRPC_CODES.get(status, 2), message=message)
    if as_json:
        return json_format.MessageToJson(msg, indent=None).encode()
    return bytes(msg.SerializeToString())


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """Decode a ``Content-Encoding``; never produces more than ``limit`` bytes."""
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise BadPayload(
            415, "unsupported_media_type", f"unsupported Content-Encoding {encoding!r}"
        )
    wbits = 31 if encoding != "deflate" else 15
    out: list[bytes] = []
    size = 0
    data = body
    try:
        while data:  # gzip allows several members back to back
            d = zlib.decompressobj(wbits)
            chunk = d.decompress(data, limit + 1 - size)
            size += len(chunk)
            out.append(chunk)
            if size > limit or d.unconsumed_tail:
                raise BadPayload(413, "too_large", f"decompressed body exceeds {limit} bytes")
            if not d.eof:
                raise BadPayload(400, "malformed", f"truncated {encoding} body")
            data = d.unused_data if encoding != "deflate" else b""
    except zlib.error as exc:
        raise BadPayload(400, "malformed", f"bad {encoding} body: {exc}") from None
    return b"".join(out)


def _hex_ids_to_base64(doc: Any) -> None:
    """OTLP/JSON writes ids in hex; protobuf's JSON mapping expects base64. Iterative."""
    stack = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if key in _ID_KEYS and isinstance(value, str):
                    try:
                        node[key] = base64.b64encode(bytes.fromhex(value)).decode()
                    except ValueError:
                        raise BadPayload(
                            400, "malformed", f"{key} {value[:40]!r} is not hex"
                        ) from None
                elif isinstance(value, (dict, list)):
                    stack.append(value)
        elif isinstance(node, list):
            stack.extend(v for v in node if isinstance(v, (dict, list)))


def parse_json(signal: str, body: bytes) -> Message:
    """Parse an export request of ``signal`` from OTLP/JSON bytes.

    Protobuf bodies go to :meth:`OtlpIntake.export_protobuf`, which parses (or walks) them.
    """
    msg = REQUEST_TYPES[signal]()
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise BadPayload(400, "malformed", f"invalid JSON: {str(exc)[:200]}") from None
    if not isinstance(doc, dict):
        raise BadPayload(400, "malformed", "the JSON body is not an object")
    _hex_ids_to_base64(doc)
    try:
        json_format.ParseDict(doc, msg, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
        raise BadPayload(400, "malformed", f"invalid OTLP/JSON: {str(exc)[:300]}") from None
    return msg


class OtlpHttpApp:
    """The WSGI app of the receiver (usable under any WSGI server; see the module docstring).

    ``pending`` returns how many complete requests wait for a worker (0 when unknown).
    """

    def __init__(
        self,
        intake: OtlpIntake,
        *,
        max_request_bytes: int = 4 << 20,
        max_pending_requests: int = 16,
        retry_after_seconds: int = 1,
        pending: Callable[[], int] = lambda: 0,
        budget: InFlightBudget | None = None,
    ) -> None:
        self.intake = intake
        self.budget = budget
        self.metrics: CodebookMetrics = intake.enricher.metrics
        self.max_request_bytes = max_request_bytes
        self.max_pending_requests = max_pending_requests
        self.retry_after_seconds = retry_after_seconds
        self.pending = pending
        self._logged = False

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        signal = PATHS.get(environ.get("PATH_INFO", ""))
        ctype = environ.get("CONTENT_TYPE", "").split(";", 1)[0].strip().lower()
        as_json = ctype == JSON
        if signal is None:
            return self._error(start_response, 404, "no such OTLP path", as_json)
        if environ.get("REQUEST_METHOD") != "POST":
            return self._error(start_response, 405, "use POST", as_json, [("Allow", "POST")])
        if ctype not in (PROTOBUF, JSON):
            self.metrics.telemetry_rejected(signal, "http", "unsupported_media_type")
            return self._error(
                start_response, 415, f"Content-Type {ctype!r}: use {PROTOBUF} or {JSON}", False
            )
        if self.pending() > self.max_pending_requests:
            self.metrics.telemetry_rejected(signal, "http", "overloaded")
            return self._error(
                start_response,
                503,
                "overloaded; retry later",
                as_json,
                [("Retry-After", str(self.retry_after_seconds))],
            )
        lease = None
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
            if length > self.max_request_bytes:
                raise BadPayload(413, "too_large", f"body exceeds {self.max_request_bytes} bytes")
            if self.budget is not None:
                lease = self.budget.lease(length)
                if lease is None:
                    return self._over_budget(start_response, signal, as_json)
            raw = environ["wsgi.input"].read(length) if length > 0 else b""
            encoding = environ.get("HTTP_CONTENT_ENCODING", "").strip().lower()
            body = decompress(raw, encoding, self.max_request_bytes)
            if lease is not None and not lease.grow_for(len(body)):
                return self._over_budget(start_response, signal, as_json)
            if as_json:
                request: Any = parse_json(signal, body)
                result = self.intake.export(signal, request, "http", body, raw_is_protobuf=False)
            else:
                try:
                    result = self.intake.export_protobuf(signal, body, "http")
                except MalformedRequest as exc:
                    raise BadPayload(400, "malformed", str(exc)) from None
        except BadPayload as exc:
            self.metrics.telemetry_rejected(signal, "http", exc.reason)
            return self._error(start_response, exc.status, str(exc), as_json)
        except Exception:
            return self._internal(start_response, signal, as_json)
        finally:
            if lease is not None:
                lease.release()
        try:
            if as_json:
                reply = json_format.MessageToJson(result.response, indent=None).encode()
            else:
                reply = result.response.SerializeToString()
        except Exception:
            return self._internal(start_response, signal, as_json)
        start_response(
            "200 OK",
            [("Content-Type", JSON if as_json else PROTOBUF), ("Content-Length", str(len(reply)))],
        )
        return [reply]

    def _over_budget(
        self, start_response: StartResponse, signal: str, as_json: bool
    ) -> list[bytes]:
        self.metrics.telemetry_rejected(signal, "http", "in_flight_bytes")
        return self._error(
            start_response,
            503,
            "too many request bytes in flight; retry later",
            as_json,
            [("Retry-After", str(self.retry_after_seconds))],
        )

    def _internal(self, start_response: StartResponse, signal: str, as_json: bool) -> list[bytes]:
        if not self._logged:
            self._logged = True
            _log.exception("codebook: OTLP/HTTP request failed")
        self.metrics.telemetry_rejected(signal, "http", "internal_error")
        return self._error(start_response, 500, "internal error", as_json)

    @staticmethod
    def _error(
        start_response: StartResponse,
        status: int,
        message: str,
        as_json: bool,
        extra: list[tuple[str, str]] | None = None,
    ) -> list[bytes]:
        body = status_body(status, message, as_json)
        headers = [
            ("Content-Type", JSON if as_json else PROTOBUF),
            ("Content-Length", str(len(body))),
            *(extra or []),
        ]
        start_response(f"{status} {_REASONS.get(status, 'Error')}", headers)
        return [body]


class _StatusErrorTask(ErrorTask):
    """Waitress's own refusals (413 while reading, 400 bad HTTP) with a Status body."""

    def execute(self) -> None:
        request: Any = self.request  # a waitress HTTPRequestParser (the stubs say Error)
        error = request.error
        status = int(getattr(error, "code", 400))
        ctype = str(request.headers.get("CONTENT_TYPE", "")).split(";", 1)[0].strip()
        as_json = ctype.lower() == JSON
        body = status_body(status, str(getattr(error, "body", "bad request")), as_json)
        receiver = getattr(self.channel.server, "codebook_app", None)
        signal = PATHS.get(getattr(request, "path", ""), "")
        if receiver is not None and signal:
            receiver.metrics.telemetry_rejected(
                signal, "http", "too_large" if status == 413 else "malformed"
            )
        self.status = f"{status} {_REASONS.get(status, 'Error')}"
        headers: Any = self.response_headers
        headers.append(("Content-Type", JSON if as_json else PROTOBUF))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class _Channel(GuardedChannel):
    error_task_class = _StatusErrorTask


class OtlpHttpReceiver(WaitressServing):
    """A running OTLP/HTTP receiver on ``host:port`` (port 0 picks a free one).

    Binds in the constructor (raises OSError when the address is taken). ``start()`` runs
    the I/O loop on a daemon thread; ``stop()`` stops accepting, lets the requests already
    read finish until the deadline, then closes every connection.
    """

    def __init__(
        self,
        intake: OtlpIntake,
        host: str = "127.0.0.1",
        port: int = 4318,
        *,
        threads: int = 4,
        connection_limit: int = 100,
        max_request_bytes: int = 4 << 20,
        max_pending_requests: int = 16,
        retry_after_seconds: int = 1,
        idle_timeout_seconds: int = 60,
        read_timeout_seconds: float = 10.0,
        budget: InFlightBudget | None = None,
    ) -> None:
        self.app = OtlpHttpApp(
            intake,
            max_request_bytes=max_request_bytes,
            max_pending_requests=max_pending_requests,
            retry_after_seconds=retry_after_seconds,
            pending=self._pending,
            budget=budget,
        )
        super().__init__(
            self.app,
            host,
            port,
            thread_name="codebook-otlp-http",
            channel_class=_Channel,
            threads=threads,
            connection_limit=connection_limit,
            idle_timeout_seconds=idle_timeout_seconds,
            read_timeout_seconds=read_timeout_seconds,
            max_request_body_size=max_request_bytes,
            inbuf_overflow=64 << 10,  # larger bodies wait in a temporary file, not in memory
        )
        self._server.codebook_app = self.app  # type: ignore[attr-defined]
