"""Zero-code setup: a real `opentelemetry-instrument` run of a small script."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent(
    """
    import json, logging, os, urllib.request
    from opentelemetry import trace, metrics
    from opentelemetry._logs import get_logger_provider

    tracer = trace.get_tracer("app")
    for code in ("1", "0", "99999"):
        with tracer.start_as_current_span("sms.send") as span:
            span.set_attribute("provider.source", "test.auto")
            span.set_attribute("provider.code", code)
    with tracer.start_as_current_span("unrelated"):
        pass
    counter = metrics.get_meter("app").create_counter("sms.sent")
    counter.add(3, {"provider.source": "test.auto", "provider.code": "1", "phone": "+4477"})
    log = logging.getLogger("app")
    log.warning("send failed", extra={"provider.source": "test.auto", "provider.code": "1"})
    log.warning("no code here")
    metrics.get_meter_provider().force_flush()
    trace.get_tracer_provider().force_flush()
    get_logger_provider().force_flush()
    url = "http://127.0.0.1:%s/metrics" % os.environ["CODEBOOK_METRICS_PORT"]
    print("METRICS" + json.dumps(urllib.request.urlopen(url, timeout=10).read().decode()))
    """
)

MAPPING = textwrap.dedent(
    """
    schema: 1
    source: test.auto
    title: Zero-code test source
    version: "1"
    entries:
      - code: "0"
        category: success
        description: Accepted
        doc: {en: ok}
      - code: "1"
        category: throttled
        description: Too fast
        doc: {en: throttled}
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_opentelemetry_instrument_enables_codebook(tmp_path: Path) -> None:
    """OTEL_PYTHON_CONFIGURATOR=codebook enriches spans and metrics and serves /metrics."""
    instrument = shutil.which("opentelemetry-instrument", path=str(Path(sys.executable).parent))
    instrument = instrument or shutil.which("opentelemetry-instrument")
    assert instrument, "opentelemetry-instrument is installed with the test extras"
    (tmp_path / "maps").mkdir()
    (tmp_path / "maps" / "auto.yaml").write_text(MAPPING, encoding="utf-8")
    (tmp_path / "app.py").write_text(SCRIPT, encoding="utf-8")
    port = _free_port()
    env = {
        **os.environ,
        "OTEL_PYTHON_CONFIGURATOR": "codebook",
        "OTEL_TRACES_EXPORTER": "console",
        "OTEL_METRICS_EXPORTER": "codebook_console",
        "OTEL_LOGS_EXPORTER": "console",
        "OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED": "true",
        "OTEL_METRIC_EXPORT_INTERVAL": "600000",
        "CODEBOOK_MAPPINGS": str(tmp_path / "maps"),
        "CODEBOOK_METRICS_PORT": str(port),
    }
    proc = subprocess.run(
        [instrument, sys.executable, "app.py"], cwd=tmp_path, env=env, capture_output=True,
        text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    line = next(x for x in out.splitlines() if x.startswith("METRICS"))
    exposition = json.loads(line.removeprefix("METRICS"))
    labels = 'source="test.auto",code="1",subcode="",category="throttled",severity="warning"'
    # One span and one log record carry code 1: each counts once.
    assert f'provider_codes_total{{{labels},retryable="with_backoff",owner="our_app"}} 2.0' in (
        exposition)
    assert 'provider_codes_total{source="test.auto",code="99999"' in exposition
    assert f'sms_sent_total{{{labels},retryable="with_backoff",owner="our_app"}} 3.0' in exposition
    assert '"provider.category": "throttled"' in out
    assert '"error.type": "throttled"' in out
    assert '"provider.match": "unmapped"' in out
    # The metric exporter wrapper enriched the exported data point too.
    assert out.count('"provider.owner": "our_app"') >= 2
    assert "+4477" not in exposition
    # The log record went through the console log exporter enriched, its severity kept.
    records = _json_objects(out, '"body": ')
    failed = next(r for r in records if r["body"] == "send failed")
    assert failed["attributes"]["provider.category"] == "throttled"
    assert failed["attributes"]["error.type"] == "throttled"
    assert failed["severity_text"] == "WARN" and failed["severity_number"] == 13
    plain = next(r for r in records if r["body"] == "no code here")
    assert not any(k.startswith("provider.") for k in plain["attributes"])


def _json_objects(text: str, marker: str) -> list[dict[str, object]]:
    """The top-level JSON objects in ``text`` (console exporter output) that contain ``marker``."""
    decoder = json.JSONDecoder()
    found: list[dict[str, object]] = []
    i = text.find("{")
    while i != -1:
        try:
            obj, end = decoder.raw_decode(text, i)
        except ValueError:
            i = text.find("{", i + 1)
            continue
        if isinstance(obj, dict) and marker in text[i:end]:
            found.append(obj)
        i = text.find("{", end)
    return found


@pytest.mark.parametrize("value", ["off", "none"])
def test_metrics_port_can_be_disabled(value: str) -> None:
    """CODEBOOK_METRICS_PORT=off starts no server (checked without opentelemetry-instrument)."""
    code = (
        f"import os; os.environ['CODEBOOK_METRICS_PORT']={value!r}\n"
        "from exporter import Enricher, autoconfig\n"
        "autoconfig._start_services(Enricher())\n"
        "print(autoconfig._server)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True, cwd=Path(__file__).parents[1])
    assert out.stdout.strip() == "None"


FALLBACK = textwrap.dedent(
    """
    import logging, os
    os.environ.update(OTEL_TRACES_EXPORTER="console", OTEL_METRICS_EXPORTER="none",
                      OTEL_LOGS_EXPORTER="console", CODEBOOK_METRICS_PORT="off",
                      OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED="true")
    from opentelemetry import trace
    from opentelemetry._logs import get_logger_provider
    from exporter import autoconfig

    # As an SDK whose configuration takes no processor factories (the 1.30 floor's).
    autoconfig._TAKES_SPAN_PROCESSOR = autoconfig._TAKES_LOG_PROCESSOR = False
    real = autoconfig._configuration._initialize_components

    def initialize(**kwargs):
        assert "export_span_processor" not in kwargs
        assert "export_log_record_processor" not in kwargs
        return real(**kwargs)

    autoconfig._configuration._initialize_components = initialize
    autoconfig.CodebookConfigurator().configure()
    with trace.get_tracer("t").start_as_current_span(
            "s", attributes={"provider.source": "vonage.sms", "provider.code": "1"}):
        pass
    logging.getLogger("app").warning(
        "x", extra={"provider.source": "vonage.sms", "provider.code": "1"})
    trace.get_tracer_provider().force_flush()
    get_logger_provider().force_flush()
    print("COUNT", autoconfig.shared_enricher().metrics.value("provider_codes_total", {
        "source": "vonage.sms", "code": "1", "subcode": "", "category": "throttled",
        "severity": "warning", "retryable": "with_backoff", "owner": "our_app"}))
    """
)


def test_configurator_wraps_processors_on_sdks_without_factories(tmp_path: Path) -> None:
    """Without the SDK's processor factories, the built processors are wrapped afterwards."""
    (tmp_path / "app.py").write_text(FALLBACK, encoding="utf-8")
    proc = subprocess.run([sys.executable, "app.py"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "COUNT 2.0" in proc.stdout
    assert '"provider.category": "throttled"' in proc.stdout


CHAIN_APP = textwrap.dedent(
    """
    from opentelemetry import trace

    tracer = trace.get_tracer("app")
    for code in ("1", "1"):
        with tracer.start_as_current_span("sms.send") as span:
            span.set_attribute("provider.source", "vonage.sms")
            span.set_attribute("provider.code", code)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize(("count_enriched", "expected"), [(True, 3.0), (False, 1.0)],
                         ids=["sidecar-counts-everything", "sidecar-skips-enriched"])
def test_configurator_chained_to_a_sidecar(
    tmp_path: Path, count_enriched: bool, expected: float
) -> None:
    """The in-process configurator enriches two spans and exports them to a sidecar, which
    also receives one raw span from a plain SDK. The sidecar counts both enriched ones again
    by default, and only the raw one with receivers.count_enriched=false (so the two
    Codebooks never count a span twice)."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from sidecar_proc import SidecarProcess

    instrument = shutil.which("opentelemetry-instrument", path=str(Path(sys.executable).parent))
    assert instrument, "opentelemetry-instrument is a runtime dependency"
    (tmp_path / "app.py").write_text(CHAIN_APP, encoding="utf-8")
    config = {"receivers": {"count_enriched": count_enriched}}
    with SidecarProcess(tmp_path, config) as sidecar:
        env = {
            **os.environ,
            "OTEL_PYTHON_CONFIGURATOR": "codebook",
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{sidecar.grpc}",
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "CODEBOOK_METRICS_PORT": "off",
        }
        proc = subprocess.run([instrument, sys.executable, "app.py"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120, check=False)
        assert proc.returncode == 0, proc.stderr
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(
            endpoint=sidecar.grpc, insecure=True)))
        with provider.get_tracer("raw").start_as_current_span(
            "sms.send", attributes={"provider.source": "vonage.sms", "provider.code": "1"}
        ):
            pass
        provider.shutdown()
        assert sidecar.total("provider_codes_total", source="vonage.sms", code="1") == expected
        assert sidecar.total("codebook_telemetry_received_total", signal="traces") == 3.0
