"""A real Prometheus scrapes a real Codebook endpoint fed by real OpenTelemetry spans.

Every dashboard query, variable and recorded series must return data, and the critical-code
page must fire. The endpoint also serves a registry with the sidecar's web config reloader,
whose last reload failed. Prometheus runs from Debian's ``prometheus`` package on 127.0.0.1
with a 1s scrape and evaluation interval; the test polls its HTTP API against a deadline.
Without the binary the test fails under CI=true and skips elsewhere.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from dashboard_queries import (
    RULE_FILES,
    load_dashboards,
    load_rule_groups,
    require,
    substitute,
    targets,
    variable_queries,
    variable_query,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from exporter import (
    CodebookMetrics,
    CodebookSpanProcessor,
    Enricher,
    MetricsServer,
    start_metrics_server,
)
from exporter.sidecar.webconfig import WebConfigReloader, load_web_config
from exporter.sidecar.webhook import WebhookHandler

pytestmark = pytest.mark.slow

MAPPING = Path(__file__).parent / "testdata" / "dashboards_e2e" / "e2e_sms.yaml"
SOURCE = "e2e.sms"
EVENTGRID = "/webhooks/azure/eventgrid"
DEADLINE_SECONDS = 60.0
POLL_SECONDS = 0.5
# The codes sent every tick, as (code, spans per tick): success, throttled, invalid_request
# (our_app), auth (critical, our_config), recipient_invalid (end_user), provider_unavailable
# and a 5xx class code (provider). Unmapped codes and an unknown source are added per tick.
TRAFFIC = (("0", 6), ("1", 2), ("2", 1), ("4", 1), ("6", 1), ("8", 1), ("503", 1))
# Grafana's "All" for multi-value variables; $source is the one source the test feeds.
VARIABLES = {"source": SOURCE}
ALL = ".*"

T = TypeVar("T")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def _poll(check: Callable[[], T | None], what: Callable[[], str]) -> T:
    """Call ``check`` every POLL_SECONDS until it returns non-None or the deadline passes."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        result = check()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"not within {DEADLINE_SECONDS}s: {what()}")
        time.sleep(POLL_SECONDS)


@dataclass
class Codebook:
    """The exporter side: metrics, enricher, the /metrics server and a span feeder."""

    metrics: CodebookMetrics
    enricher: Enricher
    server: MetricsServer


def _feed(codebook: Codebook, stop: threading.Event) -> None:
    """End spans with provider codes every 0.25s, and count the sidecar's self-metrics.

    In process there is no OTLP receiver or upstream exporter, so received, forwarded,
    rejected and dropped telemetry are counted through CodebookMetrics' own API, as the
    sidecar's receivers do; without them the health panels would have nothing to show.
    """
    provider = TracerProvider()
    provider.add_span_processor(
        CodebookSpanProcessor(SimpleSpanProcessor(InMemorySpanExporter()), codebook.enricher)
    )
    tracer = provider.get_tracer("codebook-e2e")
    metrics = codebook.metrics
    hooks = WebhookHandler(codebook.enricher)  # a webhook event that carries no code
    tick = 0
    while not stop.is_set():
        # A new unmapped code every tick: the first two keep their value, the rest fold
        # into _OTHER and count as cardinality overflow.
        codes = [(SOURCE, code) for code, n in TRAFFIC for _ in range(n)]
        codes += [(SOURCE, str(9000 + tick)), ("no.such.source", "1")]
        for source, code in codes:
            attributes = {"provider.source": source, "provider.code": code}
            with tracer.start_as_current_span("send sms", attributes=attributes):
                pass
        metrics.telemetry_received("traces", "sdk", len(codes))
        metrics.telemetry_forwarded("traces", len(codes) - 1)
        metrics.telemetry_dropped("traces", "queue_full")
        metrics.telemetry_rejected("traces", "grpc", "malformed")
        event = {"id": f"e{tick}", "eventType": "Microsoft.Communication.IncomingCall", "data": {}}
        body = json.dumps([event]).encode()
        hooks.handle("POST", EVENTGRID, "", {"content-type": "application/json"}, body)
        metrics.forward_account("traces", queued=1, queued_bytes=100)
        tick += 1
        stop.wait(0.25)
    provider.shutdown()


@pytest.fixture(scope="module")
def codebook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Codebook]:
    """A Codebook on 127.0.0.1 whose last mapping and web config reloads failed, fed with spans."""
    mappings = tmp_path_factory.mktemp("mappings")
    shutil.copy(MAPPING, mappings)
    metrics = CodebookMetrics(max_unmapped_codes_per_source=2)
    enricher = Enricher(metrics=metrics, mapping_dirs=[mappings], builtin=False)
    assert enricher.reload()
    (mappings / "broken.yaml").write_text("schema: 1\nsource: broken\n")
    assert not enricher.reload()
    # As `codebook serve` registers it (exporter/sidecar/serve.py), without TLS or users to apply.
    web_file = tmp_path_factory.mktemp("web") / "web.yml"
    web_file.write_text("basic_auth_users: {}\n")
    web = WebConfigReloader(load_web_config(web_file), apply=lambda new: None)
    registry = CollectorRegistry(auto_describe=True)
    registry.register(web)
    web_file.write_text("no_such_key: 1\n")
    assert not web.reload()
    server = start_metrics_server(metrics, port=0, registry=registry)
    book = Codebook(metrics, enricher, server)
    stop = threading.Event()
    feeder = threading.Thread(target=_feed, args=(book, stop), name="e2e-feeder", daemon=True)
    feeder.start()
    try:
        yield book
    finally:
        stop.set()
        feeder.join(timeout=10)
        server.close()


@pytest.fixture(scope="module")
def prometheus(codebook: Codebook, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prometheus on 127.0.0.1 scraping ``codebook`` every second; its base URL."""
    binary = require("prometheus")
    tmp_path = tmp_path_factory.mktemp("prometheus")
    port = _free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(path) for path in RULE_FILES],
        "scrape_configs": [
            {
                "job_name": "codebook",
                "static_configs": [{"targets": [f"127.0.0.1:{codebook.server.port}"]}],
            }
        ],
    }
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config))
    log = (tmp_path / "prometheus.log").open("w")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config_file}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool | None:
        if process.poll() is not None:
            pytest.fail(f"prometheus exited: {(tmp_path / 'prometheus.log').read_text()}")
        try:
            with urllib.request.urlopen(f"{base}/-/ready", timeout=1) as response:
                return True if response.status == 200 else None
        except OSError:
            return None

    try:
        _poll(ready, lambda: "prometheus ready")
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


def _query(base: str, expr: str) -> list[dict[str, Any]]:
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    body = _get(url)
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def _empty(base: str, queries: dict[str, str]) -> list[str]:
    return [name for name, expr in queries.items() if not _query(base, expr)]


def _wait_for_data(base: str, queries: dict[str, str]) -> None:
    missing: list[str] = list(queries)

    def check() -> bool | None:
        missing[:] = _empty(base, {n: queries[n] for n in missing})
        return True if not missing else None

    _poll(check, lambda: "no data for:\n" + "\n".join(f"{n}: {queries[n]}" for n in missing))


def test_every_dashboard_query_returns_data(prometheus: str) -> None:
    """Each panel query, with $source set and the other variables at All, returns series."""
    queries = {t.name: substitute(t.expr, VARIABLES, ALL) for t in targets()}
    _wait_for_data(prometheus, queries)


def test_every_dashboard_variable_has_values(prometheus: str) -> None:
    """Each label_values() variable lists values, and $source lists the source fed."""
    for dashboard in load_dashboards().values():
        for name, query in variable_queries(dashboard).items():
            selector, label = variable_query(query)
            params = urllib.parse.urlencode({"match[]": substitute(selector or "", VARIABLES)})
            url = f"{prometheus}/api/v1/label/{label}/values?{params}"

            def values(url: str = url) -> list[str] | None:
                data: list[str] = _get(url)["data"]
                return data or None

            found = _poll(values, lambda name=name: f"values of ${name}")
            if name == "source":
                assert SOURCE in found


def test_every_recorded_series_has_data(prometheus: str) -> None:
    """Each recording rule produces a series from the exporter's real output."""
    records = [r["record"] for g in load_rule_groups() for r in g["rules"] if "record" in r]
    _wait_for_data(prometheus, {name: name for name in records})


def _alerts(base: str) -> list[dict[str, Any]]:
    alerts: list[dict[str, Any]] = _get(f"{base}/api/v1/alerts")["data"]["alerts"]
    return alerts


def _alert(base: str, name: str, states: tuple[str, ...], **labels: str) -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        for alert in _alerts(base):
            wanted = {"alertname": name, **labels}
            if alert["state"] in states and wanted.items() <= alert["labels"].items():
                return alert
        return None

    return _poll(find, lambda: f"{name} {labels} {states}; have {_alerts(base)}")


def test_critical_code_pages(prometheus: str) -> None:
    """A critical code (auth, our_config) fires CodebookCriticalProviderCode with its meaning."""
    alert = _alert(
        prometheus,
        "CodebookCriticalProviderCode",
        ("firing",),
        source=SOURCE,
        code="4",
        category="auth",
        owner="our_config",
        severity="critical",
    )
    assert "Mapping: The API key or secret is invalid." in alert["annotations"]["description"]


def test_event_alerts_fire_on_real_output(prometheus: str) -> None:
    """Unmapped codes, overflow and failed reloads reach their alerts from real /metrics."""
    _alert(prometheus, "CodebookUnmappedCodes", ("firing",), source=SOURCE)
    _alert(prometheus, "CodebookUnmappedCodes", ("firing",), source="_OTHER")
    _alert(
        prometheus,
        "CodebookCardinalityOverflow",
        ("firing",),
        source=SOURCE,
        limit="unmapped_codes",
    )
    # for: 5m and 10m: within the test they can only be pending.
    _alert(prometheus, "CodebookMappingReloadFailed", ("pending", "firing"), job="codebook")
    _alert(prometheus, "CodebookWebConfigReloadFailed", ("pending", "firing"), job="codebook")
    _alert(prometheus, "CodebookTelemetryDropped", ("pending", "firing"), reason="queue_full")
    _alert(prometheus, "CodebookTelemetryRejected", ("pending", "firing"), reason="malformed")


def test_ratio_alerts_see_real_ratios(prometheus: str) -> None:
    """The traffic's ratios (throttled 2/14, provider 2/14, our_app 3/14) cross the thresholds.

    Their for: of 10-15 minutes leaves them pending within the test. The recipient_invalid
    spike cannot be shown: a steady feed has no spike over its own 6h baseline.
    """
    _alert(prometheus, "CodebookThrottlingSustained", ("pending",), source=SOURCE)
    _alert(prometheus, "CodebookProviderErrorRatioHigh", ("pending",), owner="provider")
    _alert(prometheus, "CodebookAppErrorRatioHigh", ("pending",), owner="our_app")
    assert not [a for a in _alerts(prometheus) if a["labels"]["alertname"].endswith("Spike")]
