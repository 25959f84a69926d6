"""codebook_azure_communication: the real ACS SDKs (sync and .aio) against fakes on 127.0.0.1.

azure-core tracing off here (the instrumentor's own CLIENT span); with it on, the SDK's own
operation span carries the code: see tests/test_instrumentation_e2e.py, which runs under a
real ``opentelemetry-instrument`` with ``AZURE_TRACING_ENABLED`` (azure-core tracing reads the
global tracer provider, which these in-process tests leave alone).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("azure.communication.sms")
pytest.importorskip("azure.communication.callautomation")
pytest.importorskip("azure.communication.chat")

import azure.core.pipeline
from azure.communication.callautomation import (
    CallAutomationClient,
    PhoneNumberIdentifier,
)
from azure.communication.callautomation.aio import (
    CallAutomationClient as AsyncCallAutomationClient,
)
from azure.communication.chat import (
    ChatClient,
    ChatThreadClient,
    CommunicationTokenCredential,
)
from azure.communication.sms import SmsClient
from azure.communication.sms.aio import SmsClient as AsyncSmsClient
from azure.core.credentials import AzureKeyCredential
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.trace import SpanKind, StatusCode

from exporter.instrumentation.azure_communication import (
    AzureCommunicationInstrumentor,
)
from tests.pki import Pki, make_pki
from tests.provider_fakes import (
    Answer,
    FakeProvider,
    Pipeline,
    json_answer,
    provider_attrs,
    results,
)

KEY = base64.b64encode(b"k" * 32).decode()
FROM, TO1, TO2 = "+15550100000", "+15550100001", "+15550100002"
TEXT = "your code is 991234"
CALLBACK = "https://callbacks.example.test/acs"
THREAD = "19_a1b2c3d4_thread_v2"


def _token() -> str:
    def part(doc: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none'})}.{part({'exp': int(time.time()) + 3600})}.c2ln"


def _recipient(to: str, status: int) -> dict[str, Any]:
    if status == 202:
        return {"to": to, "messageId": "Outgoing_20260101_abc", "httpStatusCode": 202,
                "successful": True}
    return {"to": to, "httpStatusCode": status, "successful": False,
            "errorMessage": "Invalid To phone number format."}


def sms_answer(*statuses: int) -> Answer:
    tos = [TO1, TO2, "+15550100003"]
    return json_answer(202, {"value": [_recipient(tos[i], s) for i, s in enumerate(statuses)]})


def acs_error(status: int, code: str) -> Answer:
    return json_answer(status, {"error": {"code": code, "message": f"{TO1} refused"}})


CONNECTION = {"callConnectionId": "401f3500-62cd-46ad-8c46-0f2a4e2c8d6e",
              "callConnectionState": "connecting", "callbackUri": CALLBACK,
              "targets": [{"kind": "phoneNumber", "rawId": f"4:{TO1}",
                           "phoneNumber": {"value": TO1}}]}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), "acs")


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProvider]:
    server = FakeProvider()
    yield server
    server.close()


@pytest.fixture(scope="module")
def tls(pki: Pki) -> Iterator[FakeProvider]:
    server = FakeProvider(pki)
    yield server
    server.close()


@pytest.fixture(params=[False, True], ids=["own-span", "requests-span"])
def pipe(request: pytest.FixtureRequest) -> Iterator[Pipeline]:
    """Instrumented, with or without opentelemetry-instrumentation-requests underneath."""
    pipe = Pipeline()
    AzureCommunicationInstrumentor().instrument(tracer_provider=pipe.provider)
    if request.param:
        RequestsInstrumentor().instrument(tracer_provider=pipe.provider)
    pipe.http_span = request.param  # type: ignore[attr-defined]
    yield pipe
    RequestsInstrumentor().uninstrument()
    AzureCommunicationInstrumentor().uninstrument()


def _name(pipe: Pipeline, own: str) -> str:
    """The coded span's name: the requests span's, else the instrumentor's own."""
    return "POST" if pipe.http_span else own  # type: ignore[attr-defined]


def _outcome(call: Callable[[], Any]) -> tuple[str, str, str]:
    try:
        value = call()
    except Exception as exc:
        return "raised", type(exc).__name__, str(exc)
    return "returned", type(value).__name__, repr(value)


def _sms(fake: FakeProvider, to: list[str]) -> Any:
    return SmsClient(fake.url, AzureKeyCredential(KEY), retry_total=0).send(
        from_=FROM, to=to, message=TEXT, enable_delivery_report=True, tag="t")


def _create_call(fake: FakeProvider) -> Any:
    return CallAutomationClient(fake.url, AzureKeyCredential(KEY), retry_total=0).create_call(
        PhoneNumberIdentifier(TO1), CALLBACK, source_caller_id_number=PhoneNumberIdentifier(FROM))


def _hang_up(fake: FakeProvider) -> Any:
    client = CallAutomationClient(fake.url, AzureKeyCredential(KEY), retry_total=0)
    return client.get_call_connection(CONNECTION["callConnectionId"]).hang_up(is_for_everyone=True)


def _send_chat(tls: FakeProvider, pki: Pki) -> Any:
    # get_chat_thread_client() does not pass connection_verify on: build the thread client.
    thread = ChatThreadClient(tls.url, CommunicationTokenCredential(_token()), THREAD,
                              connection_verify=str(pki.ca), retry_total=0)
    return thread.send_message(TEXT)


def _check_privacy(pipe: Pipeline) -> None:
    flat = repr([dict(s.attributes or {}) for s in pipe.spans()]) + repr(
        [dict(e.attributes or {}) for s in pipe.spans() for e in s.events])
    for secret in (FROM, TO1, TO2, TEXT, KEY, "Invalid To phone", "refused"):
        assert secret not in flat


SMS_CASES = [
    # id, recipients, answer, SDK outcome, span (code, subcode), event codes
    ("one-accepted", [TO1], sms_answer(202), ("returned", "list"), ("202", None), []),
    ("several-one-failed", [TO1, TO2], sms_answer(202, 400), ("returned", "list"),
     ("400", None), ["202", "400"]),
    ("several-all-accepted", [TO1, TO2], sms_answer(202, 202), ("returned", "list"),
     ("202", None), ["202", "202"]),
    ("refused-401", [TO1], acs_error(401, "Unauthorized"),
     ("raised", "ClientAuthenticationError"), ("401", "Unauthorized"), []),
    ("refused-429", [TO1], acs_error(429, "TooManyRequests"), ("raised", "HttpResponseError"),
     ("429", "TooManyRequests"), []),
]


@pytest.mark.parametrize(("to", "answer", "sdk", "span_code", "events"),
                         [c[1:] for c in SMS_CASES], ids=[c[0] for c in SMS_CASES])
def test_sms_send_per_recipient(pipe: Pipeline, fake: FakeProvider, to: list[str],
                                answer: Answer, sdk: tuple[str, str],
                                span_code: tuple[str, str | None], events: list[str]) -> None:
    """azure.acs.sms_send: each recipient's status; refused requests by status + error.code."""
    fake.script("POST", "/sms", answer)
    assert _outcome(lambda: _sms(fake, to))[:2] == sdk
    span = pipe.only_coded()
    assert (span.name, span.kind) == (_name(pipe, "acs.sms.send"), SpanKind.CLIENT)
    attrs = provider_attrs(span.attributes)
    assert attrs["provider.source"] == "azure.acs.sms_send"
    assert (attrs["provider.code"], attrs.get("provider.subcode")) == span_code
    assert attrs["provider.match"] == "exact"
    assert [e["provider.code"] for e in results(span)] == events
    # Each result counts once: the span summarises one of its events when it has some.
    assert pipe.count("azure.acs.sms_send", span_code[0], span_code[1] or "") == (
        events.count(span_code[0]) or 1.0)
    if span_code[0] != "202":
        assert span.status.status_code is StatusCode.ERROR
    _check_privacy(pipe)


CALL_CASES = [
    ("create-call-201", _create_call, json_answer(201, CONNECTION), "POST",
     "/calling/callConnections", ("returned", "CallConnectionProperties"), ("201", None),
     "success"),
    ("create-call-400-8523", _create_call, acs_error(400, "8523"), "POST",
     "/calling/callConnections", ("raised", "HttpResponseError"), ("400", "8523"), None),
    ("hang-up-404-8522", _hang_up, acs_error(404, "8522"), "POST",
     f"/calling/callConnections/{CONNECTION['callConnectionId']}:terminate",
     ("raised", "ResourceNotFoundError"), ("404", "8522"), None),
    ("hang-up-400-8501", _hang_up, acs_error(400, "8501"), "POST",
     f"/calling/callConnections/{CONNECTION['callConnectionId']}:terminate",
     ("raised", "HttpResponseError"), ("400", "8501"), "invalid_state"),
]


@pytest.mark.parametrize(("call", "answer", "method", "path", "sdk", "span_code", "category"),
                         [c[1:] for c in CALL_CASES], ids=[c[0] for c in CALL_CASES])
def test_call_automation(pipe: Pipeline, fake: FakeProvider, call: Callable[[FakeProvider], Any],
                         answer: Answer, method: str, path: str, sdk: tuple[str, str],
                         span_code: tuple[str, str | None], category: str | None) -> None:
    """azure.acs.call_automation: HTTP status -> code, error.code -> subcode."""
    fake.script(method, path, answer)
    assert _outcome(lambda: call(fake))[:2] == sdk
    span = pipe.only_coded()
    attrs = provider_attrs(span.attributes)
    assert (span.name, attrs["provider.source"]) == (_name(pipe, "acs.call_automation"),
                                                      "azure.acs.call_automation")
    assert (attrs["provider.code"], attrs.get("provider.subcode")) == span_code
    assert attrs["provider.match"] in ("exact", "class")
    if category is not None:
        assert attrs["provider.category"] == category
    assert pipe.count("azure.acs.call_automation", *[c for c in span_code if c]) == 1.0
    _check_privacy(pipe)


def test_chat_error_and_success(pipe: Pipeline, tls: FakeProvider, pki: Pki) -> None:
    """azure.acs.chat: 429 TooManyRequests raised, then a sent message (201) counted."""
    path = f"/chat/threads/{THREAD}/messages"
    tls.script("POST", path, acs_error(429, "TooManyRequests"),
               json_answer(201, {"id": "1727000000000"}))
    assert _outcome(lambda: _send_chat(tls, pki))[:2] == ("raised", "HttpResponseError")
    assert _outcome(lambda: _send_chat(tls, pki))[0] == "returned"
    codes = [(provider_attrs(s.attributes)["provider.code"],
              provider_attrs(s.attributes).get("provider.subcode"),
              provider_attrs(s.attributes)["provider.category"]) for s in pipe.coded()]
    assert codes == [("429", "TooManyRequests", "throttled"), ("201", None, "success")]
    assert all(s.name == _name(pipe, "acs.chat") for s in pipe.coded())
    assert pipe.count("azure.acs.chat", "429", "TooManyRequests") == 1.0
    _check_privacy(pipe)


def test_async_clients(pipe: Pipeline, fake: FakeProvider) -> None:
    """The .aio clients are covered by the same hook (AsyncPipeline.run)."""
    fake.script("POST", "/sms", sms_answer(400, 202))
    fake.script("POST", "/calling/callConnections", acs_error(400, "8523"))

    async def run() -> list[tuple[str, str, str]]:
        seen = []
        async with AsyncSmsClient(fake.url, AzureKeyCredential(KEY), retry_total=0) as sms:
            seen.append(await _aoutcome(lambda: sms.send(from_=FROM, to=[TO1, TO2],
                                                         message=TEXT)))
        async with AsyncCallAutomationClient(fake.url, AzureKeyCredential(KEY),
                                             retry_total=0) as calls:
            seen.append(await _aoutcome(lambda: calls.create_call(
                PhoneNumberIdentifier(TO1), CALLBACK,
                source_caller_id_number=PhoneNumberIdentifier(FROM))))
        return seen

    seen = asyncio.run(run())
    assert [s[:2] for s in seen] == [("returned", "list"), ("raised", "HttpResponseError")]
    sms_span, call_span = pipe.coded()
    assert provider_attrs(sms_span.attributes)["provider.code"] == "400"
    assert [e["provider.code"] for e in results(sms_span)] == ["400", "202"]
    assert provider_attrs(call_span.attributes)["provider.subcode"] == "8523"
    _check_privacy(pipe)


async def _aoutcome(call: Callable[[], Awaitable[Any]]) -> tuple[str, str, str]:
    try:
        value = await call()
    except Exception as exc:
        return "raised", type(exc).__name__, str(exc)
    return "returned", type(value).__name__, repr(value)


UNTOUCHED = [
    ("sms-202-malformed-json", "/sms", _sms,
     (202, {"Content-Type": "application/json"}, b"{oops")),
    ("sms-202-value-not-a-list", "/sms", _sms, json_answer(202, {"value": {"to": TO1}})),
    ("sms-502-proxy-html", "/sms", _sms, (502, {"Content-Type": "text/html"}, b"<h1>502</h1>")),
    ("sms-400-no-error-object", "/sms", _sms, json_answer(400, {"message": "nope"})),
    ("call-400-error-code-not-a-code", "/calling/callConnections", _create_call,
     json_answer(400, {"error": {"code": ["8523"], "message": "?"}})),
    ("call-503-empty", "/calling/callConnections", _create_call, (503, {}, b"")),
]


@pytest.mark.parametrize(("path", "call", "answer"), [c[1:] for c in UNTOUCHED],
                         ids=[c[0] for c in UNTOUCHED])
def test_unexpected_answers_pass_through(pipe: Pipeline, fake: FakeProvider, path: str,
                                         call: Callable[[FakeProvider, list[str]], Any] | Any,
                                         answer: Answer) -> None:
    """Malformed or code-less answers: same SDK outcome as uninstrumented, no code invented."""
    def run() -> Any:
        return call(fake, [TO1]) if call is _sms else call(fake)

    fake.script("POST", path, answer, answer)
    instrumented = _outcome(run)
    (span,) = pipe.spans()  # one span for the call: the requests span, else the own one
    AzureCommunicationInstrumentor().uninstrument()
    assert instrumented == _outcome(run)
    assert pipe.coded() == []
    assert span.name == _name(pipe, "acs.sms.send" if path == "/sms" else "acs.call_automation")
    if answer[0] >= 400 and not pipe.http_span:  # type: ignore[attr-defined]
        assert (span.attributes or {})["error.type"] == str(answer[0])


def test_raising_before_sending(pipe: Pipeline, fake: FakeProvider) -> None:
    """Chat over plain http is refused by azure-core before sending: same error, no code."""
    def run() -> Any:
        return ChatClient(fake.url, CommunicationTokenCredential(_token()),
                          retry_total=0).create_chat_thread("a topic")

    before = len(fake.received)
    instrumented = _outcome(run)
    AzureCommunicationInstrumentor().uninstrument()
    assert instrumented == _outcome(run) and instrumented[:2] == ("raised", "ServiceRequestError")
    assert len(fake.received) == before
    assert pipe.coded() == []
    (span,) = pipe.spans()
    assert (span.attributes or {})["error.type"] == "ServiceRequestError"


def test_other_azure_requests_are_not_claimed(pipe: Pipeline, fake: FakeProvider) -> None:
    """A pipeline run to a non-ACS path creates no span and records nothing."""
    from azure.core import PipelineClient
    from azure.core.rest import HttpRequest

    fake.script("GET", "/blobs/x", json_answer(404, {"error": {"code": "BlobNotFound"}}))
    with PipelineClient(fake.url) as client:
        assert client.send_request(HttpRequest("GET", f"{fake.url}/blobs/x")).status_code == 404
    assert pipe.coded() == []
    assert [s.name for s in pipe.spans()] == (["GET"] if pipe.http_span else [])  # type: ignore[attr-defined]


def test_uninstrument_restores_azure_core(fake: FakeProvider) -> None:
    """Twice instrumented is once; uninstrument() restores Pipeline.run and AsyncPipeline.run."""
    run, arun = azure.core.pipeline.Pipeline.run, azure.core.pipeline.AsyncPipeline.run
    pipe = Pipeline()
    AzureCommunicationInstrumentor().instrument(tracer_provider=pipe.provider)
    AzureCommunicationInstrumentor().instrument(tracer_provider=pipe.provider)
    assert azure.core.pipeline.Pipeline.run.__wrapped__ is run
    fake.script("POST", "/sms", sms_answer(202), sms_answer(202))
    _sms(fake, [TO1])
    assert len(pipe.coded()) == 1
    AzureCommunicationInstrumentor().uninstrument()
    assert azure.core.pipeline.Pipeline.run is run
    assert azure.core.pipeline.AsyncPipeline.run is arun
    _sms(fake, [TO1])
    assert len(pipe.spans()) == 1


def test_mapping_file_validates(tmp_path: Path) -> None:
    """azure.acs.sms_send ships with the built-ins and classifies by TAXONOMY."""
    from exporter import load_codebook

    book = load_codebook()
    assert "azure.acs.sms_send" in book.sources
    expected = {"202": "success", "400": "invalid_request", "401": "auth", "429": "throttled",
                "418": "invalid_request", "500": "provider_internal", "504": "provider_internal"}
    for code, category in expected.items():
        assert book.resolve("azure.acs.sms_send", code).category.value == category, code
