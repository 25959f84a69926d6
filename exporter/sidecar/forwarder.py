"""Forwarding enriched OTLP upstream: a bounded queue and one sender thread.

:meth:`Forwarder.submit` is called on receiver threads; it serializes the request, puts it in
a queue bounded by request count and by bytes, and returns at once: when the queue is full
the request is dropped and counted (``codebook_telemetry_dropped_total{reason="queue_full"}``),
so receiving never waits on the upstream.

The sender thread posts each request to the upstream (OTLP/gRPC or OTLP/HTTP protobuf) and
retries what the OTLP spec calls retryable — HTTP 429/502/503/504 and connection failures;
gRPC UNAVAILABLE, CANCELLED, DEADLINE_EXCEEDED, ABORTED, OUT_OF_RANGE, DATA_LOSS, and
RESOURCE_EXHAUSTED when the server sent RetryInfo — with exponential backoff and jitter,
waiting what ``Retry-After`` or ``RetryInfo`` asks when given (capped), until
``max_elapsed_seconds``. Requests it gives up on are counted with ``reason="upstream_error"``;
those still queued when :meth:`shutdown`'s deadline passes, with ``reason="shutdown"``.
Nothing here raises into the receivers, and an unreachable upstream never stops the sidecar.

TLS: an ``https://`` (or, for gRPC, ``grpcs://``) endpoint is verified against ``ca_file``
(default: the system CAs); ``insecure_skip_verify`` turns verification off for OTLP/HTTP
only (grpcio has no such switch; the config refuses the combination). A certificate that
does not verify is a connection failure: retried like one, then dropped and counted, and the
log line names the TLS error.
"""

from __future__ import annotations

import collections
import email.utils
import gzip
import http.client
import logging
import random
import ssl
import threading
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from ..metrics import CodebookMetrics

_log = logging.getLogger(__name__)

GRPC_METHODS = {
    "traces": "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    "metrics": "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
    "logs": "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
}
_RETRYABLE_HTTP = frozenset((429, 502, 503, 504))
_RETRYABLE_GRPC = frozenset(
    (
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    )
)
MAX_SERVER_DELAY_SECONDS = 60.0
_MAX_DETAILS_CHARS = 300


class _Retry(Exception):
    """A retryable failure; ``delay`` is what the upstream asked for, if it did."""

    def __init__(self, reason: str, delay: float | None = None) -> None:
        super().__init__(reason)
        self.delay = delay


class _Permanent(Exception):
    """A failure that retrying cannot fix (4xx, INVALID_ARGUMENT, ...)."""


@dataclass
class _Item:
    signal: str
    body: bytes
    items: int


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def grpc_retry_delay(trailing: Any) -> float | None:
    """The RetryInfo delay in a gRPC error's ``grpc-status-details-bin`` trailer, or None."""
    for key, value in trailing or ():
        if key != "grpc-status-details-bin" or not isinstance(value, bytes):
            continue
        status = status_pb2.Status()
        try:
            status.ParseFromString(value)
        except Exception:
            return None
        for detail in status.details:
            info = error_details_pb2.RetryInfo()
            if detail.Unpack(info):
                return float(info.retry_delay.seconds + info.retry_delay.nanos / 1e9)
    return None


class _HttpUpstream:
    """OTLP/HTTP protobuf client over one persistent ``http.client`` connection."""

    def __init__(
        self,
        url: str,
        headers: Mapping[str, str],
        timeout_seconds: float,
        compression: str,
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"forward endpoint {url!r} is not an http(s) URL")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._base = parts.path.rstrip("/")
        self._headers = {"Content-Type": "application/x-protobuf", **headers}
        if compression == "gzip":
            self._headers["Content-Encoding"] = "gzip"
        self._gzip = compression == "gzip"
        self._timeout = timeout_seconds
        self._ssl = ssl_context
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self._https:
                self._conn = http.client.HTTPSConnection(
                    self._host, self._port, timeout=self._timeout, context=self._ssl
                )
            else:
                self._conn = http.client.HTTPConnection(
                    self._host, self._port, timeout=self._timeout
                )
        return self._conn

    def send(self, signal: str, body: bytes) -> None:
        payload = gzip.compress(body, compresslevel=1) if self._gzip else body
        conn = self._connection()
        try:
            conn.request("POST", f"{self._base}/v1/{signal}", payload, self._headers)
            resp = conn.getresponse()
            resp.read(1 << 20)
            status = resp.status
            retry_after = resp.getheader("Retry-After")
            if resp.will_close:
                self.close()
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise _Retry(f"{type(exc).__name__}: {exc}") from exc
        if 200 <= status < 300:
            return
        if status in _RETRYABLE_HTTP:
            raise _Retry(f"HTTP {status}", parse_retry_after(retry_after))
        raise _Permanent(f"HTTP {status}")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class _GrpcUpstream:
    """OTLP/gRPC client sending pre-serialized requests on one channel."""

    def __init__(
        self,
        target: str,
        headers: Mapping[str, str],
        timeout_seconds: float,
        compression: str,
        credentials: grpc.ChannelCredentials | None,
    ) -> None:
        options = [("grpc.enable_retries", 0)]
        if credentials is None:
            self._channel = grpc.insecure_channel(target, options=options)
        else:
            self._channel = grpc.secure_channel(target, credentials, options=options)
        self._calls: dict[str, grpc.UnaryUnaryMultiCallable[bytes, bytes]] = {
            signal: self._channel.unary_unary(method) for signal, method in GRPC_METHODS.items()
        }
        self._metadata = tuple((k.lower(), v) for k, v in headers.items())
        self._timeout = timeout_seconds
        self._compression = grpc.Compression.Gzip if compression == "gzip" else None

    def send(self, signal: str, body: bytes) -> None:
        try:
            self._calls[signal](
                body,
                timeout=self._timeout,
                metadata=self._metadata,
                compression=self._compression,
            )
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
            delay = None
            why = f"gRPC {code.name}"
            if isinstance(exc, grpc.Call):
                delay = grpc_retry_delay(exc.trailing_metadata())
                # The details say why (a TLS handshake failure, say); they go to the log only.
                details = str(exc.details() or "")[:_MAX_DETAILS_CHARS]
                why = f"{why}: {details}" if details else why
            if code in _RETRYABLE_GRPC or (
                code is grpc.StatusCode.RESOURCE_EXHAUSTED and delay is not None
            ):
                raise _Retry(why, delay) from exc
            raise _Permanent(why) from exc

    def close(self) -> None:
        self._channel.close()


def grpc_target(endpoint: str) -> tuple[str, bool]:
    """``host:port`` and whether TLS is asked for, from ``host:port`` or an http(s) URL."""
    if "://" in endpoint:
        parts = urllib.parse.urlsplit(endpoint)
        if parts.scheme not in ("http", "https", "grpc", "grpcs") or not parts.hostname:
            raise ValueError(f"forward endpoint {endpoint!r} is not a gRPC target")
        port = parts.port or 4317
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        return f"{host}:{port}", parts.scheme in ("https", "grpcs")
    return endpoint, False


class Forwarder:
    """Sends accepted telemetry upstream; see the module docstring for the contract."""

    def __init__(
        self,
        endpoint: str,
        metrics: CodebookMetrics,
        *,
        protocol: str = "grpc",
        headers: Mapping[str, str] | None = None,
        compression: str = "gzip",
        queue_max_requests: int = 256,
        queue_max_bytes: int = 32 << 20,
        timeout_seconds: float = 10.0,
        initial_backoff_seconds: float = 0.5,
        max_backoff_seconds: float = 30.0,
        max_elapsed_seconds: float = 60.0,
        ca_file: str | None = None,
        insecure_skip_verify: bool = False,
    ) -> None:
        self.metrics = metrics
        self.endpoint = endpoint
        self.queue_max_requests = max(1, queue_max_requests)
        self.queue_max_bytes = max(1, queue_max_bytes)
        self.initial_backoff_seconds = initial_backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.max_elapsed_seconds = max_elapsed_seconds
        self._queue: collections.deque[_Item] = collections.deque()
        self._queued_bytes = 0
        self._cv = threading.Condition()
        self._closing = False
        self._abort = threading.Event()
        self._thread: threading.Thread | None = None
        self._logged_failure = False
        self._upstream: _HttpUpstream | _GrpcUpstream
        if protocol == "grpc":
            target, tls = grpc_target(endpoint)
            creds = None
            if tls:
                root = Path(ca_file).read_bytes() if ca_file else None
                creds = grpc.ssl_channel_credentials(root_certificates=root)
            self._upstream = _GrpcUpstream(
                target, headers or {}, timeout_seconds, compression, creds
            )
        elif protocol == "http/protobuf":
            ctx = None
            if endpoint.startswith("https://"):
                ctx = ssl.create_default_context(cafile=ca_file)
                if insecure_skip_verify:
                    ctx.check_hostname = False
                    ctx.verify_mode = ssl.CERT_NONE
            self._upstream = _HttpUpstream(
                endpoint, headers or {}, timeout_seconds, compression, ctx
            )
        else:
            raise ValueError(f"forward protocol {protocol!r} is not grpc or http/protobuf")

    def start(self) -> Forwarder:
        """Start the sender thread; returns self."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="codebook-forward", daemon=True
            )
            self._thread.start()
        return self

    def queued(self) -> tuple[int, int]:
        """(requests, bytes) waiting to be sent."""
        with self._cv:
            return len(self._queue), self._queued_bytes

    def submit(self, signal: str, request: Message | bytes, items: int) -> bool:
        """Queue one request of ``items`` items; False (dropped, counted) when full or closing.

        Never blocks on the upstream; serializes ``request`` unless it is bytes already.
        """
        try:
            body = request if isinstance(request, bytes) else request.SerializeToString()
        except Exception:
            self.metrics.telemetry_dropped(signal, "internal_error", items)
            return False
        with self._cv:
            if self._closing:
                reason = "shutdown"
            elif (
                len(self._queue) >= self.queue_max_requests
                or self._queued_bytes + len(body) > self.queue_max_bytes
            ):
                reason = "queue_full"
            else:
                self._queue.append(_Item(signal, body, items))
                self._queued_bytes += len(body)
                self._cv.notify()
                return True
        self.metrics.telemetry_dropped(signal, reason, items)
        return False

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._closing:
                    self._cv.wait()
                if not self._queue:
                    return
                item = self._queue.popleft()
                self._queued_bytes -= len(item.body)
            self._deliver(item)

    def _deliver(self, item: _Item) -> None:
        started = time.monotonic()
        backoff = self.initial_backoff_seconds
        while True:
            try:
                self._upstream.send(item.signal, item.body)
            except _Retry as exc:
                delay = exc.delay
                if delay is None:
                    delay = backoff * random.uniform(0.5, 1.5)
                    backoff = min(backoff * 2, self.max_backoff_seconds)
                delay = min(delay, MAX_SERVER_DELAY_SECONDS)
                elapsed = time.monotonic() - started
                if elapsed + delay > self.max_elapsed_seconds or self._abort.is_set():
                    self._give_up(item, str(exc))
                    return
                if self._abort.wait(delay):
                    self._give_up(item, str(exc), reason="shutdown")
                    return
                continue
            except _Permanent as exc:
                self._give_up(item, str(exc))
                return
            except Exception as exc:  # a bug here must not end the sender thread
                self._give_up(item, f"{type(exc).__name__}: {exc}", reason="internal_error")
                return
            self.metrics.telemetry_forwarded(item.signal, item.items)
            self._logged_failure = False
            return

    def _give_up(self, item: _Item, why: str, reason: str = "upstream_error") -> None:
        self.metrics.telemetry_dropped(item.signal, reason, item.items)
        if not self._logged_failure:  # once per outage, not per request
            self._logged_failure = True
            _log.warning(
                "codebook: forwarding to %s failed (%s); dropping %d %s",
                self.endpoint,
                why,
                item.items,
                item.signal,
            )

    def shutdown(self, timeout_seconds: float = 5.0) -> None:
        """Stop accepting, send what is queued until the deadline, drop (counted) the rest."""
        deadline = time.monotonic() + max(0.0, timeout_seconds)
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
            if self._thread.is_alive():
                self._abort.set()
                with self._cv:
                    left = list(self._queue)
                    self._queue.clear()
                    self._queued_bytes = 0
                for item in left:
                    self.metrics.telemetry_dropped(item.signal, "shutdown", item.items)
                self._thread.join(1.0)
        self._upstream.close()
