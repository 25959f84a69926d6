"""A process-wide bound on the memory that OTLP requests being processed may hold.

Both receivers (OTLP/gRPC and OTLP/HTTP) take a :class:`Lease` on one shared
:class:`InFlightBudget` before they decompress, parse or enrich a request, and give it back
when the reply is ready. A request is charged its wire bytes plus ``EXPANSION`` times its
decompressed bytes: the decompressed copy, the parsed form (OTLP/JSON: about 7x) or the wire
walker's span and group tables, and the enriched output, which grows up to about 3.6x for
minimal spans that all carry a distinct code (measured with tracemalloc: 8.3x for those on the
wire path). When a charge would take the total past ``limit_bytes`` the request is refused
(the receivers answer 503 / UNAVAILABLE with a retry delay, retryable per the OTLP spec, and
count it as ``codebook_telemetry_rejected_total{reason="in_flight_bytes"}``), so a flood of
concurrent valid requests costs a bounded amount of memory instead of one request's worth
per worker.

A request is always admitted while nothing else is in flight, so a single request up to
``receivers.max_request_bytes`` is never refused by the budget alone. Thread-safe.

:func:`return_freed_memory` makes the C allocator give request-sized buffers back to the
operating system when they are freed (``codebook serve`` calls it at start): otherwise glibc
keeps them in per-thread heaps, and the process's RSS stays at the highest total any mix of
worker threads ever held, well above what the budget lets requests hold at once.
"""

from __future__ import annotations

import ctypes
import sys
import threading

# Bytes held per decompressed byte of a request being processed (see the module docstring).
EXPANSION = 8


class InFlightBudget:
    """``limit_bytes`` shared by every request in flight; ``in_use`` is the current charge."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.in_use = 0
        self._lock = threading.Lock()

    def _take(self, nbytes: int) -> bool:
        with self._lock:
            if self.in_use + nbytes > self.limit_bytes and self.in_use != 0:
                return False
            self.in_use += nbytes
            return True

    def _give(self, nbytes: int) -> None:
        with self._lock:
            self.in_use -= nbytes

    def lease(self, wire_bytes: int) -> Lease | None:
        """Charge ``wire_bytes`` (the body as received); None when over the budget."""
        return Lease(self, wire_bytes) if self._take(wire_bytes) else None


class Lease:
    """One request's charge on the budget; :meth:`release` (or ``with``) gives it back."""

    def __init__(self, budget: InFlightBudget, nbytes: int) -> None:
        self._budget = budget
        self.nbytes = nbytes

    def grow_for(self, decompressed_bytes: int) -> bool:
        """Charge the processing of ``decompressed_bytes``; False (nothing charged) when that
        would pass the budget and this request is not the only one in flight."""
        extra = EXPANSION * decompressed_bytes
        budget = self._budget
        with budget._lock:
            alone = budget.in_use == self.nbytes
            if budget.in_use + extra > budget.limit_bytes and not alone:
                return False
            budget.in_use += extra
        self.nbytes += extra
        return True

    def release(self) -> None:
        """Give the charge back; idempotent."""
        if self.nbytes:
            self._budget._give(self.nbytes)
            self.nbytes = 0

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def return_freed_memory() -> bool:
    """glibc only (a no-op elsewhere): allocations of 128 KiB and more come straight from
    ``mmap`` and go back to the system when freed (a fixed threshold, not glibc's default that
    rises to 32 MiB after the first large free), and at most 2 malloc arenas serve all the
    threads. Returns whether it applied."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, 128 << 10)) and bool(mallopt(_M_ARENA_MAX, 2))
