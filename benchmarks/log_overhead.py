"""Per-record overhead of CodebookLogRecordProcessor in front of a BatchLogRecordProcessor.

Baseline: LoggerProvider + BatchLogRecordProcessor + a no-op exporter. Codebook: the same with
CodebookLogRecordProcessor in front. Measured at 0%, 30% and 100% of records carrying a
provider code. Goals (issue 10): overhead <= 3% at 0%, <= 8% at 30%, <= 15% at 100%.

The method is span_overhead.py's, for log records: many short blocks (``--records`` each) in
pairs of four blocks A B B A (baseline first and codebook first alternating from round to
round), the three shares interleaved in random order (``--seed``); a block is timed from its
first record until the last is exported (force_flush inside the timed region), so the batch
worker's share is counted. The median of the per-pair ratios of process CPU time
(``time.process_time``, every thread) judges the goals; wall time is printed too. ``gc`` stays
on; a full collection runs before each block, outside the timing.

Each record is ``Logger.emit`` of the logs API with a body, a severity and four attributes:
the bare SDK cost (no ``logging`` handler in front, which would add its own, larger cost), so
the percentages are an upper bound. The exporter counts what it receives and a dropped record
is reported. Bounded: ``--pairs`` pairs per share at most, and no new round after
``--max-seconds``. Nothing is asserted; the goals are printed beside the figures.
Run: python benchmarks/log_overhead.py [--records N] [--pairs P] [--max-seconds S] [--seed X]
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if importlib.util.find_spec("exporter") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from opentelemetry._logs import SeverityNumber
from opentelemetry.sdk._logs import LoggerProvider, LogRecordProcessor
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter
from span_overhead import (  # the same codes, attribute mix, pairs and report
    _attributes,
    _book,
    measure_pairs,
    report_shares,
)

from exporter import Codebook, CodebookLogRecordProcessor, CodebookMetrics, Enricher

SHARES = ((0.0, 3.0), (0.3, 8.0), (1.0, 15.0))  # (share of records with a code, goal in %)


class CountingExporter(LogRecordExporter):
    """Accepts every batch and only counts it (so a dropped record would be noticed)."""

    def __init__(self) -> None:
        self.exported = 0
        self._lock = threading.Lock()

    def export(self, batch: Sequence[Any]) -> Any:
        with self._lock:
            self.exported += len(batch)
        return None

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class Side:
    """One pipeline under test: a provider, its batch processor and exporter."""

    def __init__(self, name: str, book: Codebook | None, queue: int) -> None:
        self.name = name
        self.exporter = CountingExporter()
        self.batch = BatchLogRecordProcessor(self.exporter, max_queue_size=queue,
                                             max_export_batch_size=512)
        front: LogRecordProcessor = self.batch
        if book is not None:
            front = CodebookLogRecordProcessor(self.batch, Enricher(book, CodebookMetrics()))
        self.provider = LoggerProvider()
        self.provider.add_log_record_processor(front)
        self.emit = self.provider.get_logger("bench").emit
        self.emitted = 0

    def run(self, attrs: list[dict[str, object]]) -> tuple[float, float]:
        """Emit one block of records and wait until all are exported: (CPU s, wall s)."""
        gc.collect()
        emit, flush, warn = self.emit, self.batch.force_flush, SeverityNumber.WARN
        c0, w0 = time.process_time(), time.perf_counter()
        for a in attrs:
            emit(body="send result", severity_number=warn, attributes=a)  # type: ignore[arg-type]
        flush()
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        self.emitted += len(attrs)
        return cpu, wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000, help="records per timed block")
    parser.add_argument("--pairs", type=int, default=40, help="pairs (A B B A) per share")
    parser.add_argument("--max-seconds", type=float, default=40.0,
                        help="start no new round after this (at least 3 rounds run)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the share order")
    args = parser.parse_args()
    records, pairs = max(1, args.records), max(1, args.pairs)

    book, codes, where = _book()
    queue = max(records * 2, 2_048)  # never drop: a full queue would make a side cheap
    base, cb = Side("baseline", None, queue), Side("codebook", book, queue)
    blocks = {share: _attributes(records, share, codes) for share, _ in SHARES}
    print(f"log record overhead of CodebookLogRecordProcessor ({where}); {records} records "
          f"per block, up to {pairs} pairs per share, seed {args.seed}")
    for attrs in blocks.values():  # warm up caches, label children, the batch workers
        for side in (base, cb):
            side.run(attrs)

    ratios, base_cpu = measure_pairs(base, cb, blocks, SHARES, pairs, args.max_seconds, args.seed)
    report_shares(ratios, base_cpu, SHARES, records, "record")
    for side in (base, cb):
        if side.exporter.exported != side.emitted:
            print(f"WARNING: {side.name} exported {side.exporter.exported} of {side.emitted}")
        side.provider.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
