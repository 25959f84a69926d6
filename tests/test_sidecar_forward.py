"""Forwarding enriched telemetry to a second real OTLP endpoint on loopback."""

from __future__ import annotations

import gzip
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from otlp_upstream import GrpcUpstream, HttpUpstream
from pki import Pki, make_pki
from sidecar_proc import SidecarProcess, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def grpc_upstream() -> Iterator[GrpcUpstream]:
    up = GrpcUpstream()
    yield up
    up.server.stop(None)


def _send(exporter: SpanExporter, codes: list[object]) -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("fwd")
    for code in codes:
        attrs = {"provider.source": "vonage.sms", "provider.code": code} if code else {}
        with tracer.start_as_current_span(f"send-{code}", attributes=attrs):
            pass
    provider.shutdown()


def test_forwards_enriched_spans_over_grpc(tmp_path: Path, grpc_upstream: GrpcUpstream) -> None:
    """Spans sent to the sidecar reach the upstream with the Codebook attributes added."""
    config = {"forward": {"endpoint": f"127.0.0.1:{grpc_upstream.port}", "protocol": "grpc"}}
    with SidecarProcess(tmp_path, config) as sidecar:
        _send(OTLPSpanExporter(endpoint=sidecar.grpc, insecure=True), ["1", "0", None])
        spans = wait_for(lambda: len(grpc_upstream.spans()) == 3 and grpc_upstream.spans())
        by_name = {s["name"]: s for s in spans}
        throttled = by_name["send-1"]
        assert throttled["attrs"]["provider.category"] == "throttled"
        assert throttled["attrs"]["provider.match"] == "exact"
        assert throttled["attrs"]["error.type"] == "throttled"
        assert throttled["status"] == 2  # ERROR, as the in-process processor sets it
        assert by_name["send-0"]["attrs"]["provider.category"] == "success"
        assert "error.type" not in by_name["send-0"]["attrs"]
        assert "provider.category" not in by_name["send-None"]["attrs"]
        assert wait_for(lambda: sidecar.value("codebook_telemetry_forwarded_total",
                                              signal="traces") == 3)


def test_forwards_over_http_and_honours_retry_after(tmp_path: Path) -> None:
    """An upstream 503 with Retry-After: 1 is retried no sooner than a second later."""
    upstream = HttpUpstream(refuse=1, retry_after=1)
    config = {"forward": {"endpoint": f"http://127.0.0.1:{upstream.port}",
                          "protocol": "http/protobuf", "initial_backoff_seconds": 0.01}}
    try:
        with SidecarProcess(tmp_path, config) as sidecar:
            _send(HttpSpanExporter(endpoint=f"{sidecar.http}/v1/traces"), ["1"])
            wait_for(lambda: len(upstream.bodies) == 1)
            assert upstream.times[1] - upstream.times[0] >= 0.9
            req = ExportTraceServiceRequest.FromString(gzip.decompress(
                upstream.bodies[0]))
            keys = {kv.key for kv in req.resource_spans[0].scope_spans[0].spans[0].attributes}
            assert {"provider.category", "provider.severity", "provider.owner"} <= keys
            assert wait_for(lambda: sidecar.value("codebook_telemetry_forwarded_total",
                                                  signal="traces") == 1)
    finally:
        upstream.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_upstream_down_drops_are_bounded_and_counted(tmp_path: Path) -> None:
    """With the upstream down, the queue stays bounded, drops are counted, the sidecar lives."""
    config = {
        "forward": {
            "endpoint": f"127.0.0.1:{_closed_port()}",
            "queue_max_requests": 4,
            "timeout_seconds": 0.5,
            "initial_backoff_seconds": 0.05,
            "max_elapsed_seconds": 0.3,
        }
    }
    with SidecarProcess(tmp_path, config) as sidecar:
        provider = TracerProvider()
        provider.add_span_processor(
            SimpleSpanProcessor(OTLPSpanExporter(endpoint=sidecar.grpc, insecure=True))
        )
        tracer = provider.get_tracer("flood")
        deadline = time.monotonic() + 20
        for _ in range(300):  # bounded in count and time: one request per span
            if time.monotonic() > deadline:
                break
            with tracer.start_as_current_span("s", attributes={"provider.code": 1}):
                pass
        provider.shutdown()
        sent = sidecar.value("codebook_telemetry_received_total", signal="traces",
                             transport="grpc")
        assert sent > 0
        full = sidecar.value("codebook_telemetry_dropped_total", signal="traces",
                             reason="queue_full")
        assert full > 0

        def settled() -> bool:
            dropped = sidecar.total("codebook_telemetry_dropped_total", signal="traces")
            return dropped == sent

        wait_for(settled, timeout=15)  # every accepted span is dropped and counted, none lost
        assert sidecar.value("codebook_telemetry_forwarded_total", signal="traces") == 0
        assert sidecar.get("/healthz")[0] == 200
        assert sidecar.proc is not None and sidecar.proc.poll() is None
    assert sidecar.proc.returncode == 0


@pytest.fixture(scope="module")
def upstream_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), "upstream")


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), "other")


def _enriched(spans: list[dict[str, Any]]) -> bool:
    return len(spans) == 1 and spans[0]["attrs"].get("provider.category") == "throttled"


def _http_spans(upstream: HttpUpstream) -> list[dict[str, Any]]:
    out = []
    for body in list(upstream.bodies):
        req = ExportTraceServiceRequest.FromString(gzip.decompress(body))
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    attrs = {kv.key: kv.value.string_value for kv in span.attributes}
                    out.append({"name": span.name, "attrs": attrs})
    return out


def test_forwards_over_grpc_with_tls(tmp_path: Path, upstream_pki: Pki) -> None:
    """An https:// gRPC upstream verified with forward.ca_file gets the enriched spans."""
    upstream = GrpcUpstream(upstream_pki)
    config = {"forward": {"endpoint": f"https://127.0.0.1:{upstream.port}", "protocol": "grpc",
                          "ca_file": str(upstream_pki.ca)}}
    try:
        with SidecarProcess(tmp_path, config) as sidecar:
            _send(OTLPSpanExporter(endpoint=sidecar.grpc, insecure=True), ["1"])
            wait_for(lambda: _enriched(upstream.spans()))
            assert wait_for(lambda: sidecar.value("codebook_telemetry_forwarded_total",
                                                  signal="traces") == 1)
    finally:
        upstream.server.stop(None)


@pytest.mark.parametrize("skip_verify", [False, True], ids=["ca-file", "insecure-skip-verify"])
def test_forwards_over_https(
    tmp_path: Path, upstream_pki: Pki, other_pki: Pki, skip_verify: bool
) -> None:
    """An https:// OTLP/HTTP upstream gets the enriched spans, verified or explicitly not."""
    upstream = HttpUpstream(pki=upstream_pki)
    # Skipping verification must work even with a CA file that does not match.
    ca = other_pki.ca if skip_verify else upstream_pki.ca
    config = {"forward": {"endpoint": f"https://127.0.0.1:{upstream.port}",
                          "protocol": "http/protobuf", "ca_file": str(ca),
                          "insecure_skip_verify": skip_verify}}
    try:
        with SidecarProcess(tmp_path, config) as sidecar:
            _send(HttpSpanExporter(endpoint=f"{sidecar.http}/v1/traces"), ["1"])
            wait_for(lambda: _enriched(_http_spans(upstream)))
            assert wait_for(lambda: sidecar.value("codebook_telemetry_forwarded_total",
                                                  signal="traces") == 1)
    finally:
        upstream.close()


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_wrong_ca_drops_are_counted(
    tmp_path: Path, upstream_pki: Pki, other_pki: Pki, protocol: str
) -> None:
    """An upstream whose certificate the CA file does not vouch for: counted drops, no crash."""
    grpc_up = GrpcUpstream(upstream_pki) if protocol == "grpc" else None
    http_up = HttpUpstream(pki=upstream_pki) if grpc_up is None else None
    port = grpc_up.port if grpc_up is not None else http_up.port  # type: ignore[union-attr]
    config = {"forward": {"endpoint": f"https://127.0.0.1:{port}", "protocol": protocol,
                          "ca_file": str(other_pki.ca), "timeout_seconds": 2,
                          "initial_backoff_seconds": 0.05, "max_elapsed_seconds": 0.3}}
    try:
        with SidecarProcess(tmp_path, config) as sidecar:
            _send(HttpSpanExporter(endpoint=f"{sidecar.http}/v1/traces"), ["1", "0"])
            wait_for(lambda: sidecar.value("codebook_telemetry_dropped_total", signal="traces",
                                           reason="upstream_error") == 2, timeout=20)
            assert sidecar.value("codebook_telemetry_forwarded_total", signal="traces") == 0
            assert sidecar.get("/healthz")[0] == 200
            assert sidecar.proc is not None and sidecar.proc.poll() is None
            warning = next(line for line in sidecar.log().splitlines()
                           if "codebook: forwarding to" in line)
            assert re.search("certificate.verify.failed", warning, re.IGNORECASE), warning
        assert sidecar.proc.returncode == 0
    finally:
        if grpc_up is not None:
            assert grpc_up.requests == []
            grpc_up.server.stop(None)
        if http_up is not None:
            assert http_up.bodies == []
            http_up.close()
