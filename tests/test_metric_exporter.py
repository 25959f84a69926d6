"""The metric exporter wrapper in a real MeterProvider: enriched points, pass-through, counts."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.metrics import Observation
from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    MeterProvider,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry

from exporter import Codebook, CodebookMetricExporter, CodebookMetrics, Enricher, load_codebook

INPROC = Path(__file__).parent / "testdata" / "mappings_inproc"
CODE_LABELS = ("source", "code", "subcode", "category", "severity", "retryable", "owner")
THROTTLED = ("test.sms", "1", "", "throttled", "warning", "with_backoff", "our_app")
SUCCESS = ("test.sms", "0", "", "success", "info", "no", "none")
OUTPUT_THROTTLED = {
    "provider.category": "throttled",
    "provider.severity": "warning",
    "provider.retryable": "with_backoff",
    "provider.owner": "our_app",
    "provider.match": "exact",
    "error.type": "throttled",
}
DELTA: dict[type, AggregationTemporality] = {
    Counter: AggregationTemporality.DELTA,
    UpDownCounter: AggregationTemporality.CUMULATIVE,
    Histogram: AggregationTemporality.DELTA,
    ObservableCounter: AggregationTemporality.DELTA,
    ObservableUpDownCounter: AggregationTemporality.CUMULATIVE,
    ObservableGauge: AggregationTemporality.CUMULATIVE,
}
TEMPORALITIES = [pytest.param(None, id="cumulative"), pytest.param(DELTA, id="delta")]


class Collecting(MetricExporter):
    """A real push exporter that keeps every batch it is given (the downstream under test)."""

    def __init__(self, preferred_temporality: dict[type, AggregationTemporality] | None) -> None:
        super().__init__(preferred_temporality=preferred_temporality)
        self.batches: list[MetricsData] = []
        self.flushes = 0
        self.shutdowns = 0

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        self.batches.append(metrics_data)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        self.flushes += 1
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.shutdowns += 1


class Tap(MetricExporter):
    """Records the batch the SDK hands over, then passes it to the Codebook wrapper."""

    def __init__(self, inner: MetricExporter) -> None:
        super().__init__(preferred_temporality=inner._preferred_temporality)
        self.inner = inner
        self.batches: list[MetricsData] = []

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        self.batches.append(metrics_data)
        return self.inner.export(metrics_data, timeout_millis=timeout_millis)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.inner.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.inner.shutdown(timeout_millis=timeout_millis)


class ExplodingEnricher(Enricher):
    """An enricher whose data point path fails."""

    def point_labels(
        self, attributes: Mapping[str, object]
    ) -> tuple[Mapping[str, str], tuple[str, ...]] | None:
        raise RuntimeError("enricher is broken")


@pytest.fixture(scope="module")
def book() -> Codebook:
    return load_codebook([INPROC], builtin=False)


class MeterPipeline:
    """MeterProvider → PeriodicExportingMetricReader → Tap → CodebookMetricExporter → Collecting."""

    def __init__(
        self,
        book: Codebook,
        temporality: dict[type, AggregationTemporality] | None = None,
        enricher: Enricher | None = None,
    ) -> None:
        self.downstream = Collecting(temporality)
        self.enricher = enricher or Enricher(book, CodebookMetrics())
        self.metrics = self.enricher.metrics
        self.wrapper = CodebookMetricExporter(self.downstream, self.enricher)
        self.tap = Tap(self.wrapper)
        # math.inf: no background thread; exports happen exactly when the test flushes.
        self.reader = PeriodicExportingMetricReader(self.tap, export_interval_millis=math.inf)
        self.provider = MeterProvider(
            metric_readers=[self.reader],
            resource=Resource.create({"service.name": "inproc-test"}),
        )
        self.meter = self.provider.get_meter("tests.metric_exporter", "1.0")

    def flush(self) -> MetricsData:
        assert self.provider.force_flush()
        return self.downstream.batches[-1]

    def app(self, name: str, labels: tuple[str, ...]) -> float | None:
        return self.metrics.value(name, dict(zip(CODE_LABELS, labels, strict=True)))


@pytest.fixture
def pipe(book: Codebook) -> Iterator[MeterPipeline]:
    p = MeterPipeline(book)
    yield p
    p.provider.shutdown()


def _points(data: MetricsData) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                out.setdefault(m.name, []).extend(m.data.data_points)
    return out


def _metrics(data: MetricsData) -> dict[str, Any]:
    return {
        m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
    }


def test_points_with_codes_get_output_attributes(pipe: MeterPipeline) -> None:
    """A data point with provider.source and provider.code is exported with the outputs added."""
    sent = pipe.meter.create_counter("sms.sent")
    attrs = {"provider.source": "test.sms", "provider.code": "1", "region": "eu"}
    sent.add(1, attrs)
    (point,) = _points(pipe.flush())["sms.sent"]
    assert dict(point.attributes) == {**attrs, **OUTPUT_THROTTLED}


def test_batch_without_codes_is_the_same_object(pipe: MeterPipeline) -> None:
    """A batch with no provider codes reaches downstream as the very same MetricsData."""
    pipe.meter.create_counter("http.requests").add(3, {"route": "/x"})
    pipe.meter.create_histogram("latency").record(0.2)
    pipe.flush()
    assert pipe.downstream.batches[-1] is pipe.tap.batches[-1]


def test_unrelated_metrics_and_points_are_the_same_objects(pipe: MeterPipeline) -> None:
    """In a mixed batch, metrics and points without codes are passed on as the same objects."""
    pipe.meter.create_counter("http.requests").add(3, {"route": "/x"})
    sent = pipe.meter.create_counter("sms.sent")
    sent.add(1, {"provider.source": "test.sms", "provider.code": "1"})
    sent.add(1, {"region": "eu"})
    pipe.flush()
    before, after = _metrics(pipe.tap.batches[-1]), _metrics(pipe.downstream.batches[-1])
    assert after["http.requests"] is before["http.requests"]
    assert after["sms.sent"] is not before["sms.sent"]
    plain_before = [p for p in before["sms.sent"].data.data_points if "region" in p.attributes]
    plain_after = [p for p in after["sms.sent"].data.data_points if "region" in p.attributes]
    assert plain_after[0] is plain_before[0]
    assert dict(before["sms.sent"].data.data_points[0].attributes).get("provider.category") is None


@pytest.mark.parametrize("temporality", TEMPORALITIES)
def test_app_counter_exact_across_exports(
    book: Codebook, temporality: dict[type, AggregationTemporality] | None
) -> None:
    """A monotonic counter shows its exact total on /metrics under delta and cumulative."""
    pipe = MeterPipeline(book, temporality)
    sent = pipe.meter.create_counter("sms.sent")
    # Two streams (phone numbers) that fold into one Codebook series; phones never become labels.
    phone1: dict[str, str | int] = {
        "provider.source": "test.sms", "provider.code": "1", "to": "+15551230001"
    }
    phone2 = {**phone1, "to": "+15551230002"}
    ok: dict[str, str | int] = {
        "provider.source": "test.sms", "provider.code": 0, "to": "+15551230001"
    }
    sent.add(2, phone1)
    sent.add(3, phone2)
    sent.add(10, ok)
    pipe.flush()
    assert pipe.app("sms_sent_total", THROTTLED) == 5.0
    sent.add(1, phone1)
    pipe.flush()
    pipe.flush()  # nothing new: the total must not move
    assert pipe.app("sms_sent_total", THROTTLED) == 6.0
    assert pipe.app("sms_sent_total", SUCCESS) == 10.0
    text = pipe.metrics.render().decode()
    assert "# TYPE sms_sent_total counter" in text
    assert "+1555" not in text
    registry = CollectorRegistry()
    registry.register(pipe.metrics.collector())
    assert registry.get_sample_value(
        "sms_sent_total", dict(zip(CODE_LABELS, THROTTLED, strict=True))
    ) == 6.0
    pipe.provider.shutdown()


@pytest.mark.parametrize("temporality", TEMPORALITIES)
def test_app_histogram_count_exact(
    book: Codebook, temporality: dict[type, AggregationTemporality] | None
) -> None:
    """A histogram with codes is exposed as its observation count, exact across exports."""
    pipe = MeterPipeline(book, temporality)
    latency = pipe.meter.create_histogram("sms.send.duration", unit="s")
    attrs = {"provider.source": "test.sms", "provider.code": "1"}
    for v in (0.1, 0.2, 0.3):
        latency.record(v, attrs)
    pipe.flush()
    latency.record(0.4, attrs)
    pipe.flush()
    assert pipe.app("sms_send_duration_count_total", THROTTLED) == 4.0
    pipe.provider.shutdown()


def test_app_gauge_last_value(pipe: MeterPipeline) -> None:
    """A gauge with codes is exposed with its last value."""
    values = iter([7.0, 4.0])

    def observe(_options: object) -> list[Observation]:
        return [Observation(next(values), {"provider.source": "test.sms", "provider.code": "1"})]

    pipe.meter.create_observable_gauge("sms.queue.depth", callbacks=[observe])
    pipe.flush()
    assert pipe.app("sms_queue_depth", THROTTLED) == 7.0
    pipe.flush()
    assert pipe.app("sms_queue_depth", THROTTLED) == 4.0
    assert "# TYPE sms_queue_depth gauge" in pipe.metrics.render().decode()


def test_app_updown_counter_sums_folded_streams(pipe: MeterPipeline) -> None:
    """An up-down counter whose streams fold into one label set shows their sum."""
    in_flight = pipe.meter.create_up_down_counter("sms.in_flight")
    base = {"provider.source": "test.sms", "provider.code": "1"}
    in_flight.add(5, {**base, "to": "+15551230001"})
    in_flight.add(3, {**base, "to": "+15551230002"})
    pipe.flush()
    assert pipe.app("sms_in_flight", THROTTLED) == 8.0


def test_span_codes_not_counted_by_metric_points(pipe: MeterPipeline) -> None:
    """Data points do not increment provider_codes_total (that counts spans only)."""
    pipe.meter.create_counter("sms.sent").add(1, {"provider.source": "test.sms",
                                                  "provider.code": "1"})
    pipe.flush()
    assert not pipe.app("provider_codes_total", THROTTLED)  # absent, or the mapped code's zero


def test_force_flush_and_shutdown_reach_wrapped(pipe: MeterPipeline) -> None:
    """force_flush and shutdown are passed to the wrapped exporter; temporality is inherited."""
    assert pipe.wrapper.force_flush(1000) is True
    assert pipe.downstream.flushes == 1
    pipe.provider.shutdown()
    assert pipe.downstream.shutdowns == 1
    wrapped = CodebookMetricExporter(Collecting(DELTA), Enricher(load_codebook([INPROC],
                                                                               builtin=False)))
    assert wrapped._preferred_temporality == DELTA


def test_failing_enricher_exports_original_batch_and_counts(book: Codebook) -> None:
    """An enrichment failure exports the batch unchanged and counts it; export never raises."""
    metrics = CodebookMetrics()
    pipe = MeterPipeline(book, enricher=ExplodingEnricher(book, metrics))
    pipe.meter.create_counter("sms.sent").add(1, {"provider.source": "test.sms",
                                                  "provider.code": "1"})
    pipe.flush()
    assert pipe.downstream.batches[-1] is pipe.tap.batches[-1]
    dropped = {"signal": "metrics", "reason": "internal_error"}
    assert metrics.value("codebook_telemetry_dropped_total", dropped) == 1.0
    pipe.provider.shutdown()


def test_hostile_point_attributes_never_raise(pipe: MeterPipeline) -> None:
    """Huge, unicode and list-valued point attributes are enriched without raising."""
    sent = pipe.meter.create_counter("sms.sent")
    codes: list[str | tuple[int, ...] | float | bool | int] = [
        "x" * 100_000, "\u202e💥\n\"}", (1, 2), 3.5, True, -(10**30)
    ]
    for code in codes:
        sent.add(1, {"provider.source": "test.sms", "provider.code": code})
    sent.add(1, {"provider.source": ("test.sms",), "provider.code": "1"})
    pipe.flush()
    text = pipe.metrics.render().decode()
    assert "xxxxxxxxxx" not in text and "💥" not in text and "\u202e" not in text
    assert len(_points(pipe.downstream.batches[-1])["sms.sent"]) == 7
