"""Zero-code end to end: an app using a provider SDK, run under a real ``opentelemetry-instrument``
with ``OTEL_PYTHON_CONFIGURATOR=codebook``. The app holds no Codebook code; the instrumentors
come from their entry points, and ``/metrics`` counts the provider's code once."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pki import Pki, make_pki
from tests.provider_fakes import FakeProvider, json_answer

# The app's own tail: flush the SDK, then read /metrics (urllib, no Codebook import).
TAIL = """
from opentelemetry import trace
import os, urllib.request
trace.get_tracer_provider().force_flush()
url = "http://127.0.0.1:%s/metrics" % os.environ["CODEBOOK_METRICS_PORT"]
print("METRICS" + json.dumps(urllib.request.urlopen(url, timeout=10).read().decode()))
"""

VONAGE_APP = """
import json, os
from vonage import Auth, HttpClientOptions, Vonage
from vonage_sms import SmsMessage
from vonage_sms.errors import SmsError
host = os.environ["FAKE_HOST"]
client = Vonage(Auth(api_key="vonage-key-77", api_secret="vonage-secret-77"),
                HttpClientOptions(rest_host=host, api_host=host, max_retries=0, timeout=5))
try:
    client.sms.send(SmsMessage(to="447700900123", from_="Acme", text="hello"))
except SmsError as exc:
    print("APP sms error", exc)
"""

AZURE_APP = """
import base64, json, os
from azure.core.credentials import AzureKeyCredential
from azure.communication.sms import SmsClient
key = base64.b64encode(b"k" * 32).decode()
client = SmsClient(os.environ["FAKE_URL"], AzureKeyCredential(key), retry_total=0)
sent = client.send(from_="+15550100000", to=["+15550100001", "+15550100002"], message="hi")
print("APP", [r.http_status_code for r in sent])
"""

BRAZE_APP = """
import json, os
from braze.client import BrazeClient, BrazeRateLimitError
try:
    BrazeClient("braze-key", api_url=os.environ["FAKE_URL"]).user_track(
        attributes=[{"external_id": "u1"}])
except BrazeRateLimitError:
    print("APP rate limited")
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(tmp_path: Path, app: str, env: dict[str, str]) -> tuple[str, str]:
    """Run ``app`` under opentelemetry-instrument; (stdout, /metrics exposition)."""
    instrument = shutil.which("opentelemetry-instrument", path=str(Path(sys.executable).parent))
    instrument = instrument or shutil.which("opentelemetry-instrument")
    assert instrument, "opentelemetry-instrument is installed with the test extras"
    (tmp_path / "app.py").write_text(textwrap.dedent(app) + TAIL, encoding="utf-8")
    port = _free_port()
    full = {
        **os.environ,
        "OTEL_PYTHON_CONFIGURATOR": "codebook",
        "OTEL_TRACES_EXPORTER": "console",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_SEMCONV_STABILITY_OPT_IN": "http",
        "CODEBOOK_METRICS_PORT": str(port),
        **env,
    }
    proc = subprocess.run([instrument, sys.executable, "app.py"], cwd=tmp_path, env=full,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith("METRICS"))
    return proc.stdout, json.loads(line.removeprefix("METRICS"))


def _series(exposition: str, source: str) -> list[str]:
    return [x for x in exposition.splitlines()
            if x.startswith(f'provider_codes_total{{source="{source}",') and not x.endswith(" 0.0")]


def _spans(stdout: str) -> list[dict[str, object]]:
    """The spans the console exporter printed (one JSON document each)."""
    spans, depth, buf = [], 0, []
    for line in stdout.splitlines():
        if line.startswith("{") and depth == 0:
            buf = []
        if depth or line.startswith("{"):
            buf.append(line)
            depth += line.count("{") - line.count("}")
            if depth == 0:
                spans.append(json.loads("\n".join(buf)))
    return spans


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), "e2e")


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    server = FakeProvider()
    yield server
    server.close()


def test_vonage_end_to_end(tmp_path: Path, pki: Pki) -> None:
    """vonage.sms status 1 in a 200 body (raised as SmsError) counted once, on the HTTP span."""
    pytest.importorskip("vonage_sms")
    tls = FakeProvider(pki)
    try:
        tls.script("POST", "/sms/json", json_answer(200, {"message-count": "1", "messages": [
            {"status": "1", "error-text": "Throughput Rate Exceeded"}]}))
        out, exposition = _run(tmp_path, VONAGE_APP, {"FAKE_HOST": tls.host,
                                                      "REQUESTS_CA_BUNDLE": str(pki.ca)})
    finally:
        tls.close()
    assert "APP sms error" in out
    assert _series(exposition, "vonage.sms") == [
        'provider_codes_total{source="vonage.sms",code="1",subcode="",category="throttled",'
        'severity="warning",retryable="with_backoff",owner="our_app"} 1.0']
    coded = [s for s in _spans(out) if "provider.code" in s["attributes"]]  # type: ignore[operator]
    assert [s["name"] for s in coded] == ["POST"]  # the requests instrumentation's span
    spans = json.dumps(_spans(out))
    assert "447700900123" not in spans and "vonage-secret-77" not in spans


@pytest.mark.parametrize("azure_tracing", [False, True], ids=["requests-span", "azure-core-span"])
def test_azure_sms_end_to_end(tmp_path: Path, fake: FakeProvider, azure_tracing: bool) -> None:
    """Two recipients (202, 400): the span carries 400, one event per recipient, 400 counted once.

    With azure-core tracing on, the code lands on the SDK's own span (SmsClient.send).
    """
    pytest.importorskip("azure.communication.sms")
    fake.script("POST", "/sms", json_answer(202, {"value": [
        {"to": "+15550100001", "messageId": "m1", "httpStatusCode": 202, "successful": True},
        {"to": "+15550100002", "httpStatusCode": 400, "successful": False,
         "errorMessage": "Invalid To phone number format."}]}))
    env = {"FAKE_URL": fake.url, "AZURE_TRACING_ENABLED": "true" if azure_tracing else "false"}
    out, exposition = _run(tmp_path, AZURE_APP, env)
    assert "APP [202, 400]" in out
    # One count per recipient: the span repeats the failing one, which its event counts.
    assert _series(exposition, "azure.acs.sms_send") == [
        'provider_codes_total{source="azure.acs.sms_send",code="202",subcode="",'
        'category="success",severity="info",retryable="no",owner="none"} 1.0',
        'provider_codes_total{source="azure.acs.sms_send",code="400",subcode="",'
        'category="invalid_request",severity="error",retryable="no",owner="our_app"} 1.0']
    coded = [s for s in _spans(out) if "provider.code" in s["attributes"]]  # type: ignore[operator]
    # Without azure-core tracing: the requests instrumentation's HTTP client span.
    assert [s["name"] for s in coded] == ["SmsClient.send" if azure_tracing else "POST"]
    events = coded[0]["events"]
    assert [e["attributes"]["provider.code"] for e in events] == ["202", "400"]  # type: ignore[index]


def test_braze_end_to_end(tmp_path: Path, fake: FakeProvider) -> None:
    """braze.rest 429 Rate Limited counted once; the host list comes from CODEBOOK_BRAZE_HOSTS."""
    pytest.importorskip("braze.client")
    fake.script("POST", "/users/track", json_answer(429, {"message": "Rate Limited"}, **{
        "X-RateLimit-Reset": "4102444800"}))
    out, exposition = _run(tmp_path, BRAZE_APP, {"FAKE_URL": fake.url,
                                                 "CODEBOOK_BRAZE_HOSTS": fake.host})
    assert "APP rate limited" in out
    assert _series(exposition, "braze.rest") == [
        'provider_codes_total{source="braze.rest",code="429",subcode="",category="throttled",'
        'severity="warning",retryable="with_backoff",owner="our_app"} 1.0']
    coded = [s for s in _spans(out) if "provider.code" in s["attributes"]]  # type: ignore[operator]
    assert [(s["name"], s["attributes"]["provider.message"]) for s in coded] == [  # type: ignore[index]
        ("POST", "Rate Limited")]
    assert "braze-key" not in out
