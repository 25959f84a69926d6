"""The OTLP/gRPC receiver: the trace, metrics and logs ``Export`` services on grpcio.

Bounds: ``max_workers`` handler threads; ``max_concurrent_rpcs`` RPCs admitted at once (past
it grpcio answers RESOURCE_EXHAUSTED itself). When more than ``max_pending_requests`` admitted
RPCs wait for a handler thread, new ones are shed with UNAVAILABLE and a ``RetryInfo``
(retryable per the OTLP spec) and counted as ``overloaded``.

Size: ``max_request_bytes`` bounds a message after decompression, in two steps. grpcio
itself is given a hard cap of twice the limit (``grpc.max_receive_message_length``): it
refuses a larger message from its length prefix before buffering it, and stops inflating a
compressed one once it passes the cap, so neither a huge body nor a gzip bomb costs more than
the cap. A message that fits the cap reaches the handler as raw bytes, and one over
``max_request_bytes`` is refused there with RESOURCE_EXHAUSTED (no ``RetryInfo``: retrying
cannot help) and counted as ``too_large``, before it is parsed. Why twice: a request at the
limit is parsed, enriched and re-serialized, which takes several times its size, while an
oversized one is only held as bytes and dropped, so the cap adds nothing to the worst case
per RPC. grpcio does not tell the application about the messages it refuses, so those past
the cap (more than twice the limit, or inflating past it) are answered RESOURCE_EXHAUSTED by
grpcio and are not counted.

Requests are validated by the handler, not by grpcio (the trace wire path or the protobuf
runtime), so a malformed message is answered with INVALID_ARGUMENT and counted. Handlers run
on the server's thread pool and never raise anything but the gRPC abort they mean.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from .budget import InFlightBudget
from .otlp import MalformedRequest, OtlpIntake

_log = logging.getLogger(__name__)

# grpcio keeps message lengths in a C int.
_MAX_GRPC_MESSAGE_BYTES = (1 << 31) - 1

SERVICES = {
    "traces": "opentelemetry.proto.collector.trace.v1.TraceService",
    "metrics": "opentelemetry.proto.collector.metrics.v1.MetricsService",
    "logs": "opentelemetry.proto.collector.logs.v1.LogsService",
}


class _CountingExecutor(ThreadPoolExecutor):
    """A thread pool that knows how many submitted calls have not started yet."""

    def __init__(self, max_workers: int) -> None:
        super().__init__(max_workers=max_workers, thread_name_prefix="codebook-otlp-grpc")
        self._waiting = 0
        self._count_lock = threading.Lock()

    @property
    def waiting(self) -> int:
        return self._waiting

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        with self._count_lock:
            self._waiting += 1

        def started(*a: Any, **kw: Any) -> Any:
            with self._count_lock:
                self._waiting -= 1
            return fn(*a, **kw)

        return super().submit(started, *args, **kwargs)


def _retry_trailer(seconds: int) -> tuple[tuple[str, bytes], ...]:
    info = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=seconds))
    detail = any_pb2.Any()
    detail.Pack(info)
    status = status_pb2.Status(
        code=grpc.StatusCode.UNAVAILABLE.value[0], message="overloaded", details=[detail]
    )
    return (("grpc-status-details-bin", status.SerializeToString()),)


class OtlpGrpcReceiver:
    """A running OTLP/gRPC server on ``host:port`` (port 0 picks a free one).

    Binds in the constructor (raises RuntimeError when the address cannot be bound);
    ``start()`` starts serving; ``stop(timeout)`` refuses new RPCs and lets running ones
    finish until the deadline.
    """

    def __init__(
        self,
        intake: OtlpIntake,
        host: str = "127.0.0.1",
        port: int = 4317,
        *,
        max_workers: int = 4,
        max_concurrent_rpcs: int = 64,
        max_pending_requests: int = 16,
        max_request_bytes: int = 4 << 20,
        retry_after_seconds: int = 1,
        budget: InFlightBudget | None = None,
    ) -> None:
        self.intake = intake
        self.budget = budget
        self.metrics = intake.enricher.metrics
        self.max_pending_requests = max_pending_requests
        self.max_request_bytes = max_request_bytes
        self.hard_cap_bytes = min(2 * max_request_bytes, _MAX_GRPC_MESSAGE_BYTES)
        self._executor = _CountingExecutor(max(1, max_workers))
        self._trailer = _retry_trailer(retry_after_seconds)
        self._logged = False
        self._server = grpc.server(
            self._executor,
            maximum_concurrent_rpcs=max(1, max_concurrent_rpcs),
            options=[
                ("grpc.max_receive_message_length", self.hard_cap_bytes),
                ("grpc.max_send_message_length", 1 << 20),
                ("grpc.so_reuseport", 0),
                # No flow-control window growth: a stream buffers its 64 KiB lookahead, so
                # RPCs waiting for a worker do not hold their whole messages.
                ("grpc.http2.bdp_probe", 0),
            ],
        )
        handlers = [
            grpc.method_handlers_generic_handler(
                service, {"Export": grpc.unary_unary_rpc_method_handler(self._handler(signal))}
            )
            for signal, service in SERVICES.items()
        ]
        self._server.add_generic_rpc_handlers(handlers)
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.host = host
        self.port = self._server.add_insecure_port(address)

    def _handler(self, signal: str) -> Callable[[bytes, grpc.ServicerContext], bytes]:

        def export(raw: bytes, context: grpc.ServicerContext) -> bytes:
            if len(raw) > self.max_request_bytes:
                self.metrics.telemetry_rejected(signal, "grpc", "too_large")
                context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"request of {len(raw)} bytes exceeds {self.max_request_bytes} bytes",
                )
            if self._executor.waiting > self.max_pending_requests:
                self.metrics.telemetry_rejected(signal, "grpc", "overloaded")
                context.set_trailing_metadata(self._trailer)
                context.abort(grpc.StatusCode.UNAVAILABLE, "overloaded; retry later")
            lease = None
            if self.budget is not None:
                lease = self.budget.lease(len(raw))
                if lease is None or not lease.grow_for(len(raw)):
                    if lease is not None:
                        lease.release()
                    self.metrics.telemetry_rejected(signal, "grpc", "in_flight_bytes")
                    context.set_trailing_metadata(self._trailer)
                    context.abort(grpc.StatusCode.UNAVAILABLE,
                                  "too many request bytes in flight; retry later")
            try:
                result = self.intake.export_protobuf(signal, raw, "grpc")
                return result.response.SerializeToString()
            except MalformedRequest as exc:
                self.metrics.telemetry_rejected(signal, "grpc", "malformed")
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            except Exception:
                if not self._logged:
                    self._logged = True
                    _log.exception("codebook: OTLP/gRPC request failed")
                self.metrics.telemetry_rejected(signal, "grpc", "internal_error")
                context.abort(grpc.StatusCode.INTERNAL, "internal error")
            finally:
                if lease is not None:
                    lease.release()
            raise AssertionError("unreachable: context.abort raises")

        return export

    def start(self) -> OtlpGrpcReceiver:
        """Start serving; returns self."""
        self._server.start()
        return self

    def stop(self, timeout_seconds: float = 5.0) -> None:
        """Refuse new RPCs, finish running ones until the deadline, then stop."""
        self._server.stop(grace=timeout_seconds).wait(timeout_seconds + 1)
        self._executor.shutdown(wait=False, cancel_futures=True)
