"""OTLP/HTTP and OTLP/gRPC protocol details: statuses, encodings, partial success."""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import os
import urllib.parse
import zlib
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span
from sidecar_proc import SidecarProcess

pytestmark = pytest.mark.slow

LIMIT = 64 * 1024
PROTOBUF = "application/x-protobuf"
TRACE_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SidecarProcess]:
    config = {"receivers": {"max_request_bytes": LIMIT}}
    with SidecarProcess(tmp_path_factory.mktemp("protocol"), config) as proc:
        yield proc


def make_request(n: int = 3, code: object = "1", *, bad_ids: int = 0) -> ExportTraceServiceRequest:
    """A request of ``n`` spans carrying a Vonage code, the first ``bad_ids`` with bad ids."""
    spans = []
    for i in range(n):
        value = AnyValue(int_value=code) if isinstance(code, int) else AnyValue(string_value=code)
        spans.append(
            Span(
                trace_id=b"\x00" * 15 + b"\x01" if i >= bad_ids else b"\x01\x02",
                span_id=os.urandom(7) + b"\x01",
                name="send",
                attributes=[
                    KeyValue(key="provider.source", value=AnyValue(string_value="vonage.sms")),
                    KeyValue(key="provider.code", value=value),
                ],
            )
        )
    return ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=spans)])]
    )


def post(
    sidecar: SidecarProcess,
    body: bytes,
    *,
    path: str = "/v1/traces",
    ctype: str = PROTOBUF,
    encoding: str | None = None,
    method: str = "POST",
) -> tuple[int, dict[str, str], bytes]:
    url = urllib.parse.urlsplit(sidecar.http)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    headers = {"Content-Type": ctype}
    if encoding:
        headers["Content-Encoding"] = encoding
    conn.request(method, path, body, headers)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data


def status_of(body: bytes, as_json: bool = False) -> status_pb2.Status:
    msg = status_pb2.Status()
    if as_json:
        json_format.Parse(body, msg)
    else:
        msg.ParseFromString(body)
    return msg


@pytest.mark.parametrize(
    ("body", "ctype", "encoding", "status"),
    [
        (b"\xff\xff\xff\xff", PROTOBUF, None, 400),
        (make_request().SerializeToString()[:-3], PROTOBUF, None, 400),
        (b"{not json", "application/json", None, 400),
        (b"[1, 2]", "application/json", None, 400),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}',
         "application/json", None, 400),
        (b"hello", "text/plain", None, 415),
        (b"", "application/grpc", None, 415),
        (make_request().SerializeToString(), PROTOBUF, "br", 415),
        (b"not gzip at all", PROTOBUF, "gzip", 400),
        (gzip.compress(make_request().SerializeToString())[:-8], PROTOBUF, "gzip", 400),
        (os.urandom(LIMIT + 1), PROTOBUF, None, 413),
        (gzip.compress(b"\0" * (LIMIT * 50)), PROTOBUF, "gzip", 413),
    ],
    ids=[
        "random-bytes",
        "truncated-protobuf",
        "broken-json",
        "json-not-an-object",
        "json-bad-hex-id",
        "text-plain",
        "grpc-content-type",
        "unknown-encoding",
        "bad-gzip",
        "truncated-gzip",
        "too-large-on-the-wire",
        "gzip-bomb",
    ],
)
def test_bad_requests_get_the_right_status(
    sidecar: SidecarProcess, body: bytes, ctype: str, encoding: str | None, status: int
) -> None:
    """Each malformed, oversized or unsupported request gets its status and a Status body."""
    got, headers, data = post(sidecar, body, ctype=ctype, encoding=encoding)
    assert got == status
    as_json = headers["content-type"] == "application/json"
    assert headers["content-type"] == ("application/json" if ctype == "application/json"
                                       else PROTOBUF)
    assert status_of(data, as_json).message


def test_rejections_are_counted(sidecar: SidecarProcess) -> None:
    """Rejected requests show in codebook_telemetry_rejected_total by reason."""
    post(sidecar, b"\xff\xff", ctype=PROTOBUF)
    post(sidecar, b"x", ctype="text/plain")
    for reason in ("malformed", "unsupported_media_type"):
        assert sidecar.value("codebook_telemetry_rejected_total", signal="traces",
                             transport="http", reason=reason) >= 1


def test_gzip_and_deflate_bodies(sidecar: SidecarProcess) -> None:
    """gzip (also in several members) and deflate bodies are accepted."""
    raw = make_request(2).SerializeToString()
    half = len(raw) // 2
    for body, enc in (
        (gzip.compress(raw), "gzip"),
        (gzip.compress(raw[:half]) + gzip.compress(raw[half:]), "gzip"),
        (zlib.compress(raw), "deflate"),
    ):
        status, headers, data = post(sidecar, body, encoding=enc)
        assert status == 200, data
        assert headers["content-type"] == PROTOBUF


def test_partial_success_for_invalid_spans(sidecar: SidecarProcess) -> None:
    """Spans with invalid ids are rejected through partial success; the rest are counted."""
    before = sidecar.value("codebook_telemetry_rejected_total", signal="traces",
                           transport="http", reason="invalid_item")
    status, _, data = post(sidecar, make_request(5, bad_ids=2).SerializeToString())
    assert status == 200
    resp = ExportTraceServiceResponse.FromString(data)
    assert resp.partial_success.rejected_spans == 2
    assert "trace_id" in resp.partial_success.error_message
    assert sidecar.value("codebook_telemetry_rejected_total", signal="traces",
                         transport="http", reason="invalid_item") == before + 2


def test_partial_success_in_json(sidecar: SidecarProcess) -> None:
    """The JSON reply carries partialSuccess with the rejected count as JSON."""
    doc = json_format.MessageToDict(make_request(3, bad_ids=1))
    for rs in doc["resourceSpans"]:
        for span in rs["scopeSpans"][0]["spans"]:
            for key in ("traceId", "spanId"):
                span[key] = base64.b64decode(span[key]).hex()
    status, _, data = post(sidecar, json.dumps(doc).encode(), ctype="application/json")
    assert status == 200
    assert json.loads(data) == {
        "partialSuccess": {"rejectedSpans": "1", "errorMessage": json.loads(data)
                           ["partialSuccess"]["errorMessage"]}
    }


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/v1/traces", 405), ("POST", "/v1/nothing", 404), ("PUT", "/v1/metrics", 405)],
    ids=["get", "unknown-path", "put"],
)
def test_paths_and_methods(sidecar: SidecarProcess, method: str, path: str, status: int) -> None:
    """Only POST to the three OTLP paths is served."""
    got, _, _ = post(sidecar, b"", path=path, method=method)
    assert got == status


def test_logs_are_accepted(sidecar: SidecarProcess) -> None:
    """Logs are accepted (and counted as received) without enrichment."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs

    req = ExportLogsServiceRequest(
        resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(log_records=[LogRecord()] * 3)])]
    )
    status, _, _ = post(sidecar, req.SerializeToString(), path="/v1/logs")
    assert status == 200
    assert sidecar.value("codebook_telemetry_received_total", signal="logs",
                         transport="http") >= 3


def _grpc_call(sidecar: SidecarProcess, body: bytes, compression: grpc.Compression | None = None
               ) -> bytes:
    with grpc.insecure_channel(sidecar.grpc) as channel:
        call = channel.unary_unary(TRACE_METHOD)
        result: bytes = call(body, timeout=10, compression=compression)
        return result


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"\xff\xff\xff", grpc.StatusCode.INVALID_ARGUMENT),
        (make_request().SerializeToString()[:-3], grpc.StatusCode.INVALID_ARGUMENT),
        (b"\x0a" + b"\xff" * 9 + b"\x01", grpc.StatusCode.INVALID_ARGUMENT),
        (os.urandom(LIMIT + 10), grpc.StatusCode.RESOURCE_EXHAUSTED),
    ],
    ids=["random-bytes", "truncated", "bad-varint", "too-large"],
)
def test_grpc_statuses(sidecar: SidecarProcess, body: bytes, code: grpc.StatusCode) -> None:
    """Malformed gRPC requests get INVALID_ARGUMENT; oversized ones RESOURCE_EXHAUSTED."""
    with pytest.raises(grpc.RpcError) as info:
        _grpc_call(sidecar, body)
    assert info.value.code() is code  # type: ignore[attr-defined]


def sized_request(size: int) -> bytes:
    """A valid one-span trace request of exactly ``size`` bytes (the span name pads it)."""
    req = make_request(1)
    span = req.resource_spans[0].scope_spans[0].spans[0]
    for _ in range(8):  # the name's length prefix grows by a byte at most a few times
        missing = size - req.ByteSize()
        if missing == 0:
            return req.SerializeToString()
        if missing > 0:
            span.name += "x" * missing
        else:
            span.name = span.name[:missing]
    raise AssertionError(f"cannot build a request of {size} bytes")


def _too_large(sidecar: SidecarProcess) -> float:
    return sidecar.value("codebook_telemetry_rejected_total", signal="traces", transport="grpc",
                         reason="too_large")


GRPC_SIZE_CASES = [
    # (id, body, compression, status, counted)
    ("plain-at-the-limit", sized_request(LIMIT), None, grpc.StatusCode.OK, 0),
    ("plain-one-byte-over", sized_request(LIMIT + 1), None,
     grpc.StatusCode.RESOURCE_EXHAUSTED, 1),
    ("gzip-at-the-limit", sized_request(LIMIT), grpc.Compression.Gzip, grpc.StatusCode.OK, 0),
    ("gzip-inflating-over", sized_request(LIMIT * 3 // 2), grpc.Compression.Gzip,
     grpc.StatusCode.RESOURCE_EXHAUSTED, 1),
    ("plain-at-the-hard-cap", sized_request(2 * LIMIT), None,
     grpc.StatusCode.RESOURCE_EXHAUSTED, 1),
    # Past twice the limit grpcio refuses the message itself and the handler never sees it.
    ("plain-past-the-hard-cap", sized_request(2 * LIMIT + 1), None,
     grpc.StatusCode.RESOURCE_EXHAUSTED, 0),
]


@pytest.mark.parametrize(("body", "compression", "code", "counted"),
                         [c[1:] for c in GRPC_SIZE_CASES], ids=[c[0] for c in GRPC_SIZE_CASES])
def test_grpc_oversized_requests_are_counted(
    sidecar: SidecarProcess, body: bytes, compression: grpc.Compression | None,
    code: grpc.StatusCode, counted: int,
) -> None:
    """Requests over max_request_bytes (after inflating) get RESOURCE_EXHAUSTED and a count."""
    before = _too_large(sidecar)
    try:
        _grpc_call(sidecar, body, compression)
        got = grpc.StatusCode.OK
    except grpc.RpcError as exc:
        got = exc.code()  # type: ignore[attr-defined]
    assert got is code
    assert _too_large(sidecar) == before + counted


def _peak_rss_bytes(sidecar: SidecarProcess) -> int:
    assert sidecar.proc is not None
    status = Path(f"/proc/{sidecar.proc.pid}/status").read_text()
    kib = next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))
    return int(kib) * 1024


def test_grpc_gzip_bomb_is_refused(sidecar: SidecarProcess) -> None:
    """A 96 MiB gzip bomb is refused with RESOURCE_EXHAUSTED without being inflated."""
    bomb = b"\0" * (96 << 20)  # about 96 KiB compressed: under the hard cap on the wire
    peak = _peak_rss_bytes(sidecar)
    with pytest.raises(grpc.RpcError) as info:
        _grpc_call(sidecar, bomb, grpc.Compression.Gzip)
    assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
    assert _peak_rss_bytes(sidecar) - peak < len(bomb) // 4
    assert sidecar.get("/healthz")[0] == 200


def test_grpc_partial_success(sidecar: SidecarProcess) -> None:
    """gRPC replies with partial success for invalid spans."""
    data = _grpc_call(sidecar, make_request(4, bad_ids=3).SerializeToString(),
                      grpc.Compression.Gzip)
    assert ExportTraceServiceResponse.FromString(data).partial_success.rejected_spans == 3
