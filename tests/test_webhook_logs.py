"""The hand-written OTLP log encoder equals the protobuf message classes, byte for byte."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from exporter.sidecar.webhook_logs import LogEntry, attribute_block, log_request

SHARED: dict[bytes, list[tuple[str, str]]] = {}


def block(pairs: list[tuple[str, str]]) -> bytes:
    """attribute_block, remembering the pairs so the reference can build the same record."""
    encoded = attribute_block(pairs)
    SHARED[encoded] = pairs
    return encoded


def reference(resource: list[tuple[str, str]], scope: str, entries: list[LogEntry]) -> bytes:
    """The same request built with the protobuf message classes."""
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.extend(
        KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in resource
    )
    sl = rl.scope_logs.add()
    sl.scope.name = scope
    for e in entries:
        rec = sl.log_records.add()
        rec.time_unix_nano = e.time_unix_nano
        rec.observed_time_unix_nano = e.observed_time_unix_nano
        rec.severity_number = e.severity_number  # type: ignore[assignment]
        rec.severity_text = e.severity_text
        rec.event_name = e.event_name
        rec.body.string_value = e.event_name
        for k, v in (*SHARED.get(e.shared_block, ()), *e.attributes):
            rec.attributes.add(key=k, value=AnyValue(string_value=v))
    return bytes(req.SerializeToString(deterministic=True))


EXAMPLES = [
    [],
    [LogEntry(1, 2, 9, "INFO", "Microsoft.Communication.CallDisconnected",
              [("acs.call_connection_id", "c-1")],
              block([("provider.source", "azure.acs.calling")]))],
    [LogEntry(0, 0, 0, "", "", [], b"")],
    [LogEntry(5, 6, 13, "WARN", "t", [("k" * n, "v" * m) for n in (1, 60, 130)
                                      for m in (0, 1, 124, 125, 126, 127, 128, 200, 20000)])],
    [LogEntry(2**63, 2**64 - 1, 21, "FATAL", "é" * 200, [("k", "")], block([("", "v")]))] * 3,
]


@pytest.mark.parametrize("entries", EXAMPLES, ids=["none", "one", "defaults", "lengths", "edges"])
def test_examples_match_protobuf(entries: list[LogEntry]) -> None:
    """Fixed examples, defaults and edge values encode exactly as protobuf does."""
    resource = [("service.name", "codebook-webhooks")]
    assert log_request(resource, "scope", entries) == reference(resource, "scope", entries)


text = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=40)
pairs = st.lists(st.tuples(text, text), max_size=6)
entry = st.builds(
    LogEntry,
    time_unix_nano=st.integers(0, 2**64 - 1),
    observed_time_unix_nano=st.integers(0, 2**64 - 1),
    severity_number=st.sampled_from([0, 9, 13, 17, 21]),
    severity_text=text,
    event_name=text,
    attributes=pairs,
    shared_block=pairs.map(block),
)


@settings(max_examples=200, deadline=None)
@given(resource=st.lists(st.tuples(text, text), min_size=1, max_size=3), scope=text,
       entries=st.lists(entry, max_size=5))
def test_generated_match_protobuf(
    resource: list[tuple[str, str]], scope: str, entries: list[LogEntry]
) -> None:
    """Generated requests (any valid Unicode, any field values) match protobuf's bytes."""
    assert log_request(resource, scope, entries) == reference(resource, scope, entries)


def test_lone_surrogates_are_replaced() -> None:
    """A lone surrogate (from a JSON \\ud800 escape) becomes '?' instead of failing."""
    raw = log_request([("a", "b")], "s", [LogEntry(1, 1, 9, "INFO", "x\ud800", [("id", "\udfff")])])
    req = ExportLogsServiceRequest.FromString(raw)
    rec = req.resource_logs[0].scope_logs[0].log_records[0]
    assert rec.event_name == "x?"
    assert rec.attributes[0].value.string_value == "?"
