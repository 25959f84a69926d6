"""Codebook: classify messaging-provider status codes for OpenTelemetry and Prometheus.

The public API is what ``__all__`` lists; every other module is an implementation detail.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("codebook-exporter")  # the installed package's own version
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

from .codebook import Codebook, Resolution, load_codebook
from .enrich import Enricher
from .loader import MappingError
from .log_processor import CodebookLogRecordProcessor
from .metric_exporter import CodebookMetricExporter
from .metrics import CodebookMetrics
from .processor import CodebookSpanProcessor
from .reload import MappingWatcher
from .server import MetricsServer, make_asgi_app, make_wsgi_app, start_metrics_server
from .sidecar.webhook import make_webhook_asgi_app, make_webhook_wsgi_app
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
    "__version__",
    "load_codebook",
    "make_asgi_app",
    "make_webhook_asgi_app",
    "make_webhook_wsgi_app",
    "make_wsgi_app",
    "start_metrics_server",
]
