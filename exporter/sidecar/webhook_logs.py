"""OTLP log records for webhook events, written straight to protobuf bytes.

A webhook batch of 50 events becomes one ``ExportLogsServiceRequest`` of 50 records with about
twelve string attributes each. Building that through the protobuf message classes costs about
three times the rest of the handler (one Python object per ``KeyValue`` and ``AnyValue``), so
this module writes the wire format itself: the few fields used here are all length-delimited
strings, a varint and two fixed64 timestamps. The attributes that repeat across events
(``provider.*`` and the output attributes) are encoded once by the caller
(:func:`attribute_block`) and reused.

:func:`log_request` returns exactly the bytes of the message-built request for the same input
(``tests/test_webhook_logs.py`` compares the two, on examples and on generated strings).
Strings that are not valid UTF-8 (lone surrogates from JSON ``\\ud800`` escapes) have those
code points replaced by ``?``, as the message classes would refuse them.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Iterable, Sequence
from typing import NamedTuple

_FIXED64 = struct.Struct("<Q")


class LogEntry(NamedTuple):
    """One log record: times (Unix ns), severity, event name (also the body), attributes."""

    time_unix_nano: int
    observed_time_unix_nano: int
    severity_number: int
    severity_text: str
    event_name: str
    attributes: Sequence[tuple[str, str]]
    shared_block: bytes = b""  # attributes that repeat across records: attribute_block(...)


_SMALL = [bytes((i,)) for i in range(128)]


def _varint(n: int) -> bytes:
    if n < 128:
        return _SMALL[n]
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    n = len(payload)
    return tag + (_SMALL[n] if n < 128 else _varint(n)) + payload


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "replace")


def _any_string(value: str) -> bytes:
    """An ``AnyValue`` with ``string_value`` set (empty strings included, as ``oneof`` sets)."""
    return _field(b"\x0a", _utf8(value))


def _string(tag: bytes, text: str) -> bytes:
    """A proto3 string field: not written when empty."""
    return _field(tag, _utf8(text)) if text else b""


def _key_value(key: str, value: str) -> bytes:
    return _string(b"\x0a", key) + _field(b"\x12", _any_string(value))


_key_prefix: dict[str, bytes] = {}


def _attribute(key: str, value: str) -> bytes:
    """One ``attributes`` field (a ``KeyValue`` with a string value), ready to append."""
    prefix = _key_prefix.get(key)
    if prefix is None:
        prefix = _string(b"\x0a", key)
        if len(_key_prefix) < 256:  # attribute names are this module's callers' own: few
            _key_prefix[key] = prefix
    raw = value.encode("utf-8", "replace")
    n = len(raw)
    if n < 126:  # the usual case: one length byte for the value and its AnyValue
        kv = prefix + b"\x12" + _SMALL[n + 2] + b"\x0a" + _SMALL[n] + raw
    else:
        kv = prefix + _field(b"\x12", _field(b"\x0a", raw))
    return _field(b"\x32", kv)


def attribute_block(pairs: Iterable[tuple[str, str]]) -> bytes:
    """Encoded log-record attributes, to reuse as ``LogEntry.shared_block`` (placed first)."""
    return b"".join([_attribute(k, v) for k, v in pairs])


_frames: dict[tuple[int, str, str], tuple[bytes, bytes]] = {}


def _frame(number: int, text: str, name: str) -> tuple[bytes, bytes]:
    """The fields before the attributes (severity, body) and the event name after them."""
    key = (number, text, name)
    hit = _frames.get(key)
    if hit is None:
        head = (b"\x10" + _varint(number) if number else b"") + _string(b"\x1a", text)
        head += _field(b"\x2a", _any_string(name))
        if len(_frames) >= 1024:
            _frames.clear()
        hit = _frames[key] = (head, _string(b"\x62", name))
    return hit


def _record(entry: LogEntry) -> bytes:
    # Field order and proto3 defaults (zero and empty scalars are not written) as protobuf does.
    head, tail = _frame(entry.severity_number, entry.severity_text, entry.event_name)
    when, observed = entry.time_unix_nano, entry.observed_time_unix_nano
    parts = [
        b"\x09" + _FIXED64.pack(when) if when else b"",
        head,
        entry.shared_block,
        *[_attribute(k, v) for k, v in entry.attributes],
        b"\x59" + _FIXED64.pack(observed) if observed else b"",
        tail,
    ]
    return b"".join(parts)


def log_request(
    resource: Iterable[tuple[str, str]], scope_name: str, entries: Iterable[LogEntry]
) -> bytes:
    """A serialized ``ExportLogsServiceRequest``: one resource, one scope, ``entries``."""
    res, scope = _head(tuple(resource), scope_name)
    records = b"".join([_field(b"\x12", _record(e)) for e in entries])
    resource_logs = res + _field(b"\x12", scope + records)
    return _field(b"\x0a", resource_logs)


@functools.lru_cache(maxsize=16)
def _head(resource: tuple[tuple[str, str], ...], scope_name: str) -> tuple[bytes, bytes]:
    """The encoded resource field and scope of a request (the same for every request)."""
    res = b"".join(_field(b"\x0a", _key_value(k, v)) for k, v in resource)
    return _field(b"\x0a", res), _field(b"\x0a", _string(b"\x0a", scope_name))
