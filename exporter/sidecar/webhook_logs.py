"""OTLP log records for webhook events, written straight to protobuf bytes.

A webhook batch of 50 events becomes one ``ExportLogsServiceRequest`` of 50 records with about
twelve string attributes each. Building that through the protobuf message classes costs about
three times the rest of the handler (one Python object per ``KeyValue`` and ``AnyValue``), so
this module writes the wire format itself: the few fields used here are all length-delimited
strings, a varint and two fixed64 timestamps. The attributes that repeat across events
(``provider.*`` and the output attributes) are encoded once by the caller
(:func:`attribute_block`) and reused; so are the fields records of one event type and code
share in a request (:func:`record_frame`): :func:`encode_record` adds a record's time and
own ids, :func:`log_request_records` wraps the records (the handler's path).

:func:`log_request` (built on those three) returns exactly the bytes of the message-built
request for the same input (``tests/test_webhook_logs.py`` compares the two, on examples and on
generated strings).
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


def _prefix(key: str) -> bytes:
    """The encoded ``key`` field of a ``KeyValue`` (remembered: attribute names are few)."""
    prefix = _string(b"\x0a", key)
    if len(_key_prefix) < 256:  # attribute names are this module's callers' own: few
        _key_prefix[key] = prefix
    return prefix


def _attribute(key: str, value: str) -> bytes:
    """One ``attributes`` field (a ``KeyValue`` with a string value), ready to append."""
    prefix = _key_prefix.get(key) or _prefix(key)
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


def time_field(time_unix_nano: int) -> bytes:
    """The encoded ``time_unix_nano`` of a record (nothing for 0, as protobuf does)."""
    return b"\x09" + _FIXED64.pack(time_unix_nano) if time_unix_nano else b""


def record_frame(
    severity_number: int,
    severity_text: str,
    event_name: str,
    shared_block: bytes,
    observed_time_unix_nano: int,
) -> tuple[bytes, bytes]:
    """The encoded fields of a record before its own attributes and after them.

    Records that share these fields (the events of a request with one code) share the frame;
    :func:`encode_record` puts a record's time and own attributes into it.
    """
    head, tail = _frame(severity_number, severity_text, event_name)
    observed = observed_time_unix_nano
    return head + shared_block, (b"\x59" + _FIXED64.pack(observed) if observed else b"") + tail


def encode_record(
    time: bytes, frame: tuple[bytes, bytes], attributes: Iterable[tuple[str, str]]
) -> bytes:
    """One ``log_records`` field of a ``ScopeLogs``: ``time`` (:func:`time_field`), ``frame``
    (:func:`record_frame`) and the record's own string ``attributes`` after the shared ones.
    """
    # Field order and proto3 defaults (zero and empty scalars are not written) as protobuf does.
    parts = [time, frame[0]]
    for key, value in attributes:
        raw = value.encode("utf-8", "replace")
        heads = _heads.get(key) or _key_heads(key)
        n = len(raw)
        if n < len(heads):  # the usual case: a short value, its field head is ready
            parts += (heads[n], raw)
        else:
            parts.append(_attribute(key, value))
    parts.append(frame[1])
    body = b"".join(parts)
    n = len(body)
    if n < 128:
        return b"\x12" + _SMALL[n] + body
    head = _record_heads.get(n)
    if head is None:
        head = b"\x12" + _varint(n)
        if n < 16384:  # bounded: a record's length fits two bytes here
            _record_heads[n] = head
    return head + body


_heads: dict[str, list[bytes]] = {}
_record_heads: dict[int, bytes] = {}


def _key_heads(key: str) -> list[bytes]:
    """For an attribute name: the encoded field head up to the value, by the value's length,
    for the lengths where every length fits one byte (remembered, as :func:`_prefix` is).
    """
    prefix = _key_prefix.get(key) or _prefix(key)
    heads = []
    for n in range(124 - len(prefix)):  # the KeyValue's own length stays under 128
        heads.append(b"\x32" + _SMALL[len(prefix) + n + 4] + prefix + b"\x12" + _SMALL[n + 2]
                     + b"\x0a" + _SMALL[n])
    if len(_heads) < 256:
        _heads[key] = heads
    return heads


def log_request_records(
    resource: Iterable[tuple[str, str]], scope_name: str, records: Iterable[bytes]
) -> bytes:
    """A serialized ``ExportLogsServiceRequest`` of :func:`encode_record` outputs."""
    res, scope = _head(tuple(resource), scope_name)
    resource_logs = res + _field(b"\x12", scope + b"".join(records))
    return _field(b"\x0a", resource_logs)


def log_request(
    resource: Iterable[tuple[str, str]], scope_name: str, entries: Iterable[LogEntry]
) -> bytes:
    """A serialized ``ExportLogsServiceRequest``: one resource, one scope, ``entries``."""
    records = [
        encode_record(
            time_field(e.time_unix_nano),
            record_frame(
                e.severity_number, e.severity_text, e.event_name, e.shared_block,
                e.observed_time_unix_nano,
            ),
            e.attributes,
        )
        for e in entries
    ]
    return log_request_records(resource, scope_name, records)


@functools.lru_cache(maxsize=16)
def _head(resource: tuple[tuple[str, str], ...], scope_name: str) -> tuple[bytes, bytes]:
    """The encoded resource field and scope of a request (the same for every request)."""
    res = b"".join(_field(b"\x0a", _key_value(k, v)) for k, v in resource)
    return _field(b"\x0a", res), _field(b"\x0a", _string(b"\x0a", scope_name))
