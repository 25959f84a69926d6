"""Codebook: classify messaging-provider status codes for OpenTelemetry and Prometheus.

The public API is what ``__all__`` lists; every other module is an implementation detail.
"""

from .codebook import Codebook, Resolution, load_codebook
from .loader import MappingError
from .taxonomy import Category, Match, Owner, Retryable, Severity

__all__ = [
    "Category",
    "Codebook",
    "MappingError",
    "Match",
    "Owner",
    "Resolution",
    "Retryable",
    "Severity",
    "load_codebook",
]
