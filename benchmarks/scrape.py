"""/metrics cost: CodebookMetrics.render() against prometheus_client.generate_latest.

10,000 provider_codes_total series are built through the Enricher (as spans would), then the
same data is rendered three ways, interleaved repeats, medians:
  render     CodebookMetrics.render()
  collector  generate_latest() of a registry with metrics.collector() registered
  native     generate_latest() of a registry with a stock prometheus_client Counter holding the
             same 10,000 label sets and values (timed with and without its _created series)
Goal (issue 3): render at most half of generate_latest's time.
Run: python benchmarks/scrape.py [--series N] [--repeats R]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter import CodebookMetrics, Enricher, load_codebook
from exporter.metrics import CODE_LABELS

INPROC = Path(__file__).resolve().parents[1] / "tests" / "testdata" / "mappings_inproc"


def _time(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _fill(series: int) -> CodebookMetrics:
    """A CodebookMetrics with ``series`` provider_codes_total series of varied values."""
    metrics = CodebookMetrics(max_unmapped_codes_per_source=series, max_series=series * 2)
    enricher = Enricher(load_codebook([INPROC], builtin=False), metrics)
    sources = ("test.sms", "test.calls")
    for i in range(series):
        attrs = {"provider.source": sources[i % 2], "provider.code": 100_000 + i}
        for _ in range(1 + i % 3):
            enricher.enrich_span(attrs)
    return metrics


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--series", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()

    metrics = _fill(args.series)
    with_collector = CollectorRegistry()
    with_collector.register(metrics.collector())
    native = CollectorRegistry()
    counter = Counter("provider_codes", "Provider status codes.", list(CODE_LABELS),
                      registry=native)
    families = text_string_to_metric_families(metrics.render().decode())
    codes = next(f for f in families if f.name == "provider_codes")
    for s in codes.samples:
        counter.labels(**s.labels).inc(s.value)
    n = len(codes.samples)

    def native_created() -> bytes:
        prometheus_client.enable_created_metrics()  # type: ignore[no-untyped-call]
        return generate_latest(native)

    def native_plain() -> bytes:
        prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
        return generate_latest(native)

    runs: dict[str, Callable[[], object]] = {
        "render": metrics.render,
        "collector": lambda: generate_latest(with_collector),
        "native": native_created,
        "native_no_created": native_plain,
    }
    for fn in runs.values():
        fn()  # warm up
    samples: dict[str, list[float]] = {k: [] for k in runs}
    for r in range(args.repeats):
        order = list(runs.items())
        for name, fn in order if r % 2 == 0 else reversed(order):
            samples[name].append(_time(fn))
    prometheus_client.enable_created_metrics()  # type: ignore[no-untyped-call]
    med = {k: statistics.median(v) for k, v in samples.items()}
    print(f"/metrics with {n} provider_codes_total series "
          f"({len(metrics.render())} bytes from render)")
    for name in runs:
        print(f"  {name:18s} {med[name] * 1e3:8.2f} ms")
    for other in ("collector", "native", "native_no_created"):
        print(f"render / {other:18s} {med['render'] / med[other]:.2f}x (goal <= 0.5x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
