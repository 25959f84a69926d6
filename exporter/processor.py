"""The span processor: tags spans that carry a provider code and counts them.

The SDK freezes a span's attributes before ``on_end``, so a span with a code is forwarded
downstream as an enriched copy; a span without one is forwarded as the same object.

Span status: when the code means the operation did not get through (every category but
success, pending and call_ended_normal) and the application left the status UNSET, the copy
gets status ERROR with the category as its description, as OpenTelemetry's guidance for
failed operations says. A status the application set (OK or ERROR) is never changed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import Status, StatusCode

from .codebook import ATTR_CODE
from .enrich import Enricher

_log = logging.getLogger(__name__)

# The fields the public ReadableSpan constructor sets. The fast copy below relies on a span's
# __dict__ holding exactly these; when it does not (a future SDK), the public API is used.
_READABLE_FIELDS = frozenset(vars(ReadableSpan("probe")))


def _probe_bounded_dict() -> bool:
    """True when BoundedAttributes keeps its items in a private ``_dict`` (SDK internals)."""
    probe = BoundedAttributes(attributes={"k": "v"}, immutable=True)
    return dict(getattr(probe, "_dict", None) or {}) == {"k": "v"}


_BOUNDED_HAS_DICT = _probe_bounded_dict()


def raw_attributes(span: ReadableSpan) -> Mapping[str, Any]:
    """The span's attributes without the read-only proxy the public property builds per call.

    Uses the SDK's private storage when its shape is the one probed at import; otherwise the
    public ``span.attributes``. Callers must not mutate the result.
    """
    attrs = getattr(span, "_attributes", None)
    if _BOUNDED_HAS_DICT and type(attrs) is BoundedAttributes:
        return attrs._dict
    if type(attrs) is dict:
        return attrs
    return span.attributes or {}


class _EnrichedSpan(ReadableSpan):
    """A ReadableSpan copy with Codebook attributes; keeps the original's dropped counts.

    The fast copy shares the original's events and links (so their dropped counts carry over)
    and keeps the original attributes object for its dropped count; the public-API copy
    records all three counts in ``_counts``.
    """

    _counts: tuple[int, int, int] | None = None
    _source_attributes: Any = None

    @property
    def dropped_attributes(self) -> int:
        if self._counts is not None:
            return self._counts[0]
        return int(getattr(self._source_attributes, "dropped", 0))

    @property
    def dropped_events(self) -> int:
        return self._counts[1] if self._counts is not None else super().dropped_events

    @property
    def dropped_links(self) -> int:
        return self._counts[2] if self._counts is not None else super().dropped_links


_ERROR_STATUS: dict[str, Status] = {}


def _status_for(status: Status, extra: Mapping[str, str]) -> Status:
    error_type = extra.get("error.type")
    if error_type is None or status.status_code is not StatusCode.UNSET:
        return status
    cached = _ERROR_STATUS.get(error_type)
    if cached is None:  # one per category: error_type is a closed-enum value
        cached = _ERROR_STATUS[error_type] = Status(
            StatusCode.ERROR, f"provider code: {error_type}"
        )
    return cached


# Span classes whose instance state was found to hold every ReadableSpan field.
_FAST_TYPES: set[type] = set()


def enriched_copy(
    span: ReadableSpan,
    extra: Mapping[str, str],
    *,
    fast: bool = True,
    raw: Mapping[str, Any] | None = None,
) -> ReadableSpan:
    """A copy of ``span`` with ``extra`` attributes added and the status set for errors.

    ``raw`` is the span's attributes if the caller already has them (see raw_attributes).
    """
    attributes: dict[str, Any] = {**(raw if raw is not None else span.attributes or {}), **extra}
    state = getattr(span, "__dict__", None)
    if fast and state is not None:
        if type(span) not in _FAST_TYPES and _READABLE_FIELDS.issubset(state):
            _FAST_TYPES.add(type(span))
        if type(span) in _FAST_TYPES:
            copy = object.__new__(_EnrichedSpan)
            copy.__dict__ = {
                **state,
                "_source_attributes": state["_attributes"],
                "_attributes": attributes,
                "_status": _status_for(state["_status"], extra),
            }
            return copy
    copy = _EnrichedSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=attributes,
        events=span.events,
        links=span.links,
        kind=span.kind,
        status=_status_for(span.status, extra),
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )
    copy._counts = (span.dropped_attributes, span.dropped_events, span.dropped_links)
    return copy


class CodebookSpanProcessor(SpanProcessor):
    """Put this in front of your Batch/Simple span processor(s).

    Called by the SDK on the thread that ends the span. ``on_end`` never raises and never
    blocks beyond what the downstream processors do; failures are logged once and counted.
    """

    def __init__(
        self, downstream: SpanProcessor | Sequence[SpanProcessor], enricher: Enricher | None = None
    ) -> None:
        self._downstream: tuple[SpanProcessor, ...] = (
            (downstream,) if isinstance(downstream, SpanProcessor) else tuple(downstream)
        )
        self.enricher = enricher if enricher is not None else Enricher()
        self._logged = False

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        for d in self._downstream:
            d.on_start(span, parent_context=parent_context)

    def _on_ending(self, span: Span) -> None:
        for d in self._downstream:
            hook = getattr(d, "_on_ending", None)
            if hook is not None:
                hook(span)

    def on_end(self, span: ReadableSpan) -> None:
        out = span
        try:
            raw = raw_attributes(span)
            if ATTR_CODE in raw:
                extra = self.enricher.enrich_span(raw)
                if extra is not None:
                    out = enriched_copy(span, extra, raw=raw)
        except Exception:
            self._fail()
        for d in self._downstream:
            try:
                d.on_end(out)
            except Exception:
                self._fail()

    def _fail(self) -> None:
        if not self._logged:
            self._logged = True
            _log.exception("codebook: span processing failed; the span passes through as is")
        self.enricher.metrics.telemetry_dropped("traces", "internal_error")

    def shutdown(self) -> None:
        for d in self._downstream:
            d.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return all([d.force_flush(timeout_millis) for d in self._downstream])
