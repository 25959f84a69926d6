"""The webhook handler: provider callbacks in, codes counted once, OTLP log records out.

Routes (fixed): ``POST|OPTIONS /webhooks/azure/eventgrid``, ``POST|OPTIONS
/webhooks/azure/callautomation``, ``GET|POST /webhooks/vonage/dlr``. Payload parsing and
classification live in ``webhook_events``; this module owns the HTTP contract:

- **Auth.** With a ``token`` every request must carry it as ``?token=``, ``Authorization:
  Bearer``, or Event Grid's ``aeg-sas-key`` header (compared in constant time) -> else 401.
  With a Vonage ``signature_secret`` every DLR must also carry a valid, fresh ``sig`` -> 401.
- **Limits.** Bodies over ``max_body_bytes`` -> 413; content types other than JSON
  (``application/json``, ``application/cloudevents[-batch]+json``) or, for Vonage, a form ->
  415; undecodable JSON or a body that is not events -> 400 with the reason.
- **Handshakes.** Event Grid's ``SubscriptionValidationEvent`` -> ``{"validationResponse":
  code}``; the CloudEvents abuse-protection ``OPTIONS`` (``WebHook-Request-Origin``) ->
  ``WebHook-Allowed-Origin`` and ``WebHook-Allowed-Rate: *``.
- **Batches.** Every well-formed event counts. When some events of a batch are malformed and
  at least one is good, the reply is ``200`` with ``failed: [{index, reason}]``: Event Grid
  and Call Automation retry or dead-letter the whole batch on non-2xx, and a malformed event
  never becomes valid by being redelivered. A batch in which nothing is usable -> 400.
- **Exactly once.** An event already counted (same CloudEvents source + id / Event Grid topic +
  id; Vonage messageId + status) within ``dedup_window_seconds`` is acknowledged (2xx) and not
  counted again. The window holds at most ``dedup_max_events`` keys (64-bit digests, about
  140 bytes each with the dict entry: 100,000 keys ~ 14 MB); past that the oldest are forgotten
  first, so a redelivery older than the window, or older than that many newer events, counts
  again.
- **Counting.** Each accepted event goes through :meth:`Enricher.enrich_code`: the same labels
  and ``provider_codes_total`` series as a span with that code (one call per distinct code
  of a request, counting all its events at once). Every request counts once in
  ``codebook_webhook_requests_total{route,outcome}`` and every event in
  ``codebook_webhook_events_total{route,outcome}`` (closed label sets, :data:`OUTCOMES`).
- **Logs.** With a ``sink`` (the sidecar's forwarder), the accepted events of a request go out
  as one ``ExportLogsServiceRequest``: a log record per event with ``provider.*``, the output
  attributes and the event's own ids, never phone numbers or message text.

:class:`WebhookHandler` is framework-free (method, path, query, headers, body -> status,
headers, body); :func:`make_webhook_wsgi_app` and :func:`make_webhook_asgi_app` adapt it, and
``webhook_listener.WebhookListener`` serves it on waitress (the sidecar's HTTP stack). ``handle`` is
thread-safe, never blocks (the sink's ``submit`` must not) and never raises.
"""

from __future__ import annotations

import collections
import hmac
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qsl

from ..codebook import ATTR_CODE, ATTR_SEVERITY, ATTR_SOURCE, ATTR_SUBCODE
from ..enrich import Enricher
from ..metrics import CodebookMetrics
from .forwarder import Forwarder
from .webhook_events import (
    SIGNATURE_METHODS,
    BadEvent,
    Event,
    EventParser,
    Validation,
    check_vonage_signature,
    parse_time,
)
from .webhook_logs import (
    attribute_block,
    encode_record,
    log_request_records,
    record_frame,
    time_field,
)

if TYPE_CHECKING:
    from google.protobuf.message import Message

_log = logging.getLogger(__name__)

ROUTES = {
    "/webhooks/azure/eventgrid": "azure_eventgrid",
    "/webhooks/azure/callautomation": "azure_callautomation",
    "/webhooks/vonage/dlr": "vonage_dlr",
}
_METHODS = {
    "azure_eventgrid": ("POST", "OPTIONS"),
    "azure_callautomation": ("POST", "OPTIONS"),
    "vonage_dlr": ("GET", "POST"),
}
OTHER_ROUTE = "other"
OUTCOMES = (
    "accepted",  # at least one new event counted, none malformed
    "partial",  # some events counted or duplicate, some malformed (200 with failures)
    "duplicate",  # every event already counted
    "ignored",  # events that carry no code
    "handshake",  # subscription validation or abuse-protection OPTIONS
    "unauthorized",  # missing or wrong token, bad or stale Vonage signature
    "malformed",  # 400
    "too_large",  # 413
    "unsupported_media_type",  # 415
    "method_not_allowed",  # 405
    "not_found",  # 404
    "internal_error",  # 500
)
EVENT_OUTCOMES = ("accepted", "duplicate", "ignored", "malformed")
# Refusals of a provider's body, also counted in codebook_telemetry_rejected_total{signal="logs",
# transport="webhook"} (the CodebookTelemetryRejected alert). 401/404/405 are not: on an
# internet-facing listener they are mostly probes; see codebook_webhook_requests_total.
_REJECTED = frozenset(("malformed", "too_large", "unsupported_media_type"))
_JSON_TYPES = frozenset(
    ("application/json", "application/cloudevents+json", "application/cloudevents-batch+json")
)
_FORM = "application/x-www-form-urlencoded"
REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    500: "Internal Server Error",
}
# OTLP SeverityNumber values (logs data model): INFO 9, WARN 13, ERROR 17, FATAL 21.
_SEVERITY = {
    "info": (9, "INFO"),
    "warning": (13, "WARN"),
    "error": (17, "ERROR"),
    "critical": (21, "FATAL"),
}
SCOPE_NAME = "exporter.sidecar.webhook"
_ENCODER = json.JSONEncoder(separators=(",", ":"))
_BLOCK_CACHE_SIZE = 4096  # encoded provider.* attribute blocks kept (cleared when full)
_SWEEP_EVERY = 1024  # dedup inserts between sweeps of expired keys
_ROUTE_ATTR = "codebook.webhook.route"
_NO_ATTRIBUTES: Mapping[str, str] = {}


class LogSink(Protocol):
    """Where log requests go: the sidecar's ``Forwarder`` or anything with its ``submit``."""

    def submit(self, signal: str, request: Message | bytes, items: int) -> bool: ...


@dataclass(frozen=True, slots=True)
class Response:
    """A reply: status, headers (name, value) and body."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    @property
    def status_line(self) -> str:
        return f"{self.status} {REASONS.get(self.status, 'Error')}"


def _json_reply(
    status: int, doc: Mapping[str, Any], extra: Iterable[tuple[str, str]] = ()
) -> Response:
    body = _ENCODER.encode(doc).encode()
    headers = (("Content-Type", "application/json"), ("Content-Length", str(len(body))), *extra)
    return Response(status, headers, body)


class _Refused(Exception):
    """The request is refused as a whole: ``status``, ``outcome`` and the reason."""

    def __init__(
        self, status: int, outcome: str, reason: str, headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.outcome = outcome
        self.headers = headers


class DedupWindow:
    """Keys seen within ``window_seconds``, at most ``max_keys`` of them (oldest go first).

    Thread-safe; memory is bounded by ``max_keys`` digests whatever the traffic. A key is
    remembered by its 64-bit ``hash()`` (SipHash keyed at random per process): two different
    keys are taken for one with probability about ``max_keys / 2**64`` per event (1e-14 at
    100,000 keys), and a sender cannot aim at a collision without the process's hash key.
    """

    def __init__(
        self,
        window_seconds: float,
        max_keys: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window_seconds = window_seconds
        self.max_keys = max(1, max_keys)
        self._clock = clock
        self._seen: collections.OrderedDict[int, float] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._inserts = 0

    def __len__(self) -> int:
        return len(self._seen)

    def first(self, key: str) -> bool:
        """True the first time ``key`` is seen within the window (and remember it)."""
        return self.first_many((key,))[0]

    def first_many(self, keys: Iterable[str]) -> list[bool]:
        """:meth:`first` of each key in order (a key repeated in ``keys`` is first once)."""
        digests = [hash(key) for key in keys]  # see the class docstring
        now = self._clock()
        horizon = now - self.window_seconds
        out: list[bool] = []
        with self._lock:
            seen = self._seen
            for digest in digests:
                at = seen.get(digest)
                if at is not None and at > horizon:
                    out.append(False)
                    continue
                if at is not None:  # seen before the window: counts again, now the newest key
                    seen.move_to_end(digest)
                seen[digest] = now
                if len(seen) > self.max_keys:
                    seen.popitem(last=False)
                self._inserts += 1
                out.append(True)
            if self._inserts >= _SWEEP_EVERY:  # expired keys go in bulk, not one per call
                self._inserts = 0
                while seen:
                    oldest = next(iter(seen))
                    if seen[oldest] > horizon:
                        break
                    del seen[oldest]
        return out


class WebhookHandler:
    """The framework-free webhook handler (see the module docstring for the contract).

    ``enricher`` classifies and counts; ``sink`` (optional) receives one serialized
    ``ExportLogsServiceRequest`` (bytes) per request that accepted events; ``token`` (empty:
    no token check, fine on loopback only); ``vonage_signature_secret`` (empty: DLRs unsigned) with
    ``vonage_signature_method`` (``md5hash``, ``md5``, ``sha1``, ``sha256``, ``sha512``) and
    ``vonage_max_clock_skew_seconds``; ``clock`` gives Unix seconds (signatures, log times).
    """

    def __init__(
        self,
        enricher: Enricher,
        *,
        sink: LogSink | None = None,
        token: str = "",
        vonage_signature_secret: str = "",
        vonage_signature_method: str = "md5hash",
        vonage_max_clock_skew_seconds: float = 300.0,
        max_body_bytes: int = 2 << 20,
        dedup_window_seconds: float = 86_400.0,
        dedup_max_events: int = 100_000,
        service_name: str = "codebook-webhooks",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if vonage_signature_method not in SIGNATURE_METHODS:
            raise ValueError(
                f"vonage_signature_method {vonage_signature_method!r} is not one of "
                f"{', '.join(SIGNATURE_METHODS)}"
            )
        self.enricher = enricher
        self.metrics: CodebookMetrics = enricher.metrics
        self.sink = sink
        self._token = token.encode("utf-8")
        self._vonage_secret = vonage_signature_secret
        self._vonage_method = vonage_signature_method
        self._vonage_skew = vonage_max_clock_skew_seconds
        self.max_body_bytes = max(1, max_body_bytes)
        self.dedup = DedupWindow(dedup_window_seconds, dedup_max_events)
        self._clock = clock
        self._parser = EventParser(lambda: enricher.book)
        self._resource = (("service.name", service_name),)
        self._blocks: dict[tuple[object, ...], tuple[Mapping[str, str], bytes]] = {}
        self._logged = False

    # -- the entry point ---------------------------------------------------------------------

    def handle(
        self,
        method: str,
        path: str,
        query: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        too_large: bool = False,
    ) -> Response:
        """Answer one request; ``headers`` keys are lower-case. Never raises.

        ``too_large``: the server saw a body longer than ``max_body_bytes`` and did not read it.
        """
        route = ROUTES.get(path) or ROUTES.get(path.rstrip("/"), OTHER_ROUTE)
        try:
            response, outcome = self._handle(
                route, method.upper(), query, headers, body, too_large
            )
        except _Refused as exc:
            response = _json_reply(exc.status, {"error": str(exc)}, exc.headers)
            outcome = exc.outcome
            if outcome in _REJECTED:  # a provider's body refused (not a stray probe): alertable
                self.metrics.telemetry_rejected("logs", "webhook", outcome)
        except Exception:
            if not self._logged:
                self._logged = True
                _log.exception("codebook: webhook request failed")
            response, outcome = _json_reply(500, {"error": "internal error"}), "internal_error"
            self.metrics.telemetry_rejected("logs", "webhook", outcome)
        self.metrics.webhook_request(route, outcome)
        return response

    def _handle(
        self,
        route: str,
        method: str,
        query: str,
        headers: Mapping[str, str],
        body: bytes,
        too_large: bool,
    ) -> tuple[Response, str]:
        if route == OTHER_ROUTE:
            raise _Refused(404, "not_found", "no such webhook route")
        allowed = _METHODS[route]
        if method not in allowed:
            raise _Refused(
                405, "method_not_allowed", f"use {' or '.join(allowed)}",
                (("Allow", ", ".join(allowed)),),
            )
        params = parse_qsl(query, keep_blank_values=True, max_num_fields=200)
        self._authorize(params, headers)
        if method == "OPTIONS":
            return self._options(headers), "handshake"
        if too_large or len(body) > self.max_body_bytes:
            raise _Refused(413, "too_large", f"body exceeds {self.max_body_bytes} bytes")
        ctype = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if route == "vonage_dlr":
            return self._vonage(method, params, ctype, body)
        if ctype not in _JSON_TYPES:
            raise _Refused(
                415, "unsupported_media_type",
                f"Content-Type {ctype!r}: use application/json or application/cloudevents+json",
            )
        doc = _decode_json(body)
        try:
            if route == "azure_eventgrid":
                parsed = self._parser.eventgrid(doc)
            else:
                parsed = self._parser.callautomation(doc)
        except BadEvent as exc:
            raise _Refused(400, "malformed", str(exc)) from None
        events: list[Event | BadEvent] = []
        for item in parsed:
            if isinstance(item, Validation):
                self.metrics.webhook_events(route, "ignored")
                return _json_reply(200, {"validationResponse": item.code}), "handshake"
            events.append(item)
        return self._accept(route, events)

    def _authorize(self, params: list[tuple[str, str]], headers: Mapping[str, str]) -> None:
        if not self._token:
            return
        offered = [v for k, v in params if k == "token"]
        auth = headers.get("authorization", "")
        scheme, _, credential = auth.strip().partition(" ")
        if scheme.lower() == "bearer":
            offered.append(credential.strip())
        if "aeg-sas-key" in headers:
            offered.append(headers["aeg-sas-key"].strip())
        ok = False
        for value in offered:  # compare every offer: the time taken does not tell which matched
            ok |= hmac.compare_digest(value.encode("utf-8", "surrogatepass"), self._token)
        if not ok:
            raise _Refused(
                401, "unauthorized", "missing or wrong token",
                (("WWW-Authenticate", 'Bearer realm="codebook-webhooks"'),),
            )

    @staticmethod
    def _options(headers: Mapping[str, str]) -> Response:
        origin = headers.get("webhook-request-origin", "").strip()
        extra: tuple[tuple[str, str], ...] = (("Allow", "POST, OPTIONS"),)
        if origin:
            extra = (*extra, ("WebHook-Allowed-Origin", origin), ("WebHook-Allowed-Rate", "*"))
        return Response(200, (("Content-Length", "0"), *extra), b"")

    # -- Vonage ------------------------------------------------------------------------------

    def _vonage(
        self, method: str, query: list[tuple[str, str]], ctype: str, body: bytes
    ) -> tuple[Response, str]:
        fields: dict[str, str]
        if method == "GET":
            fields = {k: v for k, v in query if k != "token"}
        elif ctype == _FORM:
            try:
                text = body.decode("utf-8")
                pairs = parse_qsl(
                    text, keep_blank_values=True, max_num_fields=200, strict_parsing=bool(text)
                )
            except (UnicodeDecodeError, ValueError) as exc:
                raise _Refused(400, "malformed", f"invalid form body: {str(exc)[:200]}") from None
            fields = dict(pairs)
        elif ctype == "application/json":
            doc = _decode_json(body)
            if not isinstance(doc, dict) or not all(
                v is None or (isinstance(v, (str, int, float)) and not isinstance(v, bool))
                for v in doc.values()
            ):
                raise _Refused(400, "malformed", "a JSON delivery receipt is one flat object")
            fields = {str(k): str(v) for k, v in doc.items() if v is not None}
        else:
            raise _Refused(
                415, "unsupported_media_type",
                f"Content-Type {ctype!r}: use application/x-www-form-urlencoded or "
                "application/json",
            )
        if self._vonage_secret:
            self._check_signature(fields, query)
        try:
            event: Event | BadEvent = self._parser.vonage_dlr(fields)
        except BadEvent as exc:
            self.metrics.webhook_events("vonage_dlr", "malformed")
            raise _Refused(400, "malformed", str(exc)) from None
        return self._accept("vonage_dlr", [event])

    def _check_signature(self, fields: dict[str, str], query: list[tuple[str, str]]) -> None:
        now = self._clock()
        why = check_vonage_signature(
            fields, self._vonage_secret, self._vonage_method, now, self._vonage_skew
        )
        tokens = [v for k, v in query if k == "token"]
        if why == "bad signature" and tokens and "token" not in fields:
            # The dashboard URL may carry ?token=: whether Vonage signs it is undocumented.
            why = check_vonage_signature(
                {**fields, "token": tokens[0]},
                self._vonage_secret, self._vonage_method, now, self._vonage_skew,
            )
        if why is not None:
            raise _Refused(401, "unauthorized", why)

    # -- counting and logs -------------------------------------------------------------------

    def _accept(self, route: str, parsed: list[Event | BadEvent]) -> tuple[Response, str]:
        ignored = 0
        failed: list[dict[str, Any]] = []
        coded: list[Event] = []
        for index, item in enumerate(parsed):
            if isinstance(item, BadEvent):
                failed.append({"index": index, "reason": str(item)})
            elif item.source is None:
                ignored += 1
            else:
                coded.append(item)
        firsts = self.dedup.first_many([event.dedup_key for event in coded])
        fresh = [event for event, first in zip(coded, firsts, strict=True) if first]
        accepted = len(fresh)
        duplicates = len(coded) - accepted
        # Resolve and count each distinct (source, code, subcode, message) once per request,
        # as the sidecar's wire path does for spans: enrich_code(..., n) counts n at once.
        counts = collections.Counter([event[2:6] for event in fresh])  # (source, code, sub, msg)
        enrich = self.enricher.enrich_code
        outs = {
            key: enrich(key[0], key[1], key[2], key[3], n) or _NO_ATTRIBUTES
            for key, n in counts.items()
        }
        metrics = self.metrics
        metrics.webhook_events(route, "accepted", accepted)
        metrics.webhook_events(route, "duplicate", duplicates)
        metrics.webhook_events(route, "ignored", ignored)
        metrics.webhook_events(route, "malformed", len(failed))
        if failed:
            metrics.telemetry_rejected("logs", "webhook", "malformed", len(failed))
        sink = self.sink
        if fresh and sink is not None:
            request = log_request_records(
                self._resource, SCOPE_NAME, self._records(route, fresh, outs)
            )
            if isinstance(sink, Forwarder):  # counts the receipt with the enqueue, in one step
                sink.submit("logs", request, accepted, transport="webhook")
            else:
                metrics.telemetry_received("logs", "webhook", accepted)
                sink.submit("logs", request, accepted)
        summary: dict[str, Any] = {
            "accepted": accepted, "duplicates": duplicates, "ignored": ignored, "failed": failed
        }
        if failed and len(failed) == len(parsed):
            reply = {"error": "no usable event in the body", **summary}
            return _json_reply(400, reply), "malformed"
        if failed:
            outcome = "partial"
        elif accepted:
            outcome = "accepted"
        elif duplicates:
            outcome = "duplicate"
        else:
            outcome = "ignored"
        return _json_reply(200, summary), outcome

    def _records(
        self,
        route: str,
        events: list[Event],
        outs: Mapping[tuple[Any, ...], Mapping[str, str]],
    ) -> list[bytes]:
        """The encoded log records of ``events`` (``outs``: output attributes by code key).

        The fields events of one type and code share (severity, event name, ``provider.*`` and
        output attributes, observed time) are encoded once per request; each record adds its
        time and its own ids.
        """
        now = int(self._clock() * 1e9)
        frames: dict[tuple[Any, ...], tuple[bytes, bytes]] = {}
        times: dict[str, bytes] = {}
        records = []
        for event_type, _, source, code, subcode, message, when, ids in events:
            key = (event_type, source, code, subcode, message)
            frame = frames.get(key)
            if frame is None:
                out = outs[source, code, subcode, message]
                frame = frames[key] = self._frame(route, key, out, now)
            stamp = times.get(when)
            if stamp is None:
                stamp = times[when] = time_field(parse_time(when) or now)
            records.append(encode_record(stamp, frame, ids))
        return records

    def _frame(
        self,
        route: str,
        kind: tuple[str, str | None, str | None, str | None, str | None],
        out: Mapping[str, str],
        now: int,
    ) -> tuple[bytes, bytes]:
        """The shared part of the records of one ``kind`` (event type, source, code, subcode,
        message) in one request (see ``_records``).
        """
        event_type, source, code, subcode, _ = kind
        number, text = _SEVERITY.get(out.get(ATTR_SEVERITY, ""), _SEVERITY["info"])
        # ``out`` is the enricher's shared mapping for this code in this codebook generation:
        # holding it in the cache entry keeps its id from being reused while the entry lives.
        key = (route, event_type, source, code, subcode, id(out))
        hit = self._blocks.get(key)
        if hit is None:
            shared = [(_ROUTE_ATTR, route)]
            if route != "vonage_dlr":  # Azure events are CloudEvents (or Event Grid events)
                shared.append(("cloudevents.event_type", event_type))
            shared.append((ATTR_SOURCE, source or ""))
            shared.append((ATTR_CODE, code or ""))
            if subcode is not None:
                shared.append((ATTR_SUBCODE, subcode))
            shared.extend(out.items())
            if len(self._blocks) >= _BLOCK_CACHE_SIZE:
                self._blocks.clear()
            hit = self._blocks[key] = (out, attribute_block(shared))
        return record_frame(number, text, event_type, hit[1], now)


def _decode_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise _Refused(400, "malformed", f"invalid JSON: {str(exc)[:200]}") from None


# -- WSGI ------------------------------------------------------------------------------------

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def _wsgi_headers(environ: Mapping[str, Any]) -> dict[str, str]:
    headers = {
        key[5:].replace("_", "-").lower(): str(value)
        for key, value in environ.items()
        if key.startswith("HTTP_")
    }
    if environ.get("CONTENT_TYPE"):
        headers["content-type"] = str(environ["CONTENT_TYPE"])
    return headers


class WsgiAdapter:
    """:class:`WebhookHandler` as a WSGI app (see :func:`make_webhook_wsgi_app`)."""

    def __init__(self, handler: WebhookHandler) -> None:
        self.handler = handler

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        handler = self.handler
        limit = handler.max_body_bytes
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = -1
        body = b""
        if length > limit:
            pass  # refused by handle() as too large, without reading it
        elif length > 0:
            body = environ["wsgi.input"].read(length)
        elif length < 0 or environ.get("HTTP_TRANSFER_ENCODING"):
            # No usable length (chunked): read at most one byte past the limit.
            body = environ["wsgi.input"].read(limit + 1) if "wsgi.input" in environ else b""
        resp = handler.handle(
            str(environ.get("REQUEST_METHOD", "")),
            str(environ.get("PATH_INFO", "")),
            str(environ.get("QUERY_STRING", "")),
            _wsgi_headers(environ),
            body,
            too_large=length > limit,
        )
        start_response(resp.status_line, list(resp.headers))
        return [resp.body]


def make_webhook_wsgi_app(enricher: Enricher, **options: Any) -> WsgiApp:
    """The webhook handler as a WSGI app (options: those of :class:`WebhookHandler`).

    Mount it at the root, or forward the ``/webhooks/...`` paths unchanged.
    """
    return WsgiAdapter(WebhookHandler(enricher, **options))


# -- ASGI ------------------------------------------------------------------------------------

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
AsgiApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]


class _AsgiApp:
    def __init__(self, handler: WebhookHandler) -> None:
        self.handler = handler

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope.get("type") == "lifespan":
            while True:
                message = await receive()
                if message.get("type") == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message.get("type") == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope.get("type") != "http":
            return
        handler = self.handler
        limit = handler.max_body_bytes
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message.get("type") == "http.disconnect":
                return
            chunk = bytes(message.get("body", b""))
            size += len(chunk)
            if size <= limit:
                chunks.append(chunk)
            more = bool(message.get("more_body", False))
        body = b"".join(chunks) if size <= limit else b""
        headers = {
            bytes(k).decode("latin-1").lower(): bytes(v).decode("latin-1")
            for k, v in scope.get("headers", ())
        }
        query = bytes(scope.get("query_string", b"")).decode("latin-1")
        resp = handler.handle(
            scope.get("method", ""), scope.get("path", ""), query, headers, body,
            too_large=size > limit,
        )
        headers_out = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in resp.headers]
        await send({"type": "http.response.start", "status": resp.status, "headers": headers_out})
        await send({"type": "http.response.body", "body": resp.body})


def make_webhook_asgi_app(enricher: Enricher, **options: Any) -> AsgiApp:
    """The webhook handler as an ASGI app (options: those of :class:`WebhookHandler`).

    Runs the handler on the event loop: it does no I/O and returns in microseconds.
    """
    return _AsgiApp(WebhookHandler(enricher, **options))
