"""Zero-code setup for ``opentelemetry-instrument``.

Set ``OTEL_PYTHON_CONFIGURATOR=codebook``: the SDK is configured as usual, every exporting
span processor gets a :class:`CodebookSpanProcessor` in front of it, every exporting log record
processor (when logs are enabled with ``OTEL_LOGS_EXPORTER``) a
:class:`CodebookLogRecordProcessor`, and ``/metrics`` is served. For metrics, pick a
wrapping exporter, e.g. ``OTEL_METRICS_EXPORTER=codebook_otlp_proto_grpc`` (or
``codebook_otlp_proto_http``, ``codebook_console``). Settings (environment):

- ``CODEBOOK_MAPPINGS``: extra mapping folders, separated by ``os.pathsep``;
- ``CODEBOOK_METRICS_ADDR`` / ``CODEBOOK_METRICS_PORT``: where ``/metrics`` listens
  (default 127.0.0.1:9464; port ``off`` disables it);
- ``CODEBOOK_WATCH_SECONDS``: poll the mapping files and reload on change (default off).
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
from typing import Any

from opentelemetry.sdk import _configuration
from opentelemetry.sdk._configuration import _OTelSDKConfigurator
from opentelemetry.sdk._logs import LogRecordProcessor
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, MetricExporter
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from .enrich import Enricher
from .log_processor import CodebookLogRecordProcessor
from .metric_exporter import CodebookMetricExporter
from .processor import CodebookSpanProcessor
from .reload import MappingWatcher
from .server import MetricsServer, start_metrics_server

_log = logging.getLogger(__name__)
_lock = threading.Lock()
_enricher: Enricher | None = None
_server: MetricsServer | None = None
_watcher: MappingWatcher | None = None


def shared_enricher() -> Enricher:
    """The process-wide enricher of the zero-code setup, created on first use."""
    global _enricher
    with _lock:
        if _enricher is None:
            dirs = [d for d in os.environ.get("CODEBOOK_MAPPINGS", "").split(os.pathsep) if d]
            _enricher = Enricher(mapping_dirs=dirs)
        return _enricher


def _start_services(enricher: Enricher) -> None:
    global _server, _watcher
    port = os.environ.get("CODEBOOK_METRICS_PORT", "9464").strip().lower()
    if _server is None and port not in ("off", "none", ""):
        addr = os.environ.get("CODEBOOK_METRICS_ADDR", "127.0.0.1")
        try:
            _server = start_metrics_server(enricher.metrics, int(port), addr)
            _log.info("codebook: serving %s", _server.url)
        except (OSError, ValueError) as exc:
            _log.error("codebook: cannot serve /metrics on %s:%s: %s", addr, port, exc)
    watch = os.environ.get("CODEBOOK_WATCH_SECONDS", "").strip()
    if _watcher is None and watch:
        try:
            _watcher = MappingWatcher(enricher, float(watch)).start()
        except ValueError:
            _log.error("codebook: CODEBOOK_WATCH_SECONDS=%r is not a number", watch)


class CodebookConfigurator(_OTelSDKConfigurator):
    """The SDK's default configuration with Codebook in front of every exporting processor."""

    def _configure(self, **kwargs: Any) -> None:
        enricher = shared_enricher()

        def export_processor(exporter: SpanExporter) -> SpanProcessor:
            return CodebookSpanProcessor(BatchSpanProcessor(exporter), enricher)

        def export_log_processor(exporter: Any) -> LogRecordProcessor:  # a LogRecordExporter
            return CodebookLogRecordProcessor(BatchLogRecordProcessor(exporter), enricher)

        if _TAKES_SPAN_PROCESSOR:
            kwargs.setdefault("export_span_processor", export_processor)
        if _TAKES_LOG_PROCESSOR:
            kwargs.setdefault("export_log_record_processor", export_log_processor)
        super()._configure(**kwargs)  # type: ignore[no-untyped-call]
        if not _TAKES_SPAN_PROCESSOR:
            _wrap_span_processors(enricher)
        if not _TAKES_LOG_PROCESSOR:
            _wrap_log_processors(enricher)
        _start_services(enricher)


# Whether this SDK's configuration takes factories for the exporting span and log record
# processors. Older SDKs (down to the 1.30 floor) do not: their processors are wrapped after
# the SDK built them.
_CONFIG_PARAMETERS = inspect.signature(_configuration._initialize_components).parameters
_TAKES_SPAN_PROCESSOR = "export_span_processor" in _CONFIG_PARAMETERS
_TAKES_LOG_PROCESSOR = "export_log_record_processor" in _CONFIG_PARAMETERS


def _wrap_span_processors(enricher: Enricher) -> None:
    """SDKs without the factory: put Codebook in front of the configured span processors."""
    from opentelemetry import trace

    multi = getattr(trace.get_tracer_provider(), "_active_span_processor", None)
    processors = getattr(multi, "_span_processors", None)
    if not isinstance(processors, tuple):
        _log.warning("codebook: cannot wrap this SDK's span processors; spans unclassified")
        return
    multi._span_processors = tuple(  # type: ignore[union-attr]
        p if isinstance(p, CodebookSpanProcessor) else CodebookSpanProcessor(p, enricher)
        for p in processors
    )


def _wrap_log_processors(enricher: Enricher) -> None:
    """SDKs without the factory: put Codebook in front of the configured log processors."""
    from opentelemetry._logs import get_logger_provider

    multi = getattr(get_logger_provider(), "_multi_log_record_processor", None)
    processors = getattr(multi, "_log_record_processors", None)
    if not isinstance(processors, tuple):
        _log.warning("codebook: cannot wrap this SDK's log record processors; logs unclassified")
        return
    multi._log_record_processors = tuple(  # type: ignore[union-attr]
        p if isinstance(p, CodebookLogRecordProcessor) else CodebookLogRecordProcessor(p, enricher)
        for p in processors
    )


def _wrapping(name: str, make: Any) -> type[CodebookMetricExporter]:
    def __init__(self: CodebookMetricExporter, **kwargs: Any) -> None:
        CodebookMetricExporter.__init__(self, make(**kwargs), shared_enricher())

    return type(name, (CodebookMetricExporter,), {"__init__": __init__, "__doc__":
                f"{name}: Codebook around {getattr(make, '__name__', make)}."})


def _otlp_grpc(**kwargs: Any) -> MetricExporter:
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

    return OTLPMetricExporter(**kwargs)


def _otlp_http(**kwargs: Any) -> MetricExporter:
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    return OTLPMetricExporter(**kwargs)


CodebookOTLPGrpcMetricExporter = _wrapping("CodebookOTLPGrpcMetricExporter", _otlp_grpc)
CodebookOTLPHttpMetricExporter = _wrapping("CodebookOTLPHttpMetricExporter", _otlp_http)
CodebookConsoleMetricExporter = _wrapping("CodebookConsoleMetricExporter", ConsoleMetricExporter)
