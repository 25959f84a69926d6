"""The C wire path for OTLP trace requests gives exactly what the message path gives."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    InstrumentationScope,
    KeyValue,
)
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


def both(body: bytes) -> Iterator[tuple[str, Any, Capture, Enricher]]:
    """Run ``body`` through the wire path and the message path; yield each outcome."""
    for wire in (True, False):
        enricher = Enricher(BOOK, CodebookMetrics())
        capture = Capture()
        intake = OtlpIntake(enricher, capture, wire=wire)  # type: ignore[arg-type]
        try:
            result: Any = intake.export_protobuf("traces", body, "http")
        except MalformedRequest as exc:
            result = exc
        yield ("wire" if wire else "message"), result, capture, enricher


def assert_same(body: bytes) -> tuple[Any, Capture]:
    """The wire and message paths agree on reply, forwarded spans and every metric."""
    (_, wr, wc, we), (_, mr, mc, me) = both(body)
    if isinstance(mr, MalformedRequest):
        assert isinstance(wr, MalformedRequest)
        return wr, wc
    assert not isinstance(wr, MalformedRequest)
    assert (wr.accepted, wr.rejected) == (mr.accepted, mr.rejected)
    assert wr.response == mr.response
    assert [ExportTraceServiceRequest.FromString(b) for b in wc.sent] == [
        ExportTraceServiceRequest.FromString(b) for b in mc.sent
    ]
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


def span(attrs: list[tuple[str, object]], *, tid: bytes = GOOD_TID, sid: bytes = GOOD_SID,
         status: int | None = None, name: str = "send") -> Span:
    s = Span(trace_id=tid, span_id=sid, name=name,
             attributes=[KeyValue(key=k, value=value(v)) for k, v in attrs])
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
                        "error.type", "http.method", "", "provider.code "])
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
