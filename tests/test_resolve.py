"""The resolver: normalisation, the fallback ladder, and never raising on any input."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter import Category, Codebook, Match, Owner, Retryable, Severity, load_codebook
from exporter.keys import normalize_code, normalize_message

LADDER = Path(__file__).parent / "testdata" / "ladder"


@pytest.fixture(scope="module")
def book() -> Codebook:
    return load_codebook([LADDER], builtin=False)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", "1"), (1, "1"), (" 1 ", "1"), ("007", "7"), ("+7", "7"), ("-1", "-1"),
        ("5,317", "5317"), ("8,540", "8540"), ("1,2", "1,2"), (5317.0, "5317"), (1.5, None),
        (None, None), ("", None), ("   ", None), ("x" * 65, None), (b"42", "42"),
        ("PayloadEmpty", "PayloadEmpty"), (10**30, None), (True, "1"), ([1], None),
    ],
    ids=lambda v: repr(v)[:20],
)
def test_normalize_code(raw: object, expected: str | None) -> None:
    """Codes compare as text after trimming, separator stripping and integer canonicalisation."""
    assert normalize_code(raw) == expected


def test_normalize_message() -> None:
    """Messages fold case and runs of space; oversized ones are not matched."""
    assert normalize_message("  Rate   LIMITED ") == "rate limited"
    assert normalize_message("x" * 10_000) is None
    assert normalize_message(42) is None


CASES = [
    # (id, code, subcode, message, category, match)
    ("pair", "500", "10", None, "auth", "exact"),
    ("pair-int", 500, 10, None, "auth", "exact"),
    ("subcode-beats-code", "999", "20", None, "device", "exact"),
    ("subcode-only-entry", "123", "40", None, "network", "exact"),
    ("shared-subcode-falls-to-code", "400", "30", None, "invalid_request", "exact"),
    ("shared-subcode-pair", "405", "30", None, "configuration", "exact"),
    ("shared-subcode-unknown-code-class", "503", "30", None, "provider_internal", "class"),
    ("message-beats-status", "400", None, "rate limited", "throttled", "exact"),
    ("message-spacing-and-case", "400", None, " RATE   Limited", "throttled", "exact"),
    ("unknown-message-falls-to-status", "400", None, "Something Else", "invalid_request",
     "exact"),
    ("thousands-in-mapping", "5317", None, None, "call_ended_normal", "exact"),
    ("thousands-in-input", "5,317", None, None, "call_ended_normal", "exact"),
    ("negative", -1, None, None, "pending", "exact"),
    ("digit-class", "599", None, None, "provider_internal", "class"),
    ("range-class", "486", None, None, "recipient_unreachable", "class"),
    ("class-needs-three-digits", "5000", None, None, "unknown", "unmapped"),
    ("unmapped", "12345", None, None, "unknown", "unmapped"),
    ("unknown-subcode-falls-to-code", "400", "77", None, "invalid_request", "exact"),
    ("zero-subcode-never-alone", "400", "0", None, "invalid_request", "exact"),
    ("zero-subcode-int-never-alone", 400, 0, None, "invalid_request", "exact"),
    ("zero-subcode-unmapped-code", "12345", "0", None, "unknown", "unmapped"),
    ("zero-subcode-class-code", "503", "00", None, "provider_internal", "class"),
    ("zero-subcode-no-code-own-entry", None, "0", None, "success", "exact"),
    ("name-is-its-code", "Gone", None, None, "recipient_invalid", "exact"),
    ("name-with-space", " Gone ", None, None, "recipient_invalid", "exact"),
    ("name-case-sensitive", "gone", None, None, "unknown", "unmapped"),
    ("shared-name-not-an-alias", "Twice", None, None, "unknown", "unmapped"),
    ("code-beats-name", "400", None, None, "invalid_request", "exact"),
    # class rules with message "*": after the code alone, before the plain class rules
    ("message-class", "503", None, "Busy", "provider_unavailable", "class"),
    ("message-class-long-message", "503", None, "x" * 300, "provider_unavailable", "class"),
    ("message-class-bytes", "503", None, b"Busy", "provider_unavailable", "class"),
    ("message-class-needs-a-message", "503", None, None, "provider_internal", "class"),
    ("message-class-blank-message", "503", None, "  ", "provider_internal", "class"),
    ("message-class-not-a-text", "503", None, 42, "provider_internal", "class"),
    ("message-class-alone-with-message", "201", None, "Partly", "invalid_request", "class"),
    ("message-class-alone-no-message", "201", None, None, "unknown", "unmapped"),
    ("code-beats-message-class", "200", None, "Anything", "success", "exact"),
    ("pair-beats-message-class", "500", "10", "Busy", "auth", "exact"),
    ("message-entry-beats-message-class", "400", None, "rate limited", "throttled", "exact"),
    ("plain-range-outside-message-class", "486", None, "Busy", "recipient_unreachable",
     "class"),
    ("message-class-needs-its-digits", "5000", None, "Busy", "unknown", "unmapped"),
]


@pytest.mark.parametrize(
    ("code", "subcode", "message", "category", "match"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_ladder(
    book: Codebook, code: object, subcode: object, message: object, category: str, match: str
) -> None:
    """Each rung of docs/taxonomy.md §1 in order: pair, subcode, message, code, the class rules
    that take a message (only when one is given), the plain class rules, unmapped."""
    r = book.resolve("test.ladder", code, subcode, message)
    assert (r.category, r.match) == (category, match)


def test_alias_and_overrides(book: Codebook) -> None:
    """Aliases resolve like the id; overrides carry through; defaults follow the category."""
    r = book.resolve("ladder", "500", "10")
    assert (r.source, r.severity, r.owner, r.retryable) == (
        "test.ladder", "error", "our_app", "no")
    d = book.resolve("test.ladder", "403", "20")
    assert (d.severity, d.retryable, d.owner) == ("warning", "no", "end_user")


def test_unknown_source(book: Codebook) -> None:
    """An unknown source resolves to unknown/unmapped with no source."""
    r = book.resolve("nope", "1")
    assert (r.source, r.category, r.match, r.owner) == (None, "unknown", "unmapped", "unknown")


def test_output_attributes(book: Codebook) -> None:
    """Output attributes are the contract's; error.type only for error categories."""
    assert dict(book.resolve("test.ladder", "500", "10").attributes) == {
        "provider.category": "auth", "provider.severity": "error",
        "provider.retryable": "no", "provider.owner": "our_app", "provider.match": "exact",
        "error.type": "auth",
    }
    assert "error.type" not in book.resolve("test.ladder", "-1").attributes
    assert "error.type" not in book.resolve("test.ladder", "12345").attributes


def test_cache_stays_bounded() -> None:
    """100k distinct unknown inputs never grow the fallback cache past its bound."""
    small = load_codebook([LADDER], builtin=False, cache_size=100)
    for i in range(100_000):
        small.resolve("test.ladder", f"u{i}")
    assert len(small._cache) <= 100 + len(small._base_cache)
    assert small.resolve("test.ladder", "5,317").category == "call_ended_normal"


_values = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=300),
    st.binary(max_size=300), st.lists(st.integers(), max_size=3),
    st.sampled_from(["1", "5,317", "-1", " 400 ", "5XX", "vonage.sms", "\x00", "٣"]),
)


@settings(max_examples=400, deadline=None)
@given(
    source=st.one_of(_values, st.sampled_from(["test.ladder", "ladder", "vonage.sms"])),
    code=_values, subcode=_values, message=_values,
)
def test_resolve_never_raises(
    book: Codebook, source: object, code: object, subcode: object, message: object
) -> None:
    """Any input at all resolves to closed-enum values, and never raises."""
    r = book.resolve(source, code, subcode, message)
    assert r.category in set(Category)
    assert r.severity in set(Severity)
    assert r.retryable in set(Retryable)
    assert r.owner in set(Owner)
    assert r.match in set(Match)


@settings(max_examples=200, deadline=None)
@given(code=_values, subcode=_values, message=_values)
def test_builtin_resolve_never_raises(code: object, subcode: object, message: object) -> None:
    """The shipped mappings hold up to the same inputs for every source."""
    shipped = _builtin()
    for source in shipped.sources:
        r = shipped.resolve(source, code, subcode, message)
        assert r.category in set(Category) and r.match in set(Match)


_BUILTIN: list[Codebook] = []


def _builtin() -> Codebook:
    if not _BUILTIN:
        _BUILTIN.append(load_codebook())
    return _BUILTIN[0]
