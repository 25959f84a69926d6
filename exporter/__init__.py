"""Codebook: classify messaging-provider status codes for OpenTelemetry and Prometheus.

The public API is what ``__all__`` lists; every other module is an implementation detail.
"""

from .codebook import Codebook, Resolution, load_codebook
from .enrich import Enricher
from .loader import MappingError
from .metric_exporter import CodebookMetricExporter
from .metrics import CodebookMetrics
from .processor import CodebookSpanProcessor
from .server import MetricsServer, make_wsgi_app, start_metrics_server
from .taxonomy import Category, Match, Owner, Retryable, Severity

__all__ = [
    "Category",
    "Codebook",
    "CodebookMetricExporter",
    "CodebookMetrics",
    "CodebookSpanProcessor",
    "Enricher",
    "MappingError",
    "Match",
    "MetricsServer",
    "Owner",
    "Resolution",
    "Retryable",
    "Severity",
    "load_codebook",
    "make_wsgi_app",
    "start_metrics_server",
]
