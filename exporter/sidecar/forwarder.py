"""Forwarding enriched OTLP upstream: a bounded sending queue and one sender thread.

:meth:`Forwarder.submit` is called on receiver threads (and by anything else that emits
telemetry through the sidecar); it serializes the request, appends it to the queue
(:mod:`.queue`: in memory, or on disk when ``forward.queue_dir`` is set) bounded by request
count and by bytes, and returns at once: when the queue is full the request is dropped and
counted, so receiving never waits on the upstream.

Every item handed to :meth:`submit` is accounted for, per signal, at every scrape::

    codebook_telemetry_received_total - codebook_telemetry_rejected_total
      == codebook_telemetry_forwarded_total + codebook_telemetry_dropped_total
         + codebook_forward_queue_items

(sums by ``signal``; items replayed from a persistent queue on start are counted as received
with ``transport="replay"``). Items leave the queue by delivery (forwarded) or as dropped with
a ``reason``: ``queue_full`` (no room), ``upstream_error`` (retries exhausted after
``max_elapsed_seconds``), ``rejected_by_upstream`` (a permanent OTLP error such as HTTP 400 or
gRPC INVALID_ARGUMENT, or the items an upstream's ``partial_success`` rejected), ``shutdown``
(still in a memory queue when ``shutdown_timeout_seconds`` ran out), ``corrupt`` (an on-disk
entry that failed its checksum on replay), ``queue_error`` (the on-disk queue could not be
written) and ``internal_error``.

The sender thread posts the oldest request to the upstream (OTLP/gRPC or OTLP/HTTP protobuf)
and retries what the OTLP spec calls retryable — HTTP 429/502/503/504 and connection failures;
gRPC UNAVAILABLE, CANCELLED, DEADLINE_EXCEEDED, ABORTED, OUT_OF_RANGE, DATA_LOSS, and
RESOURCE_EXHAUSTED when the server sent RetryInfo — with exponential backoff and jitter,
waiting what ``Retry-After`` or ``RetryInfo`` asks when given (capped), until
``max_elapsed_seconds``. A request stays in the queue (and in the queue gauges) until it is
delivered or given up, so a persistent queue never loses the request being sent.

Logging: the first failed attempt of an outage and the first drop are logged at once; after
that one summary line at most every :data:`LOG_INTERVAL_SECONDS` with the counts (failed
attempts, items dropped by reason, requests queued), and one line when the upstream recovers.
:meth:`shutdown` logs what it could not send.

Nothing here raises into the receivers, and an unreachable upstream never stops the sidecar.

TLS: an ``https://`` (or, for gRPC, ``grpcs://``) endpoint is verified against ``ca_file``
(default: the system CAs); ``insecure_skip_verify`` turns verification off for OTLP/HTTP
only (grpcio has no such switch; the config refuses the combination). A certificate that
does not verify is a connection failure: retried like one, then dropped and counted, and the
log line names the TLS error.
"""

from __future__ import annotations

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
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from ..metrics import CodebookMetrics
from .queue import DiskQueue, Entry, MemoryQueue, QueueError

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
_RESPONSES: dict[str, tuple[type[Message], str]] = {
    "traces": (ExportTraceServiceResponse, "rejected_spans"),
    "metrics": (ExportMetricsServiceResponse, "rejected_data_points"),
    "logs": (ExportLogsServiceResponse, "rejected_log_records"),
}
SIGNALS = tuple(GRPC_METHODS)
MAX_SERVER_DELAY_SECONDS = 60.0
LOG_INTERVAL_SECONDS = 30.0
_MAX_DETAILS_CHARS = 300


class _Retry(Exception):
    """A retryable failure; ``delay`` is what the upstream asked for, if it did."""

    def __init__(self, reason: str, delay: float | None = None) -> None:
        super().__init__(reason)
        self.delay = delay


class _Permanent(Exception):
    """A failure that retrying cannot fix (4xx, INVALID_ARGUMENT, ...)."""


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

    def send(self, signal: str, body: bytes) -> bytes:
        """POST one request; returns the response body on 2xx, raises otherwise."""
        payload = gzip.compress(body, compresslevel=1) if self._gzip else body
        conn = self._connection()
        try:
            conn.request("POST", f"{self._base}/v1/{signal}", payload, self._headers)
            resp = conn.getresponse()
            reply = resp.read(1 << 20)
            status = resp.status
            retry_after = resp.getheader("Retry-After")
            if resp.will_close:
                self.close()
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise _Retry(f"{type(exc).__name__}: {exc}") from exc
        if 200 <= status < 300:
            return reply
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

    def send(self, signal: str, body: bytes) -> bytes:
        """Call Export with one request; returns the serialized response, raises otherwise."""
        try:
            reply = self._calls[signal](
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
        return bytes(reply or b"")

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


def rejected_items(signal: str, reply: bytes, items: int) -> int:
    """Items an OTLP export response's ``partial_success`` says were rejected (0..items)."""
    if not reply:
        return 0
    kind, field = _RESPONSES[signal]
    msg: Any = kind()
    try:
        msg.ParseFromString(reply)
    except Exception:
        return 0  # a 2xx with a body we cannot read: the request was accepted
    partial: Any = msg.partial_success
    return max(0, min(items, int(getattr(partial, field))))


class _OutageLog:
    """Logs the first failure and the first drop at once, then one summary per interval."""

    def __init__(self, endpoint: str, interval: float = LOG_INTERVAL_SECONDS) -> None:
        self.endpoint = endpoint
        self.interval = interval
        self._lock = threading.Lock()
        self._failing = False
        self._attempts = 0  # failed attempts since the last line
        self._outage_attempts = 0
        self._dropped: dict[str, int] = {}
        self._dropped_logged = False
        self._last = 0.0
        self._last_error = ""

    def failure(self, why: str, queued: int) -> None:
        """One failed send attempt."""
        with self._lock:
            self._attempts += 1
            self._outage_attempts += 1
            self._last_error = why
            if not self._failing:
                self._failing = True
                self._attempts = 0
                self._last = time.monotonic()
                _log.warning(
                    "codebook: forwarding to %s failed (%s); retrying, %d request(s) queued",
                    self.endpoint,
                    why,
                    queued,
                )
                return
            self._summary_locked(queued)

    def dropped(self, reason: str, items: int, queued: int, why: str = "") -> None:
        """Items dropped with ``reason``."""
        with self._lock:
            self._dropped[reason] = self._dropped.get(reason, 0) + items
            if not self._dropped_logged:
                self._dropped_logged = True
                self._dropped.clear()
                self._last = time.monotonic()
                _log.warning(
                    "codebook: dropped %d item(s) bound for %s (reason=%s%s); further drops are "
                    "summarized every %.0fs",
                    items,
                    self.endpoint,
                    reason,
                    f": {why}" if why else "",
                    self.interval,
                )
                return
            self._summary_locked(queued)

    def _summary_locked(self, queued: int) -> None:
        now = time.monotonic()
        if now - self._last < self.interval or not (self._attempts or self._dropped):
            return
        drops = ", ".join(f"{r}={n}" for r, n in sorted(self._dropped.items())) or "none"
        _log.warning(
            "codebook: forwarding to %s: %d failed attempt(s) in the last %.0fs (last error: "
            "%s); dropped: %s; %d request(s) queued",
            self.endpoint,
            self._attempts,
            now - self._last,
            self._last_error or "-",
            drops,
            queued,
        )
        self._attempts = 0
        self._dropped.clear()
        self._last = now

    def success(self) -> None:
        """A delivery; logs the recovery once after an outage."""
        if not self._failing:
            return
        with self._lock:
            if self._failing:
                self._failing = False
                _log.info(
                    "codebook: forwarding to %s recovered after %d failed attempt(s)",
                    self.endpoint,
                    self._outage_attempts,
                )
                self._outage_attempts = 0
                self._attempts = 0


class Forwarder:
    """Sends accepted telemetry upstream; see the module docstring for the contract.

    ``queue_dir`` (empty: memory only) keeps the queue in a :class:`~.queue.DiskQueue` there,
    opened and replayed by :meth:`start` (building a forwarder touches no disk, so
    ``--check-config`` does not take the queue's lock).
    """

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
        queue_dir: str = "",
        queue_sync: str = "normal",
        timeout_seconds: float = 10.0,
        initial_backoff_seconds: float = 0.5,
        max_backoff_seconds: float = 30.0,
        max_elapsed_seconds: float = 60.0,
        ca_file: str | None = None,
        insecure_skip_verify: bool = False,
    ) -> None:
        self.metrics = metrics
        self.endpoint = endpoint
        self.initial_backoff_seconds = initial_backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.max_elapsed_seconds = max_elapsed_seconds
        self._cv = threading.Condition()
        self._closing = False
        self._abort = threading.Event()
        self._thread: threading.Thread | None = None
        self._log = _OutageLog(endpoint)
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
        for signal in SIGNALS:  # the gauges exist (at 0) from the start
            metrics.forward_account(signal)
        # A persistent queue is opened (and replayed) by start(); until then, an empty one.
        self._queue: MemoryQueue = MemoryQueue(queue_max_requests, queue_max_bytes)
        self._disk_args = (
            (queue_dir, queue_max_requests, queue_max_bytes, queue_sync) if queue_dir else None
        )

    @property
    def persistent(self) -> bool:
        """Whether the queue lives on disk (``queue_dir``)."""
        return self._disk_args is not None

    def _replayed(self, disk: DiskQueue) -> None:
        replay = disk.replayed
        for e in replay.entries:
            self.metrics.forward_account(
                e.signal,
                received=("replay", e.items),
                queued=e.items,
                queued_bytes=e.size,
                redelivered=e.items if e is replay.in_flight else 0,
            )
        for e in replay.corrupt:
            signal = e.signal if e.signal in SIGNALS else "traces"
            self.metrics.forward_account(
                signal, received=("replay", e.items), dropped=("corrupt", e.items)
            )
        if replay.corrupt:
            _log.warning(
                "codebook: %s: %d queued request(s) (%d item(s)) failed their checksum and "
                "were dropped, not replayed",
                disk.path,
                len(replay.corrupt),
                sum(e.items for e in replay.corrupt),
            )
        if replay.entries:
            _log.info(
                "codebook: replaying %d request(s) (%d item(s)) from %s",
                len(replay.entries),
                sum(e.items for e in replay.entries),
                disk.path,
            )

    def start(self) -> Forwarder:
        """Open and replay the persistent queue (if any), start the sender thread; returns self.

        Raises :class:`~.queue.QueueError` when the persistent queue cannot be opened.
        """
        if self._disk_args is not None and not self._queue.persistent:
            disk = DiskQueue(*self._disk_args)
            self._queue = disk
            self._replayed(disk)
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="codebook-forward", daemon=True
            )
            self._thread.start()
        return self

    def queued(self) -> tuple[int, int]:
        """(requests, bytes) waiting to be sent (including the one being sent)."""
        return self._queue.stats()

    def fill_fraction(self) -> float:
        """How full the queue is (0..1): the larger of its request and byte fractions."""
        return self._queue.fraction()

    def submit(
        self,
        signal: str,
        request: Message | bytes,
        items: int,
        *,
        transport: str | None = None,
        rejected: int = 0,
    ) -> bool:
        """Queue one request of ``items`` items; False (dropped, counted) when it cannot be.

        Never blocks on the upstream; serializes ``request`` unless it is bytes already.
        With ``transport``, the receipt of ``items + rejected`` items (and ``rejected`` as
        ``codebook_telemetry_rejected_total{reason="invalid_item"}``) is counted in the same
        step as the enqueue, so no scrape sees one without the other; without it the caller
        counts what it received itself.
        """
        received = None if transport is None else (transport, items + rejected)
        refused = None if not (transport and rejected) else (transport, "invalid_item", rejected)
        try:
            body = request if isinstance(request, bytes) else request.SerializeToString()
        except Exception:
            self.metrics.forward_account(
                signal, received=received, rejected=refused, dropped=("internal_error", items)
            )
            return False
        why = ""
        with self._cv:  # enqueue and count as one step: the sender cannot see it before
            if self._closing:
                reason = "shutdown"
            else:
                try:
                    entry = self._queue.put(signal, body, items)
                except QueueError as exc:
                    entry, why = None, str(exc)
                    reason = "queue_error"
                else:
                    reason = "queue_full"
                if entry is not None:
                    self.metrics.forward_account(
                        signal,
                        received=received,
                        rejected=refused,
                        queued=items,
                        queued_bytes=entry.size,
                    )
                    self._cv.notify()
                    return True
            self.metrics.forward_account(
                signal, received=received, rejected=refused, dropped=(reason, items)
            )
        self._log.dropped(reason, items, len(self._queue), why)
        return False

    def _run(self) -> None:
        while True:
            with self._cv:
                while not len(self._queue) and not self._closing:
                    self._cv.wait()
                if not len(self._queue) or self._abort.is_set():
                    return
            try:
                entry = self._queue.head()
            except Exception as exc:  # the disk went away: keep the sidecar up, retry later
                _log.error("codebook: cannot read the forward queue: %s", exc)
                if self._abort.wait(1.0):
                    return
                continue
            if entry is not None and not self._deliver(entry):
                return

    def _deliver(self, entry: Entry) -> bool:
        """Send ``entry`` until delivered or given up; False when shutdown aborted it."""
        started = time.monotonic()
        backoff = self.initial_backoff_seconds
        body = entry.body or b""
        while True:
            try:
                reply = self._upstream.send(entry.signal, body)
            except _Retry as exc:
                self._log.failure(str(exc), len(self._queue))
                delay = exc.delay
                if delay is None:
                    delay = backoff * random.uniform(0.5, 1.5)
                    backoff = min(backoff * 2, self.max_backoff_seconds)
                delay = min(delay, MAX_SERVER_DELAY_SECONDS)
                elapsed = time.monotonic() - started
                if self._abort.is_set():
                    return False
                if elapsed + delay > self.max_elapsed_seconds:
                    self._finish(entry, dropped="upstream_error", why=str(exc))
                    return True
                if self._abort.wait(delay):
                    return False
                continue
            except _Permanent as exc:
                self._finish(entry, dropped="rejected_by_upstream", why=str(exc))
                return True
            except Exception as exc:  # a bug here must not end the sender thread
                self._finish(entry, dropped="internal_error", why=f"{type(exc).__name__}: {exc}")
                return True
            self._log.success()
            refused = rejected_items(entry.signal, reply, entry.items)
            self._finish(entry, refused=refused)
            return True

    def _finish(self, entry: Entry, *, dropped: str = "", refused: int = 0, why: str = "") -> None:
        """Remove ``entry`` and count it forwarded or dropped, in one step."""
        try:
            if not self._queue.remove(entry):
                return  # shutdown already took (and counted) it
        except Exception as exc:  # keep the accounting; the disk queue re-sends on restart
            _log.error("codebook: cannot remove a request from the forward queue: %s", exc)
        if dropped:
            self.metrics.forward_account(
                entry.signal,
                queued=-entry.items,
                queued_bytes=-entry.size,
                dropped=(dropped, entry.items),
            )
            self._log.dropped(dropped, entry.items, len(self._queue), why)
            return
        self.metrics.forward_account(
            entry.signal,
            queued=-entry.items,
            queued_bytes=-entry.size,
            forwarded=entry.items - refused,
            dropped=("rejected_by_upstream", refused),
        )
        if refused:
            self._log.dropped(
                "rejected_by_upstream", refused, len(self._queue), "partial success"
            )

    def shutdown(self, timeout_seconds: float = 5.0) -> None:
        """Stop accepting, send what is queued until the deadline, then account for the rest.

        A memory queue's leftovers are dropped with ``reason="shutdown"``; a persistent
        queue keeps them for the next start. Either way one log line says how many.
        """
        deadline = time.monotonic() + max(0.0, timeout_seconds)
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
            if self._thread.is_alive():
                self._abort.set()
                self._thread.join(1.0)
        left = self._queue.take_all()
        by_signal: dict[str, int] = {}
        for entry in left:
            by_signal[entry.signal] = by_signal.get(entry.signal, 0) + entry.items
            self.metrics.forward_account(
                entry.signal,
                queued=-entry.items,
                queued_bytes=-entry.size,
                dropped=("shutdown", entry.items),
            )
        if by_signal:
            _log.warning(
                "codebook: shutdown: could not forward %s to %s within the shutdown timeout "
                "(%.1fs); dropped (reason=shutdown)",
                ", ".join(f"{n} {s}" for s, n in sorted(by_signal.items())),
                self.endpoint,
                timeout_seconds,
            )
        elif self._queue.persistent and len(self._queue):
            _log.warning(
                "codebook: shutdown: %d request(s) left in the persistent forward queue; they "
                "are sent on the next start",
                len(self._queue),
            )
        self._upstream.close()
        self._queue.close()
