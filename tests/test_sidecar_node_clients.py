"""Real OpenTelemetry JS SDK clients (Node.js) send spans and metrics to a real ``codebook serve``.

The client, ``tests/node_client/client.js``, uses the official JS SDK and OTLP exporters
(pinned in ``tests/node_client/package-lock.json``): their own protobuf encoder, their OTLP/JSON
conventions, their gzip, and grpc-js. Every transport the exporters offer is exercised against
the sidecar's receivers, and what the sidecar forwards is checked span by span on a gRPC
upstream. The tests need ``node`` and ``npm ci --prefix tests/node_client``; without them they
skip, except under ``CI=true`` (``.ci/run`` installs both), where they fail.
"""

from __future__ import annotations

import itertools
import json
import os
import selectors
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from otlp_upstream import GrpcUpstream
from sidecar_proc import SidecarProcess, wait_for

pytestmark = pytest.mark.slow

NODE_CLIENT = Path(__file__).resolve().parent / "node_client"
CLIENT_JS = NODE_CLIENT / "client.js"
TRANSPORTS = ("http/protobuf", "http/json", "grpc")
COMPRESSIONS = ("none", "gzip")
MATRIX = list(itertools.product(TRANSPORTS, COMPRESSIONS))
MATRIX_IDS = [f"{t.replace('/', '-')}-{c}" for t, c in MATRIX]
CLIENT_TIMEOUT = 120  # seconds for one client run (startup, exports and their retries)

STATUS_UNSET, STATUS_OK, STATUS_ERROR = 0, 1, 2


@pytest.fixture(scope="module")
def node() -> str:
    """The ``node`` binary; skip (fail under CI=true) without it or the installed client."""
    path = shutil.which("node")
    problem = None
    if path is None:
        problem = "node is not installed (Debian packages: nodejs npm)"
    elif not all((NODE_CLIENT / "node_modules" / dep / "package.json").is_file()
                 for dep in json.loads((NODE_CLIENT / "package.json").read_text())["dependencies"]):
        problem = "the Node client is not installed: run npm ci --prefix tests/node_client"
    if problem is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(problem)
        pytest.skip(problem)
    assert path is not None
    return path


@pytest.fixture(scope="module")
def upstream() -> Iterator[GrpcUpstream]:
    up = GrpcUpstream()
    yield up
    up.server.stop(None)


@pytest.fixture(scope="module")
def sidecar(
    tmp_path_factory: pytest.TempPathFactory, upstream: GrpcUpstream
) -> Iterator[SidecarProcess]:
    config = {"forward": {"endpoint": f"127.0.0.1:{upstream.port}", "protocol": "grpc"}}
    with SidecarProcess(tmp_path_factory.mktemp("node-clients"), config) as proc:
        yield proc


def _env(home: Path) -> dict[str, str]:
    """A minimal environment: no OTEL_* settings and no proxies (grpc-js honours them)."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "NO_PROXY": "127.0.0.1",
        "no_proxy": "127.0.0.1",
    }


def _endpoint(sidecar: SidecarProcess, transport: str) -> str:
    return f"http://{sidecar.grpc}" if transport == "grpc" else sidecar.http


def _args(node: str, signal: str, endpoint: str, transport: str, compression: str,
          plan: Any, run: str) -> list[str]:
    return [node, str(CLIENT_JS), "--signal", signal, "--endpoint", endpoint,
            "--transport", transport, "--compression", compression,
            "--plan", json.dumps(plan), "--run", run]


# -- spans ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """Spans the client sends, and what the sidecar must make of them."""

    name: str
    count: int
    attrs: dict[str, Any]
    # provider_codes_total labels (None: not counted) and the output attributes forwarded.
    labels: dict[str, str] | None = None
    output: dict[str, str] = field(default_factory=dict)
    status: str | None = None  # what the client sets ("ok" / "error"); None leaves UNSET
    status_message: str | None = None
    want_status: tuple[int, str] = (STATUS_UNSET, "")
    child: bool = False
    link_root: bool = False
    events: tuple[dict[str, Any], ...] = ()


def _classified(source: str, code: str, subcode: str, category: str, severity: str,
                retryable: str, owner: str, match: str, error: bool) -> dict[str, Any]:
    labels = {"source": source, "code": code, "subcode": subcode, "category": category,
              "severity": severity, "retryable": retryable, "owner": owner}
    output = {"provider.category": category, "provider.severity": severity,
              "provider.retryable": retryable, "provider.owner": owner, "provider.match": match}
    if error:
        output["error.type"] = category
    return {"labels": labels, "output": output}


THROTTLED = _classified("vonage.sms", "1", "", "throttled", "warning", "with_backoff",
                        "our_app", "exact", True)
INVALID = _classified("vonage.sms", "6", "", "invalid_request", "error", "no", "our_app",
                      "exact", True)
APP_ATTRS = {"app.note": "kept ✓ 送信", "app.n": 7, "app.ratio": 0.25, "app.flag": True,
             "app.tags": ["a", "b"]}
# Codes on events are the event's business, not the span's: never counted or moved.
CODED_EVENT = {"name": "retry", "attrs": {"provider.source": "vonage.sms", "provider.code": "9"}}

CASES = [
    # A JS number that is an integer goes out as AnyValue.int_value (checked below).
    Case("throttled-int", 40, {"provider.source": "vonage.sms", "provider.code": 1, **APP_ATTRS},
         **THROTTLED, want_status=(STATUS_ERROR, "provider code: throttled"), link_root=True,
         events=(CODED_EVENT, {"name": "sent", "attrs": {"n": 1}})),
    Case("throttled-str-ünï", 30, {"provider.source": "vonage.sms", "provider.code": "1"},
         **THROTTLED, want_status=(STATUS_ERROR, "provider code: throttled")),
    Case("success-int", 20, {"provider.source": "vonage.sms", "provider.code": 0},
         **_classified("vonage.sms", "0", "", "success", "info", "no", "none", "exact", False)),
    # The application set the status: it is never changed, error or not.
    Case("invalid-status-ok", 5, {"provider.source": "vonage.sms", "provider.code": "6"},
         **INVALID, status="ok", want_status=(STATUS_OK, "")),
    Case("invalid-status-error", 3, {"provider.source": "vonage.sms", "provider.code": 6},
         **INVALID, status="error", status_message="app says no",
         want_status=(STATUS_ERROR, "app says no")),
    # The message decides (folded for case and space) before the HTTP status.
    Case("braze-message", 3, {"provider.source": "braze.rest", "provider.code": 400,
                              "provider.message": "max input length  EXCEEDED"},
         **_classified("braze.rest", "400", "", "payload_too_large", "error", "no", "our_app",
                       "exact", True),
         want_status=(STATUS_ERROR, "provider code: payload_too_large")),
    # code + subcode, both JS integers, on child spans.
    Case("acs-int-subcode", 7,
         {"provider.source": "azure.acs.calling", "provider.code": 408, "provider.subcode": 10057},
         **_classified("azure.acs.calling", "408", "10057", "recipient_unreachable", "info",
                       "yes", "end_user", "exact", True),
         want_status=(STATUS_ERROR, "provider code: recipient_unreachable"), child=True),
    Case("acs-str-subcode", 4,
         {"provider.source": "azure.acs.calling", "provider.code": "487", "provider.subcode": "0"},
         **_classified("azure.acs.calling", "487", "0", "call_ended_normal", "info", "no",
                       "none", "exact", False), child=True),
    # A negative integer: a ten-byte varint from the JS protobuf writer.
    Case("negative-int", 3, {"provider.source": "alibaba.mobile_push", "provider.code": -1},
         **_classified("alibaba.mobile_push", "-1", "", "pending", "info", "no", "none",
                       "exact", False)),
    Case("unmapped", 2, {"provider.source": "vonage.sms", "provider.code": "4242"},
         **_classified("vonage.sms", "4242", "", "unknown", "warning", "with_backoff",
                       "unknown", "unmapped", False)),
    # A JS number that is not an integer goes out as double_value: no code looks like it.
    Case("double", 2, {"provider.source": "vonage.sms", "provider.code": 1.5},
         **_classified("vonage.sms", "_OTHER", "", "unknown", "warning", "with_backoff",
                       "unknown", "unmapped", False)),
    # Output attributes the application already set are replaced, not duplicated.
    Case("stale-output", 2, {"provider.source": "vonage.sms", "provider.code": "9",
                             "provider.category": "success", "provider.match": "class"},
         **_classified("vonage.sms", "9", "", "quota_exhausted", "critical", "no",
                       "our_config", "exact", True),
         want_status=(STATUS_ERROR, "provider code: quota_exhausted")),
    Case("no-code", 10, {"app.note": "plain"}, events=(CODED_EVENT,), link_root=True),
    Case("source-only", 2, {"provider.source": "vonage.sms"}),
    Case("code-only", 2, {"provider.code": "1"}),
]
ROOT_SPANS = 1  # the client's "root" span, parent of the child cases
TOTAL_SPANS = sum(c.count for c in CASES) + ROOT_SPANS
COUNTED = sum(c.count for c in CASES if c.labels is not None)


def _plan() -> list[dict[str, Any]]:
    plan = []
    for c in CASES:
        spec: dict[str, Any] = {"name": c.name, "count": c.count, "attrs": c.attrs,
                                "child": c.child, "linkRoot": c.link_root,
                                "events": list(c.events)}
        if c.status is not None:
            spec["status"] = c.status
            spec["statusMessage"] = c.status_message
        plan.append(spec)
    return plan


def _expected_codes() -> dict[frozenset[tuple[str, str]], int]:
    out: dict[frozenset[tuple[str, str]], int] = {}
    for c in CASES:
        if c.labels is not None:
            key = frozenset(c.labels.items())
            out[key] = out.get(key, 0) + c.count
    return out


def _codes(sidecar: SidecarProcess) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: v for (name, labels), v in sidecar.scrape().items()
            if name == "provider_codes_total"}


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


def _forwarded(upstream: GrpcUpstream, run: str) -> list[dict[str, Any]]:
    """Every span the upstream received from client run ``run``, decoded."""
    out = []
    for req in list(upstream.requests):
        for rs in req.resource_spans:
            resource = {kv.key: _value(kv.value) for kv in rs.resource.attributes}
            if resource.get("codebook.test.run") != run:
                continue
            for ss in rs.scope_spans:
                for span in ss.spans:
                    out.append({
                        "resource": resource,
                        "scope": (ss.scope.name, ss.scope.version),
                        "name": span.name,
                        "traceId": span.trace_id.hex(),
                        "spanId": span.span_id.hex(),
                        "parentSpanId": span.parent_span_id.hex(),
                        "flags": span.flags,
                        "kind": span.kind,
                        "start": str(span.start_time_unix_nano),
                        "end": str(span.end_time_unix_nano),
                        "keys": [kv.key for kv in span.attributes],
                        "kinds": {kv.key: kv.value.WhichOneof("value") for kv in span.attributes},
                        "attrs": {kv.key: _value(kv.value) for kv in span.attributes},
                        "status": (span.status.code, span.status.message),
                        "events": [{"name": e.name, "time": str(e.time_unix_nano),
                                    "attrs": {kv.key: _value(kv.value) for kv in e.attributes}}
                                   for e in span.events],
                        "links": [{"traceId": ln.trace_id.hex(), "spanId": ln.span_id.hex(),
                                   "attrs": {kv.key: _value(kv.value) for kv in ln.attributes}}
                                  for ln in span.links],
                        "link_flags": [ln.flags for ln in span.links],
                    })
    return out


_runs = itertools.count()


@pytest.mark.parametrize(("transport", "compression"), MATRIX, ids=MATRIX_IDS)
def test_node_spans_are_counted_enriched_and_forwarded(
    node: str, sidecar: SidecarProcess, upstream: GrpcUpstream, tmp_path: Path,
    transport: str, compression: str,
) -> None:
    """Spans from the JS SDK count exactly by classification and reach the upstream enriched."""
    run = f"spans-{next(_runs)}-{transport}-{compression}"
    side = "grpc" if transport == "grpc" else "http"
    codes_before = _codes(sidecar)
    received = sidecar.value("codebook_telemetry_received_total", signal="traces",
                             transport=side)
    rejected = sidecar.total("codebook_telemetry_rejected_total", signal="traces")
    unmapped = sidecar.value("codebook_unmapped_codes_total", source="vonage.sms")
    forwarded = sidecar.value("codebook_telemetry_forwarded_total", signal="traces")
    dropped = sidecar.total("codebook_telemetry_dropped_total", signal="traces")

    proc = subprocess.run(
        _args(node, "traces", _endpoint(sidecar, transport), transport, compression, _plan(),
              run),
        cwd=NODE_CLIENT, env=_env(tmp_path), capture_output=True, text=True,
        timeout=CLIENT_TIMEOUT, check=False,
    )
    assert proc.returncode == 0, f"node client failed:\n{proc.stderr}\n{sidecar.log()}"
    sent = json.loads(proc.stdout.strip().splitlines()[-1])["spans"]
    assert len(sent) == TOTAL_SPANS
    assert len({s["spanId"] for s in sent}) == TOTAL_SPANS

    # Counting: every span with a source and a code once, by its classification; no other.
    codes_after = _codes(sidecar)
    want = _expected_codes()
    for labels in set(codes_before) | set(codes_after):
        growth = codes_after.get(labels, 0.0) - codes_before.get(labels, 0.0)
        assert growth == want.get(labels, 0), dict(labels)
    assert sum(codes_after.values()) - sum(codes_before.values()) == COUNTED
    assert sidecar.value("codebook_telemetry_received_total", signal="traces",
                         transport=side) == received + TOTAL_SPANS
    assert sidecar.total("codebook_telemetry_rejected_total", signal="traces") == rejected
    assert sidecar.value("codebook_unmapped_codes_total", source="vonage.sms") == unmapped + 4

    # Forwarding: every span exactly once, ids, times and untouched attributes intact.
    wait_for(lambda: len(_forwarded(upstream, run)) >= TOTAL_SPANS, timeout=20)
    assert wait_for(lambda: sidecar.value("codebook_telemetry_forwarded_total",
                                          signal="traces") == forwarded + TOTAL_SPANS)
    assert sidecar.total("codebook_telemetry_dropped_total", signal="traces") == dropped
    got = _forwarded(upstream, run)
    assert len(got) == TOTAL_SPANS
    by_id = {s["spanId"]: s for s in got}
    assert set(by_id) == {s["spanId"] for s in sent}
    cases = {c.name: c for c in CASES}
    root = next(s for s in sent if s["name"] == "root")
    for s in sent:
        out = by_id[s["spanId"]]
        for key in ("name", "traceId", "parentSpanId", "start", "end", "events", "links"):
            assert out[key] == s[key], (s["name"], key)
        assert out["resource"] == {"service.name": "codebook-node-client",
                                   "codebook.test.transport": transport,
                                   "codebook.test.compression": compression,
                                   "codebook.test.run": run}, out["resource"]
        assert out["scope"] == ("codebook-node-test", "1.0.0")
        # JS-SDK-specific fields: W3C flags with the OTLP has-is-remote bit (sampled, local),
        # and the kind (INTERNAL: the SDK's default, sent as 1).
        assert out["flags"] == 0x101
        assert out["link_flags"] == [0x101] * len(out["links"])
        assert out["kind"] == 1
        assert len(out["keys"]) == len(set(out["keys"])), out["keys"]
        if s["name"] == "root":
            assert out["attrs"] == {}
            assert out["status"] == (STATUS_UNSET, "")
            continue
        case = cases[s["name"]]
        assert s["attrs"] == case.attrs
        assert out["attrs"] == {**case.attrs, **case.output}, s["name"]
        assert out["status"] == case.want_status, s["name"]
        assert out["parentSpanId"] == (root["spanId"] if case.child else "")
        assert [(e["name"], e["attrs"]) for e in out["events"]] == [
            (e["name"], e["attrs"]) for e in case.events]
        links = [{"traceId": root["traceId"], "spanId": root["spanId"],
                  "attrs": {"link.to": "root"}}] if case.link_root else []
        assert out["links"] == links
        for key, value in case.attrs.items():  # how the JS SDK encoded each value
            kind = {str: "string_value", bool: "bool_value", int: "int_value",
                    float: "double_value", list: "array_value"}[type(value)]
            assert out["kinds"][key] == kind, (s["name"], key)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_node_invalid_spans_get_partial_success(
    node: str, sidecar: SidecarProcess, upstream: GrpcUpstream, tmp_path: Path, transport: str
) -> None:
    """Spans with an all-zero span id are dropped and counted as rejected, the JS exporter
    reads the partial-success reply (protobuf, JSON or gRPC), and the valid spans of the same
    request are counted and forwarded as usual."""
    run = f"partial-{next(_runs)}-{transport}"
    side = "grpc" if transport == "grpc" else "http"
    coded = {"provider.source": "vonage.sms", "provider.code": 1}
    plan = [{"name": "good", "count": 5, "attrs": coded},
            {"name": "bad-coded", "count": 3, "attrs": coded, "zeroSpanId": True},
            {"name": "bad-plain", "count": 2, "attrs": {}, "zeroSpanId": True}]
    throttled = THROTTLED["labels"]
    codes = sidecar.value("provider_codes_total", **throttled)
    received = sidecar.value("codebook_telemetry_received_total", signal="traces",
                             transport=side)
    rejected = sidecar.value("codebook_telemetry_rejected_total", signal="traces",
                             transport=side, reason="invalid_item")
    forwarded = sidecar.value("codebook_telemetry_forwarded_total", signal="traces")
    proc = subprocess.run(
        [*_args(node, "traces", _endpoint(sidecar, transport), transport, "none", plan, run),
         "--partial-ok", "1"],
        cwd=NODE_CLIENT, env=_env(tmp_path), capture_output=True, text=True,
        timeout=CLIENT_TIMEOUT, check=False,
    )
    assert proc.returncode == 0, f"node client failed:\n{proc.stderr}\n{sidecar.log()}"
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    # One request, one reply; rejectedSpans is an int64 (a string in OTLP/JSON).
    assert [(int(p["rejectedSpans"]), p["errorMessage"]) for p in result["partialSuccess"]] == [
        (5, "spans need a 16-byte trace_id and an 8-byte span_id, not all zero")]
    assert sidecar.value("provider_codes_total", **throttled) == codes + 5
    assert sidecar.value("codebook_telemetry_received_total", signal="traces",
                         transport=side) == received + 10
    assert sidecar.value("codebook_telemetry_rejected_total", signal="traces", transport=side,
                         reason="invalid_item") == rejected + 5
    assert wait_for(lambda: sidecar.value("codebook_telemetry_forwarded_total",
                                          signal="traces") == forwarded + 5)
    good = {s["spanId"] for s in result["spans"] if s["name"] == "good"}
    got = wait_for(lambda: _forwarded(upstream, run))
    assert len(got) == 5
    assert {s["spanId"] for s in got} == good
    assert all(s["attrs"]["provider.category"] == "throttled" for s in got)


# -- metrics ----------------------------------------------------------------------------------


def _read_event(proc: subprocess.Popen[str], sel: selectors.BaseSelector,
                deadline: float) -> dict[str, Any]:
    """The client's next JSON line on stdout, within ``deadline``; fail on exit or timeout."""
    assert proc.stdout is not None
    buf = ""
    while "\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"node client printed no event in time (so far: {buf!r})")
        if not sel.select(min(left, 0.5)):
            continue
        chunk = os.read(proc.stdout.fileno(), 4096).decode()
        if not chunk:
            proc.wait(10)
            assert proc.stderr is not None
            raise AssertionError(f"node client exited {proc.returncode}:\n{proc.stderr.read()}")
        buf += chunk
    line, rest = buf.split("\n", 1)
    assert rest == "", rest
    event: dict[str, Any] = json.loads(line)
    return event


def _metric_plan(prefix: str) -> list[list[dict[str, Any]]]:
    throttled = {"provider.source": "vonage.sms", "provider.code": "1"}
    unreachable = {"provider.source": "azure.acs.calling", "provider.code": 408,
                   "provider.subcode": 10057}
    return [
        [
            {"instrument": f"{prefix}.attempts", "value": 3, "attrs": {**throttled, "tenant": "a"}},
            # another stream folding into the same labels
            {"instrument": f"{prefix}.attempts", "value": 4, "attrs": {**throttled, "tenant": "b"}},
            {"instrument": f"{prefix}.sends", "kind": "int_counter", "value": 2,
             "attrs": {"provider.source": "vonage.sms", "provider.code": 1}},
            {"instrument": f"{prefix}.latency", "kind": "histogram", "value": 10,
             "attrs": unreachable},
            {"instrument": f"{prefix}.latency", "kind": "histogram", "value": 20,
             "attrs": unreachable},
            {"instrument": f"{prefix}.plain", "value": 1, "attrs": {"tenant": "a"}},
        ],
        [
            {"instrument": f"{prefix}.attempts", "value": 5, "attrs": {**throttled, "tenant": "a"}},
            {"instrument": f"{prefix}.sends", "kind": "int_counter", "value": 1,
             "attrs": {"provider.source": "vonage.sms", "provider.code": 1}},
            {"instrument": f"{prefix}.latency", "kind": "histogram", "value": 30,
             "attrs": unreachable},
        ],
    ]


POINTS_PER_EXPORT = 5  # attempts (two streams), sends, latency, plain: cumulative, every time
EXPORTS = 3  # two force-flushes and the final export of MeterProvider.shutdown()


METRIC_MATRIX = [(t, c, "cumulative") for t, c in MATRIX] + [
    (t, "none", "delta") for t in TRANSPORTS]
METRIC_IDS = [f"{t.replace('/', '-')}-{c}-{tm}" for t, c, tm in METRIC_MATRIX]


@pytest.mark.parametrize(("transport", "compression", "temporality"), METRIC_MATRIX,
                         ids=METRIC_IDS)
def test_node_metrics_with_codes_appear_on_metrics(
    node: str, sidecar: SidecarProcess, tmp_path: Path, transport: str, compression: str,
    temporality: str,
) -> None:
    """JS SDK counters and histograms carrying codes show on /metrics with the code labels,
    exactly: cumulative points count only their growth, delta points add."""
    slug = f"node_{transport.replace('/', '_')}_{compression}_{temporality}"
    throttled = THROTTLED["labels"]
    unreachable = {"source": "azure.acs.calling", "code": "408", "subcode": "10057",
                   "category": "recipient_unreachable", "severity": "info",
                   "retryable": "yes", "owner": "end_user"}
    side = "grpc" if transport == "grpc" else "http"
    received = sidecar.value("codebook_telemetry_received_total", signal="metrics",
                             transport=side)
    rejected = sidecar.total("codebook_telemetry_rejected_total", signal="metrics")
    proc = subprocess.Popen(
        [*_args(node, "metrics", _endpoint(sidecar, transport), transport, compression,
                _metric_plan(slug), slug), "--temporality", temporality],
        cwd=NODE_CLIENT, env=_env(tmp_path), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )
    sel = selectors.DefaultSelector()
    try:
        assert proc.stdout is not None and proc.stdin is not None
        sel.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + CLIENT_TIMEOUT
        # forceFlush resolves once the sidecar has answered: the points are counted by then.
        assert _read_event(proc, sel, deadline) == {"event": "flushed", "step": 0}
        assert sidecar.value(f"{slug}_attempts_total", **throttled) == 7
        assert sidecar.value(f"{slug}_sends_total", **throttled) == 2
        assert sidecar.value(f"{slug}_latency_count_total", **unreachable) == 2
        proc.stdin.write("next\n")
        proc.stdin.flush()
        assert _read_event(proc, sel, deadline) == {"event": "flushed", "step": 1}
        assert sidecar.value(f"{slug}_attempts_total", **throttled) == 12
        assert sidecar.value(f"{slug}_sends_total", **throttled) == 3
        assert sidecar.value(f"{slug}_latency_count_total", **unreachable) == 3
        proc.stdin.close()
        code = proc.wait(max(1.0, deadline - time.monotonic()))
        assert proc.stderr is not None
        assert code == 0, f"node client exited {code}:\n{proc.stderr.read()}"
    finally:
        sel.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None and not stream.closed:
                stream.close()
    scrape = sidecar.scrape()
    # The shutdown's export repeats the cumulative points (no growth) or has no new delta.
    # A metric without codes is not exposed; the coded ones only under the code labels.
    assert not [k for k in scrape if k[0].startswith(f"{slug}_plain")]
    ours = {k: v for k, v in scrape.items() if k[0].startswith(slug)}
    assert ours == {
        (f"{slug}_attempts_total", frozenset(throttled.items())): 12,
        (f"{slug}_sends_total", frozenset(throttled.items())): 3,
        (f"{slug}_latency_count_total", frozenset(unreachable.items())): 3,
    }
    if temporality == "cumulative":
        assert sidecar.value("codebook_telemetry_received_total", signal="metrics",
                             transport=side) == received + EXPORTS * POINTS_PER_EXPORT
    assert sidecar.total("codebook_telemetry_rejected_total", signal="metrics") == rejected


@pytest.mark.parametrize("signal", ["traces", "metrics"])
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_node_client_fails_on_export_failure(
    node: str, sidecar: SidecarProcess, tmp_path: Path, transport: str, signal: str
) -> None:
    """The harness itself: an export that fails makes the client exit non-zero, so a request
    the sidecar refused could never pass as sent. Over HTTP the sidecar answers 404 (a wrong
    path: not retryable); over gRPC nobody listens on the port."""
    if transport == "grpc":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            endpoint = f"http://127.0.0.1:{s.getsockname()[1]}"
    else:
        endpoint = f"{sidecar.http}/not-otlp"
    plan: Any = ([{"name": "x", "attrs": {"provider.source": "vonage.sms", "provider.code": 1}}]
                 if signal == "traces" else [[{"instrument": "x", "value": 1}]])
    proc = subprocess.run(
        _args(node, signal, endpoint, transport, "none", plan, "refused"),
        cwd=NODE_CLIENT, env=_env(tmp_path), capture_output=True, text=True,
        timeout=CLIENT_TIMEOUT, check=False,
    )
    assert proc.returncode == 1, proc.stderr
    assert "export failed" in proc.stderr
    assert '"event"' not in proc.stdout


# -- span events and log records ----------------------------------------------------------------

SUCCESS = _classified("vonage.sms", "0", "", "success", "info", "no", "none", "exact", False)
RESULT_1 = {"name": "provider.result", "attrs": {"provider.source": "vonage.sms",
                                                 "provider.code": 1}}
RESULT_0 = {"name": "provider.result", "attrs": {"provider.source": "vonage.sms",
                                                 "provider.code": "0"}}


def _growth(before: dict[frozenset[tuple[str, str]], float],
            after: dict[frozenset[tuple[str, str]], float]) -> dict[frozenset[Any], float]:
    return {k: after.get(k, 0.0) - before.get(k, 0.0) for k in set(before) | set(after)
            if after.get(k, 0.0) != before.get(k, 0.0)}


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_node_span_events_are_counted_once_each(
    node: str, sidecar: SidecarProcess, upstream: GrpcUpstream, tmp_path: Path, transport: str
) -> None:
    """provider.result events from the JS SDK count once each and reach the upstream enriched;
    other events (even with a code) and the span's status are left alone."""
    run = f"events-{next(_runs)}-{transport}"
    plan = [{"name": "sms.batch", "count": 6, "attrs": {"app.note": "x"},
             "events": [RESULT_1, RESULT_0, CODED_EVENT]},
            {"name": "sms.send", "count": 2, "attrs": {"provider.source": "vonage.sms",
                                                       "provider.code": "1"},
             "events": [RESULT_1]}]
    before = _codes(sidecar)
    proc = subprocess.run(
        _args(node, "traces", _endpoint(sidecar, transport), transport, "gzip", plan, run),
        cwd=NODE_CLIENT, env=_env(tmp_path), capture_output=True, text=True,
        timeout=CLIENT_TIMEOUT, check=False,
    )
    assert proc.returncode == 0, f"node client failed:\n{proc.stderr}\n{sidecar.log()}"
    assert _growth(before, _codes(sidecar)) == {
        frozenset(THROTTLED["labels"].items()): 6 + 2 * 2,
        frozenset(SUCCESS["labels"].items()): 6,
    }
    got = wait_for(lambda: len(s := _forwarded(upstream, run)) == 8 and s, timeout=20)
    for span in got:
        if span["name"] == "sms.batch":
            first, second, retry = span["events"]
            assert first["attrs"] == {**RESULT_1["attrs"], **THROTTLED["output"]}
            assert second["attrs"] == {**RESULT_0["attrs"], **SUCCESS["output"]}
            assert retry["attrs"] == CODED_EVENT["attrs"]
            assert span["status"] == (STATUS_UNSET, "")
        else:
            assert span["attrs"] == {"provider.source": "vonage.sms", "provider.code": "1",
                                     **THROTTLED["output"]}
            assert span["events"][0]["attrs"] == {**RESULT_1["attrs"], **THROTTLED["output"]}
            assert span["status"] == (STATUS_ERROR, "provider code: throttled")


def _forwarded_logs(upstream: GrpcUpstream, run: str) -> list[dict[str, Any]]:
    out = []
    for req in list(upstream.log_requests):
        for rl in req.resource_logs:
            resource = {kv.key: _value(kv.value) for kv in rl.resource.attributes}
            if resource.get("codebook.test.run") != run:
                continue
            for sl in rl.scope_logs:
                for r in sl.log_records:
                    out.append({"body": _value(r.body), "severity": r.severity_number,
                                "attrs": {kv.key: _value(kv.value) for kv in r.attributes}})
    return out


LOG_PLAN = [
    {"body": "sms failed", "severity": 13, "count": 25,
     "attrs": {"provider.source": "vonage.sms", "provider.code": 1, "app.n": 3}},
    {"body": "sms sent", "severity": 9, "count": 10,
     "attrs": {"provider.source": "vonage.sms", "provider.code": "0"}},
    {"body": "hello", "severity": 9, "count": 5, "attrs": {"app.note": "plain"}},
    {"body": "code only", "severity": 17, "count": 2, "attrs": {"provider.code": "1"}},
]


@pytest.mark.parametrize(("transport", "compression"), MATRIX, ids=MATRIX_IDS)
def test_node_log_records_are_counted_enriched_and_forwarded(
    node: str, sidecar: SidecarProcess, upstream: GrpcUpstream, tmp_path: Path,
    transport: str, compression: str,
) -> None:
    """Log records from the JS logs SDK and its OTLP log exporters: exact counts per signal,
    forwarded records carrying the output attributes, severity as the client set it."""
    run = f"logs-{next(_runs)}-{transport}-{compression}"
    side = "grpc" if transport == "grpc" else "http"
    before = _codes(sidecar)
    received = sidecar.value("codebook_telemetry_received_total", signal="logs", transport=side)
    traces = sidecar.total("codebook_telemetry_received_total", signal="traces")
    proc = subprocess.run(
        _args(node, "logs", _endpoint(sidecar, transport), transport, compression, LOG_PLAN,
              run),
        cwd=NODE_CLIENT, env=_env(tmp_path), capture_output=True, text=True,
        timeout=CLIENT_TIMEOUT, check=False,
    )
    assert proc.returncode == 0, f"node client failed:\n{proc.stderr}\n{sidecar.log()}"
    assert len(json.loads(proc.stdout.strip().splitlines()[-1])["logs"]) == 42
    assert _growth(before, _codes(sidecar)) == {
        frozenset(THROTTLED["labels"].items()): 25,
        frozenset(SUCCESS["labels"].items()): 10,
    }
    assert sidecar.value("codebook_telemetry_received_total", signal="logs",
                         transport=side) == received + 42
    assert sidecar.total("codebook_telemetry_received_total", signal="traces") == traces
    got = wait_for(lambda: len(r := _forwarded_logs(upstream, run)) == 42 and r, timeout=20)
    by_body: dict[str, list[dict[str, Any]]] = {}
    for r in got:
        by_body.setdefault(r["body"], []).append(r)
    outputs = {"sms failed": THROTTLED["output"], "sms sent": SUCCESS["output"]}
    for spec in LOG_PLAN:
        records = by_body[spec["body"]]
        assert len(records) == spec["count"]
        for r in records:
            assert r["severity"] == spec["severity"]
            assert r["attrs"] == {**spec["attrs"], **outputs.get(spec["body"], {})}
