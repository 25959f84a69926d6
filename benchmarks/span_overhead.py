"""Per-span overhead of CodebookSpanProcessor in front of a BatchSpanProcessor.

Baseline: TracerProvider + BatchSpanProcessor + a no-op exporter. Codebook: the same with
CodebookSpanProcessor in front. Measured at 0%, 30% and 100% of spans carrying a provider code,
interleaved repeats, medians. Goals (issue 3): <= 3% at 0%, <= 8% at 30%, <= 15% at 100%.
Each span is start_span + end with four attributes: the bare SDK cost, so the percentages are
an upper bound for real work. Run: python benchmarks/span_overhead.py [--spans N] [--repeats R]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from exporter import Codebook, CodebookMetrics, CodebookSpanProcessor, Enricher, load_codebook

INPROC = Path(__file__).resolve().parents[1] / "tests" / "testdata" / "mappings_inproc"

# Codes an SMS/calling app really sends, most often success; a few unmapped ones too.
BUILTIN_CODES = [
    ("vonage.sms", "0"), ("vonage.sms", "0"), ("vonage.sms", "0"), ("vonage.sms", "1"),
    ("vonage.sms", "6"), ("vonage.sms", 0), ("vonage.sms", "4242"),
]
TEST_CODES = [
    ("test.sms", "0"), ("test.sms", "0"), ("test.sms", "0"), ("test.sms", "1"),
    ("test.sms", "503"), ("test.sms", 0), ("test.sms", "4242"),
]


class NoOpExporter(SpanExporter):
    """Accepts every batch and does nothing with it."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


def _book() -> tuple[Codebook, list[tuple[str, object]], str]:
    try:
        book = load_codebook()
        if "vonage.sms" in book.sources:
            return book, list(BUILTIN_CODES), "built-in mappings"
    except Exception as exc:  # the built-in mappings may not load yet: use the test table
        print(f"(built-in mappings unavailable: {str(exc).splitlines()[0]})")
    return load_codebook([INPROC], builtin=False), list(TEST_CODES), "tests/testdata mappings"


def _provider(front: SpanProcessor | None, batch: BatchSpanProcessor) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(front if front is not None else batch)
    return provider


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


def _run(provider: TracerProvider, batch: BatchSpanProcessor,
         attrs: list[dict[str, object]]) -> float:
    tracer = provider.get_tracer("bench")
    start_span = tracer.start_span
    t0 = time.perf_counter()
    for a in attrs:
        start_span("send", attributes=a).end()  # type: ignore[arg-type]
    elapsed = time.perf_counter() - t0
    batch.force_flush()  # drain outside the timed region so both variants start empty
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spans", type=int, default=10_000, help="spans per timed block")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--max-seconds", type=float, default=120.0, help="stop repeating after")
    args = parser.parse_args()

    book, codes, where = _book()
    print(f"span overhead of CodebookSpanProcessor ({where}); {args.spans} spans per block")
    queue = args.spans * 2  # never drop: a full queue would make the baseline artificially cheap
    results: list[tuple[float, float, float, float]] = []
    deadline = time.monotonic() + args.max_seconds
    for share, goal in ((0.0, 3.0), (0.3, 8.0), (1.0, 15.0)):
        attrs = _attributes(args.spans, share, codes)
        base_batch = BatchSpanProcessor(NoOpExporter(), max_queue_size=queue)
        cb_batch = BatchSpanProcessor(NoOpExporter(), max_queue_size=queue)
        enricher = Enricher(book, CodebookMetrics())
        baseline = _provider(None, base_batch)
        codebook = _provider(CodebookSpanProcessor(cb_batch, enricher), cb_batch)
        for _ in range(2):  # warm up caches, label children, the batch workers
            _run(baseline, base_batch, attrs)
            _run(codebook, cb_batch, attrs)
        base_t: list[float] = []
        cb_t: list[float] = []
        for r in range(args.repeats):
            pair = [(baseline, base_batch, base_t), (codebook, cb_batch, cb_t)]
            for provider, batch, sink in pair if r % 2 == 0 else reversed(pair):
                sink.append(_run(provider, batch, attrs))
            if time.monotonic() > deadline:
                break
        b, c = statistics.median(base_t), statistics.median(cb_t)
        results.append((share, b, c, goal))
        baseline.shutdown()
        codebook.shutdown()
    for share, b, c, goal in results:
        per = 1e6 / args.spans
        print(f"{share:4.0%} with code: baseline {b * per:6.2f} us/span  "
              f"codebook {c * per:6.2f} us/span  overhead {(c / b - 1) * 100:+6.1f}% "
              f"(goal <= {goal:.0f}%)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
