"""Differential fuzzer for the C paths, bounded in time: each C path against its Python reference.

- ``exporter._wire`` (the sidecar's OTLP trace and logs wire path) against the message path:
  random, structure-aware ExportTraceServiceRequests (nested resource/scope/span levels,
  ``provider.result`` and other span events) and ExportLogsServiceRequests, provider
  attributes of every AnyValue kind, int codes differing only in high bits, whole doubles,
  bad ids, statuses, stale output attributes), then byte-level mutations: flips, cuts,
  insertions, splices, unknown fields of every wire type, and lengths and varints re-encoded
  padded (the longest forms upb accepts and the overlong ones it rejects). Every request must
  give the same reply, forwarded spans and metrics on both paths (tests/test_wire.py's
  ``assert_same``), and the walker must never take what the protobuf runtime rejects.
- ``exporter._hot`` (the span processor's C on_end) against the Python on_end: random
  attribute sets, statuses and attribute limits on SDK spans and on directly built spans,
  compared by tests/test_hot.py's ``Pair`` (spans out, statuses, metrics).

Run by hand for longer: ``python tests/fuzz/fuzz_paths.py --seconds 3600 [--seed N]``.
tests/fuzz/sanitize.sh runs it under ASan and UBSan in CI. Prints the iteration counts;
exits 1 on the first divergence, printing what reproduces it.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import time
import traceback
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent.parent
# This repository's exporter (as `python -m pytest` from its root imports it), and the tests.
sys.path[:0] = [str(TESTS.parent), str(TESTS)]

import test_hot  # noqa: E402
import test_wire  # noqa: E402
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (  # noqa: E402
    ExportTraceServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import (  # noqa: E402
    AnyValue,
    ArrayValue,
    KeyValue,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status  # noqa: E402
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits  # noqa: E402
from opentelemetry.trace import Status as SdkStatus  # noqa: E402
from opentelemetry.trace import StatusCode  # noqa: E402

from exporter import processor  # noqa: E402
from exporter.sidecar import otlp  # noqa: E402

KEYS = ["provider.source", "provider.code", "provider.subcode", "provider.message",
        "provider.category", "provider.owner", "provider.match", "error.type", "http.method",
        "", "provider.code "]
SOURCES = ["vonage.sms", "azure.acs.calling", "braze.rest", "alibaba.mobile_push", "nope",
           "test.sms", "tsms", "test.calls"]
STRINGS = ["0", "1", "2", "7", "487", "4242", "5,317", " 7 ", "", "NoBindInfo", "Throttled",
           "\uff11", "x" * 300]


def rand_code(r: random.Random) -> object:
    k = r.randrange(9)
    if k == 0:
        return r.choice(STRINGS)
    if k == 1:
        return r.randrange(-5, 700)
    if k == 2:
        u = (r.randrange(1, 1 << 20) << r.choice((21, 32, 40, 52))) & ((1 << 64) - 1)
        return u - (1 << 64) if u >= 1 << 63 else u  # an int64 differing in high bits only
    if k == 3:
        return r.randrange(-(2**63), 2**63)
    if k == 4:
        return float(r.randrange(1, 30000))  # zero low mantissa bits
    if k == 5:
        return r.choice((0.0, -0.0, 1.5, 1e308, float("inf"), r.random()))
    if k == 6:
        return r.choice((True, False))
    if k == 7:
        return r.randbytes(r.randrange(6))
    return r.choice((None, ["1"], "".join(chr(r.randrange(32, 0x3000)) for _ in range(4))))


def any_value(v: object) -> AnyValue:
    if isinstance(v, list):
        return AnyValue(array_value=ArrayValue(values=[any_value(x) for x in v]))
    return test_wire.value(v)


def rand_attrs_kv(r: random.Random, codes: list[object]) -> list[KeyValue]:
    attrs: list[KeyValue] = []
    if r.random() < 0.8:
        attrs.append(KeyValue(key="provider.source", value=any_value(r.choice(SOURCES))))
    if r.random() < 0.85:
        attrs.append(KeyValue(key="provider.code", value=any_value(r.choice(codes))))
    for _ in range(r.randrange(4)):
        attrs.append(KeyValue(key=r.choice(KEYS), value=any_value(rand_code(r))))
    r.shuffle(attrs)
    return attrs


def rand_event(r: random.Random, codes: list[object]) -> Span.Event:
    """A provider.result event most of the time (classified like a span), else another."""
    name = r.choice(["provider.result", "provider.result", "exception", "provider.results"])
    return Span.Event(time_unix_nano=r.randrange(1 << 40), name=name,
                      attributes=rand_attrs_kv(r, codes))


def rand_log_request(r: random.Random) -> bytes:
    codes = [rand_code(r) for _ in range(r.randrange(1, 6))]
    records = []
    for _ in range(r.randrange(1, 8)):
        record = test_wire.record([], tid=r.choice([b"", test_wire.GOOD_TID, b"\x01" * 15]),
                                  sid=r.choice([b"", test_wire.GOOD_SID, b"\x01" * 9]))
        record.attributes.extend(rand_attrs_kv(r, codes))
        records.append(record)
    return test_wire.logs_request(*records)


def rand_span(r: random.Random, codes: list[object]) -> Span:
    attrs = rand_attrs_kv(r, codes)
    tid = r.choice([test_wire.GOOD_TID, r.randbytes(16), bytes(16), b"\x01" * 15, b""])
    sid = r.choice([test_wire.GOOD_SID, r.randbytes(8), bytes(8), b"\x01" * 9, b""])
    span = Span(trace_id=tid, span_id=sid, name=r.choice(["send", "", "é"]), attributes=attrs,
                events=[rand_event(r, codes) for _ in range(r.choice([0, 0, 1, 3]))])
    status = r.choice([None, 0, 1, 2, 5])
    if status is not None:
        span.status.CopyFrom(Status(code=status, message="app"))  # type: ignore[arg-type]
    return span


def rand_request(r: random.Random) -> bytes:
    # A small pool of codes per request, so spans share groups (and hit the cache).
    codes = [rand_code(r) for _ in range(r.randrange(1, 6))]
    shape = [[[rand_span(r, codes) for _ in range(r.randrange(5))]
              for _ in range(r.randrange(4))] for _ in range(r.randrange(1, 4))]
    return test_wire.build(shape)


# -- byte mutations ---------------------------------------------------------------------------


def varint(v: int, pad: int = 0) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v == 0 and pad <= 0:
            out.append(b)
            return bytes(out)
        if v == 0:
            pad -= 1
        out.append(b | 0x80)


def read_varint(buf: bytes, i: int) -> tuple[int, int] | None:
    v = shift = 0
    while i < len(buf) and shift < 70:
        b = buf[i]
        i += 1
        v |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return v, i
    return None


def repad(r: random.Random, buf: bytes, depth: int = 0) -> bytes:
    """Re-encode ``buf``'s fields with padded lengths and varints (recursing into payloads
    that parse as messages); bytes it cannot read are kept as they are."""
    out = bytearray()
    i = 0
    while i < len(buf):
        tag = read_varint(buf, i)
        if tag is None:
            return bytes(out) + buf[i:]
        t, j = tag
        wt = t & 7
        if wt == 0:
            val = read_varint(buf, j)
            if val is None:
                return bytes(out) + buf[i:]
            v, k = val
            out += varint(t) + varint(v, r.choice((0, 0, 1, 9 - len(varint(v)))))
            i = k
        elif wt == 2:
            ln = read_varint(buf, j)
            if ln is None or ln[1] + ln[0] > len(buf):
                return bytes(out) + buf[i:]
            n, k = ln
            payload = buf[k:k + n]
            if depth < 8 and r.random() < 0.7:
                payload = repad(r, payload, depth + 1)
            # 0-4 padding bytes: a 5-byte length at most (upb's limit); rarely one more.
            pad = r.choice((0, 0, 1, 5 - len(varint(len(payload))) + (r.random() < 0.1)))
            out += varint(t) + varint(len(payload), max(pad, 0)) + payload
            i = k + n
        elif wt in (1, 5):
            size = 8 if wt == 1 else 4
            out += buf[i:j + size]
            i = j + size
        else:
            return bytes(out) + buf[i:]
    return bytes(out)


def unknown_field(r: random.Random) -> bytes:
    number = r.choice((16, 17, 100, 536870911, 2047))
    wt = r.choice((0, 1, 2, 5, 3, 4, 6, 7))
    tag = varint(number << 3 | wt, r.choice((0, 0, 1)))
    if wt == 0:
        return tag + r.choice((varint(r.randrange(1 << 64)), b"\xff" * 9 + b"\x7f",
                               b"\x80" * 10 + b"\x00"))
    if wt == 1:
        return tag + r.randbytes(8)
    if wt == 5:
        return tag + r.randbytes(4)
    if wt == 2:
        n = r.randrange(4)
        return tag + r.choice((varint(n), varint(n, 4), varint(n, 5))) + r.randbytes(n)
    return tag


def mutate(r: random.Random, body: bytes) -> bytes:
    b = bytearray(body)
    for _ in range(r.randrange(1, 4)):
        op = r.randrange(7)
        pos = r.randrange(len(b) + 1)
        if op == 0 and b:
            b[pos % len(b)] = r.randrange(256)
        elif op == 1:
            del b[len(b) - r.randrange(1, 9):]
        elif op == 2:
            b[pos:pos] = r.randbytes(r.randrange(1, 4))
        elif op == 3 and b:
            start = r.randrange(len(b))
            b[pos:pos] = b[start:start + r.randrange(1, 16)]
        elif op == 4:
            b = bytearray(repad(r, bytes(b)))
        elif op == 5:
            b[pos:pos] = unknown_field(r)
        else:
            b = bytearray(insert_in_a_span(r, bytes(b)))
    return bytes(b)


def ld(tag: int, payload: bytes) -> bytes:
    return bytes([tag]) + varint(len(payload)) + payload


def insert_in_a_span(r: random.Random, body: bytes) -> bytes:
    """Append an unknown field to a random span (lengths rewritten): the deepest level the
    walker reads, where upb must still reject what it rejects."""
    try:
        req = ExportTraceServiceRequest.FromString(body)
    except Exception:
        return body
    spans = [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
    if not spans:
        return body
    target = r.choice(spans)
    raw = target.SerializeToString() + unknown_field(r)
    try:
        target.Clear()
        target.MergeFromString(raw)
    except Exception:
        # upb refused it: build the bytes by hand (one resource, one scope, this span)
        return ld(0x0A, ld(0x12, ld(0x12, raw)))
    return req.SerializeToString()


# -- the two loops ----------------------------------------------------------------------------


def wire_body(r: random.Random) -> tuple[bytes, str]:
    signal = "logs" if r.random() < 0.25 else "traces"
    body = rand_log_request(r) if signal == "logs" else rand_request(r)
    return (mutate(r, body) if r.random() < 0.6 else body), signal


def wire_check(case: tuple[bytes, str]) -> bool:
    """Both paths agree on the request; whether the walker took it."""
    body, signal = case
    taken = (test_wire.wired_logs(body) if signal == "logs" else test_wire.wired(body)) is not None
    if taken:
        test_wire.PARSE[signal](body)  # the walker took it: it must parse
    test_wire.assert_same(body, signal)
    return taken


HOT_STATUSES = [None, SdkStatus(StatusCode.OK), SdkStatus(StatusCode.ERROR, "e"),
                SdkStatus(StatusCode.UNSET)]
HOT_SOURCES = ["test.sms", "tsms", "test.calls", "nobody.knows"]


def rand_attrs(r: random.Random) -> dict[str, Any]:
    attrs: dict[str, Any] = {"provider.source": r.choice([*HOT_SOURCES, rand_code(r)])}
    if r.random() < 0.85:
        attrs["provider.code"] = r.choice(["0", "1", "2", "7", "9", "503", 487, 999,
                                          rand_code(r)])
    for _ in range(r.randrange(3)):
        attrs[r.choice(KEYS)] = rand_code(r)
    return attrs


def sdk_value(v: object) -> object:
    """An attribute value the SDK keeps (others are dropped with a warning: still a case)."""
    return tuple(v) if isinstance(v, list) else v


def hot_case(r: random.Random) -> tuple[dict[str, Any], SdkStatus | None, int, bool]:
    attrs = {k: sdk_value(v) for k, v in rand_attrs(r).items() if v is not None}
    return attrs, r.choice(HOT_STATUSES), r.choice([0, 0, 2]), r.random() < 0.8


def hot_check(case: tuple[dict[str, Any], SdkStatus | None, int, bool],
              pair: test_hot.Pair) -> None:
    attrs, status, limit, sdk = case
    if sdk:
        span = test_hot.sdk_span(attrs, status,
                                 SpanLimits(max_span_attributes=limit) if limit else None)
    else:
        span = ReadableSpan(name="send", resource=test_hot.RESOURCE, attributes=attrs,
                            status=status or SdkStatus(StatusCode.UNSET))
    for _ in range(2):  # a miss, then a hit
        pair.check(span)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="time bound")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--only", choices=("wire", "hot"))
    args = parser.parse_args()
    logging.getLogger("opentelemetry").setLevel(logging.ERROR)  # dropped-attribute warnings
    if otlp._wire is None or processor._hot is None:
        print("fuzz: the C extensions are not built (pip install ., or run python -m pytest "
              "once, which places them beside the sources)", file=sys.stderr)
        return 2
    print(f"fuzz: {otlp._wire.__file__}, {processor._hot.__file__}")
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    r = random.Random(seed)
    deadline = time.monotonic() + args.seconds
    wire_n = wire_taken = hot_n = 0
    pair = test_hot.Pair()
    print(f"fuzz: seed {seed}, {args.seconds:.0f} s", flush=True)
    case: object = None
    try:
        while time.monotonic() < deadline:
            if args.only != "hot":
                for _ in range(20):
                    case = wire_body(r)
                    wire_taken += wire_check(case)
                    wire_n += 1
            if args.only != "wire":
                for _ in range(10):
                    case = hot_case(r)
                    hot_check(case, pair)  # type: ignore[arg-type]
                    hot_n += 1
                pair.same_metrics()
                if hot_n % 200 == 0:
                    pair = test_hot.Pair()
    except Exception:
        traceback.print_exc()
        shown = f"{case[1]} {case[0].hex()}" if isinstance(case, tuple) and isinstance(
            case[0], bytes) else repr(case)
        print(f"fuzz: DIVERGENCE after {wire_n} wire / {hot_n} hot cases (seed {seed}); "
              f"last case: {shown}", flush=True)
        return 1
    print(f"fuzz: ok, seed {seed}: {wire_n} wire-path requests ({wire_taken} taken by the "
          f"walker), {hot_n} hot-path spans, {wire_n + hot_n} iterations", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
