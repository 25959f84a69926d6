"""The webhook listener: real Event Grid publisher and Vonage signer clients on 127.0.0.1."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest
import uvicorn
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.core.messaging import CloudEvent
from azure.eventgrid import EventGridEvent, EventGridPublisherClient
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from otlp_upstream import HttpUpstream
from sidecar_proc import SidecarProcess, wait_for
from vonage_http_client import Auth

from exporter import CodebookMetrics, Enricher, make_webhook_asgi_app, make_webhook_wsgi_app
from exporter.sidecar.config import ConfigError, load_config
from exporter.sidecar.forwarder import Forwarder
from exporter.sidecar.webhook import (
    EVENT_OUTCOMES,
    OTHER_ROUTE,
    OUTCOMES,
    ROUTES,
    DedupWindow,
    WebhookHandler,
)
from exporter.sidecar.webhook_listener import WebhookListener

TOKEN = "t0ken-for-tests-0123456789"
EG = "/webhooks/azure/eventgrid"
CA = "/webhooks/azure/callautomation"
DLR = "/webhooks/vonage/dlr"
PHONE = "15555550100"


class Harness:
    """A listener on 127.0.0.1 with its own metrics, and helpers to talk to it."""

    def __init__(self, **options: Any) -> None:
        self.enricher = Enricher(metrics=CodebookMetrics())
        self.handler = WebhookHandler(self.enricher, **{"token": TOKEN, **options})
        self.listener = WebhookListener(self.handler, "127.0.0.1", 0).start()
        self.base = f"http://127.0.0.1:{self.listener.port}"

    def url(self, path: str, token: str | None = TOKEN) -> str:
        return f"{self.base}{path}" + (f"?token={token}" if token is not None else "")

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        ctype: str = "application/json",
        token: str | None = TOKEN,
        headers: dict[str, str] | None = None,
        query: str = "",
    ) -> tuple[int, dict[str, str], bytes]:
        url = self.url(path, token)
        if query:
            url += ("&" if "?" in url else "?") + query
        req = urllib.request.Request(url, data=body, method=method)
        if body is not None:
            req.add_header("Content-Type", ctype)
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()

    def post_json(self, path: str, doc: Any, **kw: Any) -> tuple[int, Any]:
        status, _, body = self.request("POST", path, json.dumps(doc).encode(), **kw)
        return status, json.loads(body) if body else None

    def codes(self, source: str, code: str, subcode: str = "") -> float:
        total = 0.0
        for s in self.enricher.metrics._codes.series.values():
            if s.labels[:3] == (source, code, subcode):
                total += s.value
        return total

    def requests_total(self, route: str, outcome: str) -> float:
        v = self.enricher.metrics.value(
            "codebook_webhook_requests_total", {"route": route, "outcome": outcome}
        )
        return v or 0.0

    def close(self) -> None:
        self.listener.stop(2)


@pytest.fixture
def hub() -> Iterator[Harness]:
    h = Harness()
    yield h
    h.close()


def sms_data(
    details: Any, *, pascal: bool = False, message_id: str = "Outgoing_1"
) -> dict[str, Any]:
    data = {
        "messageId": message_id,
        "from": PHONE,
        "to": "+" + PHONE,
        "deliveryStatus": "Failed",
        "deliveryStatusDetails": details,
        "receivedTimestamp": "2020-09-18T00:22:20.2855749Z",
        "deliveryAttempts": [{"timestamp": "2020-09-18T00:22:14Z", "segmentsSucceeded": 0}],
        "tag": "customer tag",
    }
    if pascal:
        data = {k[0].upper() + k[1:]: v for k, v in data.items()}
    return data


def eg_event(event_type: str, data: dict[str, Any], event_id: str) -> dict[str, Any]:
    return {
        "id": event_id,
        "topic": "/subscriptions/s/resourceGroups/g/providers/microsoft.communication/"
        "communicationservices/acs",
        "subject": f"/phonenumber/{PHONE}",
        "data": data,
        "eventType": event_type,
        "dataVersion": "1.0",
        "metadataVersion": "1",
        "eventTime": "2020-09-18T00:22:20Z",
    }


def call_event(event_type: str, code: Any, subcode: Any, event_id: str) -> dict[str, Any]:
    return {
        "id": event_id,
        "source": "calling/callConnections/12005680-c",
        "type": f"Microsoft.Communication.{event_type}",
        "specversion": "1.0",
        "time": "2026-12-05T10:00:00.1234567+00:00",
        "datacontenttype": "application/json",
        "subject": "calling/callConnections/12005680-c",
        "data": {
            "resultInformation": {"code": code, "subCode": subcode, "message": "diag"},
            "version": "2024-09-15",
            "operationContext": f"ctx for +{PHONE}",
            "callConnectionId": "12005680-c",
            "serverCallId": "aHR0cHM6",
            "correlationId": "a0619022-x",
            "publicEventType": f"Microsoft.Communication.{event_type}",
        },
    }


# -- Event Grid: real publisher client ---------------------------------------------------------


@pytest.mark.parametrize(
    ("details", "pascal", "code", "category"),
    [
        ("4004", False, "4004", "recipient_invalid"),
        ("4005: Message blocked by the destination carrier.", True, "4005", "content_rejected"),
        ("Delivery failed (code 4006), retry later", False, "4006", "recipient_unreachable"),
        (2000, True, "2000", "success"),
        ("No error.", False, None, "unknown"),
    ],
    ids=["bare", "leading-pascal", "embedded", "int-pascal", "text-unmapped"],
)
def test_eventgrid_sms_report_via_publisher(
    hub: Harness, details: Any, pascal: bool, code: str | None, category: str
) -> None:
    """EventGridPublisherClient (aeg-sas-key, ?api-version=) posts an SMS report: counted once."""
    client = EventGridPublisherClient(hub.url(EG, None), AzureKeyCredential(TOKEN), retry_total=0)
    event = EventGridEvent(
        event_type="Microsoft.Communication.SMSDeliveryReportReceived",
        data=sms_data(details, pascal=pascal),
        subject=f"/phonenumber/{PHONE}",
        data_version="1.0",
    )
    client.send([event])
    book = hub.enricher.book
    res = book.resolve("azure.acs.sms", code or details)
    assert res.category.value == category
    assert res.match.value == ("unmapped" if code is None else "exact")
    label = code if code is not None else "_OTHER"
    assert hub.codes("azure.acs.sms", label) == 1.0
    assert hub.requests_total("azure_eventgrid", "accepted") == 1.0


def test_eventgrid_cloudevents_via_publisher(hub: Harness) -> None:
    """CloudEvents through the publisher (single and batch) are classified like callbacks."""
    client = EventGridPublisherClient(hub.url(EG, None), AzureKeyCredential(TOKEN), retry_total=0)
    one = CloudEvent(
        source="/acs", type="Microsoft.Communication.PlayFailed",
        data={"resultInformation": {"code": 400, "subCode": 8535}, "callConnectionId": "c1"},
    )
    client.send(one)
    batch = [
        CloudEvent(
            source="/acs", type="Microsoft.Communication.SMSDeliveryReportReceived",
            data=sms_data("4007", message_id=f"m{i}"),
        )
        for i in range(3)
    ]
    client.send(batch)
    assert hub.codes("azure.acs.call_automation", "400", "8535") == 1.0
    assert hub.codes("azure.acs.sms", "4007") == 3.0


def test_eventgrid_wrong_key_is_refused(hub: Harness) -> None:
    """A wrong aeg-sas-key is 401 (the client raises) and counts nothing."""
    client = EventGridPublisherClient(hub.url(EG, None), AzureKeyCredential("wrong"), retry_total=0)
    with pytest.raises(ClientAuthenticationError):
        client.send([EventGridEvent(
            event_type="Microsoft.Communication.SMSDeliveryReportReceived",
            data=sms_data("4004"), subject="s", data_version="1.0",
        )])
    assert hub.codes("azure.acs.sms", "4004") == 0.0
    assert hub.requests_total("azure_eventgrid", "unauthorized") == 1.0


@pytest.mark.parametrize(
    ("token", "headers", "status"),
    [
        (TOKEN, {}, 200),
        (None, {"Authorization": f"Bearer {TOKEN}"}, 200),
        (None, {"aeg-sas-key": TOKEN}, 200),
        (None, {}, 401),
        ("nope", {}, 401),
        (None, {"Authorization": "Bearer nope"}, 401),
        (None, {"Authorization": f"Basic {TOKEN}"}, 401),
    ],
    ids=["query", "bearer", "aeg-sas-key", "none", "wrong-query", "wrong-bearer", "basic"],
)
def test_token_forms(hub: Harness, token: str | None, headers: dict[str, str], status: int) -> None:
    """The token is accepted as ?token=, Bearer or aeg-sas-key; anything else is 401."""
    got, body = hub.post_json(
        EG, [eg_event("Microsoft.Communication.SMSDeliveryReportReceived", sms_data("4004"), "e1")],
        token=token, headers=headers,
    )
    assert got == status, body
    if status == 401:
        assert body == {"error": "missing or wrong token"}


def test_subscription_validation_handshake(hub: Harness) -> None:
    """Event Grid's SubscriptionValidationEvent is answered with its code and counts no code."""
    event = eg_event(
        "Microsoft.EventGrid.SubscriptionValidationEvent",
        {"validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6", "validationUrl": "https://x"},
        "v1",
    )
    status, body = hub.post_json(EG, [event], headers={"aeg-event-type": "SubscriptionValidation"})
    assert (status, body) == (200, {"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"})
    assert hub.requests_total("azure_eventgrid", "handshake") == 1.0


@pytest.mark.parametrize("path", [EG, CA], ids=["eventgrid", "callautomation"])
def test_cloudevents_abuse_protection_options(hub: Harness, path: str) -> None:
    """OPTIONS with WebHook-Request-Origin is answered with WebHook-Allowed-Origin and a rate."""
    status, headers, _ = hub.request(
        "OPTIONS", path, headers={"WebHook-Request-Origin": "eventgrid.azure.net"}
    )
    assert status == 200
    assert headers["webhook-allowed-origin"] == "eventgrid.azure.net"
    assert headers["webhook-allowed-rate"] == "*"
    status, _, _ = hub.request(
        "OPTIONS", path, token=None, headers={"WebHook-Request-Origin": "eventgrid.azure.net"}
    )
    assert status == 401


# -- Call Automation callbacks -----------------------------------------------------------------

CALL_EVENTS = [
    # (event type, code, subCode, source it resolves in, category)
    ("CallDisconnected", 200, 560000, "azure.acs.calling", "call_ended_normal"),
    ("CallDisconnected", 0, 7000, "azure.acs.calling", "call_ended_normal"),
    ("CallDisconnected", 487, 10004, "azure.acs.calling", "recipient_unreachable"),
    ("CallDisconnected", 400, 8501, "azure.acs.call_automation", "invalid_state"),
    ("PlayFailed", 400, 8535, "azure.acs.call_automation", "invalid_request"),
    ("PlayCompleted", 200, 0, "azure.acs.call_automation", "success"),
    ("AddParticipantFailed", 400, 8523, "azure.acs.call_automation", "invalid_request"),
    ("AddParticipantFailed", 480, 10037, "azure.acs.calling", "recipient_unreachable"),
    ("CreateCallFailed", 403, 7504, "azure.acs.call_automation", "permission"),
    ("RecognizeFailed", 400, 8510, "azure.acs.call_automation", None),
    ("CallTransferFailed", 412, 8583, "azure.acs.call_automation", "invalid_state"),
    ("AnswerFailed", 404, 8522, "azure.acs.call_automation", "invalid_state"),
]


@pytest.mark.parametrize(
    ("event_type", "code", "subcode", "source", "category"),
    CALL_EVENTS,
    ids=[f"{t}-{c}-{s}" for t, c, s, _, _ in CALL_EVENTS],
)
@pytest.mark.parametrize("path", [CA, EG], ids=["callback", "eventgrid"])
def test_call_automation_event_types(
    hub: Harness,
    path: str,
    event_type: str,
    code: int,
    subcode: int,
    source: str,
    category: str | None,
) -> None:
    """Each event type resolves its resultInformation in the source the README's rule names."""
    status, body = hub.post_json(path, [call_event(event_type, code, subcode, "id-1")])
    assert status == 200, body
    assert body["accepted"] == 1
    res = hub.enricher.book.resolve(source, code, subcode)
    # Subcode 0 never decides alone (docs/taxonomy.md §1): 200/0 resolves by its code's class.
    assert res.match.value == ("class" if subcode == 0 else "exact")
    if category is not None:
        assert res.category.value == category
    counted = sum(
        s.value for s in hub.enricher.metrics._codes.series.values()
        if s.labels[0] == source and s.labels[2] == str(subcode)
    )
    assert counted == 1.0
    other = {"azure.acs.calling", "azure.acs.call_automation"} - {source}
    assert not any(
        s.value for s in hub.enricher.metrics._codes.series.values() if s.labels[0] in other
    )


@pytest.mark.parametrize(
    "event_type", ["CallConnected", "ParticipantsUpdated", "RecordingStateChanged"]
)
def test_call_events_without_result_are_ignored(hub: Harness, event_type: str) -> None:
    """Events that carry no resultInformation are acknowledged and count no code."""
    event = call_event(event_type, 0, 0, "i1")
    del event["data"]["resultInformation"]
    status, body = hub.post_json(CA, [event])
    assert (status, body["ignored"], body["accepted"]) == (200, 1, 0)
    assert hub.requests_total("azure_callautomation", "ignored") == 1.0
    assert not any(s.value for s in hub.enricher.metrics._codes.series.values())


def test_redelivery_counts_once(hub: Harness) -> None:
    """The same event id redelivered is acknowledged (200) and not counted again."""
    event = call_event("PlayFailed", 400, 8535, "same-id")
    assert hub.post_json(CA, [event]) == (
        200, {"accepted": 1, "duplicates": 0, "ignored": 0, "failed": []}
    )
    assert hub.post_json(CA, [event]) == (
        200, {"accepted": 0, "duplicates": 1, "ignored": 0, "failed": []}
    )
    assert hub.codes("azure.acs.call_automation", "400", "8535") == 1.0
    assert hub.requests_total("azure_callautomation", "duplicate") == 1.0


def test_mixed_batch_counts_good_events_and_names_failures(hub: Harness) -> None:
    """Good events of a partly malformed batch count; the 200 reply lists the bad ones."""
    batch = [
        call_event("PlayFailed", 400, 8535, "a"),
        "not an event",
        {**call_event("PlayFailed", 400, 8535, "b"), "id": ""},
        {**call_event("PlayFailed", 400, 8535, "c"), "data": {"resultInformation": {"subCode": 1}}},
        call_event("AddParticipantFailed", 400, 8523, "d"),
    ]
    status, body = hub.post_json(CA, batch)
    assert status == 200
    assert body["accepted"] == 2
    assert [f["index"] for f in body["failed"]] == [1, 2, 3]
    assert body["failed"][0]["reason"] == "[1]: an event must be a JSON object"
    assert "id is empty" in body["failed"][1]["reason"]
    assert "resultInformation.code" in body["failed"][2]["reason"]
    assert hub.requests_total("azure_callautomation", "partial") == 1.0
    metrics = hub.enricher.metrics
    assert metrics.value(
        "codebook_webhook_events_total", {"route": "azure_callautomation", "outcome": "malformed"}
    ) == 3.0


@pytest.mark.parametrize(
    ("body", "ctype", "status", "outcome", "reason"),
    [
        (b"{not json", "application/json", 400, "malformed", "invalid JSON"),
        (b"[]", "application/json", 400, "malformed", "the batch is empty"),
        (b'"text"', "application/json", 400, "malformed", "neither a JSON array"),
        (b"[1, 2]", "application/json", 400, "malformed", "no usable event"),
        (b"[" * 100_000, "application/json", 400, "malformed", "invalid JSON"),
        (b"<xml/>", "text/xml", 415, "unsupported_media_type", "Content-Type 'text/xml'"),
        (b"[]", "", 415, "unsupported_media_type", "Content-Type"),
    ],
    ids=["bad-json", "empty", "scalar", "all-bad", "deep", "xml", "no-type"],
)
def test_malformed_bodies(
    hub: Harness, body: bytes, ctype: str, status: int, outcome: str, reason: str
) -> None:
    """Malformed or non-JSON bodies get 400/415 with the reason, counted by outcome."""
    got, _, reply = hub.request("POST", EG, body, ctype=ctype)
    assert got == status
    assert reason in json.loads(reply)["error"]
    assert hub.requests_total("azure_eventgrid", outcome) == 1.0


def test_oversized_body_is_413() -> None:
    """A body past max_body_bytes is refused by the server while reading (413), and counted."""
    h = Harness(max_body_bytes=4096)
    try:
        event = eg_event(
            "Microsoft.Communication.SMSDeliveryReportReceived", sms_data("x" * 8000), "big"
        )
        status, _, body = h.request("POST", EG, json.dumps([event]).encode())
        assert status == 413
        assert json.loads(body)["error"]
        assert h.requests_total("azure_eventgrid", "too_large") == 1.0
    finally:
        h.close()


@pytest.mark.parametrize(
    ("method", "path", "status", "route", "outcome"),
    [
        ("GET", EG, 405, "azure_eventgrid", "method_not_allowed"),
        ("PUT", DLR, 405, "vonage_dlr", "method_not_allowed"),
        ("POST", "/webhooks/other", 404, "other", "not_found"),
    ],
    ids=["get-eventgrid", "put-dlr", "unknown-path"],
)
def test_wrong_method_or_path(
    hub: Harness, method: str, path: str, status: int, route: str, outcome: str
) -> None:
    """Wrong methods are 405 with Allow; unknown paths 404 under the bounded route 'other'."""
    got, headers, _ = hub.request(method, path, b"{}" if method != "GET" else None)
    assert got == status
    if status == 405:
        assert headers["allow"]
    assert hub.requests_total(route, outcome) == 1.0


# -- Vonage delivery receipts --------------------------------------------------------------------


def dlr(
    message_id: str = "0B00000127FDBC63", status: str = "delivered", err: str = "0"
) -> dict[str, str]:
    return {
        "err-code": err,
        "message-timestamp": "2018-10-25 12:10:29",
        "messageId": message_id,
        "msisdn": PHONE,
        "network-code": "23410",
        "price": "0.03330000",
        "scts": "1810251310",
        "status": status,
        "to": "Nexmo CLI",
    }


@pytest.mark.parametrize("form", ["get", "form", "json"])
def test_vonage_dlr_forms(hub: Harness, form: str) -> None:
    """A DLR arrives as a GET query, a POST form or a POST JSON body; err-code counts once."""
    params = dlr(err="6", status="failed")
    if form == "get":
        status, _, body = hub.request("GET", DLR, query=urllib.parse.urlencode(params))
    elif form == "form":
        status, _, body = hub.request(
            "POST", DLR, urllib.parse.urlencode(params).encode(),
            ctype="application/x-www-form-urlencoded",
        )
    else:
        status, _, body = hub.request("POST", DLR, json.dumps(params).encode())
    assert status == 200, body
    assert hub.codes("vonage.sms_dlr", "6") == 1.0
    assert hub.requests_total("vonage_dlr", "accepted") == 1.0


@pytest.mark.parametrize(
    ("status", "err", "category"),
    [
        ("delivered", "0", "success"),
        ("accepted", "0", "pending"),
        ("buffered", "0", "pending"),
        ("expired", "0", "recipient_unreachable"),
        ("failed", "2", "recipient_unreachable"),
        ("rejected", "9", "recipient_opted_out"),
        ("unknown", "1", "unknown"),
        ("failed", "77", "unknown"),
    ],
    ids=[
        "delivered", "accepted", "buffered", "expired", "absent", "illegal", "unknown", "unmapped"
    ],
)
def test_vonage_status_refines_err_code(hub: Harness, status: str, err: str, category: str) -> None:
    """err-code 0 means delivered only with status delivered: the status is the entry message."""
    got, _, _ = hub.request("POST", DLR, json.dumps(dlr(status=status, err=err)).encode())
    assert got == 200
    cats = {
        s.labels[3]: s.value for s in hub.enricher.metrics._codes.series.values()
        if s.labels[0] == "vonage.sms_dlr" and s.value
    }
    assert cats == {category: 1.0}


def test_vonage_redelivery_is_message_id_and_status(hub: Harness) -> None:
    """The same messageId+status counts once; a new status of that message counts again."""
    for status in ("accepted", "accepted", "delivered", "delivered"):
        got, _, _ = hub.request("POST", DLR, json.dumps(dlr(status=status)).encode())
        assert got == 200
    assert hub.codes("vonage.sms_dlr", "0") == 2.0
    assert hub.requests_total("vonage_dlr", "duplicate") == 2.0


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"status": "delivered", "err-code": "0"}, "messageId"),
        ({"messageId": "m", "status": "teleported", "err-code": "0"}, "status 'teleported'"),
        ({"messageId": "m", "status": "failed"}, "err-code"),
    ],
    ids=["no-id", "bad-status", "no-err-code"],
)
def test_vonage_malformed(hub: Harness, params: dict[str, str], reason: str) -> None:
    """A DLR without its id, with an undocumented status or without err-code is 400."""
    got, _, body = hub.request("GET", DLR, query=urllib.parse.urlencode(params))
    assert got == 400
    assert reason in json.loads(body)["error"]


def md5hash(params: dict[str, str], secret: str) -> str:
    """Vonage's md5hash signature, as its legacy SDKs compute it (sorted &k=v, then the secret)."""
    text = "".join(
        f"&{k}={str(params[k]).replace('&', '_').replace('=', '_')}" for k in sorted(params)
    )
    return hashlib.md5((text + secret).encode()).hexdigest()


SECRET = "signature-secret-abc"


def signed(method: str, *, stamp: int | None = None, **over: str) -> dict[str, str]:
    params: dict[str, str] = {**dlr(), "nonce": "n-1", **over}
    params["timestamp"] = str(stamp if stamp is not None else int(time.time()))
    if method == "md5hash":
        params["sig"] = md5hash(params, SECRET)
    else:
        auth = Auth(api_key="k", signature_secret=SECRET, signature_method=method)  # type: ignore[arg-type]
        params["sig"] = auth.sign_params(dict(params))
        assert Auth(
            api_key="k", signature_secret=SECRET, signature_method=method  # type: ignore[arg-type]
        ).check_signature(dict(params))
    return params


@pytest.mark.parametrize("method", ["md5hash", "md5", "sha1", "sha256", "sha512"])
def test_vonage_signed_dlr(method: str) -> None:
    """Signed DLRs verify for every method; a bad, missing or stale signature is 401."""
    h = Harness(vonage_signature_secret=SECRET, vonage_signature_method=method)
    try:
        ok = signed(method)
        got, _, body = h.request("GET", DLR, query=urllib.parse.urlencode(ok))
        assert got == 200, body
        tampered = {**signed(method, messageId="m2"), "err-code": "6"}
        stale = signed(method, stamp=int(time.time()) - 3600, messageId="m3")
        unsigned = dlr(message_id="m4")
        for params, reason in (
            (tampered, "bad signature"),
            (stale, "timestamp"),
            (unsigned, "not signed"),
        ):
            got, _, body = h.request(
                "POST", DLR, urllib.parse.urlencode(params).encode(),
                ctype="application/x-www-form-urlencoded",
            )
            assert got == 401
            assert reason in json.loads(body)["error"]
        assert h.codes("vonage.sms_dlr", "0") == 1.0
        assert h.codes("vonage.sms_dlr", "6") == 0.0
        assert h.requests_total("vonage_dlr", "unauthorized") == 3.0
    finally:
        h.close()


# -- forwarded log records ----------------------------------------------------------------------


def test_forwarded_log_records() -> None:
    """Accepted events go upstream as OTLP log records with provider.* and ids, no phone numbers."""
    upstream = HttpUpstream()
    metrics = CodebookMetrics()
    forwarder = Forwarder(
        f"http://127.0.0.1:{upstream.port}", metrics, protocol="http/protobuf",
        compression="none",
    ).start()
    enricher = Enricher(metrics=metrics)
    handler = WebhookHandler(enricher, sink=forwarder, token=TOKEN)
    listener = WebhookListener(handler, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{listener.port}"
    try:
        client = EventGridPublisherClient(f"{url}{EG}", AzureKeyCredential(TOKEN), retry_total=0)
        client.send([EventGridEvent(
            event_type="Microsoft.Communication.SMSDeliveryReportReceived",
            data=sms_data("4004", message_id="Outgoing_42"),
            subject=f"/phonenumber/{PHONE}", data_version="1.0",
        )])
        req = urllib.request.Request(
            f"{url}{CA}?token={TOKEN}",
            data=json.dumps([call_event("CallDisconnected", 200, 560000, "cd-1")]).encode(),
            headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(req, timeout=10).read()
        query = urllib.parse.urlencode({**dlr(err="6", status="failed"), "token": TOKEN})
        urllib.request.urlopen(f"{url}{DLR}?{query}", timeout=10).read()
        wait_for(lambda: len(upstream.bodies) >= 3)
        records = []
        for raw in upstream.bodies:
            assert PHONE.encode() not in raw
            assert b"customer tag" not in raw and b"ctx for" not in raw
            req_pb = ExportLogsServiceRequest.FromString(raw)
            for rl in req_pb.resource_logs:
                for sl in rl.scope_logs:
                    assert sl.scope.name == "exporter.sidecar.webhook"
                    for rec in sl.log_records:
                        attrs = {kv.key: kv.value.string_value for kv in rec.attributes}
                        records.append((rec, attrs))
        by_source = {a["provider.source"]: (r, a) for r, a in records}
        rec, sms = by_source["azure.acs.sms"]
        assert sms["provider.code"] == "4004"
        assert sms["provider.category"] == "recipient_invalid"
        assert sms["messaging.message.id"] == "Outgoing_42"
        assert sms["cloudevents.event_type"] == "Microsoft.Communication.SMSDeliveryReportReceived"
        assert rec.severity_text == "WARN"
        assert rec.event_name == "Microsoft.Communication.SMSDeliveryReportReceived"
        _, call = by_source["azure.acs.calling"]
        assert call["provider.subcode"] == "560000"
        assert call["acs.call_connection_id"] == "12005680-c"
        assert call["acs.correlation_id"] == "a0619022-x"
        assert call["cloudevents.event_id"] == "cd-1"
        assert call["provider.category"] == "call_ended_normal"
        _, vonage = by_source["vonage.sms_dlr"]
        assert vonage["messaging.message.id"] == "0B00000127FDBC63"
        assert vonage["provider.category"] == "content_rejected"
        assert vonage["error.type"] == "content_rejected"
        wait_for(lambda: metrics.value("codebook_telemetry_forwarded_total", {"signal": "logs"}))
    finally:
        listener.stop(2)
        forwarder.shutdown(2)
        upstream.close()


# -- in process: WSGI and ASGI ------------------------------------------------------------------


def test_wsgi_app_under_wsgiref() -> None:
    """make_webhook_wsgi_app serves the same routes under another WSGI server."""
    enricher = Enricher(metrics=CodebookMetrics())
    app = make_webhook_wsgi_app(enricher, token=TOKEN)

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    server = make_server("127.0.0.1", 0, app, handler_class=Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        body = json.dumps([call_event("PlayFailed", 400, 8535, "w1")]).encode()
        req = urllib.request.Request(
            f"{base}{CA}?token={TOKEN}", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert json.loads(resp.read())["accepted"] == 1
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"{base}{DLR}", timeout=10)
        assert info.value.code == 401
        assert enricher.metrics.value(
            "codebook_webhook_requests_total", {"route": "vonage_dlr", "outcome": "unauthorized"}
        ) == 1.0
    finally:
        server.shutdown()
        server.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_asgi_app_under_uvicorn() -> None:
    """make_webhook_asgi_app serves Event Grid publishers under uvicorn, body limit included."""
    enricher = Enricher(metrics=CodebookMetrics())
    app = make_webhook_asgi_app(enricher, token=TOKEN, max_body_bytes=4096)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started)
        url = f"http://127.0.0.1:{port}{EG}"
        client = EventGridPublisherClient(url, AzureKeyCredential(TOKEN), retry_total=0)
        client.send([EventGridEvent(
            event_type="Microsoft.Communication.SMSDeliveryReportReceived",
            data=sms_data("4010"), subject="s", data_version="1.0",
        )])
        assert enricher.metrics.value(
            "codebook_webhook_requests_total", {"route": "azure_eventgrid", "outcome": "accepted"}
        ) == 1.0
        with pytest.raises(HttpResponseError) as info:
            client.send([EventGridEvent(
                event_type="Microsoft.Communication.SMSDeliveryReportReceived",
                data=sms_data("x" * 5000), subject="s", data_version="1.0",
            )])
        assert info.value.status_code == 413
    finally:
        server.should_exit = True
        thread.join(10)


def test_asgi_lifespan_and_disconnect() -> None:
    """The ASGI app completes the lifespan protocol and ignores a client that disconnects."""
    app = make_webhook_asgi_app(Enricher(metrics=CodebookMetrics()))
    sent: list[dict[str, Any]] = []

    async def run() -> None:
        messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

        async def receive() -> dict[str, Any]:
            return next(messages)

        async def send(message: Any) -> None:
            sent.append(message)

        await app({"type": "lifespan"}, receive, send)

        async def gone() -> dict[str, Any]:
            return {"type": "http.disconnect"}

        await app({"type": "http", "method": "POST", "path": CA, "headers": []}, gone, send)

    asyncio.run(run())
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


# -- dedup window and config --------------------------------------------------------------------


def test_dedup_window_is_bounded_in_time_and_size() -> None:
    """Keys expire after the window and the oldest go first past max_keys."""
    now = [0.0]
    window = DedupWindow(10.0, 3, clock=lambda: now[0])
    assert window.first("a") and not window.first("a")
    now[0] = 11.0
    assert window.first("a")  # expired: counts again
    for key in ("b", "c", "d"):
        assert window.first(key)
    assert len(window) == 3
    assert window.first("a")  # pushed out by b, c, d
    assert len(window) == 3


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"endpoint": "0.0.0.0:8088"}, "webhooks.token: required"),
        ({"endpoint": ":8088"}, "webhooks.token: required"),
        ({"endpoint": "nonsense"}, "webhooks.endpoint"),
        ({"endpoint": "127.0.0.1:8088", "vonage": {"signature_method": "sha3"}},
         "webhooks.vonage.signature_method"),
        ({"endpoint": "127.0.0.1:8088", "tokn": "x"}, "webhooks.tokn: unknown key"),
    ],
    ids=["any-v4", "all-interfaces", "bad-endpoint", "bad-method", "unknown-key"],
)
def test_webhook_config_errors(tmp_path: Any, settings: dict[str, Any], problem: str) -> None:
    """Off loopback a token is required; keys are strict; errors name file:line: key."""
    import yaml

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"webhooks": settings}))
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert any(problem in p for p in info.value.problems), info.value.problems


@pytest.mark.parametrize("endpoint", ["127.0.0.1:0", "[::1]:0", "localhost:0", ""])
def test_webhook_config_loopback_needs_no_token(endpoint: str) -> None:
    """On loopback (or off) no token is needed."""
    cfg = load_config(None, env={}, overrides={"webhooks.endpoint": endpoint})
    assert cfg.webhooks.endpoint == endpoint


def test_sidecar_serves_webhooks(tmp_path: Any) -> None:
    """`codebook serve` with webhooks.endpoint counts a delivery report on /metrics."""
    config = {"webhooks": {"endpoint": "127.0.0.1:0", "token": TOKEN}}
    with SidecarProcess(tmp_path, config) as proc:
        url = f"http://{proc.addresses['webhooks']}{EG}"
        client = EventGridPublisherClient(url, AzureKeyCredential(TOKEN), retry_total=0)
        client.send([EventGridEvent(
            event_type="Microsoft.Communication.SMSDeliveryReportReceived",
            data=sms_data("4008"), subject="s", data_version="1.0",
        )])
        assert proc.total("provider_codes_total", source="azure.acs.sms", code="4008") == 1.0
        assert proc.value(
            "codebook_webhook_requests_total", route="azure_eventgrid", outcome="accepted"
        ) == 1.0


def test_outcome_labels_are_closed_sets(hub: Harness) -> None:
    """Every route and outcome label the handler writes is one of the documented values."""
    hub.post_json(CA, [call_event("PlayFailed", 400, 8535, "o1"), 5])
    hub.post_json(CA, [call_event("PlayFailed", 400, 8535, "o1")])
    hub.request("POST", EG, b"nope")
    hub.request("POST", EG, b"[]", ctype="text/plain")
    hub.request("GET", "/elsewhere")
    hub.request("POST", DLR, b"{}", token=None)
    metrics = hub.enricher.metrics
    requests = set(metrics._webhook_requests.series)
    events = set(metrics._webhook_events.series)
    assert {o for _, o in requests} <= set(OUTCOMES)
    assert {o for _, o in events} <= set(EVENT_OUTCOMES)
    assert {r for r, _ in requests | events} <= {*ROUTES.values(), OTHER_ROUTE}
    assert len({o for _, o in requests}) == 6
    rejected = metrics.value(
        "codebook_telemetry_rejected_total",
        {"signal": "logs", "transport": "webhook", "reason": "malformed"},
    )
    assert rejected == 2.0  # the bad event of the partial batch and the bad JSON body


def test_vonage_json_nulls_are_dropped_and_nesting_refused(hub: Harness) -> None:
    """A JSON DLR may carry null fields (ignored); a nested value is a malformed receipt."""
    ok = {**dlr(message_id="n1", err="4", status="failed"), "client-ref": None}
    got, _, _ = hub.request("POST", DLR, json.dumps(ok).encode())
    assert got == 200
    assert hub.codes("vonage.sms_dlr", "4") == 1.0
    nested = {**dlr(message_id="n2"), "extra": {"a": 1}}
    got, _, body = hub.request("POST", DLR, json.dumps(nested).encode())
    assert got == 400
    assert "one flat object" in json.loads(body)["error"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(
        st.sampled_from(
            ["id", "type", "eventType", "specversion", "source", "data", "resultInformation",
             "code", "subCode", "deliveryStatusDetails", "messageId", "status", "err-code",
             "validationCode", "EventType", "Data", "time", "eventTime"]
        ) | st.text(max_size=8),
        children,
        max_size=6,
    ),
    max_leaves=30,
)


@functools.cache
def _hostile_handler() -> WebhookHandler:
    return WebhookHandler(Enricher(metrics=CodebookMetrics()))


@settings(max_examples=300, deadline=None)
@given(doc=json_values, path=st.sampled_from([EG, CA, DLR]))
def test_hostile_json_never_crashes(doc: Any, path: str) -> None:
    """Any JSON body gets 200 or 400 with a JSON reply, never a 500."""
    handler = _hostile_handler()
    resp = handler.handle("POST", path, "", {"content-type": "application/json"},
                          json.dumps(doc).encode())
    assert resp.status in (200, 400), resp.body
    json.loads(resp.body)
    assert handler.metrics.value(
        "codebook_webhook_requests_total",
        {"route": ROUTES[path], "outcome": "internal_error"},
    ) is None


def test_pascal_case_envelope_and_result(hub: Harness) -> None:
    """PascalCase envelope, data and resultInformation keys are matched case-insensitively."""
    event = call_event("PlayFailed", 400, 8535, "p1")
    event = {k[0].upper() + k[1:]: v for k, v in event.items()}
    event["Data"] = {k[0].upper() + k[1:]: v for k, v in event["Data"].items()}
    event["Data"]["ResultInformation"] = {"Code": 400, "SubCode": 8535}
    status, body = hub.post_json(CA, [event])
    assert (status, body["accepted"]) == (200, 1), body
    assert hub.codes("azure.acs.call_automation", "400", "8535") == 1.0


def test_trailing_slash_is_the_same_route(hub: Harness) -> None:
    """A subscription URL written with a trailing slash reaches the same route."""
    status, body = hub.post_json(EG + "/", [eg_event(
        "Microsoft.Communication.SMSDeliveryReportReceived", sms_data("4004"), "slash"
    )])
    assert (status, body["accepted"]) == (200, 1)
    assert hub.requests_total("azure_eventgrid", "accepted") == 1.0
