"""What every provider instrumentor shares: results, where they are written, failure policy.

Contract of the helpers here (the instrumentors rely on it): nothing raises. A response that is
not what an extractor expects yields no result, and a failure inside the instrumentation is
logged once per place and swallowed, so the application sees exactly what the SDK returned or
raised.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.trace import Span, SpanKind, Status, StatusCode

_log = logging.getLogger("exporter.instrumentation")

EVENT_NAME = "provider.result"
SOURCE = "provider.source"
CODE = "provider.code"
SUBCODE = "provider.subcode"
MESSAGE = "provider.message"

# A provider code or subcode as providers write them: a short integer or identifier. Anything
# else (free text, a phone number in the wrong field) is not a code and is not recorded.
_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
MAX_MESSAGE_CHARS = 200
# Bodies larger than this are not read by the HTTP hooks: provider answers are small JSON.
MAX_BODY_BYTES = 256 * 1024

_warned: set[str] = set()


def warn_once(where: str, exc: BaseException) -> None:
    """Log an internal failure of the instrumentation once per ``where``; never raises."""
    if where not in _warned:
        _warned.add(where)
        _log.warning("codebook instrumentation: %s failed (%s: %s); the call is unaffected",
                     where, type(exc).__name__, exc)


def as_code(value: object) -> str | None:
    """``value`` as a code string, or None when it does not look like a code."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and _CODE.fullmatch(value.strip()):
        return value.strip()
    return None


@dataclass(frozen=True, slots=True)
class Result:
    """One provider result: what goes on a span or a ``provider.result`` event."""

    source: str
    code: str
    subcode: str | None = None
    message: str | None = None
    ok: bool = True

    def attributes(self) -> dict[str, str]:
        attrs = {SOURCE: self.source, CODE: self.code}
        if self.subcode is not None:
            attrs[SUBCODE] = self.subcode
        if self.message is not None:
            attrs[MESSAGE] = self.message[:MAX_MESSAGE_CHARS]
        return attrs


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result the call's span carries, and the results recorded as span events.

    ``attrs`` (derived, not compared) is ``span.attributes()``, built once: an outcome may be
    shared by many calls (see :func:`single`), and :func:`record` writes it as is.
    """

    span: Result
    events: tuple[Result, ...] = ()
    attrs: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "attrs", self.span.attributes())


# (source, code, ok) -> the Outcome of that one result: the usual success answers repeat, and
# building an Outcome per call costs a few dataclass frames. Bounded: cleared when full.
_SINGLES: dict[tuple[str, str, bool], Outcome] = {}
_MAX_SINGLES = 512


def single(source: str, code: str, ok: bool = True) -> Outcome:
    """The (shared, immutable) outcome of one result without subcode or message."""
    key = (source, code, ok)
    outcome = _SINGLES.get(key)
    if outcome is None:
        if len(_SINGLES) >= _MAX_SINGLES:
            _SINGLES.clear()
        outcome = _SINGLES[key] = Outcome(Result(source, code, ok=ok))
    return outcome


def outcome_of(results: Sequence[Result]) -> Outcome | None:
    """Several results: the span carries the first failing one (else the first), one event each.

    A single result goes on the span alone.
    """
    if not results:
        return None
    if len(results) == 1:
        only = results[0]
        if only.subcode is None and only.message is None:
            return single(only.source, only.code, only.ok)
        return Outcome(only)
    first = next((r for r in results if not r.ok), results[0])
    return Outcome(first, tuple(results) if len(results) > 1 else ())


def record(span: Span, outcome: Outcome) -> None:
    """Write ``outcome`` on ``span``: attributes for the span's result, one event per event."""
    span.set_attributes(outcome.attrs)
    for result in outcome.events:
        span.add_event(EVENT_NAME, result.attributes())


def is_client_span(span: Span) -> bool:
    """True for a recording span of kind CLIENT (an HTTP client span, or the app's own)."""
    return span.is_recording() and getattr(span, "kind", None) is SpanKind.CLIENT


def mark_failed(span: Span, exc: BaseException) -> None:
    """On a span the instrumentor started: the call raised (as HTTP client spans record it)."""
    span.set_attribute("error.type", type(exc).__qualname__)
    span.set_status(Status(StatusCode.ERROR, type(exc).__qualname__))


def http_attributes(method: str, host: str, port: int | None) -> dict[str, Any]:
    """The request attributes of a CLIENT span the instrumentor starts (no URL: it may hold
    credentials or recipients in its query)."""
    attrs: dict[str, Any] = {"http.request.method": method, "server.address": host}
    if port is not None:
        attrs["server.port"] = port
    return attrs
