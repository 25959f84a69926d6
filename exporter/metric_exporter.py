"""The metric exporter wrapper: data points carrying provider codes get Codebook attributes.

Wrap any push :class:`MetricExporter` (the OTLP one, the console one). Points with
``provider.source`` and ``provider.code`` are exported with the output attributes added and
are also exposed on Codebook's ``/metrics`` with the bounded code labels; everything else is
passed to the wrapped exporter unchanged (the same objects).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    Sum,
)

from .enrich import Enricher

_log = logging.getLogger(__name__)


def _stream_key(resource: object, scope: object, name: str, attributes: Any) -> object:
    try:
        return (id(resource), id(scope), name, frozenset(attributes.items()))
    except TypeError:  # list-valued attributes: fall back to their text
        return (id(resource), id(scope), name, repr(sorted(attributes.items())))


class CodebookMetricExporter(MetricExporter):
    """Enriches data points, then hands the batch to ``wrapped``.

    Called on the SDK's metric reader thread. Never raises from the enrichment step: a failure
    exports the original batch and is logged once and counted.
    """

    def __init__(self, wrapped: MetricExporter, enricher: Enricher | None = None) -> None:
        super().__init__(
            preferred_temporality=getattr(wrapped, "_preferred_temporality", None),
            preferred_aggregation=getattr(wrapped, "_preferred_aggregation", None),
        )
        self._wrapped = wrapped
        self.enricher = enricher if enricher is not None else Enricher()
        self._logged = False

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        try:
            data = self._enrich(metrics_data)
        except Exception:
            if not self._logged:
                self._logged = True
                _log.exception("codebook: metric enrichment failed; exporting unenriched")
            self.enricher.metrics.telemetry_dropped("metrics", "internal_error")
            data = metrics_data
        return self._wrapped.export(data, timeout_millis=timeout_millis, **kwargs)

    def _enrich(self, data: MetricsData) -> MetricsData:
        changed_rms = []
        any_change = False
        for rm in data.resource_metrics:
            changed_sms = []
            rm_change = False
            for sm in rm.scope_metrics:
                metrics = [self._metric(rm.resource, sm.scope, m) for m in sm.metrics]
                if any(new is not old for new, old in zip(metrics, sm.metrics, strict=True)):
                    rm_change = True
                    sm = dataclasses.replace(sm, metrics=metrics)
                changed_sms.append(sm)
            if rm_change:
                any_change = True
                rm = dataclasses.replace(rm, scope_metrics=changed_sms)
            changed_rms.append(rm)
        return MetricsData(resource_metrics=changed_rms) if any_change else data

    def _metric(self, resource: object, scope: object, metric: Metric) -> Metric:
        data = metric.data
        points: list[Any] = []
        changed = False
        monotonic = isinstance(data, Sum) and data.is_monotonic
        delta = getattr(data, "aggregation_temporality", None) == AggregationTemporality.DELTA
        record = self.enricher.metrics.record_point
        for point in data.data_points:
            found = self.enricher.point_labels(point.attributes or {})
            if found is None:
                points.append(point)
                continue
            extra, labels = found
            attrs = dict(point.attributes or {})
            attrs.update(extra)
            points.append(dataclasses.replace(point, attributes=attrs))
            changed = True
            value = getattr(point, "value", None)
            if isinstance(point, HistogramDataPoint):
                name, value, monotonic = f"{metric.name}_count", point.count, True
            else:
                name = metric.name
            if isinstance(data, (Sum, Gauge, Histogram)) and value is not None:
                record(
                    name,
                    monotonic_sum=monotonic,
                    labels=labels,
                    value=float(value),
                    delta=delta,
                    stream=_stream_key(resource, scope, metric.name, point.attributes),
                    additive=isinstance(data, Sum) and not data.is_monotonic,
                )
        if not changed:
            return metric
        new_data: Any = dataclasses.replace(data, data_points=points)  # type: ignore[arg-type]
        return dataclasses.replace(metric, data=new_data)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self._wrapped.force_flush(timeout_millis=timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._wrapped.shutdown(timeout_millis=timeout_millis, **kwargs)
