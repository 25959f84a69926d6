"""The /metrics endpoint scraped over real HTTP on 127.0.0.1, checked by promtool and a golden file.

Regenerate the golden file after an intended change of the exposition with
``UPDATE_GOLDEN=1 pytest tests/test_metrics_server.py`` and review the diff.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families

from exporter import (
    CodebookMetricExporter,
    CodebookMetrics,
    CodebookSpanProcessor,
    Enricher,
    MetricsServer,
    load_codebook,
    make_wsgi_app,
    start_metrics_server,
)

TESTDATA = Path(__file__).parent / "testdata"
INPROC = TESTDATA / "mappings_inproc"
GOLDEN = TESTDATA / "metrics_golden.txt"


def _scenario() -> CodebookMetrics:
    """A fixed run of the in-process pipeline: spans and an app counter with provider codes."""
    metrics = CodebookMetrics(max_unmapped_codes_per_source=2)
    enricher = Enricher(load_codebook([INPROC], builtin=False), metrics)
    provider = TracerProvider()
    provider.add_span_processor(
        CodebookSpanProcessor(SimpleSpanProcessor(InMemorySpanExporter()), enricher)
    )
    tracer = provider.get_tracer("golden")
    spans: list[tuple[str, str | int, int | None]] = [
        ("test.sms", "0", None), ("test.sms", 0, None), ("tsms", "1", None),
        ("test.sms", "2", None), ("test.sms", "503", None), ("test.sms", "4242", None),
        ("test.sms", "4243", None), ("test.sms", "4244", None), ("test.sms", "+15551234567", None),
        ("test.calls", 487, 560487), ("test.calls", 1, 41), ("nobody", "1", None),
    ]
    for source, code, subcode in spans:
        attrs: dict[str, str | int] = {"provider.source": source, "provider.code": code}
        if subcode is not None:
            attrs["provider.subcode"] = subcode
        with tracer.start_as_current_span("send", attributes=attrs) as span:
            if code == "2":
                span.set_status(Status(StatusCode.OK))
    with tracer.start_as_current_span("no code"):
        pass
    provider.shutdown()

    reader = PeriodicExportingMetricReader(
        CodebookMetricExporter(ConsoleMetricExporter(out=io.StringIO()), enricher),
        export_interval_millis=math.inf,
    )
    meters = MeterProvider(metric_readers=[reader])
    sent = meters.get_meter("golden").create_counter("sms.sent")
    sent.add(3, {"provider.source": "test.sms", "provider.code": "1", "to": "+15551230001"})
    sent.add(2, {"provider.source": "test.sms", "provider.code": "0", "to": "+15551230002"})
    sent.add(9, {"route": "/unrelated"})
    assert meters.force_flush()  # math.inf: no reader thread, so no final export on shutdown
    meters.shutdown()
    metrics.telemetry_received("traces", "sdk", 13)
    metrics.reload_outcome(False)
    return metrics


@pytest.fixture
def served() -> Iterator[tuple[CodebookMetrics, MetricsServer]]:
    metrics = _scenario()
    server = start_metrics_server(metrics, port=0)
    yield metrics, server
    server.close()


def _get(url: str, method: str = "GET", headers: dict[str, str] | None = None,
         ) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def test_scrape_serves_render(served: tuple[CodebookMetrics, MetricsServer]) -> None:
    """A real HTTP GET on 127.0.0.1 returns render() with the 0.0.4 content type."""
    metrics, server = served
    assert server.url == f"http://127.0.0.1:{server.port}/metrics"
    assert server.port != 0
    status, headers, body = _get(server.url)
    assert status == 200
    assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert body == metrics.render()
    assert int(headers["Content-Length"]) == len(body)


def test_scrape_sees_new_counts(served: tuple[CodebookMetrics, MetricsServer]) -> None:
    """Counts made after the server started appear in the next scrape."""
    metrics, server = served
    labels = {"signal": "traces", "transport": "sdk"}
    metrics.telemetry_received("traces", "sdk", 5)
    _, _, body = _get(server.url)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(body.decode())
        for s in f.samples
    }
    key = ("codebook_telemetry_received_total", tuple(sorted(labels.items())))
    assert samples[key] == 18.0


REQUEST_CASES = [
    # (id, method, headers, status, body check)
    ("head-no-body", "HEAD", {}, 200, lambda b: b == b""),
    ("post-refused", "POST", {}, 405, lambda b: b == b"Method Not Allowed\n"),
    ("gzip", "GET", {"Accept-Encoding": "gzip"}, 200,
     lambda b: gzip.decompress(b).startswith(b"# HELP provider_codes_total")),
]


@pytest.mark.parametrize(("method", "headers", "status", "check"),
                         [c[1:] for c in REQUEST_CASES], ids=[c[0] for c in REQUEST_CASES])
def test_scrape_methods_and_encoding(
    served: tuple[CodebookMetrics, MetricsServer],
    method: str,
    headers: dict[str, str],
    status: int,
    check: object,
) -> None:
    """HEAD has no body, POST is refused, gzip is served when asked for."""
    _, server = served
    got, _, body = _get(server.url, method, headers)
    assert got == status
    assert callable(check) and check(body)


PATH_CASES = [
    # (id, path, status, body check)
    ("metrics", "/metrics", 200, lambda b: b.startswith(b"# HELP provider_codes_total")),
    ("metrics-query", "/metrics?name[]=x", 200, lambda b: b.startswith(b"# HELP")),
    ("root-points-to-metrics", "/", 200, lambda b: b"/metrics" in b and b"# HELP" not in b),
    ("unknown-404", "/nope", 404, lambda b: b"# HELP" not in b),
    ("metrics-prefix-404", "/metricsx", 404, lambda b: b"# HELP" not in b),
    ("metrics-subpath-404", "/metrics/x", 404, lambda b: b"# HELP" not in b),
    ("healthz-not-a-route-here", "/healthz", 404, lambda b: b"# HELP" not in b),
]


@pytest.mark.parametrize(("path", "status", "check"), [c[1:] for c in PATH_CASES],
                         ids=[c[0] for c in PATH_CASES])
def test_scrape_paths(
    served: tuple[CodebookMetrics, MetricsServer], path: str, status: int, check: object
) -> None:
    """Only /metrics serves the exposition; / points to it; every other path is 404."""
    _, server = served
    got, _, body = _get(f"http://127.0.0.1:{server.port}{path}")
    assert got == status
    assert callable(check) and check(body)


@pytest.mark.parametrize(("script_name", "path", "status"), [
    ("/metrics", "", 200), ("/metrics", "/", 200), ("/metrics", "/x", 404), ("", "", 200),
], ids=["mount-point", "mount-point-slash", "mounted-unknown", "unmounted-empty-is-root"])
def test_wsgi_app_mounted(script_name: str, path: str, status: int) -> None:
    """Mounted under a prefix (SCRIPT_NAME), the mount point itself serves the metrics."""
    app = make_wsgi_app(_scenario())
    got: list[str] = []
    env = {"SCRIPT_NAME": script_name, "PATH_INFO": path, "REQUEST_METHOD": "GET"}
    body = b"".join(app(env, lambda s, h: got.append(s)))
    assert int(got[0].split()[0]) == status
    assert body.startswith(b"# HELP") == (bool(script_name) and status == 200)


def test_scrape_appends_extra_registry() -> None:
    """A prometheus_client registry passed to the server is appended to the exposition."""
    metrics = CodebookMetrics()
    registry = CollectorRegistry()
    Counter("app_jobs", "Jobs done.", registry=registry).inc(2)
    server = start_metrics_server(metrics, port=0, registry=registry)
    try:
        _, _, body = _get(server.url)
    finally:
        server.close()
    text = body.decode()
    assert text.startswith(metrics.render().decode())
    assert "app_jobs_total 2.0" in text


def test_promtool_check_metrics_is_clean(served: tuple[CodebookMetrics, MetricsServer]) -> None:
    """promtool check metrics finds no problem in the scraped exposition."""
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is required in CI (apt-get install prometheus)")
        pytest.skip("promtool not installed")
    _, server = served
    _, _, body = _get(server.url)
    result = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert result.stdout.decode().strip() == ""


def test_golden_exposition(served: tuple[CodebookMetrics, MetricsServer]) -> None:
    """The scraped text of the fixed scenario equals tests/testdata/metrics_golden.txt."""
    _, server = served
    _, _, body = _get(server.url)
    text = body.decode()
    if os.environ.get("UPDATE_GOLDEN") == "1" or not (GOLDEN.exists() or os.environ.get("CI")):
        GOLDEN.write_text(text, encoding="utf-8")
    assert text == GOLDEN.read_text(encoding="utf-8")
