"""Every item the sidecar accepts is forwarded, dropped with a reason, or still queued.

Real ``codebook serve`` processes forwarding to a real OTLP/gRPC upstream on loopback whose
behaviour is scripted per request (fail, flap, reject permanently, partially succeed); the
identity ``received - rejected = forwarded + dropped + queued`` is checked on every scrape,
scraped while requests are in flight.
"""

from __future__ import annotations

import itertools
import re
import signal
import socket
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from otlp_upstream import GrpcUpstream, HttpUpstream, Outcome
from sidecar_proc import SidecarProcess, wait_for

pytestmark = pytest.mark.slow

Script = Callable[[ExportTraceServiceRequest], Outcome]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _request(names: list[str], *, bad: int = 0) -> bytes:
    """An OTLP trace request with one span per name, plus ``bad`` spans the sidecar rejects."""
    req = ExportTraceServiceRequest()
    spans = req.resource_spans.add().scope_spans.add().spans
    for i, name in enumerate(names):
        span = spans.add(name=name, trace_id=bytes([1]) * 16, span_id=(i + 1).to_bytes(8, "big"))
        kv = span.attributes.add(key="provider.source")
        kv.value.string_value = "vonage.sms"
        kv = span.attributes.add(key="provider.code")
        kv.value.string_value = "0"
    for _ in range(bad):
        spans.add(name="bad", trace_id=b"\x01" * 3, span_id=b"\x02" * 8)  # invalid trace id
    return req.SerializeToString()


def _post(sidecar: SidecarProcess, body: bytes) -> int:
    req = urllib.request.Request(
        f"{sidecar.http}/v1/traces",
        data=body,
        headers={"Content-Type": "application/x-protobuf"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def ledger(sidecar: SidecarProcess) -> dict[str, float]:
    """One scrape's trace accounting: received, rejected, forwarded, dropped, queued."""
    samples = sidecar.scrape()

    def total(name: str) -> float:
        return sum(
            v for (n, labels), v in samples.items() if n == name and ("signal", "traces") in labels
        )

    return {
        "received": total("codebook_telemetry_received_total"),
        "rejected": total("codebook_telemetry_rejected_total"),
        "forwarded": total("codebook_telemetry_forwarded_total"),
        "dropped": total("codebook_telemetry_dropped_total"),
        "queued": total("codebook_forward_queue_items"),
    }


def balanced(led: dict[str, float]) -> bool:
    """received - rejected == forwarded + dropped + queued."""
    return led["received"] - led["rejected"] == led["forwarded"] + led["dropped"] + led["queued"]


def _dropped(sidecar: SidecarProcess, reason: str) -> float:
    return sidecar.value("codebook_telemetry_dropped_total", signal="traces", reason=reason)


def _flapping(period: float) -> Script:
    start = time.monotonic()

    def script(req: ExportTraceServiceRequest) -> Outcome:
        up = int((time.monotonic() - start) / period) % 2 == 1
        return None if up else grpc.StatusCode.UNAVAILABLE

    return script


def _every(n: int, outcome: Outcome) -> Script:
    counter = itertools.count()
    return lambda req: outcome if next(counter) % n == 0 else None


SCENARIOS = [
    # id, upstream script, forward config, reasons that must show up
    pytest.param(lambda: (lambda req: grpc.StatusCode.UNAVAILABLE),
                 {"queue_max_requests": 3, "max_elapsed_seconds": 0.3},
                 {"upstream_error", "queue_full"}, id="down"),
    pytest.param(lambda: _flapping(0.4), {"max_elapsed_seconds": 5.0}, set(), id="flapping"),
    pytest.param(lambda: _every(3, grpc.StatusCode.INVALID_ARGUMENT), {},
                 {"rejected_by_upstream"}, id="permanent-errors"),
    pytest.param(lambda: (lambda req: 1), {}, {"rejected_by_upstream"}, id="partial-success"),
]


@pytest.mark.parametrize(("make_script", "forward", "reasons"), SCENARIOS)
def test_identity_holds_at_every_scrape(
    tmp_path: Path, make_script: Callable[[], Script], forward: dict[str, object],
    reasons: set[str],
) -> None:
    upstream = GrpcUpstream(script=make_script())
    config = {
        "forward": {
            "endpoint": f"127.0.0.1:{upstream.port}",
            "timeout_seconds": 1,
            "initial_backoff_seconds": 0.02,
            "max_backoff_seconds": 0.1,
            **forward,
        }
    }
    try:
        with SidecarProcess(tmp_path, config) as sidecar:
            stop = threading.Event()

            def send() -> None:  # 2 senders: requests race with scrapes
                for i in range(30):
                    if stop.is_set():
                        return
                    names = [f"{threading.get_ident()}-{i}-{j}" for j in range(3)]
                    assert _post(sidecar, _request(names, bad=i % 2)) == 200
                    time.sleep(0.01)

            senders = [threading.Thread(target=send) for _ in range(2)]
            for t in senders:
                t.start()
            scrapes = 0
            deadline = time.monotonic() + 30
            while any(t.is_alive() for t in senders) and time.monotonic() < deadline:
                led = ledger(sidecar)
                assert balanced(led), led
                scrapes += 1
            stop.set()
            for t in senders:
                t.join(10)
            assert scrapes > 3
            # Settle: the queue empties, and the identity still holds with nothing queued.
            led = wait_for(lambda: (lambda x: x if x["queued"] == 0 else None)(ledger(sidecar)),
                           timeout=30)
            assert balanced(led), led
            assert led["received"] == 2 * 30 * 3 + 30  # 3 good spans a request, 1 bad in half
            assert led["rejected"] == 30
            got = sum(len(ss.spans) for r in upstream.requests for rs in r.resource_spans
                      for ss in rs.scope_spans)
            # The upstream holds at least what was counted forwarded (partial rejects excluded).
            assert got >= led["forwarded"]
            for reason in reasons:
                assert _dropped(sidecar, reason) > 0, reason
            assert sidecar.total("codebook_forward_queue_bytes", signal="traces") == 0
    finally:
        upstream.close()


def test_partial_success_counts_exactly_what_the_upstream_rejected(tmp_path: Path) -> None:
    upstream = GrpcUpstream(script=lambda req: 2)  # rejects 2 spans of every request
    config = {"forward": {"endpoint": f"127.0.0.1:{upstream.port}"}}
    try:
        with SidecarProcess(tmp_path, config) as sidecar:
            for i in range(5):
                assert _post(sidecar, _request([f"p{i}-{j}" for j in range(4)])) == 200
            wait_for(lambda: ledger(sidecar)["queued"] == 0 and len(upstream.requests) == 5)
            assert _dropped(sidecar, "rejected_by_upstream") == 10
            assert sidecar.value("codebook_telemetry_forwarded_total", signal="traces") == 10
            assert balanced(ledger(sidecar))
    finally:
        upstream.close()


@pytest.mark.parametrize(
    ("status", "rejected", "forwarded", "refused"),
    [(200, 0, 20, 0), (200, 3, 5, 15), (400, 0, 0, 20), (413, 0, 0, 20)],
    ids=["ok", "partial-success", "bad-request", "too-large"],
)
def test_http_upstream_outcomes_are_counted(
    tmp_path: Path, status: int, rejected: int, forwarded: int, refused: int
) -> None:
    """OTLP/HTTP: partial success and permanent 4xx are rejected_by_upstream, never retried."""
    upstream = HttpUpstream(status=status, rejected=rejected)
    config = {"forward": {"endpoint": f"http://127.0.0.1:{upstream.port}",
                          "protocol": "http/protobuf"}}
    try:
        with SidecarProcess(tmp_path, config) as sidecar:
            for i in range(5):
                assert _post(sidecar, _request([f"h{i}-{j}" for j in range(4)])) == 200
            led = wait_for(lambda: (lambda x: x if x["queued"] == 0 else None)(ledger(sidecar)))
            assert balanced(led)
            assert led["forwarded"] == forwarded
            assert _dropped(sidecar, "rejected_by_upstream") == refused
            assert len(upstream.times) == 5  # one attempt each: nothing here is retryable
    finally:
        upstream.close()


def test_first_failure_is_logged_at_once_then_rate_limited(tmp_path: Path) -> None:
    config = {
        "forward": {
            "endpoint": f"127.0.0.1:{_free_port()}",
            "timeout_seconds": 0.5,
            "initial_backoff_seconds": 0.01,
            "max_backoff_seconds": 0.02,
            "max_elapsed_seconds": 0.1,
        }
    }
    with SidecarProcess(tmp_path, config) as sidecar:
        assert _post(sidecar, _request(["a"])) == 200
        wait_for(lambda: "forwarding to" in sidecar.log() and "failed" in sidecar.log(),
                 timeout=5)
        for i in range(20):
            assert _post(sidecar, _request([f"b{i}"])) == 200
        wait_for(lambda: _dropped(sidecar, "upstream_error") == 21, timeout=20)
        log = sidecar.log()
        # Dozens of failed attempts and 21 drops, but not a line each: first failure, first
        # drop, and summaries at most every 30 s.
        lines = [ln for ln in log.splitlines() if "codebook: " in ln and "forward" in ln]
        assert 2 <= len(lines) <= 4, lines
        first_drop = r"dropped 1 item\(s\) bound for \S+ \(reason=upstream_error: gRPC UNAVAILABLE"
        assert re.search(first_drop, log)


def test_sigterm_with_a_backlog_logs_and_counts_what_it_could_not_send(tmp_path: Path) -> None:
    config = {
        "forward": {
            "endpoint": f"127.0.0.1:{_free_port()}",
            "timeout_seconds": 0.5,
            "initial_backoff_seconds": 0.2,
            "max_elapsed_seconds": 600,
        },
        "shutdown_timeout_seconds": 1,
    }
    sidecar = SidecarProcess(tmp_path, config)
    with sidecar:
        for i in range(15):
            assert _post(sidecar, _request([f"s{i}-0", f"s{i}-1"])) == 200
        led = ledger(sidecar)
        assert led["queued"] == 30 and balanced(led)
        started = time.monotonic()
        sidecar.signal(signal.SIGTERM)
        assert sidecar.proc is not None
        assert sidecar.proc.wait(10) == 0
        assert time.monotonic() - started < 5
    assert re.search(r"could not forward 30 traces to .* dropped \(reason=shutdown\)",
                     sidecar.log()), sidecar.log()


def test_readyz_follows_the_queue_and_healthz_does_not(tmp_path: Path) -> None:
    down = threading.Event()
    down.set()
    upstream = GrpcUpstream(
        script=lambda req: grpc.StatusCode.UNAVAILABLE if down.is_set() else None
    )
    config = {
        "forward": {
            "endpoint": f"127.0.0.1:{upstream.port}",
            "queue_max_requests": 4,
            "ready_max_queue_fraction": 0.5,
            "initial_backoff_seconds": 0.05,
            "max_backoff_seconds": 0.1,
            "max_elapsed_seconds": 600,
        }
    }
    try:
        with SidecarProcess(tmp_path, config) as sidecar:
            assert sidecar.get("/readyz")[0] == 200
            for i in range(2):
                _post(sidecar, _request([f"r{i}"]))
            assert sidecar.get("/readyz")[0] == 200  # 2/4 is not over 0.5
            _post(sidecar, _request(["r2"]))
            status, body = sidecar.get("/readyz")
            assert (status, body) == (503, b"not ready: forward queue 75% full\n")
            assert sidecar.get("/healthz")[0] == 200
            down.clear()
            wait_for(lambda: sidecar.get("/readyz")[0] == 200, timeout=10)
            assert ledger(sidecar)["forwarded"] == 3
    finally:
        upstream.close()


def test_forward_queue_defaults() -> None:
    from exporter.sidecar.config import load_config

    cfg = load_config(env={})
    assert (cfg.forward.queue_dir, cfg.forward.queue_sync) == ("", "normal")  # memory only
    assert cfg.forward.ready_max_queue_fraction == 0.9


@pytest.mark.parametrize(
    ("forward", "message"),
    [
        ({"ready_max_queue_fraction": 1.5}, "forward.ready_max_queue_fraction: 1.5 is above 1"),
        ({"ready_max_queue_fraction": -0.1}, "forward.ready_max_queue_fraction: -0.1 is below"),
        ({"queue_sync": "always"}, "forward.queue_sync: 'always' is not one of normal, full"),
        ({"queue_dir": "FILE"}, "forward.queue_dir: 'FILE': not a directory"),
        ({"queue_dri": "/x"}, "forward.queue_dri: unknown key (did you mean 'queue_dir'?)"),
    ],
    ids=["fraction-high", "fraction-negative", "sync", "dir-is-file", "typo"],
)
def test_forward_queue_config_errors(
    tmp_path: Path, forward: dict[str, object], message: str
) -> None:
    import yaml

    from exporter.sidecar.config import ConfigError, load_config

    file = tmp_path / "file"
    file.write_text("")
    forward = {k: (str(file) if v == "FILE" else v) for k, v in forward.items()}
    message = message.replace("'FILE'", repr(str(file)))
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"forward": forward}))
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert any(message in problem for problem in err.value.problems), err.value.problems
