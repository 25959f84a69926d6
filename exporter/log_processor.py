"""The log record processor: tags log records that carry a provider code and counts them.

Put :class:`CodebookLogRecordProcessor` in front of your Batch/Simple log record processor,
as the span processor goes in front of a span processor. A record whose attributes carry
``provider.source`` and ``provider.code`` (for instance ``logging`` with
``extra={"provider.source": "vonage.sms", "provider.code": 1}`` through the SDK's
``LoggingHandler``) gets the output attributes added in place, before any downstream sees it,
and counts once in ``provider_codes_total``. Its ``severity_number`` and body stay as the
application set them. Records without a code pass as they are.

SDK versions: the logs SDK (``opentelemetry.sdk._logs``) calls ``on_emit`` (``emit`` in
older releases) with a record wrapper whose ``log_record`` holds the attributes (a
``LogData`` in older versions, a ``ReadWriteLogRecord`` in newer ones); both are handled, and
each downstream is called through the method its version has.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk._logs import LogRecordProcessor

from .codebook import ATTR_CODE
from .enrich import Enricher

_log = logging.getLogger(__name__)


def _probe_bounded_dict() -> bool:
    """True when a mutable BoundedAttributes keeps its items in a private ``_dict``."""
    probe = BoundedAttributes(attributes={"k": "v"}, immutable=False)
    return dict(getattr(probe, "_dict", None) or {}) == {"k": "v"}


# BoundedAttributes when its ``_dict`` may be updated directly; else None, which no type is.
_BOUNDED: type[BoundedAttributes] | None = BoundedAttributes if _probe_bounded_dict() else None


def _emit_method(processor: Any) -> Callable[[Any], object]:
    """The downstream's per-record method: ``on_emit`` (current SDKs) or ``emit`` (older ones)."""
    method = getattr(processor, "on_emit", None)
    return method if callable(method) else processor.emit  # type: ignore[no-any-return]


class CodebookLogRecordProcessor(LogRecordProcessor):
    """Put this in front of your Batch/Simple log record processor(s).

    Called by the SDK on the thread that emits the record. ``on_emit`` never raises; a
    failure is logged once, counted as ``codebook_telemetry_dropped_total{signal="logs",
    reason="internal_error"}``, and the record still goes downstream as it is.
    """

    def __init__(
        self,
        downstream: LogRecordProcessor | Sequence[LogRecordProcessor],
        enricher: Enricher | None = None,
    ) -> None:
        self._downstream: tuple[LogRecordProcessor, ...] = (
            (downstream,) if isinstance(downstream, LogRecordProcessor) else tuple(downstream)
        )
        self.enricher = enricher if enricher is not None else Enricher()
        self._emits = tuple(_emit_method(d) for d in self._downstream)
        self._logged = False

    def on_emit(self, log_record: Any) -> None:
        """Enrich ``log_record`` in place when it carries a code, then hand it downstream."""
        try:
            record = getattr(log_record, "log_record", log_record)
            attrs: Any = record.attributes
            # The private storage, not the mapping API (its __len__ and __contains__ are
            # Python calls per record): the SDK's shape is probed at import.
            raw: Mapping[str, Any] = attrs._dict if type(attrs) is _BOUNDED else (attrs or {})
            if ATTR_CODE in raw:
                extra = self.enricher.enrich_log(raw)
                if extra is not None:
                    if type(attrs) is _BOUNDED and not attrs._immutable:
                        # In place, as BoundedAttributes.update does, without its per-key
                        # validation (the values are short strings) or limit: the output
                        # attributes never push the application's own out.
                        attrs._dict.update(extra)
                    else:
                        record.attributes = {**raw, **extra}
        except Exception:
            self._fail()
        for emit in self._emits:
            try:
                emit(log_record)
            except Exception:
                self._fail()

    emit = on_emit  # the name older SDKs call

    def enabled(self, **kwargs: Any) -> bool:
        """Whether any downstream would take such a record (SDKs that ask; others: True)."""
        for d in self._downstream:
            ask = getattr(d, "enabled", None)
            if ask is None or ask(**kwargs):
                return True
        return False

    def _fail(self) -> None:
        if not self._logged:
            self._logged = True
            _log.error(
                "codebook: log record processing failed; the record passes through as is",
                exc_info=True,
            )
        self.enricher.metrics.telemetry_dropped("logs", "internal_error")

    def shutdown(self) -> None:
        for d in self._downstream:
            d.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return all([d.force_flush(timeout_millis) for d in self._downstream])
