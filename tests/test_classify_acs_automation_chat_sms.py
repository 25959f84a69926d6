"""ACS Call Automation, Chat SDK and SMS tables (seed 004): coverage and labels."""

from __future__ import annotations

import pytest
from seedrows import mismatched_rows, parsed_counts
from seedrows.acs_automation_chat_sms import EXPECTED_ROWS, rows

from exporter import load_codebook

CA = "azure.acs.call_automation"
CHAT = "azure.acs.chat"
SMS = "azure.acs.sms"


def test_rows_parsed() -> None:
    """The parser finds exactly the rows counted by reading the seed."""
    assert parsed_counts(rows) == EXPECTED_ROWS


def test_every_row_mapped() -> None:
    """Every seed row resolves to an entry of its source (code+subcode, subcode or code)."""
    assert mismatched_rows(rows) == []


# id: (source, code, subcode, "category severity retryable owner match")
CASES = {
    # 8522: 404 = call/participant gone, 405 = missing AnswerCall configuration (taxonomy §5)
    "ca-404-8522-call-gone": (CA, "404", "8522", "invalid_state warning no our_app exact"),
    "ca-405-8522-missing-config": (CA, "405", "8522", "configuration critical no our_app exact"),
    "ca-bare-8522-generic-not-found": (CA, None, "8522", "invalid_state warning no our_app exact"),
    "ca-500-8522-subcode-decides": (CA, "500", "8522", "invalid_state warning no our_app exact"),
    # subcode 0 is "no specific subcode": it never decides alone, the code does (taxonomy §1)
    "ca-500-0-resolves-by-code": (
        CA,
        "500",
        "0",
        "provider_internal error with_backoff provider exact",
    ),
    "ca-500-int-0-resolves-by-code": (
        CA,
        500,
        0,
        "provider_internal error with_backoff provider exact",
    ),
    "ca-999-0-unmapped-not-success": (
        CA,
        "999",
        "0",
        "unknown warning with_backoff unknown unmapped",
    ),
    "ca-bare-0-generic-entry": (CA, None, "0", "success info no none exact"),
    "chat-500-0-unmapped-not-success": (
        CHAT,
        "500",
        "0",
        "unknown warning with_backoff unknown unmapped",
    ),
    # thousands separators in the seed (taxonomy §5)
    "ca-8,540-all-busy": (CA, "487", "8,540", "recipient_declined info yes end_user exact"),
    "ca-8606-int": (CA, None, 8606, "provider_internal error with_backoff provider exact"),
    "ca-200-0-success-by-code-class": (CA, "200", "0", "success info no none class"),
    "ca-403-7507-caller-identity": (CA, "403", "7507", "auth critical no our_config exact"),
    "ca-8526-join-token-per-session": (CA, "400", "8526", "auth error no our_app exact"),
    "ca-8539-callee-busy": (CA, "486", "8539", "recipient_declined info yes end_user exact"),
    "ca-8544-callee-unreachable": (
        CA,
        None,
        "8544",
        "recipient_unreachable info yes end_user exact",
    ),
    "ca-8510-initial-silence": (CA, None, "8510", "recipient_unreachable info yes end_user exact"),
    "ca-8531-max-digits-completed": (CA, "200", "8531", "success info no none exact"),
    "ca-8508-operation-cancelled": (CA, None, "8508", "call_ended_normal info no none exact"),
    "ca-8587-our-app-did-not-answer": (
        CA,
        None,
        "8587",
        "timeout warning with_backoff our_app exact",
    ),
    "ca-8564-speech-upstream": (CA, None, "8564", "network warning with_backoff provider exact"),
    "ca-8529-monthly-limit": (CA, None, "8529", "quota_exhausted critical no our_config exact"),
    "ca-8530-active-call-limit": (CA, None, "8530", "throttled warning with_backoff our_app exact"),
    "ca-8560-meeting-locked": (CA, None, "8560", "invalid_state warning no end_user exact"),
    "ca-9001-unknown-underlying": (
        CA,
        None,
        "9001",
        "provider_internal error with_backoff provider exact",
    ),
    "ca-9999-unknown": (CA, None, "9999", "unknown warning with_backoff unknown exact"),
    "ca-481-no-transaction": (CA, "481", None, "invalid_state warning no our_app exact"),
    "ca-487-cancelled": (CA, "487", None, "call_ended_normal info no none exact"),
    "ca-504-gateway-timeout": (CA, "504", None, "timeout warning with_backoff provider exact"),
    "ca-603-declined": (CA, "603", None, "recipient_declined info yes end_user exact"),
    "ca-600-class-6xx": (CA, "600", None, "recipient_declined info yes end_user class"),
    "ca-418-class-4xx": (CA, "418", None, "invalid_request error no our_app class"),
    # audit 2026.12.0: readings walked against taxonomy §2 and pinned (alternatives in notes)
    "ca-400-8500-name-decides": (CA, "400", "8500", "invalid_request error no our_app exact"),
    "ca-405-8520-not-supported": (CA, "405", "8520", "unsupported error no our_app exact"),
    "ca-400-8567-service-principal": (
        CA,
        "400",
        "8567",
        "configuration critical no our_config exact",
    ),
    "ca-401-service-credential": (CA, "401", None, "auth critical no our_config exact"),
    "ca-502-bad-gateway": (CA, "502", None, "provider_internal error with_backoff provider exact"),
    "ca-7601-source-identity": (CA, None, "7601", "sender_invalid critical no our_config exact"),
    "ca-7602-target-identity": (CA, None, "7602", "recipient_invalid warning no end_user exact"),
    "ca-8513-media-receive-timeout": (
        CA,
        None,
        "8513",
        "network warning with_backoff end_user exact",
    ),
    "ca-8515-max-duration-completed": (CA, None, "8515", "success info no none exact"),
    "ca-8552-organizer-not-removable": (CA, None, "8552", "invalid_state warning no our_app exact"),
    "ca-8581-stream-url-per-call": (CA, None, "8581", "configuration critical no our_app exact"),
    "ca-8610-our-bot-no-response": (CA, None, "8610", "timeout warning with_backoff our_app exact"),
    "chat-429-throttled": (CHAT, "429", None, "throttled warning with_backoff our_app exact"),
    "chat-401-user-token": (CHAT, "401", None, "auth error no our_app exact"),
    "chat-403-user-access": (CHAT, "403", None, "permission error no our_app exact"),
    "chat-503-unavailable": (
        CHAT,
        "503",
        None,
        "provider_unavailable error with_backoff provider exact",
    ),
    "sms-4000-fraud": (SMS, "4000", None, "content_rejected error no our_app exact"),
    "sms-4001-from-format": (SMS, "4001", None, "sender_invalid critical no our_config exact"),
    "sms-4002-to-format": (SMS, "4002", None, "invalid_request error no our_app exact"),
    "sms-4003-destination-not-covered": (SMS, "4003", None, "unsupported error no provider exact"),
    "sms-4004-nonexistent": (SMS, "4004", None, "recipient_invalid warning no end_user exact"),
    "sms-4006-unreachable": (SMS, "4006", None, "recipient_unreachable info yes end_user exact"),
    "sms-4007-opted-out": (SMS, "4007", None, "recipient_opted_out warning no end_user exact"),
    "sms-4008-profile-count": (SMS, "4008", None, "quota_exhausted critical no our_config exact"),
    "sms-4010-unverified-toll-free": (
        SMS,
        "4010",
        None,
        "sender_invalid critical no our_config exact",
    ),
    "sms-5002-no-delivery-report": (SMS, "5002", None, "pending info no none exact"),
    "sms-4005-carrier-block": (SMS, "4005", None, "content_rejected error no our_app exact"),
    "sms-4009-entitlement": (SMS, "4009", None, "permission critical no our_config exact"),
    "sms-5001-temporarily-unavailable": (
        SMS,
        "5001",
        None,
        "provider_unavailable error with_backoff provider exact",
    ),
    "sms-9999-unknown": (SMS, "9999", None, "unknown warning with_backoff unknown exact"),
}


@pytest.mark.parametrize(
    ("source", "code", "subcode", "expected"), CASES.values(), ids=CASES.keys()
)
def test_classify(source: str, code: object, subcode: object, expected: str) -> None:
    r = load_codebook().resolve(source, code, subcode=subcode)
    assert f"{r.category} {r.severity} {r.retryable} {r.owner} {r.match}" == expected
