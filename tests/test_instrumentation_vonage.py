"""codebook_vonage: the real vonage 4.x SDK against a TLS fake of the SMS API on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("vonage_sms")

import requests.adapters
import vonage_sms.sms
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.trace import SpanKind, StatusCode
from vonage import Auth, HttpClientOptions, Vonage
from vonage_sms import SmsMessage

from exporter.instrumentation.vonage import VonageInstrumentor
from tests.pki import make_pki
from tests.provider_fakes import (
    Answer,
    FakeProvider,
    Pipeline,
    json_answer,
    provider_attrs,
    results,
)

PATH = "/sms/json"
PHONE = "447700900123"
TEXT = "your code is 991234"


def _message(status: str, **extra: str) -> dict[str, str]:
    if status == "0":
        return {"to": PHONE, "message-id": "0A0000000123ABCD1", "status": "0",
                "remaining-balance": "3.14", "message-price": "0.03", "network": "12345", **extra}
    return {"status": status, "error-text": "Throughput Rate Exceeded", **extra}


def _answer(*statuses: str) -> Answer:
    return json_answer(200, {"message-count": str(len(statuses)),
                             "messages": [_message(s) for s in statuses]})


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeProvider]:
    pki = make_pki(tmp_path_factory.mktemp("pki"), "vonage")
    server = FakeProvider(pki)
    server.ca = pki.ca  # type: ignore[attr-defined]
    yield server
    server.close()


@pytest.fixture(params=[False, True], ids=["own-span", "requests-span"])
def pipe(request: pytest.FixtureRequest, fake: FakeProvider,
         monkeypatch: pytest.MonkeyPatch) -> Iterator[Pipeline]:
    """Instrumented, with or without opentelemetry-instrumentation-requests underneath."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(fake.ca))  # type: ignore[attr-defined]
    pipe = Pipeline()
    VonageInstrumentor().instrument(tracer_provider=pipe.provider)
    if request.param:
        RequestsInstrumentor().instrument(tracer_provider=pipe.provider)
    pipe.http_span = request.param  # type: ignore[attr-defined]
    yield pipe
    RequestsInstrumentor().uninstrument()
    VonageInstrumentor().uninstrument()


def _client(fake: FakeProvider) -> Vonage:
    return Vonage(Auth(api_key="key1234", api_secret="secret5678"),
                  HttpClientOptions(rest_host=fake.host, api_host=fake.host, max_retries=0,
                                    timeout=5))


def _outcome(call: Callable[[], Any]) -> tuple[str, str, str]:
    """What the application sees: the return value's type and fields, or the exception."""
    try:
        value = call()
    except Exception as exc:
        return "raised", type(exc).__name__, str(exc)
    return "returned", type(value).__name__, repr(value)


CASES = [
    # id, answer, outcome kind, exception/return type, span code, event codes
    ("success", _answer("0"), "returned", "SmsResponse", "0", []),
    ("returned-multipart", _answer("0", "0"), "returned", "SmsResponse", "0", ["0", "0"]),
    ("raised-sms-error", _answer("1"), "raised", "SmsError", "1", []),
    ("raised-partial", _answer("0", "2", "9"), "raised", "PartialFailureError", "2",
     ["0", "2", "9"]),
]


@pytest.mark.parametrize(("answer", "kind", "type_name", "code", "events"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_sms_statuses_reach_the_span(pipe: Pipeline, fake: FakeProvider, answer: Answer,
                                     kind: str, type_name: str, code: str,
                                     events: list[str]) -> None:
    """Every message status of Sms.send is recorded; the SDK's own outcome is unchanged."""
    fake.script("POST", PATH, answer)
    seen = _outcome(lambda: _client(fake).sms.send(SmsMessage(to=PHONE, from_="Acme",
                                                              text=TEXT)))
    assert seen[:2] == (kind, type_name)
    span = pipe.only_coded()
    assert span.kind is SpanKind.CLIENT
    assert span.name == ("POST" if pipe.http_span else "vonage.sms.send")  # type: ignore[attr-defined]
    attrs = provider_attrs(span.attributes)
    assert attrs["provider.source"] == "vonage.sms"
    assert attrs["provider.code"] == code
    assert attrs["provider.match"] == "exact"
    assert [e["provider.code"] for e in results(span)] == events
    assert all(e["provider.source"] == "vonage.sms" for e in results(span))
    if code != "0":
        assert span.status.status_code is StatusCode.ERROR
        assert attrs["provider.category"] in ("throttled", "invalid_request")
    # Each message's status counts once (the span summarises one of its events when it has some).
    assert pipe.count("vonage.sms", code) == (events.count(code) or 1.0)
    flat = repr([dict(s.attributes or {}) for s in pipe.spans()]) + repr(
        [dict(e.attributes or {}) for s in pipe.spans() for e in s.events])
    for secret in (PHONE, TEXT, "key1234", "secret5678", "0A0000000123ABCD1", "Acme"):
        assert secret not in flat


def test_sms_error_is_classified(pipe: Pipeline, fake: FakeProvider) -> None:
    """Status 1 (returned in a 200 body, raised as SmsError) is throttled/warning in /metrics."""
    fake.script("POST", PATH, _answer("1"))
    with pytest.raises(vonage_sms.errors.SmsError):
        _client(fake).sms.send(SmsMessage(to=PHONE, from_="Acme", text=TEXT))
    attrs = provider_attrs(pipe.only_coded().attributes)
    assert (attrs["provider.category"], attrs["provider.severity"],
            attrs["provider.retryable"], attrs["provider.owner"]) == (
        "throttled", "warning", "with_backoff", "our_app")
    assert pipe.enricher.metrics.value("provider_codes_total", {
        "source": "vonage.sms", "code": "1", "subcode": "", "category": "throttled",
        "severity": "warning", "retryable": "with_backoff", "owner": "our_app"}) == 1.0


UNTOUCHED = [
    ("malformed-json", (200, {"Content-Type": "application/json"}, b"{not json")),
    ("messages-not-a-list", json_answer(200, {"message-count": "1", "messages": "0"})),
    ("status-not-a-code", json_answer(200, {"message-count": "1", "messages": [
        {"status": {"x": 1}, "error-text": "?"}]})),
    ("no-error-text", json_answer(200, {"message-count": "1", "messages": [{"status": "4"}]})),
    ("http-401", json_answer(401, {"type": "https://developer.nexmo.com/api-errors#unauthorized",
                                   "title": "Unauthorized"})),
    ("http-502-html", (502, {"Content-Type": "text/html"}, b"<html>Bad gateway</html>")),
    ("empty-200", (200, {"Content-Type": "application/json"}, b"")),
]


@pytest.mark.parametrize("answer", [c[1] for c in UNTOUCHED], ids=[c[0] for c in UNTOUCHED])
def test_unexpected_answers_pass_through(pipe: Pipeline, fake: FakeProvider,
                                         answer: Answer) -> None:
    """The SDK returns/raises exactly as uninstrumented; no code is invented from the body."""
    send = lambda: _client(fake).sms.send(SmsMessage(to=PHONE, from_="Acme", text=TEXT))  # noqa: E731
    fake.script("POST", PATH, answer, answer)
    instrumented = _outcome(send)
    VonageInstrumentor().uninstrument()
    bare = _outcome(send)
    assert instrumented == bare
    codes = [provider_attrs(s.attributes).get("provider.code") for s in pipe.coded()]
    if answer[2] != b"" and b"status" in answer[2] and b'"4"' in answer[2]:
        # A well-formed status the SDK then trips over (KeyError 'error-text') is still a code.
        assert codes == ["4"]
    else:
        assert codes == []


def test_sdk_raising_before_sending(pipe: Pipeline, fake: FakeProvider) -> None:
    """A call the SDK rejects before any request raises the same error and records nothing."""
    before = len(fake.received)
    instrumented = _outcome(lambda: _client(fake).sms.send("not a message"))  # type: ignore[arg-type]
    VonageInstrumentor().uninstrument()
    bare = _outcome(lambda: _client(fake).sms.send("not a message"))  # type: ignore[arg-type]
    assert instrumented == bare and instrumented[0] == "raised"
    assert len(fake.received) == before
    assert pipe.coded() == []


def test_connection_refused_records_no_code(pipe: Pipeline) -> None:
    """No answer, no code: the call's span keeps error.type as an HTTP client span would."""
    dead = FakeProvider()
    dead.close()
    client = Vonage(Auth(api_key="k", api_secret="s"),
                    HttpClientOptions(rest_host=dead.host, max_retries=0, timeout=5))
    with pytest.raises(requests.exceptions.ConnectionError):
        client.sms.send(SmsMessage(to=PHONE, from_="Acme", text=TEXT))
    assert pipe.coded() == []
    (span,) = [s for s in pipe.spans() if s.kind is SpanKind.CLIENT]
    assert span.status.status_code is StatusCode.ERROR
    if not pipe.http_span:  # type: ignore[attr-defined]
        assert (span.attributes or {})["error.type"] == "ConnectionError"


def test_uninstrument_restores_the_sdk(fake: FakeProvider, monkeypatch: pytest.MonkeyPatch,
                                       ) -> None:
    """Twice instrumented is once; uninstrument() puts the original functions back."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(fake.ca))  # type: ignore[attr-defined]
    send, adapter_send = vonage_sms.sms.Sms.send, requests.adapters.HTTPAdapter.send
    pipe = Pipeline()
    VonageInstrumentor().instrument(tracer_provider=pipe.provider)
    VonageInstrumentor().instrument(tracer_provider=pipe.provider)
    assert vonage_sms.sms.Sms.send.__wrapped__ is send  # one layer only
    fake.script("POST", PATH, _answer("1"), _answer("1"))
    with pytest.raises(vonage_sms.errors.SmsError):
        _client(fake).sms.send(SmsMessage(to=PHONE, from_="Acme", text=TEXT))
    assert len(pipe.coded()) == 1
    VonageInstrumentor().uninstrument()
    assert vonage_sms.sms.Sms.send is send
    assert requests.adapters.HTTPAdapter.send is adapter_send
    pipe.clear()
    with pytest.raises(vonage_sms.errors.SmsError):
        _client(fake).sms.send(SmsMessage(to=PHONE, from_="Acme", text=TEXT))
    assert pipe.spans() == []


def test_dependencies_declared() -> None:
    """The SDK ranges it was tested with; the installed ones satisfy them."""
    deps = VonageInstrumentor().instrumentation_dependencies()
    assert any(d.startswith("vonage-sms") for d in deps)
    assert VonageInstrumentor()._check_dependency_conflicts() is None


def test_requests_outside_sms_send_are_not_claimed(pipe: Pipeline, fake: FakeProvider) -> None:
    """A /sms/json-shaped answer fetched outside Sms.send records nothing."""
    fake.script("POST", PATH, _answer("1"))
    requests.post(f"{fake.url}{PATH}", data={"x": "y"}, timeout=5)
    assert pipe.coded() == []


def test_path_helper_is_unused_outside(tmp_path: Path) -> None:
    """Importing the instrumentation package imports no provider SDK."""
    import subprocess
    import sys

    code = ("import sys, exporter.instrumentation.vonage, exporter.instrumentation.braze, "
            "exporter.instrumentation.azure_communication; "
            "print(sorted(m for m in ('vonage_sms', 'azure.communication.sms', 'braze') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).parents[1], timeout=60).stdout
    assert out.strip() == "[]"


def test_missing_sdk_is_skipped_cleanly(monkeypatch: pytest.MonkeyPatch) -> None:
    """As opentelemetry-instrument loads it (skip_dep_check=True): an SDK outside the tested
    ranges leaves everything unwrapped, and uninstrument() is still safe."""
    from exporter.instrumentation import vonage as module

    monkeypatch.setattr(module, "_DEPENDENCIES", ("vonage-sms >= 99",))
    send, adapter_send = vonage_sms.sms.Sms.send, requests.adapters.HTTPAdapter.send
    VonageInstrumentor().instrument(skip_dep_check=True)
    try:
        assert vonage_sms.sms.Sms.send is send
        assert requests.adapters.HTTPAdapter.send is adapter_send
    finally:
        VonageInstrumentor().uninstrument()
    assert vonage_sms.sms.Sms.send is send
