"""The in-flight byte budget shared by the OTLP receivers (exporter/sidecar/budget.py).

Admission is checked as a table, then through real receivers on 127.0.0.1: with the budget
held by another request, both transports refuse with a retryable answer and count the
refusal; with it free they accept. Nothing here depends on timing.
"""

from __future__ import annotations

import http.client
import platform
from collections.abc import Iterator

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from exporter import CodebookMetrics, Enricher, load_codebook
from exporter.sidecar.budget import EXPANSION, InFlightBudget, return_freed_memory
from exporter.sidecar.otlp import OtlpIntake
from exporter.sidecar.otlp_grpc import OtlpGrpcReceiver
from exporter.sidecar.otlp_http import OtlpHttpReceiver

MB = 1 << 20

ADMISSION = [
    # (name, limit, bytes already in flight, wire bytes, decompressed bytes, admitted)
    ("alone, far over the limit", 1 * MB, 0, 4 * MB, 4 * MB, True),
    ("fits beside another", 64 * MB, 10 * MB, 1 * MB, 1 * MB, True),
    ("wire bytes do not fit", 64 * MB, 63 * MB, 2 * MB, 0, False),
    ("processing does not fit", 64 * MB, 40 * MB, 1 * MB, 5 * MB, False),
    ("exactly the limit", 64 * MB, 4 * MB, 4 * MB, 56 * MB // EXPANSION, True),
    ("one byte past it", 64 * MB, 4 * MB, 4 * MB + 1, 56 * MB // EXPANSION, False),
]


@pytest.mark.parametrize(("limit", "held", "wire", "body", "admitted"),
                         [c[1:] for c in ADMISSION], ids=[c[0] for c in ADMISSION])
def test_admission(limit: int, held: int, wire: int, body: int, admitted: bool) -> None:
    budget = InFlightBudget(limit)
    other = budget.lease(held) if held else None
    lease = budget.lease(wire)
    ok = lease is not None and lease.grow_for(body)
    assert ok is admitted
    expected = held + (wire + EXPANSION * body if ok else wire if lease is not None else 0)
    assert budget.in_use == expected
    if lease is not None:
        lease.release()
        lease.release()  # idempotent
    if other is not None:
        other.release()
    assert budget.in_use == 0


def request_body() -> bytes:
    span = Span(trace_id=bytes(range(1, 17)), span_id=bytes(range(1, 9)), name="send",
                attributes=[KeyValue(key="provider.source",
                                     value=AnyValue(string_value="vonage.sms")),
                            KeyValue(key="provider.code", value=AnyValue(string_value="1"))])
    return ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[span])])]
    ).SerializeToString()


@pytest.fixture
def receivers() -> Iterator[tuple[InFlightBudget, CodebookMetrics, str, str]]:
    budget = InFlightBudget(1 * MB)
    intake = OtlpIntake(Enricher(load_codebook(), CodebookMetrics()))
    h = OtlpHttpReceiver(intake, "127.0.0.1", 0, budget=budget).start()
    g = OtlpGrpcReceiver(intake, "127.0.0.1", 0, budget=budget).start()
    try:
        yield budget, intake.enricher.metrics, f"{h.host}:{h.port}", f"127.0.0.1:{g.port}"
    finally:
        h.stop(1)
        g.stop(1)


def post(address: str, body: bytes) -> tuple[int, str | None]:
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("POST", "/v1/traces", body, {"Content-Type": "application/x-protobuf"})
        resp = conn.getresponse()
        resp.read()
        return resp.status, resp.getheader("Retry-After")
    finally:
        conn.close()


def export_grpc(address: str, body: bytes) -> tuple[grpc.StatusCode, bool]:
    """The status code, and whether a RetryInfo came with it."""
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
        try:
            call(body, timeout=10)
            return grpc.StatusCode.OK, False
        except grpc.RpcError as exc:
            retry = False
            for key, value in exc.trailing_metadata() or ():  # type: ignore[attr-defined]
                if key == "grpc-status-details-bin":
                    details = status_pb2.Status.FromString(value).details
                    retry = any(d.Is(error_details_pb2.RetryInfo.DESCRIPTOR) for d in details)
            return exc.code(), retry  # type: ignore[attr-defined]


def test_receivers_refuse_past_the_budget_and_count_it(
    receivers: tuple[InFlightBudget, CodebookMetrics, str, str],
) -> None:
    budget, metrics, http_address, grpc_address = receivers
    body = request_body()
    held = budget.lease(1 * MB)  # another request in flight, holding the whole budget
    assert held is not None
    assert post(http_address, body) == (503, "1")
    assert export_grpc(grpc_address, body) == (grpc.StatusCode.UNAVAILABLE, True)
    for transport in ("http", "grpc"):
        assert metrics.value("codebook_telemetry_rejected_total", {
            "signal": "traces", "transport": transport, "reason": "in_flight_bytes",
        }) == 1.0
    held.release()
    assert post(http_address, body)[0] == 200
    assert export_grpc(grpc_address, body)[0] == grpc.StatusCode.OK
    assert budget.in_use == 0  # every lease given back


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_freed_request_buffers_go_back_to_the_system() -> None:
    assert return_freed_memory() is True
