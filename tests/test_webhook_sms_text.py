"""SMS delivery reports whose DeliveryStatusDetails is only text: Microsoft's English messages
resolve to their codes (the entries' ``name``), anything else is counted unmapped, never guessed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter import CodebookMetrics, Enricher
from exporter.codebook import Codebook
from exporter.loader import load_tables
from exporter.sidecar.webhook import WebhookHandler
from exporter.sidecar.webhook_events import EventParser, fold_text, sms_names

MAPPINGS = Path(__file__).resolve().parent.parent / "mappings"
EG = "/webhooks/azure/eventgrid"
SMS = "azure.acs.sms"


def _named() -> list[tuple[str, str]]:
    doc = yaml.safe_load((MAPPINGS / "azure_acs_sms.yaml").read_text(encoding="utf-8"))
    return [(str(e["code"]), e["name"]) for e in doc["entries"] if "name" in e]


NAMED = _named()


def report(details: Any, n: int = 0) -> bytes:
    return json.dumps([{
        "id": f"e{n}", "topic": "/t",
        "eventType": "Microsoft.Communication.SMSDeliveryReportReceived",
        "eventTime": "2026-12-05T10:00:00Z", "dataVersion": "1.0",
        "data": {"messageId": f"Outgoing_{n}", "from": "15555550100", "to": "+15555550101",
                 "deliveryStatus": "Failed", "deliveryStatusDetails": details},
    }]).encode()


def post(handler: WebhookHandler, body: bytes) -> dict[str, Any]:
    resp = handler.handle("POST", EG, "", {"content-type": "application/json"}, body)
    assert resp.status == 200, resp.body
    return dict(json.loads(resp.body))


def counted(enricher: Enricher) -> dict[tuple[str, ...], float]:
    """provider_codes_total of azure.acs.sms: (code, category, match) -> value, non-zero only."""
    out = {}
    for series in enricher.metrics._codes.series.values():
        if series.labels[0] == SMS and series.value:
            out[series.labels[1:2]] = series.value
    return out


def test_every_documented_code_has_its_english_text() -> None:
    """2000, 4000-4010, 5000-5002 and 9999 each carry Microsoft's English message as name."""
    expected = {"2000", *(str(c) for c in range(4000, 4011)), "5000", "5001", "5002", "9999"}
    assert {code for code, _ in NAMED} == expected
    assert len({fold_text(name) for _, name in NAMED}) == len(NAMED)  # each names one code


@pytest.mark.parametrize(("code", "name"), NAMED, ids=[c for c, _ in NAMED])
def test_english_text_resolves_to_its_code(code: str, name: str) -> None:
    """Details that are only the doc's text (as written, or re-cased/re-spaced) count the code."""
    enricher = Enricher(metrics=CodebookMetrics())
    handler = WebhookHandler(enricher)
    variants = [name, name.upper(), "  " + name.rstrip(".").replace(" ", "  ") + " ", name + "."]
    if "'" in name:
        variants.append(name.replace("'", "\u2019"))
    for n, text in enumerate(variants):
        assert post(handler, report(text, n))["accepted"] == 1
    assert counted(enricher) == {(code,): float(len(variants))}
    assert enricher.book.resolve(SMS, code).match.value == "exact"


@pytest.mark.parametrize(
    "details",
    [
        "No error.",  # the Event Grid sample: the SMS error-code table does not list it
        "Message rejected for a reason nobody documented",
        "Message blocked by Destination",  # a prefix of a documented text is not that text
        "x" * 500,
        "Message Delivered Successfully. Or not",
    ],
    ids=["sample-no-error", "unknown", "prefix", "long", "suffix"],
)
def test_other_texts_stay_unmapped_with_a_bounded_label(details: str) -> None:
    enricher = Enricher(metrics=CodebookMetrics())
    handler = WebhookHandler(enricher)
    assert post(handler, report(details))["accepted"] == 1
    assert counted(enricher) == {("_OTHER",): 1.0}


def test_embedded_code_beats_the_text() -> None:
    """A 4-digit code in the details decides, whatever text comes with it."""
    enricher = Enricher(metrics=CodebookMetrics())
    handler = WebhookHandler(enricher)
    post(handler, report("4006: Message blocked by Destination carrier."))
    assert counted(enricher) == {("4006",): 1.0}


def _book(tmp_path: Path, overlay: str) -> Codebook:
    (tmp_path / "overlay.yaml").write_text(overlay, encoding="utf-8")
    return Codebook(load_tables([[MAPPINGS], [tmp_path]]))


OVERLAY = """\
schema: 1
source: azure.acs.sms
title: local additions
version: "1"
seeds: []
entries:
  - code: "No error."
    category: success
    description: "The sample's text, classified locally"
    doc: {en: "No error."}
  - code: "4777"
    name: "Message parked by the gateway"
    category: pending
    description: "A local code"
    doc: {en: "Message parked by the gateway"}
"""


def test_overlay_names_and_text_codes(tmp_path: Path) -> None:
    """An overlay may name more texts, or map a text as its code; a reload is picked up."""
    books = [Codebook(load_tables([[MAPPINGS]]))]
    parser = EventParser(lambda: books[0])
    doc = json.loads(report("Message parked by the gateway."))
    assert parser.eventgrid(doc)[0].code == "Message parked by the gateway."  # type: ignore[union-attr]
    books[0] = _book(tmp_path, OVERLAY)
    assert parser.eventgrid(doc)[0].code == "4777"  # type: ignore[union-attr]
    assert parser.eventgrid(json.loads(report("No error.")))[0].code == "No error."  # type: ignore[union-attr]
    assert books[0].resolve(SMS, "No error.").category.value == "success"
    assert sms_names(books[0])[fold_text("Message Delivered Successfully")] == "2000"
