"""Sidecar memory under a concurrent flood: peak RSS while 200 valid requests arrive at once.

Run: ``python benchmarks/flood_rss.py [--requests 200] [--body-bytes 4000000] [--rounds 2]``

Starts a real ``codebook serve`` (default limits: ``receivers.max_request_bytes`` 4 MiB, 4
HTTP threads, 4 gRPC workers) and sends ``--requests`` valid OTLP trace requests at once, half
over OTLP/HTTP and half over OTLP/gRPC, each from its own connection, each just under
``--body-bytes`` of minimal spans that all carry a provider code (the case whose enriched
output grows most: about 3.6x). Repeated ``--rounds`` times. The sidecar's RSS is sampled
every 20 ms; printed: idle, peak (goal: < 150 MB), and how the requests were answered
(accepted, or refused for the in-flight budget with 429 / RESOURCE_EXHAUSTED: retryable).
Bounded: each request has a 60 s timeout and the run stops after the last round.
"""

from __future__ import annotations

import argparse
import http.client
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import sidecar_throughput
from sidecar_throughput import (
    TRACE_METHOD,
    build_codes_request,
    rss_mb,
    sidecar_cwd,
    start,
)


def send(transport: str, address: str, body: bytes) -> str:
    try:
        if transport == "http":
            host, port = address.rsplit(":", 1)
            conn = http.client.HTTPConnection(host, int(port), timeout=60)
            conn.request("POST", "/v1/traces", body, {"Content-Type": "application/x-protobuf"})
            resp = conn.getresponse()
            resp.read()
            conn.close()
            return f"http {resp.status}"
        import grpc

        with grpc.insecure_channel(
            address, options=[("grpc.max_send_message_length", 8 << 20)]
        ) as channel:
            try:
                channel.unary_unary(TRACE_METHOD)(body, timeout=60)
                return "grpc OK"
            except grpc.RpcError as exc:
                return f"grpc {exc.code().name}"  # type: ignore[attr-defined]
    except Exception as exc:  # a refused or reset connection is an outcome, not a crash
        return f"{transport} {type(exc).__name__}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--body-bytes", type=int, default=4_000_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--transports", default="http,grpc", help="comma-separated")
    args = parser.parse_args()
    sidecar_throughput.SIDECAR_CWD, wire = sidecar_cwd()
    body = build_codes_request(list(range(args.body_bytes // 20)), args.body_bytes)
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "flood.yaml"
        config.write_text(
            "receivers:\n"
            "  grpc: {endpoint: '127.0.0.1:0'}\n"
            "  http: {endpoint: '127.0.0.1:0'}\n"
            "metrics: {endpoint: '127.0.0.1:0'}\n"
        )
        proc, addrs = start([sys.executable, "-m", "exporter", "serve", "--config", str(config)])
        try:
            time.sleep(0.5)
            idle = peak = rss_mb(proc.pid)
            stop = threading.Event()

            def sample() -> None:
                nonlocal peak
                while not stop.wait(0.02):
                    peak = max(peak, rss_mb(proc.pid))

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            outcomes: Counter[str] = Counter()
            kinds = args.transports.split(",")
            jobs = [kinds[i % len(kinds)] for i in range(args.requests)]
            for _ in range(args.rounds):
                with ThreadPoolExecutor(args.requests) as pool:
                    outcomes.update(pool.map(lambda t: send(t, addrs[t], body), jobs))
            time.sleep(0.5)
            stop.set()
            sampler.join()
        finally:
            proc.terminate()
            proc.wait(20)
    print(f"flood: {args.rounds} x {args.requests} concurrent requests of {len(body):,} bytes "
          f"(HTTP and gRPC), C wire path {'on' if wire else 'off'}")
    print(f"sidecar RSS idle {idle:.0f} MB, peak {peak:.0f} MB (goal < 150 MB)")
    print("answers: " + ", ".join(f"{k} x{v}" for k, v in sorted(outcomes.items())))


if __name__ == "__main__":
    main()
