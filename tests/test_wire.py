"""The C wire path for OTLP trace and logs requests gives exactly what the message path gives."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    InstrumentationScope,
    KeyValue,
)
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from exporter import CodebookMetrics, Enricher, load_codebook
from exporter.sidecar import otlp as otlp_module
from exporter.sidecar.otlp import MalformedRequest, OtlpIntake

BOOK = load_codebook()
GOOD_TID = bytes(range(1, 17))
GOOD_SID = bytes(range(1, 9))

pytestmark = pytest.mark.skipif(
    otlp_module._wire is None and os.environ.get("CI") != "true",
    reason="exporter._wire is not built (pip install . builds it)",
)


def test_extension_is_built() -> None:
    """CI installs with a compiler, so the wire path must be there (not silently absent)."""
    assert otlp_module._wire is not None
    assert OtlpIntake(Enricher(BOOK, CodebookMetrics())).wire


class Capture:
    """A forwarder stand-in that keeps what would be sent upstream."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def submit(self, signal: str, request: Any, items: int) -> bool:
        self.sent.append(request if isinstance(request, bytes) else request.SerializeToString())
        return True


def both(
    body: bytes, signal: str = "traces", count_enriched: bool = True
) -> Iterator[tuple[str, Any, Capture, Enricher]]:
    """Run ``body`` through the wire path and the message path; yield each outcome."""
    for wire in (True, False):
        enricher = Enricher(BOOK, CodebookMetrics())
        capture = Capture()
        intake = OtlpIntake(
            enricher, capture, wire=wire, count_enriched=count_enriched  # type: ignore[arg-type]
        )
        try:
            result: Any = intake.export_protobuf(signal, body, "http")
        except MalformedRequest as exc:
            result = exc
        yield ("wire" if wire else "message"), result, capture, enricher


PARSE = {"traces": ExportTraceServiceRequest.FromString,
         "logs": ExportLogsServiceRequest.FromString}


def assert_same(
    body: bytes, signal: str = "traces", count_enriched: bool = True
) -> tuple[Any, Capture]:
    """The wire and message paths agree on reply, forwarded items and every metric."""
    (_, wr, wc, we), (_, mr, mc, me) = both(body, signal, count_enriched)
    if isinstance(mr, MalformedRequest):
        assert isinstance(wr, MalformedRequest)
        return wr, wc
    assert not isinstance(wr, MalformedRequest)
    assert (wr.accepted, wr.rejected) == (mr.accepted, mr.rejected)
    assert wr.response == mr.response
    parse = PARSE[signal]
    assert [parse(b) for b in wc.sent] == [parse(b) for b in mc.sent]
    assert we.metrics.render() == me.metrics.render()
    return wr, wc


def value(v: object) -> AnyValue:
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    if isinstance(v, float):
        return AnyValue(double_value=v)
    if isinstance(v, bytes):
        return AnyValue(bytes_value=v)
    if isinstance(v, list):
        return AnyValue(array_value=ArrayValue(values=[value(x) for x in v]))
    if v is None:
        return AnyValue()
    return AnyValue(string_value=str(v))


def kvs(attrs: list[tuple[str, object]]) -> list[KeyValue]:
    return [KeyValue(key=k, value=value(v)) for k, v in attrs]


def span(attrs: list[tuple[str, object]], *, tid: bytes = GOOD_TID, sid: bytes = GOOD_SID,
         status: int | None = None, name: str = "send",
         events: list[tuple[str, list[tuple[str, object]]]] = ()) -> Span:  # type: ignore[assignment]
    s = Span(trace_id=tid, span_id=sid, name=name, attributes=kvs(attrs),
             events=[Span.Event(name=n, time_unix_nano=1, attributes=kvs(a)) for n, a in events])
    if status is not None:
        s.status.CopyFrom(Status(code=status, message="app said so" if status else ""))  # type: ignore[arg-type]
    return s


def request(*spans: Span) -> bytes:
    rs = ResourceSpans(
        resource=Resource(attributes=[KeyValue(key="service.name", value=value("svc"))]),
        scope_spans=[ScopeSpans(scope=InstrumentationScope(name="s"), spans=list(spans))],
    )
    return ExportTraceServiceRequest(resource_spans=[rs]).SerializeToString()


def wired(body: bytes) -> tuple[bytes, int, int] | None:
    return OtlpIntake(Enricher(BOOK, CodebookMetrics()))._traces_wire(body)


SRC, CODE, SUB, MSG = "provider.source", "provider.code", "provider.subcode", "provider.message"
MATCH = "provider.match"

CASES = [
    ("mapped error code", [span([(SRC, "vonage.sms"), (CODE, "1")])]),
    ("integer code", [span([(SRC, "vonage.sms"), (CODE, 6)])]),
    ("success code", [span([(SRC, "vonage.sms"), (CODE, "0")])]),
    ("unmapped code", [span([(SRC, "vonage.sms"), (CODE, "4242")])]),
    ("unknown source", [span([(SRC, "nope"), (CODE, "1")])]),
    ("code without source", [span([(CODE, "1")])]),
    ("array code", [span([(SRC, "vonage.sms"), (CODE, ["1"])])]),
    ("empty value code", [span([(SRC, "vonage.sms"), (CODE, None)])]),
    ("acs subcode decides", [span([(SRC, "azure.acs.calling"), (CODE, 487), (SUB, 0)])]),
    ("braze message decides",
     [span([(SRC, "braze.rest"), (CODE, 400), (MSG, "No Recipients")])]),
    ("status OK kept", [span([(SRC, "vonage.sms"), (CODE, "1")], status=1)]),
    ("status ERROR kept", [span([(SRC, "vonage.sms"), (CODE, "1")], status=2)]),
    ("status UNSET set to ERROR", [span([(SRC, "vonage.sms"), (CODE, "1")], status=0)]),
    ("stale output attributes replaced",
     [span([("provider.category", "success"), (SRC, "vonage.sms"), ("error.type", "x"),
            (CODE, "1"), ("provider.match", "exact")])]),
    ("stale attributes kept when not enriched",
     [span([("provider.category", "x"), (CODE, ["1"])])]),
    ("last duplicate key wins", [span([(SRC, "vonage.sms"), (CODE, "1"), (CODE, "0")])]),
    ("bad trace id removed", [span([(SRC, "vonage.sms"), (CODE, "1")], tid=bytes(16)),
                              span([(SRC, "vonage.sms"), (CODE, "1")])]),
    ("short span id removed", [span([], sid=b"\x01")]),
    ("no code at all", [span([("http.method", "POST")])]),
    ("unicode everywhere",
     [span([(SRC, "vonage.sms"), (CODE, "\u0661"), ("ключ", "値")], name="送信")]),
]


@pytest.mark.parametrize("spans", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_named_cases_agree(spans: list[Span]) -> None:
    """Each named request: the wire path handles it and matches the message path."""
    body = request(*spans)
    assert wired(body) is not None
    assert_same(body)


UPSTREAM = [("provider.category", "success"), (SRC, "vonage.sms"), (CODE, "1"),
            (MATCH, "exact")]  # what a Codebook upstream left on the span (even if stale)


@pytest.mark.parametrize("count_enriched", [True, False], ids=["count", "skip"])
@pytest.mark.parametrize("spans", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_named_cases_agree_either_way(spans: list[Span], count_enriched: bool) -> None:
    """Each named request, plus a span enriched upstream: both paths agree, counting the
    enriched span or not."""
    assert_same(request(*spans, span(UPSTREAM, status=0)), count_enriched=count_enriched)


def test_skip_enriched_forwards_them_untouched_and_uncounted() -> None:
    """With count_enriched=False, an enriched span passes as it came and is not counted; the
    raw span beside it is enriched and counted; so is every span with the default."""
    body = request(span(UPSTREAM, status=0), span([(SRC, "vonage.sms"), (CODE, "1")]))
    for count_enriched, counted in ((True, 2.0), (False, 1.0)):
        for path, result, capture, enricher in both(body, count_enriched=count_enriched):
            assert (result.accepted, result.rejected) == (2, 0), path
            got = enricher.metrics.value(
                "provider_codes_total",
                {"source": "vonage.sms", "code": "1", "subcode": "", "category": "throttled",
                 "severity": "warning", "retryable": "with_backoff", "owner": "our_app"},
            )
            assert got == counted, (path, count_enriched)
            (sent,) = capture.sent
            first, second = ExportTraceServiceRequest.FromString(sent).resource_spans[0] \
                .scope_spans[0].spans
            attrs = {kv.key: kv.value.string_value for kv in first.attributes}
            if count_enriched:
                assert attrs["provider.category"] == "throttled", path  # re-resolved
            else:
                assert first == span(UPSTREAM, status=0), path  # untouched
            assert {kv.key: kv.value.string_value for kv in second.attributes}[
                "provider.category"] == "throttled"


@pytest.mark.parametrize(("count_enriched", "with_match", "wire_calls"), [
    (True, True, 1), (False, False, 1), (False, True, 0),
], ids=["count-takes-wire", "skip-without-match-takes-wire", "skip-with-match-message-path"])
def test_skip_enriched_routes_only_requests_with_the_key(
    monkeypatch: pytest.MonkeyPatch, count_enriched: bool, with_match: bool, wire_calls: int
) -> None:
    """Skipping costs nothing on requests that carry no provider.match: they keep the wire
    path; a request that may carry one takes the message path whole."""
    assert otlp_module._wire is not None
    calls: list[int] = []
    real = otlp_module._wire.enrich_traces

    def spy(*args: Any) -> Any:
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(otlp_module._wire, "enrich_traces", spy)
    attrs = UPSTREAM if with_match else [(SRC, "vonage.sms"), (CODE, "1")]
    intake = OtlpIntake(Enricher(BOOK, CodebookMetrics()), count_enriched=count_enriched)
    intake.export_protobuf("traces", request(span(attrs)), "grpc")
    assert len(calls) == wire_calls


def test_enriched_span_carries_the_labels() -> None:
    """A concrete check of the wire output, independent of the message path."""
    body = request(span([("provider.category", "stale"), (SRC, "vonage.sms"), (CODE, "1")]))
    out = wired(body)
    assert out is not None
    sent = ExportTraceServiceRequest.FromString(out[0]).resource_spans[0].scope_spans[0].spans[0]
    attrs = {kv.key: kv.value.string_value for kv in sent.attributes}
    assert attrs == {
        SRC: "vonage.sms", CODE: "1", "provider.category": "throttled",
        "provider.severity": "warning", "provider.retryable": "with_backoff",
        "provider.owner": "our_app", "provider.match": "exact", "error.type": "throttled",
    }
    assert (sent.status.code, sent.status.message) == (2, "provider code: throttled")


def test_unchanged_request_is_forwarded_as_is() -> None:
    """Nothing to enrich and nothing invalid: the original bytes go upstream."""
    body = request(span([("http.method", "POST")]))
    out = wired(body)
    assert out is not None and out[0] is body


def padded_len(n: int) -> bytes:
    """A non-canonical (padded) varint: legal protobuf the walker must accept."""
    return bytes([(n & 0x7F) | 0x80, (n >> 7) | 0x80, 0x00])


def ld(tag: int, payload: bytes) -> bytes:
    """One length-delimited field (lengths here stay below 128)."""
    assert len(payload) < 128
    return bytes([tag, len(payload)]) + payload


def _span_bytes(extra: bytes) -> bytes:
    """A request of one enrichable span with ``extra`` raw bytes appended to the span."""
    sp = span([(SRC, "vonage.sms"), (CODE, "1")]).SerializeToString() + extra
    return ld(0x0A, ld(0x12, ld(0x12, sp)))


RAW_FORMS = [
    # (name, body, the wire path takes it)
    ("padded lengths", b"\x0a" + padded_len(len(inner := request(
        span([(SRC, "vonage.sms"), (CODE, "1")]))[2:])) + inner, True),
    ("unknown fields kept", request(span([(SRC, "vonage.sms"), (CODE, "1")]))
     + b"\xf8\x07\x05", True),
    ("status twice", _span_bytes(b"\x7a\x02\x18\x01\x7a\x02\x18\x00"), False),
    ("known field with another wire type", _span_bytes(b"\x28\x05"), False),
    ("group in a span", _span_bytes(b"\xa3\x01\xa4\x01"), False),
    # Status.code 2**32: an enum is an int32, so the runtime reads UNSET (upper bits dropped).
    ("status code past 32 bits", _span_bytes(b"\x7a\x06\x18\x80\x80\x80\x80\x10"), True),
    # The longest forms upb takes: a 5-byte (padded) length, a 10-byte varint whose last
    # byte carries bits past 63 (dropped), in an unknown span field.
    ("length of 5 bytes", _span_bytes(bytes.fromhex("a2068180808000") + b"x"), True),
    ("value varint of 10 bytes", _span_bytes(b"\xa8\x06" + b"\xff" * 9 + b"\x7f"), True),
]


@pytest.mark.parametrize("body,takes", [(b, t) for _, b, t in RAW_FORMS],
                         ids=[n for n, _, _ in RAW_FORMS])
def test_rare_wire_forms(body: bytes, takes: bool) -> None:
    """Legal but unusual encodings: taken or declined as expected, same result either way."""
    ExportTraceServiceRequest.FromString(body)  # all of them are valid protobuf
    assert (wired(body) is not None) is takes
    assert_same(body)


INVALID = [
    ("truncated", request(span([(SRC, "vonage.sms"), (CODE, "1")]))[:-3]),
    ("bad utf-8 in a span name", _span_bytes(b"\x2a\x02\xff\xfe")),
    ("bad utf-8 in a resource attribute",
     ld(0x0A, ld(0x0A, ld(0x0A, ld(0x0A, b"k") + ld(0x12, ld(0x0A, b"\xc3\x28")))))),
    ("end group alone", _span_bytes(b"\xa4\x01")),
    ("wire type 7", _span_bytes(b"\x0f")),
    ("overlong tag", _span_bytes(b"\xa8\x81\x80\x80\x80\x00\x01")),
    ("random bytes", bytes(range(256)) * 4),
    # upb reads a length as at most 5 bytes (issue 15: the walker read up to 10 and took it).
    ("length of 6 bytes", bytes.fromhex("0a808080808000")),
    ("unknown span field with a 6-byte length",
     _span_bytes(bytes.fromhex("a206808080808000"))),
    ("length past 2**31-1", _span_bytes(bytes.fromhex("a20680808080 08".replace(" ", "")))),
    ("value varint of 11 bytes", _span_bytes(b"\xa8\x06" + b"\x80" * 10 + b"\x00")),
]


@pytest.mark.parametrize("body", [b for _, b in INVALID], ids=[n for n, _ in INVALID])
def test_invalid_requests_are_malformed(body: bytes) -> None:
    """What the protobuf runtime rejects, the wire path never accepts."""
    with pytest.raises(Exception):  # noqa: B017 - any parse error
        ExportTraceServiceRequest.FromString(body)
    assert wired(body) is None
    with pytest.raises(MalformedRequest):
        OtlpIntake(Enricher(BOOK, CodebookMetrics())).export_protobuf("traces", body, "grpc")


def test_deep_nesting_is_left_to_the_runtime() -> None:
    """Nesting past the walker's depth goes to the protobuf runtime, which decides."""
    v = value("x")
    for _ in range(40):
        v = AnyValue(array_value=ArrayValue(values=[v]))
    body = request(Span(trace_id=GOOD_TID, span_id=GOOD_SID,
                        attributes=[KeyValue(key="deep", value=v)]))
    assert wired(body) is None
    assert_same(body)


# -- property tests ------------------------------------------------------------------------

SOURCES = st.sampled_from(["vonage.sms", "azure.acs.calling", "braze.rest", "alibaba.mobile_push",
                           "azure.acs.pstn", "nope", " vonage.sms "])
CODES = st.one_of(
    st.sampled_from(["0", "1", "2", "4242", "5,317", " 7 ", "487", "503", "", "NoBindInfo"]),
    st.integers(-(2**63), 2**63 - 1), st.integers(-5, 600), st.booleans(),
    st.floats(allow_nan=False, width=64), st.binary(max_size=6), st.text(max_size=8),
    st.just(["1"]), st.none(),
)
KEYS = st.sampled_from([SRC, CODE, SUB, MSG, "provider.category", "provider.owner",
                        "error.type", "http.method", "", "provider.code ", MATCH])
ATTR = st.one_of(
    st.tuples(st.just(SRC), SOURCES), st.tuples(st.just(CODE), CODES),
    st.tuples(st.just(SUB), CODES), st.tuples(st.just(MSG), st.sampled_from(
        ["No Recipients", "no  recipients", "x" * 300, ""])),
    st.tuples(KEYS, st.one_of(CODES, st.text(max_size=4))),
)
IDS = st.sampled_from([GOOD_TID, bytes(16), b"\x01" * 15, b""])
SIDS = st.sampled_from([GOOD_SID, bytes(8), b"\x01" * 9, b""])
SPANS = st.builds(
    lambda attrs, tid, sid, status: span(attrs, tid=tid, sid=sid, status=status),
    st.lists(ATTR, max_size=7), IDS, SIDS, st.sampled_from([None, 0, 1, 2, 5]),
)
REQUESTS = st.lists(st.lists(st.lists(SPANS, max_size=4), max_size=3), min_size=1, max_size=3)


def build(shape: list[list[list[Span]]]) -> bytes:
    req = ExportTraceServiceRequest()
    for scopes in shape:
        rs = req.resource_spans.add()
        rs.resource.attributes.add(key="service.name").value.string_value = "svc"
        for spans in scopes:
            ss = rs.scope_spans.add()
            ss.spans.extend(spans)
    return req.SerializeToString()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(REQUESTS)
def test_generated_requests_agree(shape: list[list[list[Span]]]) -> None:
    """Any canonical request: the wire path takes it and matches the message path."""
    body = build(shape)
    assert wired(body) is not None
    assert_same(body)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(REQUESTS)
def test_generated_requests_agree_skipping_enriched(shape: list[list[list[Span]]]) -> None:
    """receivers.count_enriched=false: the wire and message paths still agree on everything."""
    assert_same(build(shape), count_enriched=False)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(REQUESTS, st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=4),
       st.integers(0, 10**6))
def test_mutated_requests_never_diverge(shape: list[list[list[Span]]],
                                        flips: list[tuple[int, int]], cut: int) -> None:
    """Corrupted bytes: accepted only when the runtime accepts them, with the same result."""
    body = bytearray(build(shape))
    for pos, byte in flips:
        body[pos % len(body)] = byte
    data = bytes(body[: len(body) - cut % 8])
    if wired(data) is not None:
        ExportTraceServiceRequest.FromString(data)  # must parse: the walker accepted it
    assert_same(data)


# -- span events ---------------------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _ld(tag: int, payload: bytes) -> bytes:
    return bytes([tag]) + _varint(len(payload)) + payload


RESULT = "provider.result"
EVENT_CASES = [
    ("result event", [span([("app", "x")], events=[(RESULT, [(SRC, "vonage.sms"), (CODE, "1")])])]),
    ("span and two events",
     [span([(SRC, "vonage.sms"), (CODE, "1")],
           events=[(RESULT, [(SRC, "vonage.sms"), (CODE, "1")]),
                   (RESULT, [(SRC, "vonage.sms"), (CODE, "0")])])]),
    ("enriched span with stale outputs and an event",
     [span([("provider.owner", "x"), (SRC, "vonage.sms"), (CODE, "1")],
           events=[(RESULT, [(SRC, "vonage.sms"), (CODE, "6")])])]),
    ("event with stale outputs",
     [span([], events=[(RESULT, [("provider.category", "x"), (SRC, "vonage.sms"),
                                 (CODE, "1"), ("error.type", "y")])])]),
    ("event not enriched keeps stale outputs",
     [span([], events=[(RESULT, [("provider.category", "x"), (CODE, "1")])])]),
    ("result event without code", [span([], events=[(RESULT, [(SRC, "vonage.sms")])])]),
    ("event unknown source", [span([], events=[(RESULT, [(SRC, "nope"), (CODE, 1)])])]),
    ("event acs subcode", [span([], events=[(RESULT, [(SRC, "azure.acs.calling"), (CODE, 487),
                                                      (SUB, 0)])])]),
    ("event on a bad span is not counted",
     [span([], tid=bytes(16), events=[(RESULT, [(SRC, "vonage.sms"), (CODE, "1")])]),
      span([], events=[(RESULT, [(SRC, "vonage.sms"), (CODE, "1")])])]),
    ("events among other events",
     [span([(SRC, "vonage.sms"), (CODE, "1")],
           events=[("exception", [(SRC, "vonage.sms"), (CODE, "1")]),
                   (RESULT, [(SRC, "vonage.sms"), (CODE, "2")]),
                   ("provider.result ", [(CODE, "1")]),
                   (RESULT, [(SRC, "vonage.sms"), (CODE, "4242")])])]),
    ("a large event", [span([], events=[(RESULT, [(SRC, "vonage.sms"), (CODE, "1"),
                                                  ("note", "n" * 300)])])]),
]


@pytest.mark.parametrize("spans", [c[1] for c in EVENT_CASES], ids=[c[0] for c in EVENT_CASES])
def test_event_cases_agree(spans: list[Span]) -> None:
    """provider.result events: the wire path enriches them exactly as the message path."""
    body = request(*spans)
    assert wired(body) is not None
    assert_same(body)


def _event_span(event: bytes) -> bytes:
    """A request of one valid span whose events field (11) holds ``event`` raw."""
    sp = span([]).SerializeToString() + b"\x5a" + _varint(len(event)) + event
    return _ld(0x0A, _ld(0x12, _ld(0x12, sp)))


_RESULT_ATTRS = b"".join(
    _ld(0x1A, kv.SerializeToString()) for kv in kvs([(SRC, "vonage.sms"), (CODE, "1")]))
EVENT_RAW_FORMS = [
    # (name, raw Span.Event payload, the wire path takes it)
    ("name repeated", _ld(0x12, b"provider.result") + _ld(0x12, b"other") + _RESULT_ATTRS,
     False),
    ("name after the attributes", _RESULT_ATTRS + _ld(0x12, b"provider.result"), True),
    ("unknown event field", _ld(0x12, b"provider.result") + b"\xf8\x07\x01" + _RESULT_ATTRS,
     True),
]


@pytest.mark.parametrize("event,takes", [(e, t) for _, e, t in EVENT_RAW_FORMS],
                         ids=[n for n, _, _ in EVENT_RAW_FORMS])
def test_rare_event_forms(event: bytes, takes: bool) -> None:
    body = _event_span(event)
    ExportTraceServiceRequest.FromString(body)
    assert (wired(body) is not None) is takes
    assert_same(body)


def test_padded_event_length() -> None:
    """A non-canonical length before an enriched event is rewritten canonically."""
    event = _ld(0x12, b"provider.result") + _RESULT_ATTRS
    sp = span([]).SerializeToString() + b"\x5a" + padded_len(len(event)) + event
    body = _ld(0x0A, _ld(0x12, _ld(0x12, sp)))
    assert wired(body) is not None
    assert_same(body)


def test_result_events_are_enriched_and_counted() -> None:
    """Each provider.result event counts once and gets the output attributes; status is the
    span's own; other events are untouched."""
    body = request(span([], events=[(RESULT, [(SRC, "vonage.sms"), (CODE, "1")]),
                                    (RESULT, [(SRC, "vonage.sms"), (CODE, "1")]),
                                    ("other", [(SRC, "vonage.sms"), (CODE, "1")])]))
    _, capture = assert_same(body)
    sent = ExportTraceServiceRequest.FromString(capture.sent[0])
    sp = sent.resource_spans[0].scope_spans[0].spans[0]
    first, second, other = (
        {kv.key: kv.value.string_value for kv in e.attributes} for e in sp.events)
    assert first["provider.category"] == second["error.type"] == "throttled"
    assert "provider.category" not in other
    assert sp.status.code == 0
    (_, _, _, enricher), _ = both(body)
    assert enricher.metrics.value("provider_codes_total", {
        "source": "vonage.sms", "code": "1", "subcode": "", "category": "throttled",
        "severity": "warning", "retryable": "with_backoff", "owner": "our_app"}) == 2.0


EVENTS = st.lists(st.tuples(st.sampled_from([RESULT, "exception"]), st.lists(ATTR, max_size=4)),
                  max_size=3)
SPANS_WITH_EVENTS = st.builds(
    lambda attrs, tid, status, events: span(attrs, tid=tid, status=status, events=events),
    st.lists(ATTR, max_size=5), IDS, st.sampled_from([None, 0, 1, 2]), EVENTS,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(st.lists(SPANS_WITH_EVENTS, max_size=4), max_size=3), min_size=1,
                max_size=2))
def test_generated_requests_with_events_agree(shape: list[list[list[Span]]]) -> None:
    """Spans with and without provider.result events: the wire path takes them and gives
    what the message path gives."""
    body = build(shape)
    assert wired(body) is not None
    assert_same(body)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(st.lists(SPANS_WITH_EVENTS, min_size=1, max_size=3), min_size=1,
                         max_size=2), min_size=1, max_size=2),
       st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=4),
       st.integers(0, 10**6))
def test_mutated_requests_with_events_never_diverge(
    shape: list[list[list[Span]]], flips: list[tuple[int, int]], cut: int
) -> None:
    """Corrupted bytes around events: accepted only when the runtime accepts them, same result."""
    body = bytearray(build(shape))
    for pos, byte in flips:
        body[pos % len(body)] = byte
    data = bytes(body[: len(body) - cut % 8])
    if wired(data) is not None:
        ExportTraceServiceRequest.FromString(data)
    assert_same(data)


# -- logs ----------------------------------------------------------------------------------


def record(attrs: list[tuple[str, object]], *, tid: bytes = b"", sid: bytes = b"",
           body: AnyValue | None = None, severity: int = 13) -> LogRecord:
    return LogRecord(time_unix_nano=5, severity_number=severity, severity_text="WARN",  # type: ignore[arg-type]
                     body=body if body is not None else value("send failed"),
                     attributes=kvs(attrs), trace_id=tid, span_id=sid)


def logs_request(*records: LogRecord) -> bytes:
    rl = ResourceLogs(
        resource=Resource(attributes=[KeyValue(key="service.name", value=value("svc"))]),
        scope_logs=[ScopeLogs(scope=InstrumentationScope(name="s"), log_records=list(records))],
    )
    return ExportLogsServiceRequest(resource_logs=[rl]).SerializeToString()


def wired_logs(body: bytes) -> tuple[bytes, int, int] | None:
    return OtlpIntake(Enricher(BOOK, CodebookMetrics()))._logs_wire(body)


LOG_CASES = [
    ("mapped error code", [record([(SRC, "vonage.sms"), (CODE, "1")])]),
    ("integer code", [record([(SRC, "vonage.sms"), (CODE, 6)])]),
    ("success code", [record([(SRC, "vonage.sms"), (CODE, "0")])]),
    ("unmapped code", [record([(SRC, "vonage.sms"), (CODE, "4242")])]),
    ("code without source", [record([(CODE, "1")])]),
    ("array code", [record([(SRC, "vonage.sms"), (CODE, ["1"])])]),
    ("bool and double codes", [record([(SRC, "vonage.sms"), (CODE, True)]),
                               record([(SRC, "vonage.sms"), (CODE, 1.0)])]),
    ("empty value code", [record([(SRC, "vonage.sms"), (CODE, None)])]),
    ("acs subcode decides", [record([(SRC, "azure.acs.calling"), (CODE, 487), (SUB, 0)])]),
    ("braze message decides",
     [record([(SRC, "braze.rest"), (CODE, 400), (MSG, "No Recipients")])]),
    ("stale output attributes replaced",
     [record([("provider.category", "success"), (SRC, "vonage.sms"), ("error.type", "x"),
              (CODE, "1")])]),
    ("with trace context", [record([(SRC, "vonage.sms"), (CODE, "1")], tid=GOOD_TID,
                                   sid=GOOD_SID)]),
    ("bad trace id removed", [record([(SRC, "vonage.sms"), (CODE, "1")], tid=b"\x01" * 15),
                              record([(SRC, "vonage.sms"), (CODE, "1")])]),
    ("bad span id removed", [record([], sid=b"\x01" * 9)]),
    ("no code at all", [record([("http.method", "POST")])]),
    ("huge body", [record([(SRC, "vonage.sms"), (CODE, "1")], body=value("x" * 200_000))]),
    ("kvlist body", [record([(SRC, "vonage.sms"), (CODE, "1")],
                            body=AnyValue(array_value=ArrayValue(values=[value(1)])))]),
]


@pytest.mark.parametrize("records", [c[1] for c in LOG_CASES], ids=[c[0] for c in LOG_CASES])
def test_log_cases_agree(records: list[LogRecord]) -> None:
    """Each named logs request: the wire path handles it and matches the message path."""
    body = logs_request(*records)
    assert wired_logs(body) is not None
    assert_same(body, "logs")


def test_enriched_log_record_carries_the_labels() -> None:
    """A concrete check of the logs wire output: attributes added, severity and body kept."""
    body = logs_request(record([("provider.category", "stale"), (SRC, "vonage.sms"),
                                (CODE, "1")]))
    out = wired_logs(body)
    assert out is not None and out[1:] == (1, 0)
    sent = ExportLogsServiceRequest.FromString(out[0]).resource_logs[0].scope_logs[0]
    rec = sent.log_records[0]
    assert {kv.key: kv.value.string_value for kv in rec.attributes} == {
        SRC: "vonage.sms", CODE: "1", "provider.category": "throttled",
        "provider.severity": "warning", "provider.retryable": "with_backoff",
        "provider.owner": "our_app", "provider.match": "exact", "error.type": "throttled",
    }
    assert (rec.severity_number, rec.severity_text, rec.body.string_value) == (
        13, "WARN", "send failed")


def test_rejected_log_records_report_partial_success() -> None:
    body = logs_request(record([], tid=b"\x01" * 3), record([(SRC, "vonage.sms"), (CODE, "1")]))
    result, _ = assert_same(body, "logs")
    assert (result.accepted, result.rejected) == (1, 1)
    assert result.response.partial_success.rejected_log_records == 1
    assert "trace_id" in result.response.partial_success.error_message


def test_deep_log_body_nesting_is_left_to_the_runtime() -> None:
    """A body nested past the walker's depth goes to the runtime, which accepts what it can
    parse and rejects the rest as malformed, on both paths (as for span attributes)."""
    outcomes = []
    for depth in (40, 200):
        v = _ld(0x0A, b"x")  # AnyValue{string_value}
        for _ in range(depth):
            v = _ld(0x2A, _ld(0x0A, v))  # AnyValue{array_value{values: [v]}}
        rec = record([(SRC, "vonage.sms"), (CODE, "1")])
        rec.ClearField("body")
        rec_bytes = rec.SerializeToString() + _ld(0x2A, v)  # LogRecord.body = 5
        body = _ld(0x0A, _ld(0x12, _ld(0x12, rec_bytes)))
        assert wired_logs(body) is None
        result, _ = assert_same(body, "logs")
        outcomes.append(isinstance(result, MalformedRequest))
    assert outcomes == [False, True]


def test_invalid_logs_requests_are_malformed() -> None:
    good = logs_request(record([(SRC, "vonage.sms"), (CODE, "1")]))
    for body in (good[:-3], bytes(range(256)) * 4):
        assert wired_logs(body) is None
        with pytest.raises(MalformedRequest):
            OtlpIntake(Enricher(BOOK, CodebookMetrics())).export_protobuf("logs", body, "grpc")


LOG_IDS = st.sampled_from([GOOD_TID, b"", bytes(16), b"\x01" * 15])
LOG_SIDS = st.sampled_from([GOOD_SID, b"", bytes(8), b"\x01" * 9])
RECORDS = st.builds(
    lambda attrs, tid, sid, sev: record(attrs, tid=tid, sid=sid, severity=sev),
    st.lists(ATTR, max_size=7), LOG_IDS, LOG_SIDS, st.integers(0, 24),
)
LOG_REQUESTS = st.lists(st.lists(st.lists(RECORDS, max_size=4), max_size=3), min_size=1,
                        max_size=3)


def build_logs(shape: list[list[list[LogRecord]]]) -> bytes:
    req = ExportLogsServiceRequest()
    for scopes in shape:
        rl = req.resource_logs.add()
        rl.resource.attributes.add(key="service.name").value.string_value = "svc"
        for records in scopes:
            rl.scope_logs.add().log_records.extend(records)
    return req.SerializeToString()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(LOG_REQUESTS)
def test_generated_logs_requests_agree(shape: list[list[list[LogRecord]]]) -> None:
    """Any canonical logs request: the wire path takes it and matches the message path."""
    body = build_logs(shape)
    assert wired_logs(body) is not None
    assert_same(body, "logs")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(LOG_REQUESTS, st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)),
                              max_size=4), st.integers(0, 10**6))
def test_mutated_logs_requests_never_diverge(shape: list[list[list[LogRecord]]],
                                             flips: list[tuple[int, int]], cut: int) -> None:
    """Corrupted logs bytes: accepted only when the runtime accepts them, with the same result."""
    body = bytearray(build_logs(shape))
    for pos, byte in flips:
        body[pos % len(body)] = byte
    data = bytes(body[: len(body) - cut % 8])
    if wired_logs(data) is not None:
        ExportLogsServiceRequest.FromString(data)  # must parse: the walker accepted it
    assert_same(data, "logs")


def test_skip_enriched_covers_log_records_and_result_events() -> None:
    """With count_enriched=False, an enriched log record or provider.result event is neither
    re-resolved nor counted; raw ones beside it still are; both paths agree."""
    labels = {"source": "vonage.sms", "code": "1", "subcode": "", "category": "throttled",
              "severity": "warning", "retryable": "with_backoff", "owner": "our_app"}
    raw = [(SRC, "vonage.sms"), (CODE, "1")]
    logs = logs_request(record(UPSTREAM), record(raw))
    events = request(Span(trace_id=GOOD_TID, span_id=GOOD_SID, name="send", events=[
        Span.Event(name=RESULT, attributes=kvs(UPSTREAM)),
        Span.Event(name=RESULT, attributes=kvs(raw)),
    ]))
    for body, signal in ((logs, "logs"), (events, "traces")):
        for count_enriched, counted in ((True, 2.0), (False, 1.0)):
            assert_same(body, signal, count_enriched)
            for path, _, _, enricher in both(body, signal, count_enriched):
                got = enricher.metrics.value("provider_codes_total", labels)
                assert got == counted, (signal, path, count_enriched)


# -- hostile inputs (issue 15) --------------------------------------------------------------

def test_wrong_key_lists_raise_value_error() -> None:
    """Regression: a wrong number of keys raised SystemError (-1 with no exception set)."""
    body = request(span([(SRC, "vonage.sms"), (CODE, "1")]))
    wire = otlp_module._wire
    for inputs, outputs in [((), ()), ((b"",), ()), ((b"a",) * 4, (b"k",) * 65)]:
        with pytest.raises(ValueError, match="wrong number of keys"):
            wire.enrich_traces(body, lambda *a: None, inputs, outputs)


def _distinct_codes(codes: list[object]) -> bytes:
    return request(*(span([(SRC, "vonage.sms"), (CODE, c)], sid=(i + 1).to_bytes(8, "big"))
                     for i, c in enumerate(codes)))


FLOOD_SPANS = 2048
FLOODS = [
    # Codes the old unkeyed XOR-multiply hash put in one probe run (quadratic CPU).
    ("ints differing above bit 20", [i << 21 for i in range(1, FLOOD_SPANS + 1)]),
    ("ints differing above bit 40", [i << 41 for i in range(1, FLOOD_SPANS + 1)]),
    ("whole doubles", [float(i) for i in range(1, FLOOD_SPANS + 1)]),
    ("doubles differing in the exponent",
     [2.0**i for i in range(-1000, 1000)] + [-(2.0**i) for i in range(FLOOD_SPANS - 2000)]),
    ("ordinary ints", list(range(FLOOD_SPANS))),
    ("strings", [f"E{i:05d}" for i in range(FLOOD_SPANS)]),
]


@pytest.mark.parametrize("codes", [c for _, c in FLOODS], ids=[n for n, _ in FLOODS])
def test_chosen_codes_cannot_flood_the_grouping(codes: list[object]) -> None:
    """Regression (hash flooding): codes chosen to collide under an unkeyed hash still group
    with short probe runs. Counted in probes (the table's work), never in seconds."""
    body = _distinct_codes(codes)
    assert wired(body) is not None
    stats = otlp_module._wire.walk_stats()
    assert stats["groups"] == FLOOD_SPANS
    assert stats["longest_probe"] <= stats["probe_limit"]
    assert stats["probes"] <= 4 * FLOOD_SPANS  # linear probing at load <= 1/2: about 1.5 each
    assert_same(body)


def test_span_summarising_its_result_event_counts_once() -> None:
    """A span whose provider values equal one of its provider.result events' (an instrumented
    call with several results) is enriched but counted through that event only; values of
    another type (int 1 beside "1") are another result. Both paths agree."""
    labels = {"source": "vonage.sms", "code": "1", "subcode": "", "category": "throttled",
              "severity": "warning", "retryable": "with_backoff", "owner": "our_app"}
    ok = {**labels, "code": "0", "category": "success", "severity": "info", "retryable": "no",
          "owner": "none"}
    first_failing = [(SRC, "vonage.sms"), (CODE, "1")]

    def summary(*events: list[tuple[str, object]]) -> bytes:
        return request(Span(trace_id=GOOD_TID, span_id=GOOD_SID, name="send",
                            attributes=kvs(first_failing),
                            events=[Span.Event(name=RESULT, attributes=kvs(e)) for e in events]))

    cases = [
        (summary([(SRC, "vonage.sms"), (CODE, "0")], first_failing), 1.0, 1.0),
        (summary(first_failing, first_failing), 2.0, 0.0),
        (summary([(SRC, "vonage.sms"), (CODE, 1)]), 2.0, 0.0),  # int 1: another result
    ]
    for body, throttled, success in cases:
        assert_same(body)
        for path, _, capture, enricher in both(body):
            assert enricher.metrics.value("provider_codes_total", labels) == throttled, path
            assert enricher.metrics.value("provider_codes_total", ok) == success, path
            (sent,) = capture.sent
            (out,) = ExportTraceServiceRequest.FromString(sent).resource_spans[0] \
                .scope_spans[0].spans
            attrs = {kv.key: kv.value.string_value for kv in out.attributes}
            assert attrs["provider.category"] == "throttled", path  # still enriched
            assert out.status.code == 2, path  # and its error status set
