"""codebook_braze: Braze REST calls with the braze-client SDK (requests) and with httpx (sync and
async), against a fake Braze REST endpoint on 127.0.0.1, with and without the OpenTelemetry
HTTP client instrumentations underneath."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("braze.client")

import httpcore
import httpx
import requests.adapters
from braze.client import BrazeClient
from opentelemetry import trace as trace_api
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.trace import SpanKind, StatusCode

from exporter.instrumentation import braze as braze_module
from exporter.instrumentation.braze import BrazeInstrumentor, parse_hosts
from tests.provider_fakes import (
    Answer,
    FakeProvider,
    Pipeline,
    json_answer,
    provider_attrs,
    results,
)

API_KEY = "braze-secret-api-key-0123"
USER = "user-4711@example.test"
TRACK = "/users/track"
CLIENTS = ["braze-client", "httpx", "httpx-async"]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProvider]:
    server = FakeProvider()
    yield server
    server.close()


@pytest.fixture(params=[False, True], ids=["own-span", "http-span"])
def pipe(request: pytest.FixtureRequest, fake: FakeProvider) -> Iterator[Pipeline]:
    pipe = Pipeline()
    BrazeInstrumentor().instrument(tracer_provider=pipe.provider, hosts=[fake.host])
    if request.param:
        RequestsInstrumentor().instrument(tracer_provider=pipe.provider)
        HTTPXClientInstrumentor().instrument(tracer_provider=pipe.provider)
    pipe.http_span = request.param  # type: ignore[attr-defined]
    yield pipe
    HTTPXClientInstrumentor().uninstrument()
    RequestsInstrumentor().uninstrument()
    BrazeInstrumentor().uninstrument()


def _payload() -> dict[str, Any]:
    return {"attributes": [{"external_id": USER, "email": USER, "first_name": "Ada"}]}


def call(client: str, fake: FakeProvider) -> tuple[Any, ...]:
    """One /users/track call as the application makes it; what the application sees."""
    if client == "braze-client":
        try:
            value = BrazeClient(API_KEY, api_url=fake.url).user_track(**_payload())
        except Exception as exc:
            return "raised", type(exc).__name__, str(exc)
        return "returned", json.dumps(value, sort_keys=True)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    if client == "httpx":
        with httpx.Client() as http:
            r = http.post(f"{fake.url}{TRACK}", json=_payload(), headers=headers)
    else:
        async def post() -> httpx.Response:
            async with httpx.AsyncClient() as http:
                return await http.post(f"{fake.url}{TRACK}", json=_payload(), headers=headers)
        r = asyncio.run(post())
    assert r.elapsed.total_seconds() >= 0  # httpx's own bookkeeping still works
    return r.status_code, r.content, r.headers.get("content-type"), r.is_closed


def _reset() -> str:
    return str(int(time.time()) + 3600)


CASES = [
    # id, answer, span (code, message), event messages, span category (events: EVENT_CATEGORY)
    ("success", json_answer(201, {"message": "success"}), ("201", None), [], "success"),
    ("success-non-fatal-errors",
     json_answer(201, {"message": "success", "errors": [
         {"type": "'external_id' or 'braze_id' or 'user_alias' is required",
          "input_array": "attributes", "index": 0},
         {"type": "'email' is not a valid email", "input_array": "attributes", "index": 1}]}),
     ("201", None), ["'external_id' or 'braze_id' or 'user_alias' is required",
                     "'email' is not a valid email"], "success"),
    ("invalid-campaign", json_answer(400, {"message": "Invalid Campaign ID", "errors": []}),
     ("400", "Invalid Campaign ID"), [], "configuration"),
    ("rate-limited", json_answer(429, {"message": "Rate Limited"},
                                 **{"X-RateLimit-Reset": _reset(), "X-RateLimit-Limit": "250000",
                                    "X-RateLimit-Remaining": "0"}),
     ("429", "Rate Limited"), [], "throttled"),
    ("unauthorized", json_answer(401, {"message": "Invalid API key: ***"}),
     ("401", "Invalid API key: ***"), [], "auth"),
]
# A non-fatal error of an accepted request: that object was not processed (the 2xx rule with
# message "*" of braze_rest.yaml; docs/taxonomy.md §2 #19).
EVENT_CATEGORY = "invalid_request"


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize(("answer", "span_code", "events", "category"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_braze_answers_reach_the_span(pipe: Pipeline, fake: FakeProvider, client: str,
                                      answer: Answer, span_code: tuple[str, str | None],
                                      events: list[str], category: str) -> None:
    """Status -> code, message (not 'success') -> message, errors[] -> one event each."""
    fake.script("POST", TRACK, answer)
    call(client, fake)
    span = pipe.only_coded()
    assert span.kind is SpanKind.CLIENT
    http_span = pipe.http_span  # type: ignore[attr-defined]
    assert span.name == ("POST" if http_span else "braze.rest")
    attrs = provider_attrs(span.attributes)
    assert (attrs["provider.source"], attrs["provider.code"],
            attrs.get("provider.message")) == ("braze.rest", *span_code)
    assert attrs["provider.category"] == category
    assert [e.get("provider.message") for e in results(span)] == events
    assert all(e["provider.code"] == span_code[0] for e in results(span))
    assert [(e["provider.category"], e["provider.owner"], e["provider.match"])
            for e in results(span)] == [(EVENT_CATEGORY, "our_app", "class")] * len(events)
    # The span's answer and each non-fatal error count once (no event repeats the span): the
    # answer under its own category, the errors under theirs.
    assert pipe.count("braze.rest", span_code[0]) == 1.0 + len(events)
    assert pipe.count("braze.rest", span_code[0], category=category) == 1.0
    if events:
        assert pipe.count("braze.rest", span_code[0], category=EVENT_CATEGORY) == len(events)
    # Non-fatal errors leave the accepted request's span status alone (events never set it).
    assert (span.status.status_code is StatusCode.ERROR) == (category != "success")
    flat = repr([dict(s.attributes or {}) for s in pipe.spans()])
    assert API_KEY not in flat and USER not in flat


UNTOUCHED = [
    ("proxy-502-html", (502, {"Content-Type": "text/html"}, b"<html>Bad Gateway</html>")),
    ("200-not-json", (200, {"Content-Type": "application/json"}, b"{truncated")),
    ("200-json-without-message", json_answer(200, {"users": []})),
    ("200-message-not-text", json_answer(200, {"message": {"nested": True}})),
    ("400-text-plain", (400, {"Content-Type": "text/plain"}, b"Bad Request")),
    ("201-errors-not-a-list", json_answer(201, {"message": "success", "errors": "oops"})),
]


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("answer", [c[1] for c in UNTOUCHED], ids=[c[0] for c in UNTOUCHED])
def test_unexpected_answers_pass_through(pipe: Pipeline, fake: FakeProvider, client: str,
                                         answer: Answer) -> None:
    """The application sees what it sees uninstrumented; no Braze code is invented."""
    fake.script("POST", TRACK, answer, answer)
    instrumented = call(client, fake)
    BrazeInstrumentor().uninstrument()
    assert instrumented == call(client, fake)
    codes = [provider_attrs(s.attributes) for s in pipe.coded()]
    if b"errors" in answer[2]:
        assert [(c["provider.code"], c.get("provider.message")) for c in codes] == [("201", None)]
        assert results(pipe.coded()[0]) == []
    else:
        assert codes == []


def test_gzip_answer_is_read_and_replayed(pipe: Pipeline, fake: FakeProvider) -> None:
    """A gzip-encoded answer read ahead on the httpx path reaches the application intact."""
    body = json.dumps({"message": "Rate Limited"}).encode()
    fake.script("POST", TRACK, (429, {"Content-Type": "application/json",
                                      "Content-Encoding": "gzip"}, gzip.compress(body)))
    status, content, _, _ = call("httpx", fake)
    assert (status, content) == (429, body)
    assert provider_attrs(pipe.only_coded().attributes)["provider.message"] == "Rate Limited"


def test_streamed_httpx_response_is_untouched(pipe: Pipeline, fake: FakeProvider) -> None:
    """client.stream(): the body still arrives in pieces the application reads itself."""
    fake.script("POST", TRACK, json_answer(201, {"message": "success"}))
    with httpx.Client() as http, http.stream("POST", f"{fake.url}{TRACK}", json={}) as r:
        assert json.loads(b"".join(r.iter_bytes())) == {"message": "success"}
    assert provider_attrs(pipe.only_coded().attributes)["provider.code"] == "201"


def test_connection_refused(pipe: Pipeline) -> None:
    """No answer: the SDK's error, no code; a started span carries error.type."""
    dead = FakeProvider()
    dead.close()
    BrazeInstrumentor().uninstrument()
    BrazeInstrumentor().instrument(tracer_provider=pipe.provider, hosts=[dead.host])
    with pytest.raises(httpx.ConnectError):
        httpx.post(f"{dead.url}{TRACK}", json={})
    assert pipe.coded() == []
    if not pipe.http_span:  # type: ignore[attr-defined]
        (span,) = pipe.spans()
        assert (span.attributes or {})["error.type"] == "ConnectError"


def test_sdk_raising_before_sending(pipe: Pipeline, fake: FakeProvider) -> None:
    """braze-client refuses an empty user_track before any request: same error, nothing else."""
    before = len(fake.received)
    with pytest.raises(ValueError):
        BrazeClient(API_KEY, api_url=fake.url).user_track()
    assert len(fake.received) == before and pipe.spans() == []


def test_other_hosts_are_not_claimed(fake: FakeProvider) -> None:
    """Without the fake in the host list, its answers are not Braze's."""
    pipe = Pipeline()
    BrazeInstrumentor().instrument(tracer_provider=pipe.provider)
    try:
        fake.script("POST", TRACK, json_answer(429, {"message": "Rate Limited"}))
        httpx.post(f"{fake.url}{TRACK}", json={})
        assert pipe.spans() == []
    finally:
        BrazeInstrumentor().uninstrument()


def test_hosts_from_the_environment(fake: FakeProvider, monkeypatch: pytest.MonkeyPatch) -> None:
    """CODEBOOK_BRAZE_HOSTS adds hosts as instrument(hosts=...) does."""
    monkeypatch.setenv("CODEBOOK_BRAZE_HOSTS", f" example.invalid , {fake.host}")
    pipe = Pipeline()
    BrazeInstrumentor().instrument(tracer_provider=pipe.provider)
    try:
        fake.script("POST", TRACK, json_answer(400, {"message": "No Recipients"}))
        requests.post(f"{fake.url}{TRACK}", json={}, timeout=5)
        attrs = provider_attrs(pipe.only_coded().attributes)
        assert (attrs["provider.code"], attrs["provider.category"]) == ("400", "invalid_request")
    finally:
        BrazeInstrumentor().uninstrument()


HOSTS = [
    ("rest.iad-01.braze.com", None, True),
    ("rest.fra-02.braze.eu", 443, True),
    ("REST.IAD-05.BRAZE.COM".lower(), None, True),
    ("rest.braze.com", None, False),
    ("rest.iad-01.braze.com.evil.test", None, False),
    ("sdk.iad-01.braze.com", None, False),
    ("configured.example.test", 8443, True),
    ("pinned.example.test", 9000, True),
    ("pinned.example.test", 9001, False),
]


@pytest.mark.parametrize(("host", "port", "claimed"), HOSTS,
                         ids=[f"{h}:{p}" for h, p, _ in HOSTS])
def test_host_matching(host: str, port: int | None, claimed: bool) -> None:
    """Braze REST hosts by pattern, plus configured hosts (bare, or pinned to a port; given as
    a comma-separated string here)."""
    pipe = Pipeline()
    BrazeInstrumentor().instrument(tracer_provider=pipe.provider,
                                   hosts="configured.example.test, pinned.example.test:9000")
    try:
        matcher = BrazeInstrumentor()._matcher
        assert (matcher(host, port, TRACK) is not None) is claimed
    finally:
        BrazeInstrumentor().uninstrument()


def test_parse_hosts() -> None:
    """Bare names, host:port and bracketed IPv6 literals."""
    assert parse_hosts(["a.test", "b.test:8080", "[::1]:9000", "", " C.TEST "]) == (
        frozenset({"a.test", "c.test"}), frozenset({("b.test", 8080), ("::1", 9000)}))


def test_uninstrument_restores_http_libraries(fake: FakeProvider) -> None:
    """Twice instrumented is once; uninstrument() restores requests and httpcore exactly."""
    originals = (requests.adapters.HTTPAdapter.send, httpcore.ConnectionPool.handle_request,
                 httpcore.AsyncConnectionPool.handle_async_request)
    pipe = Pipeline()
    BrazeInstrumentor().instrument(tracer_provider=pipe.provider, hosts=[fake.host])
    BrazeInstrumentor().instrument(tracer_provider=pipe.provider, hosts=[fake.host])
    assert requests.adapters.HTTPAdapter.send.__wrapped__ is originals[0]
    fake.script("POST", TRACK, json_answer(201, {"message": "success"}),
                json_answer(201, {"message": "success"}))
    call("httpx", fake)
    assert len(pipe.coded()) == 1
    BrazeInstrumentor().uninstrument()
    assert (requests.adapters.HTTPAdapter.send, httpcore.ConnectionPool.handle_request,
            httpcore.AsyncConnectionPool.handle_async_request) == originals
    call("httpx", fake)
    assert len(pipe.spans()) == 1


def test_extract_table() -> None:
    """The body rules, directly."""
    ex = braze_module.extract
    assert ex(201, {"message": "queued"}) is not None
    assert ex(201, {"message": "queued"}).span.message == "queued"  # type: ignore[union-attr]
    assert ex(500, {"message": "Internal Server Error"}).span.ok is False  # type: ignore[union-attr]
    assert ex(201, {"message": "success", "errors": ["plain text error"]}).events[0].message == (  # type: ignore[union-attr]
        "plain text error")
    assert ex(201, ["message"]) is None and ex(201, None) is None
    assert ex(201, {"message": "   "}) is None


class _BrokenTracer(trace_api.NoOpTracer):
    def start_span(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("tracer is broken")


class _BrokenProvider(trace_api.NoOpTracerProvider):
    def get_tracer(self, *args: Any, **kwargs: Any) -> Any:
        return _BrokenTracer()


@pytest.mark.parametrize("client", CLIENTS)
def test_a_broken_tracer_never_breaks_the_call(fake: FakeProvider, client: str,
                                               caplog: pytest.LogCaptureFixture) -> None:
    """The instrumentation's own failure is logged, and the call returns as it would."""
    BrazeInstrumentor().instrument(tracer_provider=_BrokenProvider(), hosts=[fake.host])
    try:
        fake.script("POST", TRACK, json_answer(201, {"message": "success"}))
        instrumented = call(client, fake)
    finally:
        BrazeInstrumentor().uninstrument()
    fake.script("POST", TRACK, json_answer(201, {"message": "success"}))
    assert instrumented == call(client, fake)
