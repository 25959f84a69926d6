"""Webhook throughput: events/s through the listener vs a parse-only handler, same server stack.

Run: ``python benchmarks/webhook_throughput.py [--seconds 4] [--requests 300] [--rounds 3]``

Three loads: Event Grid ``SMSDeliveryReportReceived`` events one per POST (Event Grid's
default delivery, and how Call Automation posts callbacks) and 50 per POST (a subscription
with batching on: the handler's worst case, as the HTTP cost is shared by 50 events), every
event with a new id and a mix of ACS SMS codes; and Vonage DLRs (one form-encoded receipt per
POST, a new messageId each). For each, rounds alternate between the real
``WebhookListener`` (token check, parsing, classification, dedup window, counting; log records
encoded and handed to a sink standing in for the forwarder's queue; ``--no-forward``: no log
records, as without ``forward.endpoint``) and a baseline waitress server with the same worker
count whose WSGI app only reads the body, decodes it (JSON or form) and answers. A client
process (so the client does not share the server's GIL) sends pre-built bodies over 4
persistent connections, bounded by ``--requests`` per connection and ``--seconds`` per run.
Prints events/s for both (median of rounds) and the ratio (goal >= 0.5), and events per
CPU-second of the server process (this process runs only the server): on a shared machine
wall-clock rates move with the load, CPU per event much less.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TOKEN = "bench-token-0123456789"
BATCH = 50
CONNECTIONS = 4
THREADS = 4
CODES = ["2000", "4004", "4005: blocked by the carrier", "4006", "No error.", "5001"]
ROUTES = {  # name: (path, content type, events per request)
    "eventgrid-1": ("/webhooks/azure/eventgrid", "application/json", 1),
    "eventgrid-50": ("/webhooks/azure/eventgrid", "application/json", BATCH),
    "vonage": ("/webhooks/vonage/dlr", "application/x-www-form-urlencoded", 1),
}


def build_bodies(route: str, conn: int, count: int) -> list[bytes]:
    """``count`` request bodies for one connection, every event with a new id."""
    out = []
    per = ROUTES[route][2]
    for r in range(count):
        if route.startswith("eventgrid"):
            events = [
                {
                    "id": f"c{conn}-r{r}-e{e}",
                    "topic": "/subscriptions/s/resourceGroups/g/providers/acs",
                    "subject": "/phonenumber/15555550100",
                    "eventType": "Microsoft.Communication.SMSDeliveryReportReceived",
                    "eventTime": "2026-12-05T10:00:00Z",
                    "dataVersion": "1.0",
                    "metadataVersion": "1",
                    "data": {
                        "messageId": f"Outgoing_{conn}_{r}_{e}",
                        "from": "15555550100",
                        "to": "+15555550101",
                        "deliveryStatus": "Failed",
                        "deliveryStatusDetails": CODES[(r + e) % len(CODES)],
                        "receivedTimestamp": "2026-12-05T10:00:00Z",
                    },
                }
                for e in range(per)
            ]
            out.append(json.dumps(events).encode())
        else:
            params = {
                "err-code": str(r % 16),
                "message-timestamp": "2026-12-05 10:00:00",
                "messageId": f"0B{conn:02d}{r:012d}",
                "msisdn": "447700900000",
                "network-code": "23410",
                "price": "0.03330000",
                "scts": "2612051000",
                "status": "failed" if r % 16 else "delivered",
                "to": "Acme",
            }
            out.append(urllib.parse.urlencode(params).encode())
    return out


def client(port: int, route: str, requests: int, seconds: float) -> None:
    """Child process: send the bodies over CONNECTIONS connections; print events and seconds."""
    path, ctype, per = ROUTES[route]
    bodies = [build_bodies(route, c, requests) for c in range(CONNECTIONS)]
    sent = [0] * CONNECTIONS
    deadline_box: list[float] = []

    def run(c: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for body in bodies[c]:
            if time.monotonic() > deadline_box[0]:
                break
            conn.request("POST", f"{path}?token={TOKEN}", body, {"Content-Type": ctype})
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                raise SystemExit(f"HTTP {resp.status}")
            sent[c] += per
        conn.close()

    start = time.monotonic()
    deadline_box.append(start + seconds)
    threads = [threading.Thread(target=run, args=(c,)) for c in range(CONNECTIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"events": sum(sent), "seconds": time.monotonic() - start}))


def baseline_app() -> Callable[..., Iterable[bytes]]:
    """A parse-only WSGI app: read, decode (JSON or form), answer with the event count."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length)
        if environ.get("CONTENT_TYPE", "").startswith("application/json"):
            n = len(json.loads(body))
        else:
            n = len(urllib.parse.parse_qsl(body.decode()) and [1])
        reply = json.dumps({"accepted": n}).encode()
        start_response(
            "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(reply)))]
        )
        return [reply]

    return app


class _Sink:
    """Stands in for the forwarder's queue: takes each log request as the forwarder would."""

    def __init__(self) -> None:
        self.items = 0
        self.bytes = 0

    def submit(self, signal: str, request: Any, items: int) -> bool:
        body = request if isinstance(request, bytes) else request.SerializeToString()
        self.bytes += len(body)
        self.items += items
        return True


def serve(kind: str, forward: bool = True) -> tuple[Any, int]:
    sys.path.insert(0, str(REPO))
    from exporter import CodebookMetrics, Enricher
    from exporter.sidecar.webhook import WebhookHandler
    from exporter.sidecar.webhook_listener import WebhookListener

    if kind == "codebook":
        sink = _Sink() if forward else None
        handler = WebhookHandler(Enricher(metrics=CodebookMetrics()), sink=sink, token=TOKEN)
        listener = WebhookListener(handler, "127.0.0.1", 0, threads=THREADS).start()
        return listener, listener.port
    import logging

    from waitress.server import create_server

    logging.getLogger("waitress.queue").setLevel(logging.ERROR)

    server: Any = create_server(
        baseline_app(), host="127.0.0.1", port=0, threads=THREADS, ident="baseline"
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    return server, int(server.getsockname()[1])


def stop(kind: str, server: Any) -> None:
    if kind == "codebook":
        server.stop(2)
    else:
        server.close()


def measure(
    kind: str, route: str, requests: int, seconds: float, forward: bool
) -> tuple[float, float]:
    """(events/s, events per CPU-second of this process, which runs only the server)."""
    server, port = serve(kind, forward)
    cpu = time.process_time()
    try:
        out = subprocess.run(
            [sys.executable, __file__, "--client", str(port), "--route", route,
             "--requests", str(requests), "--seconds", str(seconds)],
            capture_output=True, text=True, timeout=seconds + 120, check=True,
        )
        cpu = time.process_time() - cpu
    finally:
        stop(kind, server)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    events = float(result["events"])
    return events / float(result["seconds"]), events / max(cpu, 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--requests", type=int, default=300, help="per connection and run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--no-forward", action="store_true",
        help="no log records (the default config, without forward.endpoint)",
    )
    parser.add_argument("--client", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--route", default="eventgrid-1", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        client(args.client, args.route, args.requests, args.seconds)
        return
    for route in ROUTES:
        rates: dict[str, list[float]] = {"baseline": [], "codebook": []}
        per_cpu: dict[str, list[float]] = {"baseline": [], "codebook": []}
        for i in range(args.rounds):
            order = ("baseline", "codebook") if i % 2 == 0 else ("codebook", "baseline")
            for kind in order:
                rate, cpu_rate = measure(
                    kind, route, args.requests, args.seconds, not args.no_forward
                )
                rates[kind].append(rate)
                per_cpu[kind].append(cpu_rate)
        base = statistics.median(rates["baseline"])
        code = statistics.median(rates["codebook"])
        base_cpu = statistics.median(per_cpu["baseline"])
        code_cpu = statistics.median(per_cpu["codebook"])
        print(
            f"{route:12s} baseline {base:9.0f} events/s   codebook {code:9.0f} events/s   "
            f"ratio {code / base:5.2f} (goal >= 0.5)   per server CPU-s: baseline "
            f"{base_cpu:9.0f}  codebook {code_cpu:9.0f}  ratio {code_cpu / base_cpu:5.2f}"
        )


if __name__ == "__main__":
    main()
