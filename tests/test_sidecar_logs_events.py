"""Real OpenTelemetry SDK clients send log records and span events to a real ``codebook serve``.

The sidecar forwards to a loopback OTLP/HTTP upstream, so each test checks both ends: the exact
counts on ``/metrics`` (per signal) and the forwarded items carrying the output attributes.
"""

from __future__ import annotations

import gzip
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import (
    OTLPLogExporter as GrpcLogExporter,
)
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http._log_exporter import (
    OTLPLogExporter as HttpLogExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from otlp_upstream import HttpUpstream
from sidecar_proc import SidecarProcess, wait_for

pytestmark = pytest.mark.slow

THROTTLED = {"source": "vonage.sms", "code": "1", "subcode": "", "category": "throttled",
             "severity": "warning", "retryable": "with_backoff", "owner": "our_app"}
SUCCESS = {**THROTTLED, "code": "0", "category": "success", "severity": "info",
           "retryable": "no", "owner": "none"}
OUTPUTS = {"provider.category", "provider.severity", "provider.retryable", "provider.owner",
           "provider.match"}


@pytest.fixture(scope="module")
def upstream() -> Iterator[HttpUpstream]:
    up = HttpUpstream()
    yield up
    up.close()


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory,
            upstream: HttpUpstream) -> Iterator[SidecarProcess]:
    config = {"forward": {"endpoint": f"http://127.0.0.1:{upstream.port}",
                          "protocol": "http/protobuf", "initial_backoff_seconds": 0.01}}
    with SidecarProcess(tmp_path_factory.mktemp("logs"), config) as proc:
        yield proc
        assert proc.proc is not None and proc.proc.poll() is None, proc.log()


def _forwarded_logs(upstream: HttpUpstream) -> list[LogRecord]:
    out = []
    for path, body in list(upstream.requests):
        if path.endswith("/v1/logs"):
            req = ExportLogsServiceRequest.FromString(gzip.decompress(body))
            out += [r for rl in req.resource_logs for sl in rl.scope_logs for r in sl.log_records]
    return out


def _forwarded_spans(upstream: HttpUpstream) -> list[Any]:
    out = []
    for path, body in list(upstream.requests):
        if path.endswith("/v1/traces"):
            req = ExportTraceServiceRequest.FromString(gzip.decompress(body))
            out += [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
    return out


def _attrs(item: Any) -> dict[str, Any]:
    return {kv.key: getattr(kv.value, kv.value.WhichOneof("value") or "string_value")
            for kv in item.attributes}


def _tagged(records: list[LogRecord], run: str) -> list[LogRecord]:
    return [r for r in records if _attrs(r).get("run") == run]


@pytest.mark.parametrize(
    ("transport", "make"),
    [
        ("grpc", lambda s: GrpcLogExporter(endpoint=s.grpc, insecure=True)),
        ("http", lambda s: HttpLogExporter(endpoint=f"{s.http}/v1/logs")),
    ],
    ids=["grpc", "http-protobuf"],
)
def test_sdk_log_records_via_logging_are_counted_and_forwarded(
    sidecar: SidecarProcess, upstream: HttpUpstream, transport: str, make: Any
) -> None:
    """logging + LoggingHandler + the real OTLP log exporter: exact counts, enriched records."""
    before = (sidecar.value("provider_codes_total", **THROTTLED),
              sidecar.value("provider_codes_total", **SUCCESS))
    received = sidecar.value("codebook_telemetry_received_total", signal="logs",
                             transport=transport)
    traces = sidecar.total("codebook_telemetry_received_total", signal="traces")
    provider = LoggerProvider()
    provider.add_log_record_processor(BatchLogRecordProcessor(make(sidecar),
                                                              max_export_batch_size=50))
    log = logging.getLogger(f"codebook.sidecar.{transport}")
    log.propagate = False
    log.setLevel(logging.INFO)
    handler = LoggingHandler(logger_provider=provider)
    log.addHandler(handler)
    try:
        for _ in range(120):
            log.warning("sms failed", extra={"provider.source": "vonage.sms",
                                             "provider.code": 1, "run": transport})
        for _ in range(30):
            log.info("sms sent", extra={"provider.source": "vonage.sms",
                                        "provider.code": "0", "run": transport})
        log.info("no code", extra={"run": transport})
        assert provider.force_flush(10_000)
    finally:
        log.removeHandler(handler)
        provider.shutdown()
    assert sidecar.value("provider_codes_total", **THROTTLED) == before[0] + 120
    assert sidecar.value("provider_codes_total", **SUCCESS) == before[1] + 30
    assert sidecar.value("codebook_telemetry_received_total", signal="logs",
                         transport=transport) == received + 151
    assert sidecar.total("codebook_telemetry_received_total", signal="traces") == traces
    records = wait_for(lambda: len(got := _tagged(_forwarded_logs(upstream), transport)) == 151
                       and got)
    failed = [r for r in records if r.body.string_value == "sms failed"]
    assert len(failed) == 120
    for r in failed:
        attrs = _attrs(r)
        assert attrs["provider.category"] == attrs["error.type"] == "throttled"
        assert attrs.keys() >= OUTPUTS
        assert r.severity_number == SeverityNumber.WARN.value  # as the application set it
    plain = next(r for r in records if r.body.string_value == "no code")
    assert not OUTPUTS & _attrs(plain).keys()


def test_log_records_as_json_over_http(sidecar: SidecarProcess, upstream: HttpUpstream) -> None:
    """OTLP/JSON logs (hex ids, camelCase) are accepted, counted, enriched, answered in JSON."""
    req = ExportLogsServiceRequest(resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(
        log_records=[LogRecord(
            time_unix_nano=1, severity_number=17, body=AnyValue(string_value="json"),  # type: ignore[arg-type]
            trace_id=bytes(range(1, 17)), span_id=bytes(range(1, 9)),
            attributes=[KeyValue(key="provider.source", value=AnyValue(string_value="vonage.sms")),
                        KeyValue(key="provider.code", value=AnyValue(int_value=1)),
                        KeyValue(key="run", value=AnyValue(string_value="json"))])] * 4)])])
    doc = json_format.MessageToDict(req, use_integers_for_enums=True)
    for rl in doc["resourceLogs"]:
        for sl in rl["scopeLogs"]:
            for r in sl["logRecords"]:
                r["traceId"], r["spanId"] = bytes(range(1, 17)).hex(), bytes(range(1, 9)).hex()
    before = sidecar.value("provider_codes_total", **THROTTLED)
    http_req = urllib.request.Request(f"{sidecar.http}/v1/logs", data=json.dumps(doc).encode(),
                                      headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(http_req, timeout=10) as resp:
        assert resp.status == 200 and json.loads(resp.read()) == {}
    assert sidecar.value("provider_codes_total", **THROTTLED) == before + 4
    records = wait_for(lambda: len(got := _tagged(_forwarded_logs(upstream), "json")) == 4
                       and got)
    assert all(_attrs(r)["provider.category"] == "throttled" and r.severity_number == 17
               for r in records)


def _send_spans_with_events(exporter: SpanExporter, run: str) -> None:
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    tracer = provider.get_tracer("events")
    for _ in range(10):
        with tracer.start_as_current_span("sms.batch", attributes={"run": run}) as span:
            span.add_event("provider.result", {"provider.source": "vonage.sms",
                                               "provider.code": "1"})
            span.add_event("provider.result", {"provider.source": "vonage.sms",
                                               "provider.code": 0})
            span.add_event("retry", {"provider.source": "vonage.sms", "provider.code": "1"})
    with tracer.start_as_current_span("sms.send", attributes={
            "run": run, "provider.source": "vonage.sms", "provider.code": "1"}) as span:
        span.add_event("provider.result", {"provider.source": "vonage.sms",
                                           "provider.code": "1"})
    assert provider.force_flush(10_000)
    provider.shutdown()


@pytest.mark.parametrize(
    ("run", "make"),
    [
        ("ev-grpc", lambda s: GrpcSpanExporter(endpoint=s.grpc, insecure=True)),
        ("ev-http", lambda s: HttpSpanExporter(endpoint=f"{s.http}/v1/traces")),
    ],
    ids=["grpc", "http-protobuf"],
)
def test_sdk_span_events_are_counted_once_each_and_forwarded(
    sidecar: SidecarProcess, upstream: HttpUpstream, run: str, make: Any
) -> None:
    """provider.result events count once each; other events do not; a span repeating its
    event's code summarises that result (enriched, counted once through the event)."""
    before = (sidecar.value("provider_codes_total", **THROTTLED),
              sidecar.value("provider_codes_total", **SUCCESS))
    _send_spans_with_events(make(sidecar), run)
    # 10 spans x (one throttled + one success event), then one span repeating its one event.
    assert sidecar.value("provider_codes_total", **THROTTLED) == before[0] + 11
    assert sidecar.value("provider_codes_total", **SUCCESS) == before[1] + 10
    spans = wait_for(lambda: len(got := [s for s in _forwarded_spans(upstream)
                                         if _attrs(s).get("run") == run]) == 11 and got)
    batch = next(s for s in spans if s.name == "sms.batch")
    first, second, retry = (_attrs(e) for e in batch.events)
    assert first["provider.category"] == "throttled" and second["provider.category"] == "success"
    assert not OUTPUTS & retry.keys()
    assert batch.status.code == 0  # events leave the span's status to the span's own code
    single = next(s for s in spans if s.name == "sms.send")
    assert _attrs(single)["provider.category"] == _attrs(single.events[0])["provider.category"]
    assert single.status.code == 2


def _raw_logs(*records: LogRecord) -> bytes:
    return ExportLogsServiceRequest(resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(
        log_records=list(records))])]).SerializeToString()


def _post(sidecar: SidecarProcess, body: bytes) -> int:
    req = urllib.request.Request(f"{sidecar.http}/v1/logs", data=body,
                                 headers={"Content-Type": "application/x-protobuf"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _deep(depth: int) -> AnyValue:
    v = AnyValue(string_value="x")
    for _ in range(depth):
        v = AnyValue(array_value=ArrayValue(values=[v]))
    return v


CODE_VALUES = [
    ("int", AnyValue(int_value=1)), ("double", AnyValue(double_value=1.0)),
    ("bool", AnyValue(bool_value=True)), ("bytes", AnyValue(bytes_value=b"\xff\x00")),
    ("array", AnyValue(array_value=ArrayValue(values=[AnyValue(string_value="1")]))),
    ("empty", AnyValue()), ("huge", AnyValue(string_value="9" * (1 << 20))),
]


@pytest.mark.parametrize("code", [c[1] for c in CODE_VALUES], ids=[c[0] for c in CODE_VALUES])
def test_hostile_log_records_are_accepted_bounded(sidecar: SidecarProcess, code: AnyValue) -> None:
    """Wrong types for provider.code, megabyte bodies: accepted, label values stay short."""
    rec = LogRecord(body=AnyValue(string_value="b" * (1 << 19)), attributes=[
        KeyValue(key="provider.source", value=AnyValue(string_value="vonage.sms")),
        KeyValue(key="provider.code", value=code)])
    assert _post(sidecar, _raw_logs(rec, rec)) == 200
    assert all(len(dict(labels).get("code", "")) < 100 for (_, labels) in sidecar.scrape())


def test_deeply_nested_log_bodies(sidecar: SidecarProcess) -> None:
    """Nesting the runtime parses is accepted; deeper is rejected as malformed (400 over HTTP,
    INVALID_ARGUMENT over gRPC) and counted; the sidecar lives on."""
    ok = LogRecord(body=_deep(40))
    assert _post(sidecar, _raw_logs(ok)) == 200
    inner = _deep(40).SerializeToString()
    for _ in range(160):  # past the protobuf runtime's depth limit, built as raw bytes
        inner = b"\x2a" + _len(b"\x0a" + _len(inner))
    body = b"\x0a" + _len(b"\x12" + _len(b"\x12" + _len(b"\x2a" + _len(inner))))
    rejected = sidecar.value("codebook_telemetry_rejected_total", signal="logs",
                             transport="http", reason="malformed")
    assert _post(sidecar, body) == 400
    assert sidecar.value("codebook_telemetry_rejected_total", signal="logs", transport="http",
                         reason="malformed") == rejected + 1
    with grpc.insecure_channel(sidecar.grpc) as channel:
        call = channel.unary_unary("/opentelemetry.proto.collector.logs.v1.LogsService/Export")
        with pytest.raises(grpc.RpcError) as err:
            call(body, timeout=10)
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert sidecar.get("/healthz")[0] == 200


def _len(payload: bytes) -> bytes:
    n, out = len(payload), bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out) + payload


def test_invalid_log_ids_get_partial_success(sidecar: SidecarProcess) -> None:
    """A record whose trace_id is set but not 16 bytes is rejected; the rest is accepted."""
    bad = LogRecord(trace_id=b"\x01" * 5, body=AnyValue(string_value="bad"))
    good = LogRecord(body=AnyValue(string_value="good"))
    rejected = sidecar.value("codebook_telemetry_rejected_total", signal="logs",
                             transport="http", reason="invalid_item")
    proto = urllib.request.Request(f"{sidecar.http}/v1/logs", data=_raw_logs(bad, good),
                                   headers={"Content-Type": "application/x-protobuf"})
    with urllib.request.urlopen(proto, timeout=10) as resp:
        reply = ExportLogsServiceResponse.FromString(resp.read())
    assert reply.partial_success.rejected_log_records == 1
    assert sidecar.value("codebook_telemetry_rejected_total", signal="logs", transport="http",
                         reason="invalid_item") == rejected + 1
