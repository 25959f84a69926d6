"""The shared enrichment step: provider.* attributes in, output attributes and counts out.

The span processor, the metric exporter wrapper and the sidecar's OTLP receivers all call
one :class:`Enricher`, so a code is classified and counted the same way however it arrives.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from .codebook import ATTR_CODE, ATTR_MESSAGE, ATTR_SOURCE, ATTR_SUBCODE, Codebook, load_codebook
from .loader import MappingError
from .metrics import CodebookMetrics

_log = logging.getLogger(__name__)


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

        Returns the output attributes to add (shared mapping: copy before mutating).
        """
        try:
            source = attributes.get(ATTR_SOURCE)
            code = attributes.get(ATTR_CODE)
            if source is None or code is None:
                return None
            subcode = attributes.get(ATTR_SUBCODE)
            book = self._book
            res = book.resolve(source, code, subcode, attributes.get(ATTR_MESSAGE))
            self.metrics.count_code(book, res, source, code, subcode)
            return res.attributes
        except Exception:
            self._internal_error("traces")
            return None

    def enrich_code(
        self, source: object, code: object, subcode: object, message: object, n: int
    ) -> Mapping[str, str] | None:
        """Resolve one provider code carried by ``n`` spans and count them all at once.

        For batches grouped by code (the sidecar's wire path); the same result and counts as
        ``n`` calls of :meth:`enrich_span`. None when source or code is missing.
        """
        try:
            if source is None or code is None:
                return None
            book = self._book
            res = book.resolve(source, code, subcode, message)
            self.metrics.count_code(book, res, source, code, subcode, n)
            return res.attributes
        except Exception:
            self._internal_error("traces")
            return None

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
