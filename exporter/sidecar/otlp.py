"""OTLP export requests through the pipeline: validate, enrich in place, count, forward.

Both receivers (``otlp_http``, ``otlp_grpc``) hand a parsed ``Export*ServiceRequest`` to one
:class:`OtlpIntake`, so spans and metric data points are classified and counted exactly as the
in-process span processor and metric exporter wrapper do (the same :class:`Enricher`):

- a span with ``provider.source`` and ``provider.code`` gets the output attributes appended
  (replacing any it already carried under those names), counts once in
  ``provider_codes_total``, and gets status ERROR when its code is an error and the
  application left the status UNSET;
- a span event named ``provider.result`` carrying a code gets the output attributes and counts
  once (the span's status is left to the span's own code);
- a log record carrying a code gets the output attributes and counts once (its severity is
  left as it is); a record whose trace_id or span_id is set but not 16/8 bytes is invalid;
- a metric data point carrying a code gets the output attributes and is folded into
  ``/metrics`` under its own name with the seven code labels (sums, gauges, histogram counts);
- items that cannot be valid OTLP (a span whose trace or span id is not 16/8 non-zero bytes, a
  metric without a name or data) are removed and reported as partial success.

Chained Codebooks: with ``count_enriched=False`` (``receivers.count_enriched: false``), a
span, span event, log record or data point that already carries ``provider.match`` (an
in-process Codebook, or another sidecar, enriched it upstream) is forwarded as it is, neither
resolved nor counted again.

Cost: a protobuf trace or logs request is enriched in its wire format by the C extension
``exporter._wire`` (built with the package): it walks the bytes down to the spans (log
records), groups them by their provider code, resolves and counts each distinct code once,
and splices the pre-serialized output attributes into them, so a 1,000-span batch costs about
as much as parsing it (``provider.result`` span events included). Requests it does not
interpret (rare wire forms, OTLP/JSON) and installs without the extension take the message
path, with identical results (tested side by side). For metrics, the provider keys are
looked for in the serialized request first; a batch that carries none is never walked
attribute by attribute. Every method runs on the receiver's worker thread, never blocks
(forwarding is a bounded, non-blocking enqueue) and never raises.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from ..codebook import (
    ATTR_CATEGORY,
    ATTR_CODE,
    ATTR_ERROR_TYPE,
    ATTR_MATCH,
    ATTR_MESSAGE,
    ATTR_OWNER,
    ATTR_RETRYABLE,
    ATTR_SEVERITY,
    ATTR_SOURCE,
    ATTR_SUBCODE,
    EVENT_RESULT,
)
from ..enrich import Enricher, result_identity

try:
    from .. import _wire
except ImportError:  # installed without a C compiler: the message path does everything
    _wire = None  # type: ignore[assignment]

from .forwarder import Forwarder

if TYPE_CHECKING:
    from google.protobuf.internal.containers import RepeatedCompositeFieldContainer
    from google.protobuf.message import Message

_log = logging.getLogger(__name__)

SIGNALS = ("traces", "metrics", "logs")
Request = ExportTraceServiceRequest | ExportMetricsServiceRequest | ExportLogsServiceRequest
Response = ExportTraceServiceResponse | ExportMetricsServiceResponse | ExportLogsServiceResponse

REQUEST_TYPES: dict[str, type[Request]] = {
    "traces": ExportTraceServiceRequest,
    "metrics": ExportMetricsServiceRequest,
    "logs": ExportLogsServiceRequest,
}
RESPONSE_TYPES: dict[str, type[Response]] = {
    "traces": ExportTraceServiceResponse,
    "metrics": ExportMetricsServiceResponse,
    "logs": ExportLogsServiceResponse,
}

_INPUT_KEYS = frozenset((ATTR_SOURCE, ATTR_CODE, ATTR_SUBCODE, ATTR_MESSAGE))
_OUTPUT_KEYS = frozenset(
    (ATTR_CATEGORY, ATTR_SEVERITY, ATTR_RETRYABLE, ATTR_OWNER, ATTR_MATCH, ATTR_ERROR_TYPE)
)
# The serialized form of the key: a request without these bytes has no span or point to enrich.
_CODE_KEY_BYTES = ATTR_CODE.encode()
_MATCH_KEY_BYTES = ATTR_MATCH.encode()
# The wire path's key lists: input keys in the order its resolve callback receives them.
_WIRE_INPUT_KEYS = tuple(k.encode() for k in (ATTR_SOURCE, ATTR_CODE, ATTR_SUBCODE, ATTR_MESSAGE))
_WIRE_OUTPUT_KEYS = tuple(sorted(k.encode() for k in _OUTPUT_KEYS))
_BAD_SPAN_MESSAGE = "spans need a 16-byte trace_id and an 8-byte span_id, not all zero"
_BAD_LOG_MESSAGE = "a log record's trace_id and span_id must be empty or 16 and 8 bytes"
_STATUS_UNSET = 0
_STATUS_ERROR = 2
_TEMPORALITY_DELTA = 1
_NULL_TRACE_ID = bytes(16)
_NULL_SPAN_ID = bytes(8)


class MalformedRequest(ValueError):
    """The body is not a valid protobuf export request (the message says why)."""


# Wire kinds of the C walker's schema (see _wire.c): what it checks for a known field.
_K_VARINT, _K_I64, _K_BYTES, _K_I32, _K_STRING, _K_MESSAGE, _K_BAIL = 0, 1, 2, 5, 8, 9, 10
_FIXED64 = frozenset((FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64,
                      FieldDescriptor.TYPE_DOUBLE))
_FIXED32 = frozenset((FieldDescriptor.TYPE_FIXED32, FieldDescriptor.TYPE_SFIXED32,
                      FieldDescriptor.TYPE_FLOAT))


def wire_schema(root: Descriptor, *more: Descriptor) -> list[list[tuple[int, int, int]]]:
    """The message types reachable from ``root`` (and ``more``) as the C walker's schema.

    Each message is a list of (field number, kind, index of the field's message type or -1);
    ``root`` is message 0, and the first of ``more`` that ``root`` does not reach is message
    ``len(wire_schema(root))``. Repeated numbers may arrive packed, so the walker leaves them
    to the protobuf runtime (``_K_BAIL``), as it does groups.
    """
    index: dict[str, int] = {}
    out: list[list[tuple[int, int, int]]] = []

    def add(desc: Descriptor) -> int:
        if desc.full_name in index:
            return index[desc.full_name]
        i = index[desc.full_name] = len(out)
        out.append([])
        fields: list[tuple[int, int, int]] = []
        for f in desc.fields:
            sub = -1
            if f.type == FieldDescriptor.TYPE_MESSAGE and f.message_type is not None:
                kind, sub = _K_MESSAGE, add(f.message_type)
            elif f.type == FieldDescriptor.TYPE_STRING:
                kind = _K_STRING
            elif f.type == FieldDescriptor.TYPE_BYTES:
                kind = _K_BYTES
            elif f.type == FieldDescriptor.TYPE_GROUP or _is_repeated(f):
                kind = _K_BAIL
            elif f.type in _FIXED64:
                kind = _K_I64
            elif f.type in _FIXED32:
                kind = _K_I32
            else:
                kind = _K_VARINT
            fields.append((f.number, kind, sub))
        out[i] = fields
        return i

    for desc in (root, *more):
        add(desc)
    return out



def _is_repeated(field: FieldDescriptor) -> bool:
    repeated = getattr(field, "is_repeated", None)  # protobuf >= 6; older ones have .label
    if isinstance(repeated, bool):
        return repeated
    return bool(getattr(field, "label", 0) == FieldDescriptor.LABEL_REPEATED)


# The schema index of ExportLogsServiceRequest: right after every type a trace request reaches.
_LOGS_ROOT = len(wire_schema(ExportTraceServiceRequest.DESCRIPTOR))
if _wire is not None:
    with contextlib.suppress(RuntimeError):  # already set: this module was imported again
        _wire.set_schema(
            wire_schema(ExportTraceServiceRequest.DESCRIPTOR, ExportLogsServiceRequest.DESCRIPTOR)
        )


@dataclass
class IntakeResult:
    """What one export request came to: items accepted and rejected, and the reply."""

    accepted: int
    rejected: int
    response: Response


_SCALARS = frozenset(("string_value", "int_value", "double_value", "bool_value", "bytes_value"))


def provider_attributes(
    attrs: RepeatedCompositeFieldContainer[KeyValue],
) -> tuple[dict[str, object], bool]:
    """The ``provider.*`` input attributes among ``attrs`` (empty when there is no code), and
    whether ``attrs`` already holds any output attribute (which enrichment must replace)."""
    found: dict[str, object] = {}
    stale = False
    for kv in attrs:
        key = kv.key
        if key in _INPUT_KEYS:
            v = kv.value
            kind = v.WhichOneof("value")
            found[key] = getattr(v, kind) if kind in _SCALARS else None  # arrays, maps: no code
        elif key in _OUTPUT_KEYS:
            stale = True
    return (found, stale) if ATTR_CODE in found else ({}, False)


def _enriched(attrs: RepeatedCompositeFieldContainer[KeyValue]) -> bool:
    """Whether a Codebook upstream already enriched these attributes (provider.match set)."""
    return any(kv.key == ATTR_MATCH for kv in attrs)


class _Blobs:
    """Serialized output attributes (and ERROR status) per resolution, to merge into items.

    Merging pre-serialized bytes appends the KeyValues in C instead of building messages in
    Python per item. Keyed by the identity of the enricher's (cached, shared) output mapping;
    the mapping is kept referenced so an id is never reused while its entry lives.
    """

    def __init__(self, limit: int = 4096) -> None:
        self._cache: dict[tuple[int, type, bool], tuple[Mapping[str, str], bytes]] = {}
        self._limit = limit

    def get(self, extra: Mapping[str, str], kind: type[Message], error_status: bool) -> bytes:
        key = (id(extra), kind, error_status)
        hit = self._cache.get(key)
        if hit is not None and hit[0] is extra:
            return hit[1]
        msg: Any = kind()
        msg.attributes.extend(
            KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in extra.items()
        )
        if error_status:
            msg.status.code = _STATUS_ERROR
            msg.status.message = f"provider code: {extra.get(ATTR_ERROR_TYPE)}"
        blob = bytes(msg.SerializeToString())
        if len(self._cache) >= self._limit:
            self._cache.clear()
        self._cache[key] = (extra, blob)
        return blob


def set_attributes(item: Any, extra: Mapping[str, str], stale: bool, blobs: _Blobs,
                   error_status: bool = False) -> None:
    """Add ``extra`` to ``item.attributes`` (replacing stale ones); optionally set ERROR."""
    attrs = item.attributes
    if stale:
        for i in reversed([i for i, kv in enumerate(attrs) if kv.key in _OUTPUT_KEYS]):
            del attrs[i]
    item.MergeFromString(blobs.get(extra, type(item), error_status))


def _stream_key(resource: bytes, scope: bytes, name: str, attrs: Any) -> bytes:
    """A fixed-size identity of one time series (hostile attribute sizes cost nothing here)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(resource)
    h.update(b"\0")
    h.update(scope)
    h.update(b"\0")
    h.update(name.encode("utf-8", "replace"))
    for part in sorted(kv.SerializeToString(deterministic=True) for kv in attrs):
        h.update(b"\0")
        h.update(part)
    return h.digest()


class OtlpIntake:
    """Validates, enriches and counts parsed OTLP requests, then hands them to the forwarder.

    Thread-safe (the enricher and metrics are); called on receiver worker threads. Methods
    never raise: an unexpected failure passes the request through unenriched, logged once
    and counted as ``codebook_telemetry_dropped_total{reason="internal_error"}``.
    """

    def __init__(
        self,
        enricher: Enricher,
        forwarder: Forwarder | None = None,
        *,
        wire: bool = True,
        count_enriched: bool = True,
    ) -> None:
        self.enricher = enricher
        self.forwarder = forwarder
        # Whether protobuf trace requests take the C wire path (False: always the message path).
        self.wire = wire and _wire is not None
        # False: spans and points already enriched upstream (carrying provider.match) are
        # forwarded as they are, neither resolved nor counted again (receivers.count_enriched).
        self.count_enriched = count_enriched
        self._logged = False
        self._blobs = _Blobs()
        self._handlers: dict[str, Callable[[Any, bool], tuple[int, int, str]]] = {
            "traces": self._traces,
            "metrics": self._metrics,
            "logs": self._logs,
        }

    def export_protobuf(self, signal: str, body: bytes, transport: str) -> IntakeResult:
        """Process one protobuf-encoded request of ``signal``.

        Trace requests take the C wire path when it is built: validated and enriched in
        their wire format, never parsed into messages. Everything else (and any request the
        walker declines) is parsed by the protobuf runtime and takes :meth:`export`.
        Raises :class:`MalformedRequest` when ``body`` is not a valid request.
        """
        # Skipping enriched items is the message path's job: a request that may carry one (the
        # key's bytes appear anywhere in it) goes there whole, with the same results.
        if signal != "metrics" and self.wire and (
            self.count_enriched or _MATCH_KEY_BYTES not in body
        ):
            wired = self._traces_wire(body) if signal == "traces" else self._logs_wire(body)
            if wired is not None:
                forward, accepted, rejected = wired
                message = _BAD_SPAN_MESSAGE if signal == "traces" else _BAD_LOG_MESSAGE
                return self._finish(signal, transport, accepted, rejected, forward, message)
        request = REQUEST_TYPES[signal]()
        try:
            request.ParseFromString(body)
        except (DecodeError, RecursionError, ValueError) as exc:
            raise MalformedRequest(f"invalid protobuf: {exc}") from None
        return self.export(signal, request, transport, body)

    def export(
        self,
        signal: str,
        request: Request,
        transport: str,
        raw: bytes | None = None,
        *,
        raw_is_protobuf: bool = True,
    ) -> IntakeResult:
        """Process one request of ``signal``; ``raw`` is the body it was parsed from, if any.

        The request is modified in place (enriched, invalid items removed). When ``raw`` is
        the protobuf encoding and nothing needed changing, ``raw`` is forwarded as is.
        """
        metrics = self.enricher.metrics
        maybe_codes = raw is None or _CODE_KEY_BYTES in raw
        try:
            accepted, rejected, message = self._handlers[signal](request, maybe_codes)
        except Exception:
            if not self._logged:
                self._logged = True
                _log.exception("codebook: OTLP enrichment failed; the request passes through")
            metrics.telemetry_dropped(signal, "internal_error")
            accepted, rejected, message = count_items(request), 0, ""
        unchanged = raw is not None and raw_is_protobuf and not rejected and not maybe_codes
        forward: Request | bytes = raw if unchanged and raw is not None else request
        return self._finish(signal, transport, accepted, rejected, forward, message)

    def _finish(
        self,
        signal: str,
        transport: str,
        accepted: int,
        rejected: int,
        forward: Request | bytes,
        message: str = _BAD_SPAN_MESSAGE,
    ) -> IntakeResult:
        """Count the request, build the reply, hand the accepted items to the forwarder."""
        metrics = self.enricher.metrics
        total = accepted + rejected
        # The Forwarder counts the receipt with the enqueue, in one step (so no scrape sees
        # one without the other); any other object given as forwarder gets the plain call.
        atomic = accepted and isinstance(self.forwarder, Forwarder)
        if not atomic:
            if total:
                metrics.telemetry_received(signal, transport, total)
            if rejected:
                metrics.telemetry_rejected(signal, transport, "invalid_item", rejected)
        response = RESPONSE_TYPES[signal]()
        if rejected:
            partial: Any = response.partial_success
            setattr(partial, _REJECTED_FIELD[signal], rejected)
            partial.error_message = message
        if atomic and isinstance(self.forwarder, Forwarder):
            self.forwarder.submit(
                signal, forward, accepted, transport=transport, rejected=rejected
            )
        elif self.forwarder is not None and accepted:
            self.forwarder.submit(signal, forward, accepted)
        return IntakeResult(accepted, rejected, response)

    def _traces_wire(self, raw: bytes) -> tuple[bytes, int, int] | None:
        """Enrich a protobuf trace request in its wire format (see :meth:`_wire_path`)."""
        return self._wire_path("traces", raw)

    def _logs_wire(self, raw: bytes) -> tuple[bytes, int, int] | None:
        """Enrich a protobuf logs request in its wire format (see :meth:`_wire_path`)."""
        return self._wire_path("logs", raw)

    def _wire_path(self, signal: str, raw: bytes) -> tuple[bytes, int, int] | None:
        """Enrich a protobuf trace or logs request in its wire format; None: use the message
        path. Returns (the bytes to forward, accepted items, rejected items).
        """
        try:
            if signal == "traces":
                out, accepted, rejected = _wire.enrich_traces(
                    raw, self._resolve_group, _WIRE_INPUT_KEYS, _WIRE_OUTPUT_KEYS
                )
            else:
                out, accepted, rejected = _wire.enrich_logs(
                    raw, self._resolve_log_group, _WIRE_INPUT_KEYS, _WIRE_OUTPUT_KEYS,
                    _LOGS_ROOT,
                )
        except ValueError:  # invalid, or a form the walker leaves to the runtime; nothing counted
            return None
        except Exception:
            if not self._logged:
                self._logged = True
                _log.exception("codebook: OTLP wire enrichment failed; using the message path")
            return None
        return (raw if out is None else out), accepted, rejected

    def _resolve_group(
        self, source: object, code: object, subcode: object, message: object, n: int
    ) -> tuple[bytes, bytes | None] | None:
        """The wire path's callback: resolve and count one code carried by ``n`` spans.

        Returns the serialized Span fields to append (attributes; attributes and status ERROR
        for spans whose status is UNSET, or None when the code is not an error). Never raises:
        the C walker must not be interrupted after it has started counting.
        """
        try:
            extra = self.enricher.enrich_code(source, code, subcode, message, n)
            if extra is None:
                return None
            blobs = self._blobs
            error = blobs.get(extra, Span, True) if ATTR_ERROR_TYPE in extra else None
            return blobs.get(extra, Span, False), error
        except Exception:
            return None

    def _resolve_log_group(
        self, source: object, code: object, subcode: object, message: object, n: int
    ) -> tuple[bytes, None] | None:
        """The logs wire path's callback: as :meth:`_resolve_group`, with LogRecord fields
        (a record has no status to set). Never raises."""
        try:
            extra = self.enricher.enrich_code(source, code, subcode, message, n, "logs")
            return None if extra is None else (self._blobs.get(extra, LogRecord, False), None)
        except Exception:
            return None

    def _traces(self, req: ExportTraceServiceRequest, maybe_codes: bool) -> tuple[int, int, str]:
        enrich = self.enricher.enrich_span
        blobs = self._blobs
        skip_enriched = not self.count_enriched
        accepted = rejected = 0
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                spans = ss.spans
                bad: list[int] = []
                for i, span in enumerate(spans):
                    tid = span.trace_id
                    sid = span.span_id
                    if len(tid) != 16 or len(sid) != 8 or tid == _NULL_TRACE_ID or (
                        sid == _NULL_SPAN_ID
                    ):
                        bad.append(i)
                        continue
                    if not maybe_codes:
                        continue
                    found, stale = provider_attributes(span.attributes)
                    # identities matter only when the span carries a code of its own
                    results: list[object] | None = [] if found else None
                    for event in span.events:  # each provider.result event counts once
                        if event.name == EVENT_RESULT:
                            ev_found, ev_stale = provider_attributes(event.attributes)
                            if skip_enriched and ev_stale and _enriched(event.attributes):
                                continue
                            if ev_found and results is not None:
                                results.append(result_identity(ev_found))
                            extra = enrich(ev_found) if ev_found else None
                            if extra is not None:  # the span's status is the span's own
                                set_attributes(event, extra, ev_stale, blobs)
                    if not found or (skip_enriched and stale and _enriched(span.attributes)):
                        continue
                    if results and result_identity(found) in results:
                        extra = self.enricher.enrich_summary(found)  # its event counts it
                    else:
                        extra = enrich(found)
                    if extra is None:
                        continue
                    error = ATTR_ERROR_TYPE in extra and span.status.code == _STATUS_UNSET
                    set_attributes(span, extra, stale, blobs, error)
                for i in reversed(bad):
                    del spans[i]
                accepted += len(spans)
                rejected += len(bad)
        return accepted, rejected, _BAD_SPAN_MESSAGE if rejected else ""

    def _metrics(self, req: ExportMetricsServiceRequest, maybe_codes: bool) -> tuple[int, int, str]:
        accepted = rejected = 0
        for rm in req.resource_metrics:
            resource_key: bytes | None = None
            for sm in rm.scope_metrics:
                bad: list[int] = []
                scope_key: bytes | None = None
                for i, metric in enumerate(sm.metrics):
                    kind = metric.WhichOneof("data")
                    if kind is None or not metric.name:
                        bad.append(i)
                        rejected += len(getattr(metric, kind).data_points) if kind else 1
                        continue
                    data = getattr(metric, kind)
                    accepted += len(data.data_points)
                    if not maybe_codes:
                        continue
                    if resource_key is None:
                        resource_key = rm.resource.SerializeToString(deterministic=True)
                    if scope_key is None:
                        scope_key = sm.scope.SerializeToString(deterministic=True)
                    self._points(metric.name, kind, data, resource_key, scope_key)
                for i in reversed(bad):
                    del sm.metrics[i]
        message = "metrics need a name and data"
        return accepted, rejected, message if rejected else ""

    def _points(self, name: str, kind: str, data: Any, resource: bytes, scope: bytes) -> None:
        point_labels = self.enricher.point_labels
        record = self.enricher.metrics.record_point
        monotonic = kind == "sum" and bool(data.is_monotonic)
        delta = getattr(data, "aggregation_temporality", 0) == _TEMPORALITY_DELTA
        skip_enriched = not self.count_enriched
        for point in data.data_points:
            found, stale = provider_attributes(point.attributes)
            if not found or (skip_enriched and stale and _enriched(point.attributes)):
                continue
            pair = point_labels(found)
            if pair is None:
                continue
            extra, labels = pair
            stream = _stream_key(resource, scope, name, point.attributes)
            set_attributes(point, extra, stale, self._blobs)
            if kind in ("sum", "gauge"):
                which = point.WhichOneof("value")
                if which is None:
                    continue
                value = float(point.as_double if which == "as_double" else point.as_int)
                record(
                    name,
                    monotonic_sum=monotonic,
                    labels=labels,
                    value=value,
                    stream=stream,
                    delta=delta,
                    additive=kind == "sum" and not monotonic,
                )
            elif kind == "histogram":
                record(
                    f"{name}_count",
                    monotonic_sum=True,
                    labels=labels,
                    value=float(point.count),
                    stream=stream,
                    delta=delta,
                )

    def _logs(self, req: ExportLogsServiceRequest, maybe_codes: bool) -> tuple[int, int, str]:
        enrich = self.enricher.enrich_log
        blobs = self._blobs
        skip_enriched = not self.count_enriched
        accepted = rejected = 0
        for rl in req.resource_logs:
            for sl in rl.scope_logs:
                records = sl.log_records
                bad: list[int] = []
                for i, record in enumerate(records):
                    tid = record.trace_id
                    sid = record.span_id
                    if (tid and len(tid) != 16) or (sid and len(sid) != 8):
                        bad.append(i)
                        continue
                    if not maybe_codes:
                        continue
                    found, stale = provider_attributes(record.attributes)
                    if not found or (skip_enriched and stale and _enriched(record.attributes)):
                        continue
                    extra = enrich(found)
                    if extra is not None:  # severity_number stays as the application set it
                        set_attributes(record, extra, stale, blobs)
                for i in reversed(bad):
                    del records[i]
                accepted += len(records)
                rejected += len(bad)
        return accepted, rejected, _BAD_LOG_MESSAGE if rejected else ""


_REJECTED_FIELD = {
    "traces": "rejected_spans",
    "metrics": "rejected_data_points",
    "logs": "rejected_log_records",
}


def count_items(req: Message) -> int:
    """Items (spans, data points, log records) in a request."""
    if isinstance(req, ExportTraceServiceRequest):
        return sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)
    if isinstance(req, ExportMetricsServiceRequest):
        n = 0
        for rm in req.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    kind = m.WhichOneof("data")
                    n += len(getattr(m, kind).data_points) if kind else 0
        return n
    if isinstance(req, ExportLogsServiceRequest):
        return sum(len(sl.log_records) for rl in req.resource_logs for sl in rl.scope_logs)
    return 0

