"""Forwarding throughput: the persistent queue (``forward.queue_dir``) vs the in-memory queue.

Run: ``python benchmarks/forward_throughput.py [--requests 200] [--rounds 5] [--seconds 60]``

Each round starts, one after the other and alternating which goes first, two real
``codebook serve`` processes that differ only in ``forward.queue_dir`` (empty vs a fresh
temporary folder, ``queue_sync: normal``), both forwarding over OTLP/gRPC to the same
upstream (a grpcio server in this process that counts spans). A client sends ``--requests``
OTLP/HTTP requests of 100 spans each from 2 threads; the figure is spans/s from the first
request to the moment the upstream has received every span (so it includes the queue's
writes, reads and deletes on the sending path). Bounded by ``--seconds`` per run.

Printed: spans/s of both per round, and the median ratio persistent / memory (goal: >= 0.5).
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import yaml

REPO = Path(__file__).resolve().parent.parent
SPANS = 100


def build_request() -> bytes:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    req = ExportTraceServiceRequest()
    spans = req.resource_spans.add().scope_spans.add().spans
    for i in range(SPANS):
        span = spans.add(
            name="sms.send", trace_id=os.urandom(16), span_id=os.urandom(8), kind=3
        )
        for key, value in (("provider.source", "vonage.sms"), ("provider.code", str(i % 12))):
            kv = span.attributes.add(key=key)
            kv.value.string_value = value
    return req.SerializeToString()


class Upstream:
    """An OTLP/gRPC trace server that counts the spans it receives."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
            ExportTraceServiceResponse,
        )

        self.spans = 0
        self._lock = threading.Lock()
        self.server = grpc.server(ThreadPoolExecutor(max_workers=2))
        ok = ExportTraceServiceResponse().SerializeToString()

        def export(raw: bytes, context: grpc.ServicerContext) -> bytes:
            req = ExportTraceServiceRequest.FromString(raw)
            n = sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)
            with self._lock:
                self.spans += n
            return ok

        handler = grpc.method_handlers_generic_handler(
            "opentelemetry.proto.collector.trace.v1.TraceService",
            {"Export": grpc.unary_unary_rpc_method_handler(export)},
        )
        self.server.add_generic_rpc_handlers([handler])
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()


def start_sidecar(tmp: Path, port: int, queue_dir: str) -> tuple[subprocess.Popen[bytes], str]:
    config = {
        "receivers": {"grpc": {"enabled": False}, "http": {"endpoint": "127.0.0.1:0"}},
        "metrics": {"endpoint": "127.0.0.1:0"},
        "forward": {
            "endpoint": f"127.0.0.1:{port}",
            "queue_dir": queue_dir,
            "queue_max_requests": 100_000,
            "queue_max_bytes": 1 << 30,
        },
        "log_level": "warning",
    }
    path = tmp / f"config-{time.monotonic_ns()}.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", "serve", "--config", str(path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    if not sel.select(30):
        proc.kill()
        raise SystemExit("sidecar did not start")
    line = json.loads(proc.stdout.readline())
    return proc, f"http://{line['http']}/v1/traces"


def run(tmp: Path, upstream: Upstream, persistent: bool, requests: int, seconds: float) -> float:
    queue_dir = tempfile.mkdtemp(dir=tmp) if persistent else ""
    proc, url = start_sidecar(tmp, upstream.port, queue_dir)
    body = build_request()
    try:
        base = upstream.spans
        deadline = time.monotonic() + seconds
        counter = iter(range(requests))
        lock = threading.Lock()

        def client() -> None:
            while time.monotonic() < deadline:
                with lock:
                    if next(counter, None) is None:
                        return
                req = urllib.request.Request(
                    url, data=body, headers={"Content-Type": "application/x-protobuf"}
                )
                with urllib.request.urlopen(req, timeout=10) as resp:
                    resp.read()

        started = time.perf_counter()
        threads = [threading.Thread(target=client) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        want = base + requests * SPANS
        while upstream.spans < want and time.monotonic() < deadline:
            time.sleep(0.002)
        elapsed = time.perf_counter() - started
        if upstream.spans < want:
            raise SystemExit(f"run exceeded --seconds ({upstream.spans - base} spans arrived)")
        return requests * SPANS / elapsed
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    upstream = Upstream()
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = (False, True) if r % 2 == 0 else (True, False)
            rates = {p: run(Path(tmp), upstream, p, args.requests, args.seconds) for p in order}
            ratio = rates[True] / rates[False]
            ratios.append(ratio)
            print(
                f"round {r + 1}: memory {rates[False]:,.0f} spans/s, "
                f"persistent {rates[True]:,.0f} spans/s, ratio {ratio:.2f}"
            )
    print(f"persistent / memory (median of {len(ratios)}): {statistics.median(ratios):.2f} "
          "(goal >= 0.5)")
    upstream.server.stop(None)


if __name__ == "__main__":
    main()
