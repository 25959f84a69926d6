"""The C on_end (exporter/_hot.c) against the Python on_end: same spans out, same counts.

Each case feeds the very same ReadableSpan (as the SDK hands it over) to two processors, one
on each path, and compares everything a downstream or a scrape can see. Hypothesis generates
attribute sets that mix mapped, unmapped, oddly typed and unhashable provider values, app-set
statuses and attribute limits, so the C path's hand-over to Python is exercised as well as its
own two cases.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.trace import Status, StatusCode

from exporter import Codebook, CodebookMetrics, CodebookSpanProcessor, Enricher, load_codebook
from exporter import processor as processor_module

INPROC = Path(__file__).parent / "testdata" / "mappings_inproc"
RESOURCE = Resource.create({"service.name": "hot-test"})
BOOK: Codebook = load_codebook([INPROC], builtin=False)

pytestmark = pytest.mark.skipif(
    processor_module._hot is None and os.environ.get("CI") != "true",
    reason="exporter._hot is not built (pip install . builds it)",
)


def test_extension_is_built() -> None:
    """Under CI the C on_end must be built: a broken build fails here, not silently."""
    assert processor_module._hot is not None
    assert CodebookSpanProcessor(SpanProcessor()).c_fast_path is True


class Keep(SpanProcessor):
    def __init__(self) -> None:
        self.ended: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.ended.append(span)


class Pair:
    """Two processors over the same mappings, one per on_end path, each with its own state."""

    def __init__(self, book: Codebook = BOOK) -> None:
        self.c_out, self.py_out = Keep(), Keep()
        self.c = CodebookSpanProcessor(self.c_out, Enricher(book, CodebookMetrics()))
        self.py = CodebookSpanProcessor(self.py_out, Enricher(book, CodebookMetrics()))
        vars(self.py).pop("on_end")  # the class's Python on_end
        assert self.c.c_fast_path and "on_end" not in vars(self.py)

    def feed(self, span: ReadableSpan) -> tuple[ReadableSpan, ReadableSpan]:
        before = (dict(span.attributes or {}), span.status)
        self.c.on_end(span)
        self.py.on_end(span)
        assert (dict(span.attributes or {}), span.status) == before  # never mutated
        return self.c_out.ended[-1], self.py_out.ended[-1]

    def check(self, span: ReadableSpan) -> None:
        c, py = self.feed(span)
        assert type(c) is type(py)
        assert (c is span) is (py is span)
        assert view(c) == view(py)
        assert (c.status.status_code, c.status.description) == (
            py.status.status_code, py.status.description
        )
        for field in ("dropped_attributes", "dropped_events", "dropped_links"):
            assert getattr(c, field) == getattr(py, field) == getattr(span, field), field

    def same_metrics(self) -> None:
        assert self.c.enricher.metrics.render() == self.py.enricher.metrics.render()


FIELDS = ("name", "context", "parent", "kind", "start_time", "end_time", "resource",
          "instrumentation_scope", "links")


def view(span: ReadableSpan) -> tuple[object, ...]:
    """What an exporter reads of a span (to_json cannot encode bytes values)."""
    events = [(e.name, e.timestamp, dict(e.attributes or {}), e.dropped_attributes)  # type: ignore[attr-defined]
              for e in span.events]
    return (*(getattr(span, f) for f in FIELDS), events, dict(span.attributes or {}),
            span.status.status_code, span.status.description)


RESULT = "provider.result"


def sdk_span(
    attributes: Mapping[str, object],
    status: Status | None = None,
    limits: SpanLimits | None = None,
    events: Sequence[tuple[str, Mapping[str, object]]] = (),
) -> ReadableSpan:
    """The ReadableSpan the SDK hands to on_end for one span (events: (name, attributes))."""
    keep = Keep()
    provider = TracerProvider(resource=RESOURCE, span_limits=limits)
    provider.add_span_processor(keep)
    span = provider.get_tracer("tests.hot").start_span("send", attributes=attributes)  # type: ignore[arg-type]
    span.add_event("sent")
    for name, event_attrs in events:
        span.add_event(name, event_attrs)  # type: ignore[arg-type]
    if status is not None:
        span.set_status(status)
    span.end()
    return keep.ended[-1]


NAMED = [
    ("no-code", {"app": "x"}, None, None),
    ("error-hit", {"provider.source": "test.sms", "provider.code": "1"}, None, None),
    ("success", {"provider.source": "test.sms", "provider.code": "0"}, None, None),
    ("int-alias", {"provider.source": "tsms", "provider.code": 1}, None, None),
    ("subcode", {"provider.source": "test.calls", "provider.code": 999, "provider.subcode": 41},
     None, None),
    ("message", {"provider.source": "test.sms", "provider.code": "1",
                 "provider.message": "Throttled"}, None, None),
    ("unmapped", {"provider.source": "test.sms", "provider.code": "4242"}, None, None),
    ("code-only", {"provider.code": "1"}, None, None),
    ("ok-kept", {"provider.source": "test.sms", "provider.code": "1"}, Status(StatusCode.OK),
     None),
    ("app-error-kept", {"provider.source": "test.sms", "provider.code": "1"},
     Status(StatusCode.ERROR, "app"), None),
    ("explicit-unset", {"provider.source": "test.sms", "provider.code": "1"},
     Status(StatusCode.UNSET), None),
    ("stale-outputs", {"provider.source": "test.sms", "provider.code": "1",
                       "provider.category": "success", "error.type": "x"}, None, None),
    ("dropped", {"a": 1, "b": 2, "provider.source": "test.sms", "provider.code": "7"}, None,
     SpanLimits(max_span_attributes=3)),
    ("sequence-code", {"provider.source": "test.sms", "provider.code": ("1", "2")}, None, None),
    ("huge-code", {"provider.source": "test.sms", "provider.code": "9" * 100_000}, None, None),
]


@pytest.mark.parametrize(("attrs", "status", "limits"), [c[1:] for c in NAMED],
                         ids=[c[0] for c in NAMED])
def test_named_cases_agree(
    attrs: dict[str, object], status: Status | None, limits: SpanLimits | None
) -> None:
    pair = Pair()
    for _ in range(3):  # a miss first, then cache hits
        pair.check(sdk_span(attrs, status, limits))
    pair.same_metrics()


CODE = {"provider.source": "test.sms", "provider.code": "1"}
EVENT_CASES = [
    ("one-event", {"app": "x"}, [(RESULT, CODE)], None),
    ("span-and-events", CODE,
     [(RESULT, CODE), (RESULT, {"provider.source": "test.sms", "provider.code": "0"})], None),
    ("event-unmapped", {}, [(RESULT, {"provider.source": "test.sms", "provider.code": "4242"})],
     None),
    ("other-event-name", {}, [("provider.other", CODE)], None),
    ("event-without-code", {}, [(RESULT, {"provider.source": "test.sms"})], None),
    ("event-stale-outputs", {}, [(RESULT, {**CODE, "provider.category": "success"})], None),
    ("event-dropped-attrs", {}, [(RESULT, {"a": 1, "b": 2, **CODE})],
     SpanLimits(max_event_attributes=3)),
    ("events-dropped", CODE, [(RESULT, CODE)] * 4, SpanLimits(max_events=3)),
]


@pytest.mark.parametrize(("attrs", "events", "limits"), [c[1:] for c in EVENT_CASES],
                         ids=[c[0] for c in EVENT_CASES])
def test_event_cases_agree(
    attrs: dict[str, object],
    events: list[tuple[str, dict[str, object]]],
    limits: SpanLimits | None,
) -> None:
    """provider.result events: the same spans and counts on both paths."""
    pair = Pair()
    for _ in range(3):
        pair.check(sdk_span(attrs, None, limits, events))
    pair.same_metrics()


def test_events_are_enriched_and_counted_once_each() -> None:
    """A code on two events, which the span repeats: two counts (the span summarises its
    first result, counted through the event); other events untouched."""
    pair = Pair()
    span = sdk_span(CODE, events=[(RESULT, CODE), ("other", CODE),
                                  (RESULT, {"provider.source": "test.sms", "provider.code": "0"})])
    c, _ = pair.feed(span)
    sent, first, other, second = c.events
    assert sent is span.events[0] and other is span.events[2]
    assert first.attributes["provider.category"] == "throttled"  # type: ignore[index]
    assert first.attributes["error.type"] == "throttled"  # type: ignore[index]
    assert second.attributes["provider.category"] == "success"  # type: ignore[index]
    assert "error.type" not in second.attributes  # type: ignore[operator]
    assert "provider.category" not in (other.attributes or {})
    throttled = {"source": "test.sms", "code": "1", "subcode": "", "category": "throttled",
                 "severity": "warning", "retryable": "with_backoff", "owner": "our_app"}
    assert pair.c.enricher.metrics.value("provider_codes_total", throttled) == 1.0
    assert c.attributes["provider.category"] == "throttled"  # type: ignore[index]
    pair.same_metrics()


def test_span_with_its_own_result_counts_once_more() -> None:
    """A span code that no result event repeats (or repeats with another type) counts too."""
    pair = Pair()
    int_one = {"provider.source": "test.sms", "provider.code": 1}
    pair.feed(sdk_span(CODE, events=[(RESULT, int_one),
                                     (RESULT, {"provider.source": "test.sms",
                                               "provider.code": "0"})]))
    throttled = {"source": "test.sms", "code": "1", "subcode": "", "category": "throttled",
                 "severity": "warning", "retryable": "with_backoff", "owner": "our_app"}
    assert pair.c.enricher.metrics.value("provider_codes_total", throttled) == 2.0
    pair.same_metrics()


class OddSpan(ReadableSpan):
    """Another ReadableSpan class: the C path hands it to Python."""


@pytest.mark.parametrize("span_class", [ReadableSpan, OddSpan], ids=["readable", "subclass"])
@pytest.mark.parametrize(
    "attrs",
    [
        {"provider.source": "test.sms", "provider.code": "1"},
        {"provider.source": "test.sms", "provider.code": ["1"]},  # unhashable: no cache
        {"provider.source": ["test.sms"], "provider.code": "1"},
        {"app": "x"},
    ],
    ids=["plain-dict", "list-code", "list-source", "no-code"],
)
def test_directly_built_spans_agree(
    span_class: type[ReadableSpan], attrs: dict[str, object]
) -> None:
    """Spans built with the public constructor (plain dict attributes, any values) agree."""
    pair = Pair()
    for _ in range(2):
        pair.check(span_class(name="send", resource=RESOURCE, attributes=attrs))  # type: ignore[arg-type]
    pair.same_metrics()


def test_keyword_call_and_reload() -> None:
    """on_end(span=...) works; after a swap the C path resolves by the new codebook."""
    pair = Pair()
    span = sdk_span({"provider.source": "test.sms", "provider.code": "1"})
    pair.c.on_end(span=span)  # type: ignore[call-arg]
    assert pair.c_out.ended[-1].attributes["provider.category"] == "throttled"  # type: ignore[index]
    other = load_codebook([INPROC], builtin=False)
    pair.c.enricher.swap(other)
    pair.c.on_end(span)
    assert pair.c.enricher._spans[0] is other and pair.c.enricher._spans[1]
    assert pair.c.enricher.metrics.value(
        "provider_codes_total",
        {"source": "test.sms", "code": "1", "subcode": "", "category": "throttled",
         "severity": "warning", "retryable": "with_backoff", "owner": "our_app"},
    ) == 2.0


def test_failing_downstream_reported_like_python() -> None:
    """A raising downstream: both paths count it and still call the next one."""

    class Boom(SpanProcessor):
        def on_end(self, span: ReadableSpan) -> None:
            raise ValueError("boom")

    outs = []
    for python in (False, True):
        keep = Keep()
        proc = CodebookSpanProcessor([Boom(), keep], Enricher(BOOK, CodebookMetrics()))
        if python:
            vars(proc).pop("on_end")
        for attrs in ({"provider.source": "test.sms", "provider.code": "1"}, {"app": "x"}):
            for _ in range(2):
                proc.on_end(sdk_span(attrs))
        outs.append((len(keep.ended), proc.enricher.metrics.value(
            "codebook_telemetry_dropped_total", {"signal": "traces", "reason": "internal_error"}
        )))
    assert outs[0] == outs[1] == (4, 4.0)


VALUES = st.one_of(
    st.sampled_from(
        ["0", "1", "2", "7", "9", "503", "599", "4242", "", " 1 ", "\uff11", "Throttled"]
    ),
    st.integers(min_value=-3, max_value=1000),
    st.booleans(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.binary(max_size=8),
    st.lists(st.sampled_from(["1", "2"]), max_size=3).map(tuple),
)
KEYS = st.sampled_from([
    "provider.source", "provider.code", "provider.subcode", "provider.message",
    "provider.category", "error.type", "app.other",
])
SOURCES = st.sampled_from(["test.sms", "tsms", "test.calls", "nobody.knows"])
ATTRS = st.builds(
    lambda base, extra: {**base, **extra},
    st.fixed_dictionaries({"provider.source": st.one_of(SOURCES, VALUES)},
                          optional={"provider.code": VALUES}),
    st.dictionaries(KEYS, VALUES, max_size=4),
)
STATUSES = st.sampled_from([None, Status(StatusCode.OK), Status(StatusCode.ERROR, "e"),
                            Status(StatusCode.UNSET)])
LIMITS = st.sampled_from([None, SpanLimits(max_span_attributes=2)])


EVENTS = st.lists(st.tuples(st.sampled_from([RESULT, "other"]), ATTRS), max_size=3)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(ATTRS, STATUSES, LIMITS, EVENTS), min_size=1, max_size=6))
def test_generated_spans_agree(
    spans: Sequence[tuple[dict[str, object], Status | None, SpanLimits | None,
                          list[tuple[str, dict[str, object]]]]],
) -> None:
    pair = Pair()
    for attrs, status, limits, events in spans:
        for _ in range(2):
            pair.check(sdk_span(attrs, status, limits, events))
    pair.same_metrics()


def test_c_path_hands_over_only_what_it_does_not_take(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cache hits and spans without a code stay in C; a miss or a subclass goes to Python."""
    handed: list[ReadableSpan] = []
    python_on_end = CodebookSpanProcessor.on_end

    def spy(self: CodebookSpanProcessor, span: ReadableSpan) -> None:
        handed.append(span)
        python_on_end(self, span)

    monkeypatch.setattr(CodebookSpanProcessor, "on_end", spy)
    keep = Keep()
    proc = CodebookSpanProcessor(keep, Enricher(BOOK, CodebookMetrics()))
    code = {"provider.source": "test.sms", "provider.code": "1"}
    miss, hit, plain = sdk_span(code), sdk_span(code), sdk_span({"app": "x"})
    odd = OddSpan(name="send", resource=RESOURCE, attributes=code)
    dropped = sdk_span({"a": 1, **code}, limits=SpanLimits(max_span_attributes=2))
    other_event = sdk_span({"app": "x"}, events=[("other", code)])
    result_event = sdk_span({"app": "x"}, events=[(RESULT, code)])
    for span in (miss, hit, plain, odd, dropped, other_event, result_event):
        proc.on_end(span)
    assert handed == [miss, odd, dropped, result_event]
    assert len(keep.ended) == 7 and keep.ended[2] is plain and keep.ended[5] is other_event
    assert keep.ended[6].events[1].attributes["provider.category"] == "throttled"  # type: ignore[index]
    assert all(s.attributes["provider.category"] == "throttled"  # type: ignore[index]
               for s in (keep.ended[0], keep.ended[1], keep.ended[3], keep.ended[4]))
    assert keep.ended[4].dropped_attributes == 1


class Hostile(str):
    """A code whose hashing and comparison fail (only a directly built span can carry one)."""

    def __hash__(self) -> int:
        raise RuntimeError("no hash")

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("no eq")


class Collide(str):
    """A key that hashes like provider.code and fails to compare with it."""

    def __hash__(self) -> int:
        return hash("provider.code")

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("no eq")


@pytest.mark.parametrize(
    "attrs",
    [
        {"provider.source": "test.sms", "provider.code": Hostile("1")},
        {"provider.source": Hostile("test.sms"), "provider.code": "1"},
        {Collide("x"): "1", "provider.source": "test.sms"},
    ],
    ids=["code", "source", "key"],
)
def test_hostile_values_never_raise(attrs: dict[str, object]) -> None:
    """Values that fail to hash or compare: on_end never raises, on either path, and agrees."""
    pair = Pair()
    for _ in range(2):
        span = ReadableSpan(name="send", resource=RESOURCE, attributes=attrs)  # type: ignore[arg-type]
        c, py = pair.feed(span)
        assert (c is span) is (py is span)
        assert dict(c.attributes or {}).keys() == dict(py.attributes or {}).keys()
    pair.same_metrics()


def test_assigned_enricher_takes_effect() -> None:
    """Assigning processor.enricher switches both paths to it, a subclass's override included."""

    class Overriding(Enricher):
        def enrich_span(self, attributes: Mapping[str, object]) -> Mapping[str, str] | None:
            return {"provider.category": "overridden"}

    pair = Pair()
    span = sdk_span({"provider.source": "test.sms", "provider.code": "1"})
    pair.check(span)
    fresh = [Enricher(BOOK, CodebookMetrics()), Enricher(BOOK, CodebookMetrics())]
    pair.c.enricher, pair.py.enricher = fresh
    pair.check(span)
    pair.check(span)
    throttled = {"source": "test.sms", "code": "1", "subcode": "", "category": "throttled",
                 "severity": "warning", "retryable": "with_backoff", "owner": "our_app"}
    assert [e.metrics.value("provider_codes_total", throttled) for e in fresh] == [2.0, 2.0]
    pair.c.enricher = pair.py.enricher = Overriding(BOOK, CodebookMetrics())
    c, py = pair.feed(span)
    assert dict(c.attributes or {}) == dict(py.attributes or {})
    assert dict(c.attributes or {})["provider.category"] == "overridden"


class Evict(str):
    """A key that hashes like provider.subcode and, when compared, deletes provider.code from
    its span's attributes and allocates ints of the code's size (reusing the freed memory)."""

    attrs: dict[object, object] | None = None

    def __hash__(self) -> int:
        return hash("provider.subcode")

    def __eq__(self, other: object) -> bool:
        if self.attrs is not None and self.attrs.pop("provider.code", None) is not None:
            self.junk = [int(str(10**6 + i)) for i in range(200)]
        return False


def evicting_span() -> ReadableSpan:
    key = Evict("x")
    # A fresh int (not a small-int singleton): the dict holds its only reference.
    attrs: dict[object, object] = {"provider.source": "test.calls",
                                   "provider.code": int("487"), key: "v",
                                   "provider.subcode": "560487"}
    key.attrs = attrs
    return ReadableSpan(name="send", resource=RESOURCE, attributes=attrs)  # type: ignore[arg-type]


def test_value_removed_by_a_later_lookup_is_owned() -> None:
    """Regression (use-after-free): the code lookup's value stays owned while the subcode
    lookup runs a key's __eq__ that deletes provider.code; both paths count code 487 with
    its subcode, and forward the same attributes (the dict as the lookup left it).

    The cache is warmed first: on a miss the C path hands the span to the Python on_end,
    which reads the dict again after the deletion (so finds no code), as any second reader
    would; on a hit both paths read each value once, in the same order (code before subcode).
    """
    pair = Pair()
    warm = {"provider.source": "test.calls", "provider.code": 487, "provider.subcode": "560487"}
    pair.check(sdk_span(warm))
    for _ in range(3):
        pair.c.on_end(evicting_span())
        pair.py.on_end(evicting_span())
        c, py = pair.c_out.ended[-1], pair.py_out.ended[-1]
        # Evict keys of two spans never compare equal: compare the attributes as plain str.
        assert [(str(k), v) for k, v in (c.attributes or {}).items()] == [
            (str(k), v) for k, v in (py.attributes or {}).items()
        ]
        assert (c.status.status_code, c.status.description) == (
            py.status.status_code, py.status.description
        )
        assert "provider.code" not in (c.attributes or {})
    pair.same_metrics()
    cancelled = {"source": "test.calls", "code": "487", "subcode": "560487",
                 "category": "call_ended_normal", "severity": "info", "retryable": "no",
                 "owner": "none"}
    assert pair.c.enricher.metrics.value("provider_codes_total", cancelled) == 4.0
