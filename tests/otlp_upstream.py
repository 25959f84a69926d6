"""Test helper: tiny OTLP upstreams on loopback that keep what the sidecar forwards to them."""

from __future__ import annotations

import http.server
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from pki import Pki

# What a scripted upstream does with one request: None accepts it, a gRPC status code fails
# it with that code, an int accepts it but rejects that many spans (OTLP partial success).
Outcome = grpc.StatusCode | int | None


class GrpcUpstream:
    """A tiny OTLP/gRPC trace (and logs) receiver that keeps every request it accepts (TLS
    with ``pki``).

    ``script`` (settable at any time) decides each request's :data:`Outcome`; ``port`` binds
    a given port (a restarted upstream at the same address).
    """

    def __init__(
        self,
        pki: Pki | None = None,
        *,
        script: Callable[[ExportTraceServiceRequest], Outcome] | None = None,
        port: int = 0,
    ) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        self.log_requests: list[ExportLogsServiceRequest] = []
        self.script = script
        self.refused = 0
        self._lock = threading.Lock()
        self.server = grpc.server(ThreadPoolExecutor(max_workers=2))

        def export(raw: bytes, context: grpc.ServicerContext) -> bytes:
            req = ExportTraceServiceRequest.FromString(raw)
            outcome = None if self.script is None else self.script(req)
            if isinstance(outcome, grpc.StatusCode):
                with self._lock:
                    self.refused += 1
                context.abort(outcome, "scripted failure")
            resp = ExportTraceServiceResponse()
            if isinstance(outcome, int) and outcome:
                resp.partial_success.rejected_spans = outcome
                resp.partial_success.error_message = "scripted partial success"
            with self._lock:
                self.requests.append(req)
            return resp.SerializeToString()

        def export_logs(raw: bytes, context: grpc.ServicerContext) -> bytes:
            with self._lock:
                self.log_requests.append(ExportLogsServiceRequest.FromString(raw))
            return ExportLogsServiceResponse().SerializeToString()

        handler = grpc.method_handlers_generic_handler(
            "opentelemetry.proto.collector.trace.v1.TraceService",
            {"Export": grpc.unary_unary_rpc_method_handler(export)},
        )
        logs_handler = grpc.method_handlers_generic_handler(
            "opentelemetry.proto.collector.logs.v1.LogsService",
            {"Export": grpc.unary_unary_rpc_method_handler(export_logs)},
        )
        self.server.add_generic_rpc_handlers([handler, logs_handler])
        if pki is None:
            self.port = self.server.add_insecure_port(f"127.0.0.1:{port}")
        else:
            creds = grpc.ssl_server_credentials(
                [(pki.server_key.read_bytes(), pki.server_crt.read_bytes())]
            )
            self.port = self.server.add_secure_port(f"127.0.0.1:{port}", creds)
        self.server.start()

    def close(self) -> None:
        self.server.stop(0)

    def spans(self) -> list[dict[str, Any]]:
        with self._lock:
            reqs = list(self.requests)
        out = []
        for req in reqs:
            for rs in req.resource_spans:
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        attrs = {kv.key: kv.value.WhichOneof("value") and getattr(
                            kv.value, kv.value.WhichOneof("value")) for kv in span.attributes}
                        out.append({"name": span.name, "attrs": attrs,
                                    "status": span.status.code})
        return out


class HttpUpstream:
    """An OTLP/HTTP receiver that answers 503 + Retry-After to its first ``refuse`` requests.

    With ``pki`` it serves HTTPS with that CA's server certificate. ``status`` (another final
    status, e.g. 400) and ``rejected`` (spans a 200's ``partial_success`` rejects) script the
    answers after that.
    """

    def __init__(
        self,
        refuse: int = 0,
        retry_after: int = 1,
        pki: Pki | None = None,
        *,
        status: int = 200,
        rejected: int = 0,
    ) -> None:
        self.times: list[float] = []
        self.bodies: list[bytes] = []
        self.requests: list[tuple[str, bytes]] = []  # (path, body) of each kept body
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.times.append(time.monotonic())
                if len(outer.times) <= refuse:
                    self.send_response(503)
                    self.send_header("Retry-After", str(retry_after))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                reply = b""
                if status == 200:
                    outer.requests.append((self.path, body))  # one append: never torn
                    outer.bodies.append(body)
                    resp = ExportTraceServiceResponse()
                    if rejected:
                        resp.partial_success.rejected_spans = rejected
                    reply = resp.SerializeToString()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if pki is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(pki.server_crt, pki.server_key)
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
