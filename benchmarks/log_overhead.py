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
import random
import statistics
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
from span_overhead import _attributes, _book, _quartiles  # the same codes and attribute mix

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

    rng = random.Random(args.seed)
    ratios: dict[float, list[tuple[float, float]]] = {share: [] for share, _ in SHARES}
    base_cpu: dict[float, list[float]] = {share: [] for share, _ in SHARES}
    started = time.monotonic()
    rounds = 0
    while rounds < pairs and (rounds < 3 or time.monotonic() - started < args.max_seconds):
        order = list(SHARES)
        rng.shuffle(order)
        first, second = (base, cb) if rounds % 2 == 0 else (cb, base)
        for share, _ in order:
            runs: dict[str, list[tuple[float, float]]] = {base.name: [], cb.name: []}
            for side in (first, second, second, first):
                runs[side.name].append(side.run(blocks[share]))
            (b1, b2), (c1, c2) = runs[base.name], runs[cb.name]
            ratios[share].append(((c1[0] + c2[0]) / (b1[0] + b2[0]),
                                  (c1[1] + c2[1]) / (b1[1] + b2[1])))
            base_cpu[share] += [b1[0], b2[0]]
        rounds += 1
    elapsed = time.monotonic() - started

    print(f"{rounds} pairs per share in {elapsed:.1f} s. Overhead: median over pairs of "
          f"codebook/baseline - 1 [interquartile range]; goals judged on CPU")
    for share, goal in SHARES:
        line = [f"{share:4.0%} with code:"]
        verdict = ""
        for i, label in ((0, "CPU"), (1, "wall")):
            pct = [(r[i] - 1) * 100 for r in ratios[share]]
            mid = statistics.median(pct)
            lo, hi = _quartiles(pct)
            line.append(f"{label} {mid:+5.1f}% [{lo:+5.1f},{hi:+5.1f}]")
            if i == 0:
                verdict = "met" if mid <= goal else f"MISSED by {mid - goal:.1f} points"
        base_us = statistics.median(base_cpu[share]) * 1e6 / records
        line.append(f"(baseline CPU {base_us:.1f} us/record)")
        print("  ".join(line) + f"  goal <= {goal:.0f}%: {verdict}")
    for side in (base, cb):
        if side.exporter.exported != side.emitted:
            print(f"WARNING: {side.name} exported {side.exporter.exported} of {side.emitted}")
        side.provider.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
