"""Codebook: classify messaging-provider status codes for OpenTelemetry and Prometheus.

The public API is what ``__all__`` lists; every other module is an implementation detail.
"""

from .codebook import Codebook, Resolution, load_codebook
from .enrich import Enricher
from .loader import MappingError
from .log_processor import CodebookLogRecordProcessor
from .metric_exporter import CodebookMetricExporter
from .metrics import CodebookMetrics
from .processor import CodebookSpanProcessor
from .reload import MappingWatcher
from .server import MetricsServer, make_asgi_app, make_wsgi_app, start_metrics_server
from .taxonomy import Category, Match, Owner, Retryable, Severity

__all__ = [
    "Category",
    "Codebook",
    "CodebookLogRecordProcessor",
    "CodebookMetricExporter",
    "CodebookMetrics",
    "CodebookSpanProcessor",
    "Enricher",
    "MappingError",
    "MappingWatcher",
    "Match",
    "MetricsServer",
    "Owner",
    "Resolution",
    "Retryable",
    "Severity",
    "load_codebook",
    "make_asgi_app",
    "make_wsgi_app",
    "start_metrics_server",
]
