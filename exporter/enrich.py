"""The shared enrichment step: provider.* attributes in, output attributes and counts out.

The span processor, the metric exporter wrapper and the sidecar's OTLP receivers all call
one :class:`Enricher`, so a code is classified and counted the same way however it arrives.
"""

from __future__ import annotations

import logging
import struct
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from .codebook import (
    ATTR_CODE,
    ATTR_MESSAGE,
    ATTR_SOURCE,
    ATTR_SUBCODE,
    DEFAULT_CACHE_SIZE,
    Codebook,
    cacheable,
    load_codebook,
)
from .loader import MappingError
from .metrics import CodebookMetrics, CodeCells

_log = logging.getLogger(__name__)

# Distinct (source, code, subcode, message) inputs a span cache holds before it starts over.
SPAN_CACHE_SIZE = DEFAULT_CACHE_SIZE

_SpanKey = tuple[object, object, object, object]


def _exact(value: object) -> tuple[type, object]:
    return (float, struct.pack("<d", value)) if type(value) is float else (type(value), value)


def result_identity(attributes: Mapping[str, object]) -> tuple[tuple[type, object], ...]:
    """The exact provider values (source, code, subcode, message) of a span or event.

    Two items are the same result only when each value has the same type and value (a double
    by its bits), as the sidecar's wire path groups them: ``"1"``, ``1``, ``1.0`` and ``True``
    are four results. A span whose identity equals one of its own ``provider.result`` events'
    summarises that result: it is enriched, and counted through the event only (a call with
    several results counts each once, whatever the span repeats).
    """
    get = attributes.get
    return (_exact(get(ATTR_SOURCE)), _exact(get(ATTR_CODE)), _exact(get(ATTR_SUBCODE)),
            _exact(get(ATTR_MESSAGE)))
# What a span with a code resolved to: its output attributes, the series it counts and the
# lock they are counted under (CodebookMetrics.count_cells, inlined on the hot path).
_SpanHit = tuple[Mapping[str, str], CodeCells, threading.Lock]
# One codebook generation and its span hits, swapped together.
_SpanCache = tuple[Codebook, dict[_SpanKey, _SpanHit]]


class Enricher:
    """Holds the current :class:`Codebook` (swapped whole on reload) and the metrics.

    ``book=None`` loads the built-in mappings (unless ``builtin=False``) overlaid by
    ``mapping_dirs``; :meth:`reload` loads the same set again.

    Every method is thread-safe. ``enrich_span`` and ``point_labels`` are the hot path: they
    never raise and never block beyond a short lock inside the metrics.
    """

    def __init__(
        self,
        book: Codebook | None = None,
        metrics: CodebookMetrics | None = None,
        *,
        mapping_dirs: Sequence[str | Path] = (),
        builtin: bool = True,
    ) -> None:
        self.mapping_dirs = tuple(mapping_dirs)
        self.builtin = builtin
        self.metrics = metrics if metrics is not None else CodebookMetrics()
        self._book = (
            book if book is not None else load_codebook(self.mapping_dirs, builtin=self.builtin)
        )
        self._spans: _SpanCache = (self._book, {})
        self.metrics.set_codebook(self._book)
        self._reload_lock = threading.Lock()
        self._failed_once = False
        self._last_problems: tuple[str, ...] = ()

    @property
    def book(self) -> Codebook:
        """The codebook in use now."""
        return self._book

    def enrich_span(self, attributes: Mapping[str, object]) -> Mapping[str, str] | None:
        """Resolve and count a span's provider code; None when it carries none.

        Returns the output attributes to add (shared mapping: copy before mutating). A code
        seen before in this codebook generation costs one dict hit and the counter increment.
        """
        try:
            get = attributes.get
            key = (get(ATTR_SOURCE), get(ATTR_CODE), get(ATTR_SUBCODE), get(ATTR_MESSAGE))
            spans = self._spans
            try:
                hit = spans[1][key]
            except (KeyError, TypeError):
                if key[0] is None or key[1] is None:
                    return None
                hit = self._span_miss(spans, key)
            extra, cells, lock = hit
            lock.acquire()
            try:
                for cell in cells:
                    cell.value += 1
            finally:
                lock.release()
            return extra
        except Exception:
            self._internal_error("traces")
            return None

    def enrich_summary(self, attributes: Mapping[str, object]) -> Mapping[str, str] | None:
        """:meth:`enrich_span` without the count: for a span that summarises one of its own
        ``provider.result`` events (see :func:`result_identity`), which counts it."""
        try:
            get = attributes.get
            source, code = get(ATTR_SOURCE), get(ATTR_CODE)
            subcode, message = get(ATTR_SUBCODE), get(ATTR_MESSAGE)
        except Exception:  # a hostile mapping or key: counted, never raised
            self._internal_error("traces")
            return None
        return self.enrich_code(source, code, subcode, message, 0)

    def enrich_log(self, attributes: Mapping[str, object]) -> Mapping[str, str] | None:
        """:meth:`enrich_span` for a log record: the same result and count, through the same
        cache; an internal failure is counted under ``signal="logs"``."""
        try:
            get = attributes.get
            source, code = get(ATTR_SOURCE), get(ATTR_CODE)
            subcode, message = get(ATTR_SUBCODE), get(ATTR_MESSAGE)
        except Exception:  # a hostile mapping or key: counted, never raised
            self._internal_error("logs")
            return None
        return self.enrich_code(source, code, subcode, message, 1, "logs")

    def enrich_code(
        self,
        source: object,
        code: object,
        subcode: object,
        message: object,
        n: int,
        signal: str = "traces",
    ) -> Mapping[str, str] | None:
        """Resolve one provider code carried by ``n`` spans and count them all at once.

        For batches grouped by code (the sidecar's wire path); the same result and counts as
        ``n`` calls of :meth:`enrich_span`, through the same cache (which ``enrich_span``
        inlines, saving a call per span). None when source or code is missing. An internal
        failure is counted under ``signal`` (the items' signal: traces or logs).
        """
        try:
            key = (source, code, subcode, message)
            spans = self._spans
            try:
                hit = spans[1][key]
            except (KeyError, TypeError):
                if source is None or code is None:
                    return None
                hit = self._span_miss(spans, key)
            self.metrics.count_cells(hit[1], n)
            return hit[0]
        except Exception:
            self._internal_error(signal)
            return None

    def _span_miss(self, spans: _SpanCache, key: _SpanKey) -> _SpanHit:
        """Resolve ``key`` with the cache's own codebook; remember it when it is cacheable."""
        book, cache = spans
        source, code, subcode, message = key
        res = book.resolve(source, code, subcode, message)
        metrics = self.metrics
        cells = metrics.code_cells(book, res, source, code, subcode)
        hit = (res.attributes, cells, metrics.count_lock)
        if cacheable(source, code, subcode, message):
            if len(cache) >= SPAN_CACHE_SIZE:
                cache.clear()  # hostile or high-variety input: start over rather than grow
            cache[key] = hit
        return hit

    def point_labels(
        self, attributes: Mapping[str, object]
    ) -> tuple[Mapping[str, str], tuple[str, ...]] | None:
        """For a metric data point: (output attributes, bounded label values), or None."""
        try:
            source = attributes.get(ATTR_SOURCE)
            code = attributes.get(ATTR_CODE)
            if source is None or code is None:
                return None
            subcode = attributes.get(ATTR_SUBCODE)
            book = self._book
            res = book.resolve(source, code, subcode, attributes.get(ATTR_MESSAGE))
            return res.attributes, self.metrics.code_labels(book, res, code, subcode)
        except Exception:
            self._internal_error("metrics")
            return None

    def _internal_error(self, signal: str) -> None:
        if not self._failed_once:
            self._failed_once = True
            _log.exception("codebook: enrichment failed; the item passes through unenriched")
        self.metrics.telemetry_dropped(signal, "internal_error")

    def swap(self, book: Codebook) -> None:
        """Use ``book`` from now on (an already loaded and validated codebook)."""
        self._book = book
        # One assignment swaps the codebook and its span cache together: a miss resolved with
        # the old codebook can only land in the old cache.
        self._spans = (book, {})
        self.metrics.set_codebook(book)

    def reload(self) -> bool:
        """Reload the built-in mappings and ``mapping_dirs``; keep the old ones on failure.

        Returns True on success. A failure is logged once per distinct set of problems and
        counted in ``codebook_mapping_reloads_total{outcome="failure"}``.
        """
        with self._reload_lock:
            try:
                book = load_codebook(self.mapping_dirs, builtin=self.builtin)
            except MappingError as exc:
                self.metrics.reload_outcome(False)
                if exc.problems != self._last_problems:  # the same problems again: no new log
                    self._last_problems = exc.problems
                    _log.error(
                        "codebook: mapping reload failed; keeping the running mappings:\n%s",
                        "\n".join(exc.problems),
                    )
                return False
            except Exception:
                self.metrics.reload_outcome(False)
                _log.exception("codebook: mapping reload failed; keeping the running mappings")
                return False
            self.swap(book)
            self._last_problems = ()
            self.metrics.reload_outcome(True)
            _log.info("codebook: mappings reloaded (%d sources)", len(book.sources))
            return True
