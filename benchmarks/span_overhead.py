"""Per-span overhead of CodebookSpanProcessor in front of a BatchSpanProcessor.

Baseline: TracerProvider + BatchSpanProcessor + a no-op exporter. Codebook: the same with
CodebookSpanProcessor in front. Measured at 0%, 30% and 100% of spans carrying a provider code.
Goals (issue 3): overhead <= 3% at 0%, <= 8% at 30%, <= 15% at 100%.

How it measures, for a noisy shared machine: many short blocks (``--spans`` spans each). A
pair is four blocks in the order A B B A (baseline first and codebook first alternate from
round to round), so a load change that drifts steadily across the pair cancels out; its
ratio is the codebook blocks' sum over the baseline blocks' sum. The three shares are
interleaved round by round in random order (``--seed``). A block is timed from its first span
until the last is exported (force_flush, which exports in the calling thread, is inside the
timed region), so the batch worker's share of the work (exporting and freeing the copies) is
counted. The median of the per-pair ratios is reported, with their interquartile range.

The goals are judged on process CPU time (``time.process_time``: every thread of this
process, the batch worker included). Wall time is printed too, but on a shared machine it
also counts the time other processes held the CPU, which is not a cost of Codebook; CPU time
counts only the work this process did, which is the cost. ``gc`` stays enabled (collecting
the copies is a real cost); a full collection runs before each block, outside the timing, so
every block starts from the same heap.

Each span is start_span + end with four attributes: the bare SDK cost, so the percentages are
an upper bound for spans that do real work. The exporter counts what it receives and a
dropped span is reported. Bounded: ``--pairs`` pairs per share at most, and no new round after
``--max-seconds`` (default run ~20 s). Nothing is asserted; the goals are printed beside the
figures. Last, ``on_end`` is timed alone over spans the SDK already ended (the processor's own
work, without the pipeline's allocation and scheduling effects), as a noise-free reference.
Run: python benchmarks/span_overhead.py [--spans N] [--pairs P] [--max-seconds S] [--seed X]
[--python-only]
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

# The installed package (pip install . builds its C on_end, exporter/_hot.c); the source tree
# only when nothing is installed. The run says which path on_end takes.
if importlib.util.find_spec("exporter") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

import exporter
from exporter import Codebook, CodebookMetrics, CodebookSpanProcessor, Enricher, load_codebook
from exporter import processor as processor_module

INPROC = Path(__file__).resolve().parents[1] / "tests" / "testdata" / "mappings_inproc"
SHARES = ((0.0, 3.0), (0.3, 8.0), (1.0, 15.0))  # (share of spans with a code, goal in %)

# Codes an SMS/calling app really sends, most often success; a few unmapped ones too.
BUILTIN_CODES = [
    ("vonage.sms", "0"), ("vonage.sms", "0"), ("vonage.sms", "0"), ("vonage.sms", "1"),
    ("vonage.sms", "6"), ("vonage.sms", 0), ("vonage.sms", "4242"),
]
TEST_CODES = [
    ("test.sms", "0"), ("test.sms", "0"), ("test.sms", "0"), ("test.sms", "1"),
    ("test.sms", "503"), ("test.sms", 0), ("test.sms", "4242"),
]


class CountingExporter(SpanExporter):
    """Accepts every batch and only counts it (so a dropped span would be noticed)."""

    def __init__(self) -> None:
        self.exported = 0
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            self.exported += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


class Side:
    """One pipeline under test: a provider, its batch processor and exporter, its samples."""

    def __init__(self, name: str, book: Codebook | None, queue: int) -> None:
        self.name = name
        self.exporter = CountingExporter()
        self.batch = BatchSpanProcessor(self.exporter, max_queue_size=queue)
        front: SpanProcessor = self.batch
        if book is not None:
            front = CodebookSpanProcessor(self.batch, Enricher(book, CodebookMetrics()))
        self.provider = TracerProvider()
        self.provider.add_span_processor(front)
        self.start_span = self.provider.get_tracer("bench").start_span
        self.ended = 0

    def run(self, attrs: list[dict[str, object]]) -> tuple[float, float]:
        """End one block of spans and wait until all are exported: (CPU s, wall s)."""
        gc.collect()
        start_span, flush = self.start_span, self.batch.force_flush
        c0, w0 = time.process_time(), time.perf_counter()
        for a in attrs:
            start_span("send", attributes=a).end()  # type: ignore[arg-type]
        flush()
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        self.ended += len(attrs)
        return cpu, wall


def _book() -> tuple[Codebook, list[tuple[str, object]], str]:
    try:
        book = load_codebook()
        if "vonage.sms" in book.sources:
            return book, list(BUILTIN_CODES), "built-in mappings"
    except Exception as exc:  # the built-in mappings may not load yet: use the test table
        print(f"(built-in mappings unavailable: {str(exc).splitlines()[0]})")
    return load_codebook([INPROC], builtin=False), list(TEST_CODES), "tests/testdata mappings"


def _attributes(n: int, share: float, codes: list[tuple[str, object]]) -> list[dict[str, object]]:
    """n attribute sets with four attributes each; ``share`` of them carry a provider code."""
    out: list[dict[str, object]] = []
    with_code = 0
    for i in range(n):
        if with_code < share * (i + 1):
            with_code += 1
            source, code = codes[i % len(codes)]
            out.append({"provider.source": source, "provider.code": code,
                        "messaging.system": "sms", "app.tenant": f"t{i % 7}"})
        else:
            out.append({"http.route": "/send", "http.status_code": 200,
                        "messaging.system": "sms", "app.tenant": f"t{i % 7}"})
    return out


class _Keep(SpanProcessor):
    """Keeps every ended span (the SDK's own per-on_end snapshots)."""

    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.append(span)


def _processor_cost(book: Codebook, blocks: dict[float, list[dict[str, object]]],
                    repeats: int) -> dict[float, float]:
    """CPU seconds per span of CodebookSpanProcessor.on_end alone, by share (median).

    The processor's own work (resolve, count, copy) over spans the SDK already ended, with a
    downstream that does nothing: the part of the overhead that is Codebook's code, free of
    the pipeline's allocation and scheduling effects that make the side-by-side figure noisy.
    """
    out: dict[float, float] = {}
    processor = CodebookSpanProcessor(SpanProcessor(), Enricher(book, CodebookMetrics()))
    on_end = processor.on_end
    keep = _Keep()
    provider = TracerProvider()
    provider.add_span_processor(keep)
    start_span = provider.get_tracer("bench").start_span
    for share, attrs in blocks.items():
        samples = []
        for _ in range(repeats):
            # Fresh snapshots each time: a span seen once has its instance dict built already,
            # which would make every later pass over it cheaper than a live span's.
            keep.spans.clear()
            for a in attrs:
                start_span("send", attributes=a).end()  # type: ignore[arg-type]
            c0 = time.process_time()
            for span in keep.spans:
                on_end(span)
            samples.append((time.process_time() - c0) / len(keep.spans))
        out[share] = statistics.median(samples)
    provider.shutdown()
    return out


def _quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4)
    return q[0], q[2]


def measure_pairs(
    base: Any,
    cb: Any,
    blocks: dict[float, Any],
    shares: Sequence[tuple[float, float]],
    pairs: int,
    max_seconds: float,
    seed: int,
) -> tuple[dict[float, list[tuple[float, float]]], dict[float, list[float]]]:
    """Time ``side.run(blocks[share])`` for both sides in A B B A (or B A A B, alternating)
    pairs, shares in a random order per round; at most ``pairs`` rounds, at least 3, none
    started after ``max_seconds``. Returns, per share, the (CPU, wall) ratios codebook/baseline
    (one per pair) and the baseline's CPU seconds per block. Prints how many rounds ran."""
    rng = random.Random(seed)
    ratios: dict[float, list[tuple[float, float]]] = {share: [] for share, _ in shares}
    base_cpu: dict[float, list[float]] = {share: [] for share, _ in shares}
    started = time.monotonic()
    rounds = 0
    while rounds < pairs and (rounds < 3 or time.monotonic() - started < max_seconds):
        order = list(shares)
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
    return ratios, base_cpu


def report_shares(
    ratios: dict[float, list[tuple[float, float]]],
    base_cpu: dict[float, list[float]],
    shares: Sequence[tuple[float, float]],
    items: int,
    unit: str,
) -> None:
    """One line per share: median CPU and wall overhead [IQR], the baseline's CPU per item
    (``items`` per block), and whether the CPU median meets the share's goal."""
    for share, goal in shares:
        line = [f"{share:4.0%} with code:"]
        verdict = ""
        for i, label in ((0, "CPU"), (1, "wall")):
            pct = [(r[i] - 1) * 100 for r in ratios[share]]
            mid = statistics.median(pct)
            lo, hi = _quartiles(pct)
            line.append(f"{label} {mid:+5.1f}% [{lo:+5.1f},{hi:+5.1f}]")
            if i == 0:
                verdict = "met" if mid <= goal else f"MISSED by {mid - goal:.1f} points"
        base_us = statistics.median(base_cpu[share]) * 1e6 / items
        line.append(f"(baseline CPU {base_us:.1f} us/{unit})")
        print("  ".join(line) + f"  goal <= {goal:.0f}%: {verdict}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spans", type=int, default=1_000, help="spans per timed block")
    parser.add_argument("--pairs", type=int, default=40, help="pairs (A B B A) per share")
    parser.add_argument("--max-seconds", type=float, default=40.0,
                        help="start no new round after this (at least 3 rounds run)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the share order")
    parser.add_argument("--python-only", action="store_true",
                        help="measure the Python on_end (as an install without a C compiler has)")
    args = parser.parse_args()
    if args.python_only:
        processor_module._hot = None  # read when a processor is built
    spans, pairs = max(1, args.spans), max(1, args.pairs)

    book, codes, where = _book()
    queue = max(spans * 2, 2_048)  # never drop: a full queue would make a side cheap
    base, cb = Side("baseline", None, queue), Side("codebook", book, queue)
    blocks = {share: _attributes(spans, share, codes) for share, _ in SHARES}
    print(f"span overhead of CodebookSpanProcessor ({where}); {spans} spans per block, "
          f"up to {pairs} pairs per share, seed {args.seed}")
    c_path = CodebookSpanProcessor(SpanProcessor(), Enricher(book, CodebookMetrics())).c_fast_path
    print(f"exporter from {Path(exporter.__file__).parent}; on_end path: "
          + ("C (exporter/_hot.c)" if c_path else
             "Python only (exporter._hot is not built there: pip install . builds it)"))
    for attrs in blocks.values():  # warm up caches, label children, the batch workers
        for side in (base, cb):
            side.run(attrs)

    ratios, base_cpu = measure_pairs(base, cb, blocks, SHARES, pairs, args.max_seconds, args.seed)
    report_shares(ratios, base_cpu, SHARES, spans, "span")
    own = _processor_cost(book, blocks, repeats=15)
    print("CodebookSpanProcessor.on_end alone (CPU per span, % of the baseline span's CPU): "
          + ", ".join(
              f"{share:.0%} {own[share] * 1e6:.2f} us "
              f"({own[share] * spans / statistics.median(base_cpu[share]) * 100:.1f}%)"
              for share, _ in SHARES))
    for side in (base, cb):
        if side.exporter.exported != side.ended:
            print(f"WARNING: {side.name} exported {side.exporter.exported} of {side.ended} spans")
        side.provider.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
