"""Hostile attribute values in the in-process pipeline never raise and keep series bounded."""

from __future__ import annotations

import math
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from prometheus_client.parser import text_string_to_metric_families

from exporter import Codebook, CodebookMetrics, CodebookSpanProcessor, Enricher, load_codebook

INPROC = Path(__file__).parent / "testdata" / "mappings_inproc"
HUGE = "7" * 1_000_000
# ReadableSpan() without a resource runs the resource detectors each time: share one.
RESOURCE = Resource.create({"service.name": "hostile"})
MARKERS = ("\u202e", "💥", "\uff26\uff35\uff2c\uff2c", "</script>", "drop table", "+15551234567")


class Counting(SpanProcessor):
    """A downstream processor that keeps the spans it receives."""

    def __init__(self) -> None:
        self.ended: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.ended.append(span)


@pytest.fixture(scope="module")
def book() -> Codebook:
    return load_codebook([INPROC], builtin=False)


def _processor(
    book: Codebook, metrics: CodebookMetrics
) -> tuple[CodebookSpanProcessor, Counting]:
    downstream = Counting()
    return CodebookSpanProcessor(downstream, Enricher(book, metrics)), downstream


def _label_values(text: str, family: str) -> list[dict[str, str]]:
    return [
        s.labels
        for f in text_string_to_metric_families(text)
        if f.name == family.removesuffix("_total")
        for s in f.samples
        if s.name == family
    ]


def _assert_clean(metrics: CodebookMetrics) -> str:
    """The exposition parses, carries no hostile text, and passes promtool when present."""
    text = metrics.render().decode()
    for marker in (*MARKERS, "7777777777"):
        assert marker not in text, marker
    for labels in _label_values(text, "provider_codes_total"):
        for value in labels.values():
            assert len(value) <= 64 and "\n" not in value
    promtool = shutil.which("promtool")
    if promtool is not None:
        result = subprocess.run([promtool, "check", "metrics"], input=text.encode(),
                                capture_output=True, timeout=60, check=False)
        assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    return text


# Values the SDK accepts as span attributes (it drops bytes, None and mixed lists itself).
SDK_HOSTILE: list[tuple[str, object]] = [
    ("huge-string", HUGE),
    ("huge-padded", " " * 100_000 + "1" + " " * 100_000),
    ("rtl-emoji", "\u202e💥1"),
    ("fullwidth", "\uff26\uff35\uff2c\uff2c\uff11"),
    ("newline-quote-brace", '1"}\nprovider_codes_total{source="evil"} 1e9\n'),
    ("html", "</script>"),
    ("sql", "1; drop table codes"),
    ("phone", "+15551234567"),
    ("huge-int", 10**30),
    ("negative-int", -(2**63)),
    ("nan", math.nan),
    ("inf", math.inf),
    ("neg-zero", -0.0),
    ("huge-float", 1e300),
    ("true", True),
    ("false", False),
    ("int-list", [1, 2, 3]),
    ("str-list", ["1", "\u202e"]),
    ("empty-list", []),
    ("empty-string", ""),
]


@pytest.mark.parametrize("field", ["provider.source", "provider.code", "provider.subcode",
                                   "provider.message"])
@pytest.mark.parametrize("value", [v for _, v in SDK_HOSTILE], ids=[i for i, _ in SDK_HOSTILE])
def test_hostile_values_through_sdk(book: Codebook, field: str, value: object) -> None:
    """A hostile value in any provider.* attribute of a real SDK span never raises or leaks."""
    metrics = CodebookMetrics()
    processor, downstream = _processor(book, metrics)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    attrs = {"provider.source": "test.sms", "provider.code": "1", field: value}
    provider.get_tracer("hostile").start_span("send", attributes=attrs).end()  # type: ignore[arg-type]
    assert len(downstream.ended) == 1
    internal = {"signal": "traces", "reason": "internal_error"}
    assert metrics.value("codebook_telemetry_dropped_total", internal) is None
    _assert_clean(metrics)


class Explosive:
    """An attribute value whose every dunder fails: hashing, text, comparison."""

    def __hash__(self) -> int:
        raise RuntimeError("no hash")

    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("no eq")


# Values only a non-SDK producer can hand over (ReadableSpan built directly, raw dicts).
RAW_HOSTILE: list[tuple[str, object]] = [
    ("bytes-code", b"1"),
    ("bytes-huge", b"7" * 1_000_000),
    ("bytes-invalid-utf8", b"\xff\xfe\xfd"),
    ("bytearray", bytearray(b"2")),
    ("dict", {"a": 1}),
    ("set", {1, 2}),
    ("none", None),
    ("object", object()),
    ("explosive", Explosive()),
    ("tuple-nested", ((1,), ("x" * 1000,))),
]


@pytest.mark.parametrize("field", ["provider.source", "provider.code", "provider.subcode",
                                   "provider.message"])
@pytest.mark.parametrize("value", [v for _, v in RAW_HOSTILE], ids=[i for i, _ in RAW_HOSTILE])
def test_hostile_raw_values_never_raise(book: Codebook, field: str, value: object) -> None:
    """Values outside the OTel attribute types (bytes, dicts, objects) never escape on_end."""
    metrics = CodebookMetrics()
    processor, downstream = _processor(book, metrics)
    attrs: Mapping[str, object] = {"provider.source": "test.sms", "provider.code": "1",
                                   field: value}
    processor.on_end(ReadableSpan("send", resource=RESOURCE, attributes=attrs))  # type: ignore[arg-type]
    assert len(downstream.ended) == 1
    _assert_clean(metrics)


def test_bytes_code_is_resolved(book: Codebook) -> None:
    """A bytes code is decoded and resolved like its text."""
    metrics = CodebookMetrics()
    processor, downstream = _processor(book, metrics)
    processor.on_end(ReadableSpan("send", resource=RESOURCE, attributes={
        "provider.source": b"test.sms", "provider.code": b"1"}))
    assert downstream.ended[0].attributes["provider.category"] == "throttled"  # type: ignore[index]


def test_100k_distinct_unknown_codes_stay_bounded(book: Codebook) -> None:
    """100,000 distinct unmapped codes make at most the per-source limit of series."""
    limit = 50
    metrics = CodebookMetrics(max_unmapped_codes_per_source=limit, zero_series=False)
    processor, downstream = _processor(book, metrics)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("hostile")
    n = 100_000
    for i in range(n):
        tracer.start_span("send", attributes={"provider.source": "test.sms",
                                              "provider.code": 1_000_000 + i}).end()
    assert len(downstream.ended) == n
    text = _assert_clean(metrics)
    series = _label_values(text, "provider_codes_total")
    assert len(series) <= limit + 1
    assert {s["code"] for s in series} == {str(1_000_000 + i) for i in range(limit)} | {"_OTHER"}
    overflow = {"source": "test.sms", "limit": "unmapped_codes"}
    assert metrics.value("codebook_cardinality_overflow_total", overflow) == n - limit
    assert metrics.value("codebook_unmapped_codes_total", {"source": "test.sms"}) == n
    total = sum(metrics.value("provider_codes_total", s) or 0.0 for s in series)
    assert total == n


def test_distinct_hostile_strings_and_sources_stay_bounded(book: Codebook) -> None:
    """Distinct hostile code texts and unknown sources never become label values."""
    metrics = CodebookMetrics(max_unmapped_codes_per_source=10, max_series=100,
                              zero_series=False)
    processor, _ = _processor(book, metrics)
    n = 20_000
    for i in range(n):
        marker = MARKERS[i % len(MARKERS)]
        processor.on_end(ReadableSpan("send", resource=RESOURCE, attributes={
            "provider.source": "test.sms" if i % 2 else f"{marker}-{i}",
            "provider.code": f"{marker} {i} " + "7" * (i % 300),
            "provider.subcode": f"{marker}{i}",
        }))
    text = _assert_clean(metrics)
    series = _label_values(text, "provider_codes_total")
    assert len(series) <= 100
    assert {s["source"] for s in series} <= {"test.sms", "_OTHER"}
    assert {s["code"] for s in series} == {"_OTHER"}
    assert sum(metrics.value("provider_codes_total", s) or 0.0 for s in series) == n


def test_series_limit_holds_with_many_sources_of_codes(book: Codebook) -> None:
    """With a generous per-source limit, max_series bounds the total series count."""
    max_series = 200
    metrics = CodebookMetrics(max_unmapped_codes_per_source=100_000, max_series=max_series,
                              zero_series=False)
    processor, _ = _processor(book, metrics)
    n = 20_000
    for i in range(n):
        source = ("test.sms", "test.calls")[i % 2]
        processor.on_end(ReadableSpan("send", resource=RESOURCE, attributes={
            "provider.source": source, "provider.code": 10_000 + i}))
    text = _assert_clean(metrics)
    series = _label_values(text, "provider_codes_total")
    # Past the limit each (source, outcome) folds into one code="_OTHER",subcode="_OTHER" series.
    assert len(series) <= max_series + 2
    folded = sum(
        metrics.value("codebook_cardinality_overflow_total", {"source": s, "limit": "series"})
        or 0.0
        for s in ("test.sms", "test.calls")
    )
    assert folded >= n - max_series
    assert sum(metrics.value("provider_codes_total", s) or 0.0 for s in series) == n
