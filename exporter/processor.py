"""The span processor: tags spans that carry a provider code and counts them.

The SDK freezes a span's attributes before ``on_end``, so a span with a code is forwarded
downstream as an enriched copy; a span without one is forwarded as the same object. Span
events named ``provider.result`` that carry a code are enriched (in the copy) and counted
once each, like spans; the span's own code, if any, counts once more.

Span status: when the code means the operation did not get through (every category but
success, pending and call_ended_normal) and the application left the status UNSET, the copy
gets status ERROR with the category as its description, as OpenTelemetry's guidance for
failed operations says. A status the application set (OK or ERROR) is never changed.

Two implementations of ``on_end`` give the same result. When the C extension
``exporter._hot`` is built (``pip install .``), the instance's ``on_end`` is its
``SpanHook``. It handles a span without a code (and without ``provider.result`` events),
and a code already in the enricher's span cache, without a Python frame. Every other span
goes to the Python ``on_end`` below, which is the reference. ``tests/test_hot.py`` checks that
the two produce the same spans and counts.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.sdk.trace import Event, ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import Status, StatusCode

from .codebook import (
    ATTR_CODE,
    ATTR_ERROR_TYPE,
    ATTR_MESSAGE,
    ATTR_SOURCE,
    ATTR_SUBCODE,
    EVENT_RESULT,
)
from .enrich import Enricher, result_identity

try:  # the C fast path of on_end (optional: built by pip install, see setup.py)
    from . import _hot
except ImportError:  # pragma: no cover - a build without a C compiler
    _hot = None  # type: ignore[assignment]

_log = logging.getLogger(__name__)

_PROBE = ReadableSpan("probe")
# The fields the public ReadableSpan constructor sets. The fast copy below relies on a span's
# __dict__ holding exactly these; when it does not (a future SDK), the public API is used.
_READABLE_FIELDS = frozenset(vars(_PROBE))
# The status object the SDK gives every span whose status was never set (its default).
_DEFAULT_STATUS = _PROBE.status


def _probe_bounded_dict() -> bool:
    """True when BoundedAttributes keeps its items in a private ``_dict`` (SDK internals)."""
    probe = BoundedAttributes(attributes={"k": "v"}, immutable=True)
    return dict(getattr(probe, "_dict", None) or {}) == {"k": "v"}


# BoundedAttributes when its ``_dict`` may be read directly; else None, which no type is.
_BOUNDED: type[BoundedAttributes] | None = BoundedAttributes if _probe_bounded_dict() else None
# Enum member access goes through a descriptor on every use in Python 3.11.
_UNSET = StatusCode.UNSET


class _EnrichedSpan(ReadableSpan):
    """A ReadableSpan copy with Codebook attributes; keeps the original's dropped counts.

    The fast copy shares the original's events and links (so their dropped counts carry over)
    and keeps the original attributes object when it dropped any, for the count; the
    public-API copy records all three counts in ``_counts``.
    """

    _counts: tuple[int, int, int] | None = None
    _source_attributes: Any = None
    _source_events: Any = None

    @property
    def dropped_attributes(self) -> int:
        if self._counts is not None:
            return self._counts[0]
        source = self._source_attributes
        # Attributes left as they were (only events enriched) keep their own count.
        return int(getattr(self._attributes if source is None else source, "dropped", 0))

    @property
    def dropped_events(self) -> int:
        if self._counts is not None:
            return self._counts[1]
        if self._source_events is not None:  # the events were replaced by enriched ones
            return int(getattr(self._source_events, "dropped", 0))
        return super().dropped_events

    @property
    def dropped_links(self) -> int:
        return self._counts[2] if self._counts is not None else super().dropped_links


_ERROR_STATUS: dict[str, Status] = {}


def _error_status(error_type: str) -> Status:
    """The ERROR status for a category, one shared instance per category (a closed enum)."""
    status = _ERROR_STATUS.get(error_type)
    if status is None:
        status = Status(StatusCode.ERROR, f"provider code: {error_type}")
        _ERROR_STATUS[error_type] = status
    return status


# Span classes whose instance state was found to hold every ReadableSpan field.
_FAST_TYPES: set[type] = set()


def _probe_fast(span: ReadableSpan, state: Mapping[str, Any]) -> bool:
    """True (and remembered for its class) when ``span``'s state holds every ReadableSpan field."""
    if _READABLE_FIELDS.issubset(state):
        _FAST_TYPES.add(type(span))
        return True
    return False


class _EnrichedEvent(Event):
    """A ``provider.result`` event with Codebook attributes; keeps the original's dropped count."""

    _dropped = 0

    @property
    def dropped_attributes(self) -> int:
        return self._dropped


def enrich_events(
    events: Sequence[Event], enricher: Enricher, results: list[object] | None = None
) -> tuple[Event, ...] | None:
    """``events`` with every ``provider.result`` event carrying a code enriched (and counted
    once each), or None when there is none. Other events are kept as the same objects.
    ``results``, when given, receives the :func:`result_identity` of each event with a code.

    An enriched event gets the output attributes only: the span's status is left alone, since
    one failed result among several (one recipient of many) need not fail the operation.
    """
    out: list[Event] | None = None
    for i, event in enumerate(events):
        if event.name != EVENT_RESULT:
            continue
        attrs: Any = event.attributes
        raw: Mapping[str, Any] = attrs._dict if type(attrs) is _BOUNDED else (attrs or {})
        if ATTR_CODE not in raw:
            continue
        if results is not None:
            results.append(result_identity(raw))
        extra = enricher.enrich_span(raw)
        if extra is None:
            continue
        copy = _EnrichedEvent(event.name, {**raw, **extra}, event.timestamp)
        copy._dropped = int(getattr(event, "dropped_attributes", 0))
        if out is None:
            out = list(events)
        out[i] = copy
    return None if out is None else tuple(out)


def enriched_copy(
    span: ReadableSpan,
    extra: Mapping[str, str] | None,
    *,
    raw: Mapping[str, Any] | None = None,
    events: Sequence[Event] | None = None,
) -> ReadableSpan:
    """A copy of ``span`` built with the public ReadableSpan API: ``extra`` added, status set,
    and ``events`` (when given) in place of the span's events.

    ``raw`` is the span's attributes if the caller already has them (never mutated). The
    processor uses this for span classes the fast copy's probe refused.
    """
    attributes: dict[str, Any] = {**(raw if raw is not None else span.attributes or {})}
    status = span.status
    if extra is not None:
        attributes.update(extra)
        error_type = extra.get(ATTR_ERROR_TYPE)
        if error_type is not None and status.status_code is _UNSET:
            status = _error_status(error_type)
    copy = _EnrichedSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=attributes,
        events=span.events if events is None else events,
        links=span.links,
        kind=span.kind,
        status=status,
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
        # The downstream methods the SDK makes us call per span, looked up once.
        self._starts = tuple(d.on_start for d in self._downstream)
        self._endings = tuple(
            hook for d in self._downstream if (hook := getattr(d, "_on_ending", None)) is not None
        )
        self._ends = tuple(d.on_end for d in self._downstream)
        cls = type(self)
        if len(self._starts) == 1 and cls.on_start is CodebookSpanProcessor.on_start:
            # One downstream: the SDK calls its hook directly, without a frame of ours per span.
            self.on_start = self._starts[0]  # type: ignore[method-assign]
        if len(self._endings) == 1 and cls._on_ending is CodebookSpanProcessor._on_ending:
            self._on_ending = self._endings[0]  # type: ignore[method-assign]
        # The C fast path (exporter/_hot.c) takes the common cases of on_end without a Python
        # frame and hands everything else to the Python on_end below, which stays the
        # reference: tests hold the two to the same output and counts.
        self.c_fast_path = False
        if (
            _hot is not None
            and _BOUNDED is not None
            and cls.on_end is CodebookSpanProcessor.on_end
            and type(self.enricher).enrich_span is Enricher.enrich_span  # it inlines this
        ):
            self.on_end = _hot.SpanHook(  # type: ignore[method-assign]
                self,
                type(self.enricher),
                self._ends,
                CodebookSpanProcessor.on_end.__get__(self),  # this class's Python on_end
                self._fail,
                ReadableSpan,
                _BOUNDED,
                _EnrichedSpan,
                (ATTR_SOURCE, ATTR_CODE, ATTR_SUBCODE, ATTR_MESSAGE, ATTR_ERROR_TYPE),
                _DEFAULT_STATUS,
                _UNSET,
                _error_status,
            )
            self.c_fast_path = True

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        for start in self._starts:
            start(span, parent_context=parent_context)

    def _on_ending(self, span: Span) -> None:
        for hook in self._endings:
            hook(span)

    def on_end(self, span: ReadableSpan) -> None:
        # One frame per span (plus enrich_span for a code): each helper call inlined here
        # measured about 1% of a bare SDK span (benchmarks/span_overhead.py, 100% codes).
        out = span
        try:
            # The attributes without the read-only proxy ``span.attributes`` builds per call:
            # the SDK's private storage when its shape is the one probed at import.
            attrs: Any = getattr(span, "_attributes", None)
            raw: Mapping[str, Any]
            if type(attrs) is _BOUNDED:
                raw = attrs._dict
            elif type(attrs) is dict:
                raw = attrs
            else:
                raw = span.attributes or {}
            # provider.result events: the SDK's span keeps them in a BoundedList (or a tuple).
            events: Any = getattr(span, "_events", None)
            # identities are needed only to tell whether a coded span repeats one of its results
            results: list[object] | None = [] if events and ATTR_CODE in raw else None
            new_events = enrich_events(events, self.enricher, results) if events else None
            if ATTR_CODE not in raw:
                extra = None
            elif results and result_identity(raw) in results:  # the span summarises a result
                extra = self.enricher.enrich_summary(raw)
            else:
                extra = self.enricher.enrich_span(raw)
            if extra is not None or new_events is not None:
                state = getattr(span, "__dict__", None)
                if state is not None and (type(span) in _FAST_TYPES or _probe_fast(span, state)):
                    # The fast copy: the span's instance state with its attributes, status
                    # and events replaced (state.copy() then assignment: a third cheaper
                    # than {**state, ...}). The original attributes (events) are kept only
                    # when they dropped some, for the count: a key the SDK's span lacks makes
                    # the copy rebuild its (shared-key) table.
                    # Tests hold it equal to enriched_copy, the public-API copy.
                    fields = state.copy()
                    if extra is not None:
                        fields["_attributes"] = {**raw, **extra}
                        if type(attrs) is not dict and getattr(attrs, "dropped", None):
                            fields["_source_attributes"] = attrs
                        error_type = extra.get(ATTR_ERROR_TYPE)
                        if error_type is not None:
                            status = fields["_status"]
                            if status is _DEFAULT_STATUS or status.status_code is _UNSET:
                                fields["_status"] = _ERROR_STATUS.get(
                                    error_type
                                ) or _error_status(error_type)
                    if new_events is not None:
                        fields["_events"] = new_events
                        if getattr(events, "dropped", None):
                            fields["_source_events"] = events
                    out = object.__new__(_EnrichedSpan)
                    out.__dict__ = fields
                else:
                    out = enriched_copy(span, extra, raw=raw, events=new_events)
        except Exception:
            self._fail()
        for end in self._ends:
            try:
                end(out)
            except Exception:
                self._fail()

    def _fail(self, exc: BaseException | None = None) -> None:
        """Log the first failure (``exc``, or the exception being handled) and count each."""
        if not self._logged:
            self._logged = True
            _log.error(
                "codebook: span processing failed; the span passes through as is",
                exc_info=exc if exc is not None else True,
            )
        self.enricher.metrics.telemetry_dropped("traces", "internal_error")

    def shutdown(self) -> None:
        for d in self._downstream:
            d.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return all([d.force_flush(timeout_millis) for d in self._downstream])
