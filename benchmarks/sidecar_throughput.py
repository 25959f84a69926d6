"""Sidecar throughput: spans (log records)/s end to end vs a parse-only baseline.

Run: ``python benchmarks/sidecar_throughput.py [--seconds 8] [--requests 400]
[--signal traces|logs|both]``

For each transport (OTLP/HTTP protobuf, OTLP/gRPC) this starts, one after the other and
alternating, a real ``codebook serve`` process and a baseline server process that uses the
same server stack and worker count but only parses each request and answers (no enrichment,
no counting). A client process sends the same pre-built 1,000-span batch (every span carries
``provider.source``/``provider.code``, a mix of mapped and unmapped codes, plus 4 ordinary
attributes) over 4 persistent connections, bounded by ``--requests`` per run and ``--seconds``.
For logs (issue 10) the batch is 1,000 log records with the same attributes, a body and a
severity, every record carrying a code; the baseline parses ExportLogsServiceRequest. For
``events`` it is 1,000 spans each carrying its code on a ``provider.result`` span event.

Printed per transport: spans/s of both, the ratio (goal: >= 0.8), spans per CPU-second of the
server process (``per core``), and the sidecar's RSS idle and its peak under the flood (goal:
bounded, < 150 MB), sampled every 50 ms through the flood. The sidecar takes its C wire path
(validation and enrichment without the GIL, see exporter/_wire.c) when the extension is built,
so on 2 cores it can outrun a baseline that parses under the GIL: compare the per-CPU-second
figures too.

Then the hostile-input case (issue 15): CPU seconds the sidecar spends on one OTLP/HTTP
request of (just under) ``receivers.max_request_bytes`` whose spans all carry distinct codes
chosen to collide under an unkeyed hash (ints differing only above bit 20, whole doubles
1.0, 2.0, ..., doubles differing only in the exponent), against a same-sized request of
distinct ordinary codes (0, 1, 2, ...), alternating, median of ``--hostile-repeats``.
Printed: the ratio (goal: <= 3x). ``--hostile-only`` skips the throughput runs.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TRACE_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
METHODS = {"traces": TRACE_METHOD,
           "logs": "/opentelemetry.proto.collector.logs.v1.LogsService/Export"}
BATCH = 1000
CONNECTIONS = 4
WORKERS = 4


def build_batch(events: bool = False) -> bytes:
    """1,000 spans carrying a code each, or (``events``) each a ``provider.result`` event
    carrying it instead."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

    codes = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "15", "99", "12345"]
    spans = []
    for i in range(BATCH):
        attrs = {
            "provider.source": AnyValue(string_value="vonage.sms"),
            "provider.code": AnyValue(string_value=codes[i % len(codes)]),
            "http.request.method": AnyValue(string_value="POST"),
            "server.address": AnyValue(string_value="rest.nexmo.com"),
            "http.response.status_code": AnyValue(int_value=200),
            "messaging.batch.message_count": AnyValue(int_value=1),
        }
        result = []
        if events:
            result = [Span.Event(time_unix_nano=1_700_000_000_000_100_000 + i,
                                 name="provider.result",
                                 attributes=[KeyValue(key=k, value=attrs.pop(k))
                                             for k in ("provider.source", "provider.code")])]
        spans.append(
            Span(
                events=result,
                trace_id=os.urandom(16),
                span_id=os.urandom(8),
                name="sms.send",
                kind=3,
                start_time_unix_nano=1_700_000_000_000_000_000 + i,
                end_time_unix_nano=1_700_000_000_000_500_000 + i,
                attributes=[KeyValue(key=k, value=v) for k, v in attrs.items()],
            )
        )
    resource = Resource(
        attributes=[KeyValue(key="service.name", value=AnyValue(string_value="bench"))]
    )
    req = ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(resource=resource, scope_spans=[ScopeSpans(spans=spans)])]
    )
    return req.SerializeToString()


def build_logs_batch() -> bytes:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource

    codes = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "15", "99", "12345"]
    records = []
    for i in range(BATCH):
        attrs = {
            "provider.source": AnyValue(string_value="vonage.sms"),
            "provider.code": AnyValue(string_value=codes[i % len(codes)]),
            "http.request.method": AnyValue(string_value="POST"),
            "server.address": AnyValue(string_value="rest.nexmo.com"),
            "http.response.status_code": AnyValue(int_value=200),
            "messaging.batch.message_count": AnyValue(int_value=1),
        }
        records.append(
            LogRecord(
                time_unix_nano=1_700_000_000_000_000_000 + i,
                observed_time_unix_nano=1_700_000_000_000_000_000 + i,
                severity_number=13,  # type: ignore[arg-type]
                severity_text="WARN",
                body=AnyValue(string_value="sms send finished"),
                trace_id=os.urandom(16),
                span_id=os.urandom(8),
                attributes=[KeyValue(key=k, value=v) for k, v in attrs.items()],
            )
        )
    resource = Resource(
        attributes=[KeyValue(key="service.name", value=AnyValue(string_value="bench"))]
    )
    req = ExportLogsServiceRequest(
        resource_logs=[ResourceLogs(resource=resource, scope_logs=[ScopeLogs(
            log_records=records)])]
    )
    return req.SerializeToString()


def build_codes_request(codes: list[object], limit: int) -> bytes:
    """As many minimal spans as fit in ``limit`` bytes, span i carrying codes[i] (and no
    source: the walker groups them all the same, and more fit)."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

    def value(code: object) -> AnyValue:
        if isinstance(code, float):
            return AnyValue(double_value=code)
        if isinstance(code, int):
            return AnyValue(int_value=code)
        return AnyValue(string_value=str(code))

    spans: list[Span] = []
    size = 16
    for i, code in enumerate(codes):
        span = Span(trace_id=(i + 1).to_bytes(16, "big"), span_id=(i + 1).to_bytes(8, "big"),
                    attributes=[KeyValue(key="provider.code", value=value(code))])
        size += span.ByteSize() + 4
        if size > limit:
            break
        spans.append(span)
    req = ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=spans)])]
    )
    return req.SerializeToString()


HOSTILE_CODES: dict[str, object] = {
    "ints differing above bit 20": lambda n: [(i + 1) << 21 for i in range(n)],
    "whole doubles 1.0, 2.0, ...": lambda n: [float(i + 1) for i in range(n)],
    "doubles differing in the exponent": lambda n: [
        (1.0 + (i // 2000) / 1024) * 2.0 ** ((i % 2000) - 1000) for i in range(n)
    ],
}


def hostile(config: Path, limit: int, repeats: int) -> None:
    """The hostile-input CPU ratio against one sidecar (see the module docstring)."""
    import http.client
    import statistics

    n = limit // 20  # more spans than can fit; build_codes_request stops at the limit
    bodies = {"ordinary distinct ints": build_codes_request(list(range(n)), limit)}
    for name, make in HOSTILE_CODES.items():
        bodies[name] = build_codes_request(make(n), limit)  # type: ignore[operator]
    proc, addrs = start([sys.executable, "-m", "exporter", "serve", "--config", str(config)])
    try:
        host, port = addrs["http"].rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=600)
        cpu: dict[str, list[float]] = {name: [] for name in bodies}
        for _ in range(repeats):
            for name, body in bodies.items():
                before = cpu_seconds(proc.pid)
                conn.request("POST", "/v1/traces", body,
                             {"Content-Type": "application/x-protobuf"})
                resp = conn.getresponse()
                resp.read()
                if resp.status != 200:
                    raise SystemExit(f"{name}: HTTP {resp.status}")
                cpu[name].append(cpu_seconds(proc.pid) - before)
        conn.close()
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    base = statistics.median(cpu["ordinary distinct ints"])
    print(f"hostile codes, one OTLP/HTTP request of <= {limit:,} bytes each, median CPU of "
          f"{repeats}:")
    for name, body in bodies.items():
        median = statistics.median(cpu[name])
        print(f"  {name:34} {len(body):>9,} bytes {median * 1000:8.0f} ms CPU | ratio "
              f"{median / max(base, 1e-9):5.2f} (goal <= 3)")


# -- baseline servers (same stack, parse only) ------------------------------------------------


def baseline_http() -> None:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
        ExportTraceServiceResponse,
    )
    from waitress.server import create_server

    reply = ExportTraceServiceResponse().SerializeToString()  # empty, as a logs reply is
    parse = {"/v1/traces": ExportTraceServiceRequest.FromString,
             "/v1/logs": ExportLogsServiceRequest.FromString}

    def app(environ, start_response):  # type: ignore[no-untyped-def]
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        parse[environ["PATH_INFO"]](body)
        start_response(
            "200 OK",
            [("Content-Type", "application/x-protobuf"), ("Content-Length", str(len(reply)))],
        )
        return [reply]

    server = create_server(app, host="127.0.0.1", port=0, threads=WORKERS,
                           asyncore_use_poll=True, max_request_body_size=4 << 20)
    print(json.dumps({"event": "listening", "http": f"127.0.0.1:{server.getsockname()[1]}"}),
          flush=True)
    server.run()


def baseline_grpc() -> None:
    from concurrent.futures import ThreadPoolExecutor as Pool

    import grpc
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
        ExportTraceServiceResponse,
    )

    reply = ExportTraceServiceResponse().SerializeToString()  # empty, as a logs reply is

    def export(raw: bytes, context: object) -> bytes:
        ExportTraceServiceRequest.FromString(raw)
        return reply

    def export_logs(raw: bytes, context: object) -> bytes:
        ExportLogsServiceRequest.FromString(raw)
        return reply

    server = grpc.server(Pool(max_workers=WORKERS),
                         options=[("grpc.max_receive_message_length", 4 << 20)])
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "opentelemetry.proto.collector.trace.v1.TraceService",
        {"Export": grpc.unary_unary_rpc_method_handler(export)}),
        grpc.method_handlers_generic_handler(
        "opentelemetry.proto.collector.logs.v1.LogsService",
        {"Export": grpc.unary_unary_rpc_method_handler(export_logs)})])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(json.dumps({"event": "listening", "grpc": f"127.0.0.1:{port}"}), flush=True)
    server.wait_for_termination()


# -- driver ------------------------------------------------------------------------------------


def sidecar_cwd() -> tuple[Path, bool]:
    """Where to start ``python -m exporter``, and whether its C wire path loads there.

    The installed package (``pip install .`` builds the extension) is preferred: from the
    repository root the source tree would shadow it, and the source tree has no compiled
    extension unless the tests placed one there.
    """
    probe = "import exporter.sidecar.otlp as o; print(o._wire is not None)"
    for cwd in (Path(tempfile.gettempdir()), REPO):
        out = subprocess.run([sys.executable, "-c", probe], cwd=cwd, capture_output=True,
                             text=True, timeout=60)
        if out.returncode == 0:
            return cwd, out.stdout.strip() == "True"
    raise SystemExit("cannot import exporter: pip install . first")


SIDECAR_CWD = REPO  # set by main()


def start(cmd: list[str]) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    cwd = SIDECAR_CWD if cmd[1:3] == ["-m", "exporter"] else REPO
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + 30
    buf = b""
    while b"\n" not in buf:
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise SystemExit(f"server did not start: {cmd}")
        if sel.select(0.5):
            buf += os.read(proc.stdout.fileno(), 4096)
    sel.close()
    return proc, json.loads(buf.split(b"\n", 1)[0])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def client(transport: str, address: str, body: bytes, requests: int, seconds: float,
           signal: str = "traces") -> int:
    """Send up to ``requests`` batches within ``seconds``; returns items accepted."""
    deadline = time.monotonic() + seconds
    counter = iter(range(requests))
    lock = threading.Lock()

    def take() -> bool:
        with lock:
            return next(counter, None) is not None and time.monotonic() < deadline

    def worker(_: int) -> int:
        sent = 0
        if transport == "http":
            import http.client

            host, port = address.rsplit(":", 1)
            conn = http.client.HTTPConnection(host, int(port), timeout=30)
            while take():
                conn.request("POST", f"/v1/{signal}", body,
                             {"Content-Type": "application/x-protobuf"})
                resp = conn.getresponse()
                resp.read()
                if resp.status == 200:
                    sent += BATCH
            conn.close()
        else:
            import grpc

            with grpc.insecure_channel(address) as channel:
                call = channel.unary_unary(METHODS[signal])
                while take():
                    try:
                        call(body, timeout=30)
                        sent += BATCH
                    except grpc.RpcError:
                        pass
        return sent

    with ThreadPoolExecutor(CONNECTIONS) as pool:
        return sum(pool.map(worker, range(CONNECTIONS)))


def run_once(kind: str, transport: str, body: bytes, requests: int, seconds: float,
             config: Path, signal: str = "traces") -> dict[str, float]:
    if kind == "sidecar":
        cmd = [sys.executable, "-m", "exporter", "serve", "--config", str(config)]
    else:
        cmd = [sys.executable, __file__, "--baseline-server", transport]
    proc, addrs = start(cmd)
    try:
        time.sleep(0.5)  # let start-up allocations settle before the idle reading
        idle = rss_mb(proc.pid)
        peak = idle
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not stop.wait(0.05):
                peak = max(peak, rss_mb(proc.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        cpu0 = cpu_seconds(proc.pid)
        t0 = time.perf_counter()
        spans = client(transport, addrs[transport], body, requests, seconds, signal)
        wall = time.perf_counter() - t0
        cpu = cpu_seconds(proc.pid) - cpu0
        stop.set()
        sampler.join()
        return {"spans_per_s": spans / wall, "spans_per_cpu_s": spans / max(cpu, 1e-9),
                "rss_idle_mb": idle, "rss_peak_mb": peak, "spans": spans}
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--baseline-server", choices=("http", "grpc"))
    parser.add_argument("--seconds", type=float, default=8.0, help="time bound per run")
    parser.add_argument("--requests", type=int, default=400, help="batches per run (bound)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--signal", choices=("traces", "logs", "events", "both"),
                        default="both", help="both: traces and logs")
    parser.add_argument("--hostile-repeats", type=int, default=5)
    parser.add_argument("--hostile-only", action="store_true",
                        help="only the hostile-input CPU ratio")
    args = parser.parse_args()
    if args.baseline_server == "http":
        baseline_http()
        return
    if args.baseline_server == "grpc":
        baseline_grpc()
        return
    global SIDECAR_CWD
    SIDECAR_CWD, wire = sidecar_cwd()
    bodies = {"traces": build_batch(), "logs": build_logs_batch(),
              "events": build_batch(events=True)}
    signals = ("traces", "logs") if args.signal == "both" else (args.signal,)
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "bench.yaml"
        config.write_text(
            "receivers:\n"
            f"  grpc: {{endpoint: '127.0.0.1:0', max_workers: {WORKERS}}}\n"
            f"  http: {{endpoint: '127.0.0.1:0', threads: {WORKERS}}}\n"
            "  max_pending_requests: 64\n"
            "metrics: {endpoint: '127.0.0.1:0'}\n"
        )
        print(f"batch: {BATCH} spans ({len(bodies['traces'])} bytes) or log records "
              f"({len(bodies['logs'])} bytes); {CONNECTIONS} connections; "
              f"{os.cpu_count()} cores; best of {args.rounds} alternating rounds; sidecar from "
              f"{SIDECAR_CWD}, C wire path {'on' if wire else 'OFF (message path)'}")
        for signal, transport in [
            (g, t) for g in (() if args.hostile_only else signals) for t in ("http", "grpc")
        ]:
            body, unit = bodies[signal], "records" if signal == "logs" else "spans"
            best: dict[str, dict[str, float]] = {}
            for _ in range(args.rounds):
                for kind in ("baseline", "sidecar"):
                    r = run_once(kind, transport, body, args.requests, args.seconds, config,
                                 "logs" if signal == "logs" else "traces")
                    if kind not in best or r["spans_per_s"] > best[kind]["spans_per_s"]:
                        peak = max(r["rss_peak_mb"], best.get(kind, {}).get("rss_peak_mb", 0))
                        best[kind] = {**r, "rss_peak_mb": peak}
            b, s = best["baseline"], best["sidecar"]
            ratio = s["spans_per_s"] / b["spans_per_s"]
            print(
                f"{signal:6} {transport:5} baseline {b['spans_per_s']:>9,.0f} {unit}/s "
                f"({b['spans_per_cpu_s']:,.0f}/cpu-s) | sidecar {s['spans_per_s']:>9,.0f} "
                f"{unit}/s ({s['spans_per_cpu_s']:,.0f}/cpu-s) | ratio {ratio:.2f} | sidecar "
                f"RSS idle {s['rss_idle_mb']:.0f} MB, flood peak {s['rss_peak_mb']:.0f} MB"
            )
        hostile(config, 4 << 20, args.hostile_repeats)  # the default max_request_bytes


if __name__ == "__main__":
    main()
