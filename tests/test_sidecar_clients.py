"""Real OpenTelemetry SDK clients send spans and metrics to a real ``codebook serve``."""

from __future__ import annotations

import base64
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
    OTLPMetricExporter as GrpcMetricExporter,
)
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
    OTLPMetricExporter as HttpMetricExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sidecar_proc import SidecarProcess, wait_for

pytestmark = pytest.mark.slow

THROTTLED = {
    "source": "vonage.sms",
    "code": "1",
    "subcode": "",
    "category": "throttled",
    "severity": "warning",
    "retryable": "with_backoff",
    "owner": "our_app",
}


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SidecarProcess]:
    with SidecarProcess(tmp_path_factory.mktemp("clients")) as proc:
        yield proc


def _send_spans(exporter: SpanExporter, n: int, code: object) -> None:
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter, max_export_batch_size=64))
    tracer = provider.get_tracer("sidecar-test")
    for i in range(n):
        attrs = {"provider.source": "vonage.sms", "provider.code": code, "i": i}
        with tracer.start_as_current_span("sms.send", attributes=attrs):
            pass
    with tracer.start_as_current_span("no-code"):
        pass
    assert provider.force_flush(10_000)
    provider.shutdown()


def _codes(sidecar: SidecarProcess, **labels: str) -> float:
    return sidecar.value("provider_codes_total", **labels)


@pytest.mark.parametrize(
    ("transport", "make"),
    [
        ("grpc", lambda s: GrpcSpanExporter(endpoint=s.grpc, insecure=True)),
        ("http", lambda s: HttpSpanExporter(endpoint=f"{s.http}/v1/traces")),
    ],
    ids=["grpc", "http-protobuf"],
)
def test_sdk_spans_are_counted_exactly(sidecar: SidecarProcess, transport: str, make: Any) -> None:
    """Spans from the real OTLP span exporter count once each, by their classification."""
    before = _codes(sidecar, **THROTTLED)
    received = sidecar.value("codebook_telemetry_received_total", signal="traces",
                             transport=transport)
    _send_spans(make(sidecar), 150, "1")
    assert _codes(sidecar, **THROTTLED) == before + 150
    after = sidecar.value("codebook_telemetry_received_total", signal="traces",
                          transport=transport)
    assert after == received + 151  # the span without a code is received, not counted


def _json_request(spans: list[ReadableSpan]) -> bytes:
    """OTLP/JSON as the spec writes it: hex ids, integer enums, camelCase."""
    doc = json_format.MessageToDict(encode_spans(spans), use_integers_for_enums=True)
    for rs in doc["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for span in ss["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64decode(span[key]).hex()
                span["someFieldFromTheFuture"] = {"ignored": True}
    return json.dumps(doc).encode()


def test_sdk_spans_as_json_over_http(sidecar: SidecarProcess) -> None:
    """Real SDK spans encoded as OTLP/JSON are accepted, counted, and answered in JSON."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("json")
    for _ in range(7):
        with tracer.start_as_current_span(
            "sms", attributes={"provider.source": "vonage.sms", "provider.code": 1}
        ):
            pass
    before = _codes(sidecar, **THROTTLED)
    req = urllib.request.Request(
        f"{sidecar.http}/v1/traces",
        data=_json_request(list(memory.get_finished_spans())),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/json"
        assert json.loads(resp.read()) == {}
    assert _codes(sidecar, **THROTTLED) == before + 7


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("sms.grpc", lambda s: GrpcMetricExporter(endpoint=s.grpc, insecure=True)),
        ("sms.http", lambda s: HttpMetricExporter(endpoint=f"{s.http}/v1/metrics")),
    ],
    ids=["grpc", "http-protobuf"],
)
def test_sdk_metrics_with_codes_appear_on_metrics(
    sidecar: SidecarProcess, name: str, make: Any
) -> None:
    """A counter carrying provider codes shows on /metrics with the output labels, exactly."""
    exporter: MetricExporter = make(sidecar)
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider = MeterProvider(metric_readers=[reader])
    counter = provider.get_meter("m").create_counter(f"{name}.attempts")
    attrs = {"provider.source": "vonage.sms", "provider.code": "1", "tenant": "a"}
    counter.add(3, attrs)
    counter.add(4, {**attrs, "tenant": "b"})  # another stream folding into the same labels
    reader.force_flush()
    prom = f"{name.replace('.', '_')}_attempts_total"
    assert wait_for(lambda: sidecar.value(prom, **THROTTLED) == 7)
    counter.add(5, attrs)
    reader.force_flush()  # cumulative: only the growth since the last point counts
    assert wait_for(lambda: sidecar.value(prom, **THROTTLED) == 12)
    provider.shutdown()


def test_received_counts_data_points(sidecar: SidecarProcess) -> None:
    """Data points are counted as received metrics items over each transport."""
    assert sidecar.total("codebook_telemetry_received_total", signal="metrics") >= 2


def test_health_and_readiness(tmp_path: Path) -> None:
    """/healthz and /readyz answer 200 while serving."""
    with SidecarProcess(tmp_path) as proc:
        assert proc.get("/healthz") == (200, b"ok\n")
        assert proc.get("/readyz") == (200, b"ready\n")
