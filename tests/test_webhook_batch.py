"""The handler's batch path against a per-event reference: same counts, same log-record bytes.

``WebhookHandler._accept`` dedups a request's events under one lock, resolves and counts each
distinct code once (``enrich_code(..., n)``) and encodes the records of one event type and code
from a shared frame. The reference here does it one event at a time, as the handler first did:
``DedupWindow.first``, ``enrich_code(..., 1)`` and one ``LogEntry`` per event through
``log_request`` (itself checked against the protobuf classes in ``test_webhook_logs``).
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from exporter import CodebookMetrics, Enricher
from exporter.codebook import ATTR_CODE, ATTR_SEVERITY, ATTR_SOURCE, ATTR_SUBCODE
from exporter.sidecar.webhook import _SEVERITY, SCOPE_NAME, DedupWindow, WebhookHandler
from exporter.sidecar.webhook_events import BadEvent, Event, EventParser, parse_time
from exporter.sidecar.webhook_logs import LogEntry, attribute_block, log_request

NOW = 1_765_000_000.0
EG = "/webhooks/azure/eventgrid"
SMS = "Microsoft.Communication.SMSDeliveryReportReceived"


class _Sink:
    def __init__(self) -> None:
        self.requests: list[bytes] = []

    def submit(self, signal: str, request: Any, items: int) -> bool:
        self.requests.append(request)
        return True


def reference(route: str, events: list[Event | BadEvent], enricher: Enricher,
              dedup: DedupWindow) -> bytes | None:
    """The per-event path: the log request the handler should submit (None: no records)."""
    now = int(NOW * 1e9)
    entries = []
    for event in events:
        if isinstance(event, BadEvent) or event.source is None:
            continue
        if not dedup.first(event.dedup_key):
            continue
        out = enricher.enrich_code(event.source, event.code, event.subcode, event.message, 1)
        out = out or {}
        number, text = _SEVERITY.get(out.get(ATTR_SEVERITY, ""), _SEVERITY["info"])
        shared = [("codebook.webhook.route", route)]
        if route != "vonage_dlr":
            shared.append(("cloudevents.event_type", event.event_type))
        shared += [(ATTR_SOURCE, event.source or ""), (ATTR_CODE, event.code or "")]
        if event.subcode is not None:
            shared.append((ATTR_SUBCODE, event.subcode))
        shared.extend(out.items())
        entries.append(LogEntry(
            parse_time(event.time_text) or now, now, number, text, event.event_type,
            event.ids, attribute_block(shared),
        ))
    if not entries:
        return None
    return log_request((("service.name", "codebook-webhooks"),), SCOPE_NAME, entries)


def counted(metrics: CodebookMetrics) -> list[str]:
    """The ``provider_codes_total`` series and values."""
    return sorted(
        line for line in metrics.render().decode().splitlines()
        if line.startswith("provider_codes_total")
    )


def sms_event(i: int, details: str, when: str) -> dict[str, Any]:
    return {
        "id": f"e{i}", "topic": "/t", "eventType": SMS, "eventTime": when,
        "data": {"messageId": f"Outgoing_{i}", "deliveryStatus": "Failed",
                 "deliveryStatusDetails": details},
    }


def call_event(i: int, kind: str, code: int, sub: int) -> dict[str, Any]:
    return {
        "specversion": "1.0", "id": f"c{i}", "source": "calling/callConnections/x",
        "type": f"Microsoft.Communication.{kind}", "time": "2026-12-05T10:00:00.5+01:00",
        "data": {"resultInformation": {"code": code, "subCode": sub, "message": "m"},
                 "callConnectionId": f"cc{i}", "correlationId": "corr"},
    }


event = st.one_of(
    st.builds(
        sms_event, st.integers(0, 12),
        st.sampled_from(["2000", "4001", "Error 4005: blocked", "No error.", "  ", "x" * 300]),
        st.sampled_from(["2026-12-05T10:00:00Z", "", "not a time", "2026-12-05T10:00:01Z"]),
    ),
    st.builds(
        call_event, st.integers(0, 12),
        st.sampled_from(["CallDisconnected", "PlayFailed", "AddParticipantFailed"]),
        st.sampled_from([0, 200, 400, 500]), st.sampled_from([0, 7000, 8522, 560000]),
    ),
    st.builds(lambda i: {"id": f"i{i}", "eventType": "Microsoft.Communication.IncomingCall",
                         "data": {}}, st.integers(0, 3)),
    st.just({"id": "bad"}),
)


@settings(max_examples=60, deadline=None)
@given(batches=st.lists(st.lists(event, min_size=1, max_size=30), min_size=1, max_size=4))
def test_batch_path_matches_per_event_reference(batches: list[list[dict[str, Any]]]) -> None:
    """Counts and log-record bytes equal the per-event path's, redeliveries across batches too."""
    sink = _Sink()
    handler = WebhookHandler(
        Enricher(metrics=CodebookMetrics()), sink=sink, clock=lambda: NOW
    )
    ref_enricher = Enricher(metrics=CodebookMetrics())
    ref_dedup = DedupWindow(86_400.0, 100_000)
    parser = EventParser(lambda: ref_enricher.book)
    expected = []
    for batch in batches:
        body = json.dumps(batch).encode()
        handler.handle("POST", EG, "", {"content-type": "application/json"}, body)
        parsed = [p for p in parser.eventgrid(batch) if isinstance(p, (Event, BadEvent))]
        request = reference("azure_eventgrid", parsed, ref_enricher, ref_dedup)
        if request is not None:
            expected.append(request)
    assert sink.requests == expected
    assert counted(handler.metrics) == counted(ref_enricher.metrics)
