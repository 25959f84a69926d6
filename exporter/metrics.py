"""Prometheus state of Codebook: code counters, the info metric, self-metrics, app metrics.

Everything is kept in plain dicts of pre-rendered series so that counting is one dict hit and
``/metrics`` is one join: no per-scrape label escaping, no ``_created`` series. All label
values come from closed enums, the mappings, or a bounded set of raw codes per source.
:meth:`CodebookMetrics.collector` adapts the same state to a ``prometheus_client`` registry.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from .codebook import cacheable
from .keys import normalize_code

if TYPE_CHECKING:
    from .codebook import Codebook, Resolution

OTHER = "_OTHER"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
CODE_LABELS = ("source", "code", "subcode", "category", "severity", "retryable", "owner")
INFO_LABELS = ("source", "code", "subcode", "description")
MAX_INFO_DESCRIPTION_CHARS = 300
MAX_APP_METRIC_FAMILIES = 200

# A raw code that no mapping knows is kept as a label value only when it looks like a code:
# a short integer or identifier. Phone numbers, tokens and free text never qualify.
_RAW_CODE = re.compile(r"-?\d{1,9}|[A-Za-z][A-Za-z0-9_.\-]{0,31}")
_METRIC_NAME_BAD = re.compile(r"[^a-zA-Z0-9_:]")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value)}.0"
    return repr(value)


class _Series:
    """One time series: its rendered ``name{labels} `` prefix and its value."""

    __slots__ = ("labels", "prefix", "value")

    def __init__(self, name: str, names: tuple[str, ...], labels: tuple[str, ...]) -> None:
        self.labels = labels
        inner = ",".join(f'{n}="{_escape(v)}"' for n, v in zip(names, labels, strict=True))
        self.prefix = f"{name}{{{inner}}} " if inner else f"{name} "
        self.value = 0.0


# The series one span with a given code increments (opaque outside this module).
CodeCells = tuple[_Series, ...]


@dataclass
class _Family:
    name: str
    kind: str  # counter | gauge
    help: str
    labelnames: tuple[str, ...]
    series: dict[tuple[str, ...], _Series] = field(default_factory=dict)

    def header(self) -> str:
        return f"# HELP {self.name} {self.help}\n# TYPE {self.name} {self.kind}\n"

    def child(self, labels: tuple[str, ...]) -> _Series:
        s = self.series.get(labels)
        if s is None:
            s = self.series.setdefault(labels, _Series(self.name, self.labelnames, labels))
        return s


@dataclass
class _AppFamily:
    family: _Family
    monotonic: bool
    last: dict[object, float] = field(default_factory=dict)


class CodebookMetrics:
    """All Prometheus state of Codebook. Thread-safe; every method is cheap and never raises.

    ``max_unmapped_codes_per_source`` bounds the raw code (and subcode) values kept per source
    before they fold into ``_OTHER``; ``max_series`` bounds the series of code counters and
    app metrics together. ``render()`` returns the text exposition format.

    ``zero_series`` (default on) publishes every mapped code's counter at 0 as soon as the
    mappings load: Prometheus's ``increase()`` cannot see a series' first sample, so without
    this the first critical code after a restart would never alert.
    """

    CONTENT_TYPE = CONTENT_TYPE

    def __init__(
        self,
        *,
        max_unmapped_codes_per_source: int = 50,
        max_series: int = 10_000,
        zero_series: bool = True,
    ) -> None:
        self.zero_series = zero_series
        self.max_unmapped_codes_per_source = max(0, max_unmapped_codes_per_source)
        self.max_series = max(1, max_series)
        self._lock = threading.Lock()
        self._raw_seen: dict[tuple[str, str], set[str]] = {}
        self._cells: dict[tuple[object, ...], tuple[_Series, ...]] = {}
        self._codes = _Family(
            "provider_codes_total",
            "counter",
            "Provider status codes seen on spans, classified by Codebook.",
            CODE_LABELS,
        )
        self._info = _Family(
            "provider_code_info",
            "gauge",
            "What each mapped provider code means (value is always 1).",
            INFO_LABELS,
        )
        self._unmapped = _Family(
            "codebook_unmapped_codes_total",
            "counter",
            "Spans whose provider code has no mapping.",
            ("source",),
        )
        self._reloads = _Family(
            "codebook_mapping_reloads_total",
            "counter",
            "Mapping reloads by outcome (the first load is not counted).",
            ("outcome",),
        )
        self._reload_ok = _Family(
            "codebook_mapping_last_reload_successful",
            "gauge",
            "1 when the last mapping (re)load succeeded, else 0.",
            (),
        )
        self._entries = _Family(
            "codebook_mapping_entries",
            "gauge",
            "Mapping entries and class rules loaded, by source.",
            ("source",),
        )
        self._overflow = _Family(
            "codebook_cardinality_overflow_total",
            "counter",
            "Label values folded into _OTHER because a limit was reached.",
            ("source", "limit"),
        )
        self._received = _Family(
            "codebook_telemetry_received_total",
            "counter",
            "Spans, data points and log records received.",
            ("signal", "transport"),
        )
        self._rejected = _Family(
            "codebook_telemetry_rejected_total",
            "counter",
            "Telemetry items rejected, by reason.",
            ("signal", "transport", "reason"),
        )
        self._forwarded = _Family(
            "codebook_telemetry_forwarded_total",
            "counter",
            "Telemetry items forwarded upstream.",
            ("signal",),
        )
        self._dropped = _Family(
            "codebook_telemetry_dropped_total",
            "counter",
            "Telemetry items dropped after being accepted, by reason.",
            ("signal", "reason"),
        )
        self._webhook_requests = _Family(
            "codebook_webhook_requests_total",
            "counter",
            "Webhook requests by route and outcome (accepted, duplicate, rejected kinds, ...).",
            ("route", "outcome"),
        )
        self._webhook_events = _Family(
            "codebook_webhook_events_total",
            "counter",
            "Webhook events by route and outcome (accepted, duplicate, ignored, malformed).",
            ("route", "outcome"),
        )
        self._queue_items = _Family(
            "codebook_forward_queue_items",
            "gauge",
            "Telemetry items waiting in the forward queue (including the request being sent).",
            ("signal",),
        )
        self._queue_bytes = _Family(
            "codebook_forward_queue_bytes",
            "gauge",
            "Serialized bytes waiting in the forward queue.",
            ("signal",),
        )
        self._redelivered = _Family(
            "codebook_forward_redelivered_total",
            "counter",
            "Items replayed from the persistent queue after a restart that may already have "
            "reached the upstream (the request in flight when the process ended).",
            ("signal",),
        )
        self._self = (
            self._unmapped,
            self._reloads,
            self._reload_ok,
            self._entries,
            self._overflow,
            self._received,
            self._rejected,
            self._forwarded,
            self._dropped,
            self._webhook_requests,
            self._webhook_events,
            self._queue_items,
            self._queue_bytes,
            self._redelivered,
        )
        self._apps: dict[str, _AppFamily] = {}
        self._reload_ok.child(()).value = 1.0
        for outcome in ("success", "failure"):  # so rate() and alerts see a zero, not nothing
            self._reloads.child((outcome,))

    # -- provider codes ----------------------------------------------------------------------

    def count_code(
        self,
        book: Codebook,
        res: Resolution,
        source: object,
        code: object,
        subcode: object,
        n: int = 1,
    ) -> None:
        """Count ``n`` spans carrying one provider code (``res`` is what ``book`` resolved)."""
        self.count_cells(self.code_cells(book, res, source, code, subcode), n)

    def code_cells(
        self, book: Codebook, res: Resolution, source: object, code: object, subcode: object
    ) -> CodeCells:
        """The series :meth:`count_code` increments; never removed, so a caller may keep them."""
        try:
            return self._cells[(res, source, code, subcode)]
        except (KeyError, TypeError):
            return self._code_cells(book, res, source, code, subcode)

    def count_cells(self, cells: CodeCells, n: int = 1) -> None:
        """Add ``n`` to series :meth:`code_cells` returned: the per-span counting step."""
        # acquire/release, not ``with``: the context manager protocol costs as much again.
        lock = self._lock
        lock.acquire()
        try:
            for cell in cells:
                cell.value += n
        finally:
            lock.release()

    @property
    def count_lock(self) -> threading.Lock:
        """The lock :meth:`count_cells` holds; a hot path that inlines it must hold it too."""
        return self._lock

    def _code_cells(
        self, book: Codebook, res: Resolution, source: object, code: object, subcode: object
    ) -> tuple[_Series, ...]:
        """The series one span increments: its code series, and the unmapped counter if so."""
        cells: tuple[_Series, ...] = (self._code_cell(book, res, source, code, subcode),)
        if res.source is None or res.match == "unmapped":
            with self._lock:
                cells += (self._unmapped.child((res.source or OTHER,)),)
        if cacheable(source, code, subcode):
            if len(self._cells) >= 4 * self.max_series:
                self._cells = {}  # hostile variety: start over rather than grow
            self._cells[(res, source, code, subcode)] = cells
        return cells

    def code_labels(
        self, book: Codebook, res: Resolution, code: object, subcode: object
    ) -> tuple[str, ...]:
        """The bounded ``provider_codes_total`` label values for one resolution."""
        src = res.source
        if src is None:
            return (OTHER, OTHER, "", *_outcome(res))
        rule = res.rule
        c = rule.code if rule is not None and rule.code and not rule.pattern else None
        s = rule.subcode if rule is not None and rule.subcode else None
        if c is None:
            # Codes a class rule matched (503 by 5xx) have a budget apart from unmapped ones.
            kind = "class_codes" if res.match == "class" else "unmapped_codes"
            c = self._bounded(src, kind, normalize_code(code))
        if s is None:
            raw_sub = normalize_code(subcode)
            s = "" if raw_sub is None else self._bounded(src, "unmapped_subcodes", raw_sub)
        return (src, c, s, *_outcome(res))

    def _bounded(self, source: str, kind: str, value: str | None) -> str:
        if value is None or not _RAW_CODE.fullmatch(value):
            return OTHER
        with self._lock:
            seen = self._raw_seen.setdefault((source, kind), set())
            if value in seen:
                return value
            if len(seen) < self.max_unmapped_codes_per_source:
                seen.add(value)
                return value
            self._overflow.child((source, kind)).value += 1
        return OTHER

    def _code_cell(
        self, book: Codebook, res: Resolution, source: object, code: object, subcode: object
    ) -> _Series:
        labels = self.code_labels(book, res, code, subcode)
        with self._lock:
            cell = self._codes.series.get(labels)
            if cell is not None:
                return cell
            if self._series_count() >= self.max_series:
                self._overflow.child((labels[0], "series")).value += 1
                labels = (labels[0], OTHER, OTHER, *labels[3:])
            return self._codes.child(labels)

    def _series_count(self) -> int:
        return len(self._codes.series) + sum(len(a.family.series) for a in self._apps.values())

    def set_codebook(self, book: Codebook) -> None:
        """Publish the info metric and entry counts of a (newly loaded) codebook."""
        info: dict[tuple[str, str, str], list[str]] = {}
        for rule in book.rules():
            code = rule.pattern or rule.code
            info.setdefault((rule.source, code, rule.subcode), []).append(rule.description)
        fresh = _Family(self._info.name, "gauge", self._info.help, INFO_LABELS)
        for (src, code, sub), descriptions in info.items():
            text = " | ".join(dict.fromkeys(descriptions))[:MAX_INFO_DESCRIPTION_CHARS]
            fresh.child((src, code, sub, text)).value = 1.0
        entries = _Family(self._entries.name, "gauge", self._entries.help, ("source",))
        for src in book.sources:
            table = book.tables[src]
            entries.child((src,)).value = float(len(table.entries) + len(table.classes))
        with self._lock:
            self._info.series = fresh.series
            self._entries.series = entries.series
            if self.zero_series:
                for rule in book.rules():
                    if rule.code and not rule.pattern and self._series_count() < self.max_series:
                        outcome = (rule.category.value, rule.severity.value,
                                   rule.retryable.value, rule.owner.value)
                        self._codes.child((rule.source, rule.code, rule.subcode, *outcome))

    # -- self-metrics --------------------------------------------------------------------

    def reload_outcome(self, success: bool) -> None:
        """Count a mapping (re)load by outcome."""
        with self._lock:
            self._reloads.child(("success" if success else "failure",)).value += 1
            self._reload_ok.child(()).value = 1.0 if success else 0.0

    def telemetry_received(self, signal: str, transport: str, n: int = 1) -> None:
        """Count spans, data points or log records received."""
        self._add(self._received, (signal, transport), n)

    def telemetry_rejected(self, signal: str, transport: str, reason: str, n: int = 1) -> None:
        """Count items rejected before acceptance (malformed, too_large, overloaded, ...)."""
        self._add(self._rejected, (signal, transport, reason), n)

    def telemetry_forwarded(self, signal: str, n: int = 1) -> None:
        """Count items delivered upstream."""
        self._add(self._forwarded, (signal,), n)

    def telemetry_dropped(self, signal: str, reason: str, n: int = 1) -> None:
        """Count items lost after acceptance (queue_full, upstream_error, internal_error, ...)."""
        self._add(self._dropped, (signal, reason), n)

    def webhook_request(self, route: str, outcome: str) -> None:
        """Count one webhook request (``route`` and ``outcome`` are closed sets)."""
        self._add(self._webhook_requests, (route, outcome), 1)

    def webhook_events(self, route: str, outcome: str, n: int = 1) -> None:
        """Count ``n`` webhook events of one outcome (``route`` and ``outcome`` are closed sets)."""
        if n:
            self._add(self._webhook_events, (route, outcome), n)
    def forward_account(
        self,
        signal: str,
        *,
        queued: int = 0,
        queued_bytes: int = 0,
        forwarded: int = 0,
        dropped: tuple[str, int] | None = None,
        received: tuple[str, int] | None = None,
        rejected: tuple[str, str, int] | None = None,
        redelivered: int = 0,
    ) -> None:
        """Move items between the forwarder's states in one step, as one scrape sees it.

        Deltas: ``queued``/``queued_bytes`` to the queue gauges, ``forwarded`` and
        ``dropped`` (reason, n) to the counters, ``received`` (transport, n) and ``rejected``
        (transport, reason, n) to the intake counters. Applied under the lock
        :meth:`render` snapshots under, so ``received - rejected = forwarded + dropped +
        queued`` holds at every scrape.
        """
        with self._lock:
            if received is not None and received[1]:
                self._received.child((signal, received[0])).value += received[1]
            if rejected is not None and rejected[2]:
                self._rejected.child((signal, rejected[0], rejected[1])).value += rejected[2]
            if queued or queued_bytes or (signal,) not in self._queue_items.series:
                self._queue_items.child((signal,)).value += queued
                self._queue_bytes.child((signal,)).value += queued_bytes
            if forwarded:
                self._forwarded.child((signal,)).value += forwarded
            if dropped is not None and dropped[1]:
                self._dropped.child((signal, dropped[0])).value += dropped[1]
            if redelivered:
                self._redelivered.child((signal,)).value += redelivered

    def _add(self, family: _Family, labels: tuple[str, ...], n: float) -> None:
        with self._lock:
            family.child(labels).value += n

    # -- app metrics carrying provider codes --------------------------------------------

    def record_point(
        self,
        name: str,
        *,
        monotonic_sum: bool,
        labels: tuple[str, ...],
        value: float,
        stream: object,
        delta: bool,
        additive: bool = False,
    ) -> None:
        """Fold one app data point (already labelled by the codebook) into ``/metrics``.

        Several original streams (attribute sets) may fold into one label set. Monotonic sums
        become counters: delta points add, cumulative points add their growth since the last
        point of the same ``stream`` (a drop is a reset). ``additive`` (up-down counters) are
        gauges holding the sum of their streams. Anything else is a gauge of the last value.
        """
        app = self._apps.get(name)
        if app is None:
            app = self._app_family(name, monotonic_sum)
            if app is None:
                return
        with self._lock:
            series = app.family.series.get(labels)
            if series is None:
                if self._series_count() >= self.max_series:
                    self._overflow.child((labels[0], "series")).value += 1
                    return
                series = app.family.child(labels)
            if not (app.monotonic or additive):
                series.value = value
            elif delta:
                series.value += value
            else:
                if stream not in app.last and len(app.last) >= self.max_series:
                    self._overflow.child((labels[0], "series")).value += 1
                    return
                prev = app.last.get(stream)
                app.last[stream] = value
                if prev is None:
                    series.value += value
                elif app.monotonic and value < prev:
                    series.value += value  # the stream restarted from zero
                else:
                    series.value += value - prev

    def _app_family(self, otel_name: str, monotonic: bool) -> _AppFamily | None:
        name = _METRIC_NAME_BAD.sub("_", otel_name)[:200] or "_"
        if name[0].isdigit():
            name = "_" + name
        if monotonic and not name.endswith("_total"):
            name += "_total"
        reserved = {f.name for f in (self._codes, self._info, *self._self)}
        with self._lock:
            if otel_name in self._apps:
                return self._apps[otel_name]
            if (
                name in reserved
                or len(self._apps) >= MAX_APP_METRIC_FAMILIES
                or any(a.family.name == name for a in self._apps.values())
            ):
                self._overflow.child((OTHER, "metric_families")).value += 1
                return None
            family = _Family(
                name,
                "counter" if monotonic else "gauge",
                f"App metric {otel_name!r} with Codebook labels.",
                CODE_LABELS,
            )
            app = self._apps[otel_name] = _AppFamily(family, monotonic)
            return app

    # -- exposition ----------------------------------------------------------------------

    def _families(self) -> list[_Family]:
        return [self._codes, self._info, *(a.family for a in self._apps.values()), *self._self]

    def render(self) -> bytes:
        """The text exposition (format 0.0.4) of every Codebook metric."""
        with self._lock:  # values too: one consistent snapshot (see forward_account)
            snapshot = [
                (f, [(s.prefix, s.value) for s in f.series.values()]) for f in self._families()
            ]
        parts: list[str] = []
        for family, series in snapshot:
            parts.append(family.header())
            parts.extend([f"{prefix}{_fmt(value)}\n" for prefix, value in series])
        return "".join(parts).encode()

    def value(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        """The current value of one series (for tests and the CLI), or None."""
        for family in self._families():
            if family.name == name:
                key = tuple((labels or {}).get(n, "") for n in family.labelnames)
                s = family.series.get(key)
                return None if s is None else s.value
        return None

    def collector(self) -> _Collector:
        """A ``prometheus_client`` collector over the same state, for an existing registry."""
        return _Collector(self)


def _outcome(res: Resolution) -> tuple[str, str, str, str]:
    return (res.category.value, res.severity.value, res.retryable.value, res.owner.value)


class _Collector:
    """Adapts :class:`CodebookMetrics` to ``prometheus_client``'s collector protocol."""

    def __init__(self, metrics: CodebookMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self._metrics
        with m._lock:
            snapshot = [(f, list(f.series.values())) for f in m._families()]
        for family, series in snapshot:
            make: Callable[..., Metric]
            if family.kind == "counter":
                make = CounterMetricFamily
                base = family.name.removesuffix("_total")
            else:
                make = GaugeMetricFamily
                base = family.name
            metric = make(base, family.help, labels=list(family.labelnames))
            for s in series:
                metric.add_metric(list(s.labels), s.value)
            yield metric

    def describe(self) -> Iterable[Metric]:
        return []
