"""Vonage SMS `status` (seeds 000/001) and Braze REST fatal errors (002): coverage and labels."""

from __future__ import annotations

import pytest
from seedrows import mismatched_rows, parsed_counts
from seedrows.vonage_braze import EXPECTED_ROWS, rows

from exporter import load_codebook


def test_rows_parsed() -> None:
    """The parser finds exactly the rows counted by reading the seeds."""
    assert parsed_counts(rows) == EXPECTED_ROWS


def test_every_row_mapped() -> None:
    """Every seed row resolves to an entry (or, for a class row, to a class rule)."""
    assert mismatched_rows(rows) == []


# id: (source, code, message, "category severity retryable owner match")
CASES = {
    "vonage-0-accepted-only": ("vonage.sms", "0", None, "success info no none exact"),
    "vonage-1-throttled": ("vonage.sms", "1", None, "throttled warning with_backoff our_app exact"),
    "vonage-2-missing-params": ("vonage.sms", "2", None, "invalid_request error no our_app exact"),
    "vonage-4-bad-credentials": ("vonage.sms", "4", None, "auth critical no our_config exact"),
    "vonage-5-internal": (
        "vonage.sms",
        "5",
        None,
        "provider_internal error with_backoff provider exact",
    ),
    "vonage-7-barred-not-deactivated": (
        "vonage.sms",
        "7",
        None,
        "recipient_opted_out warning no end_user exact",
    ),
    "vonage-8-account-barred": (
        "vonage.sms",
        "8",
        None,
        "account_suspended critical no our_config exact",
    ),
    "vonage-9-no-credit": ("vonage.sms", "9", None, "quota_exhausted critical no our_config exact"),
    "vonage-10-binds": ("vonage.sms", "10", None, "throttled warning with_backoff our_app exact"),
    "vonage-11-http-not-enabled": (
        "vonage.sms",
        "11",
        None,
        "configuration critical no our_config exact",
    ),
    "vonage-15-sender": ("vonage.sms", "15", None, "sender_invalid critical no our_config exact"),
    "vonage-29-demo-mode": ("vonage.sms", "29", None, "permission critical no our_config exact"),
    "vonage-33-dead": ("vonage.sms", "33", None, "recipient_invalid warning no end_user exact"),
    "nexmo-alias": ("nexmo.sms", "12", None, "payload_too_large error no our_app exact"),
    "braze-2xx-success": ("braze.rest", "201", None, "success info no none class"),
    "braze-2xx-message-success": ("braze.rest", "201", "success", "success info no none exact"),
    "braze-200-message-success-case": (
        "braze.rest",
        "200",
        " Success ",
        "success info no none exact",
    ),
    "braze-2xx-non-fatal-error": (
        "braze.rest",
        "201",
        "'email' is not a valid email",
        "invalid_request error no our_app class",
    ),
    "braze-2xx-non-fatal-error-other-status": (
        "braze.rest",
        "204",
        "'external_id' is required",
        "invalid_request error no our_app class",
    ),
    "braze-5xx-class": (
        "braze.rest",
        "503",
        "Internal Server Error",
        "provider_internal error with_backoff provider class",
    ),
    "braze-400-unlisted-message": (
        "braze.rest",
        "400",
        "Something New",
        "invalid_request error no our_app class",
    ),
    "braze-400-no-recipients": (
        "braze.rest",
        "400",
        "No Recipients",
        "invalid_request error no our_app exact",
    ),
    "braze-400-message-case-folded": (
        "braze.rest",
        "400",
        "apple push  LENGTH exceeded",
        "payload_too_large error no our_app exact",
    ),
    "braze-400-invalid-campaign": (
        "braze.rest",
        "400",
        "Invalid Campaign ID",
        "configuration critical no our_config exact",
    ),
    "braze-400-max-ids": (
        "braze.rest",
        "400",
        "The max number of ids per request was exceeded",
        "payload_too_large error no our_app exact",
    ),
    "braze-401-bad-key": ("braze.rest", "401", "Unauthorized", "auth critical no our_config exact"),
    "braze-403-forbidden-plan": (
        "braze.rest",
        "403",
        "Forbidden",
        "permission critical no our_config exact",
    ),
    "braze-403-access-denied": (
        "braze.rest",
        "403",
        "Access Denied",
        "permission critical no our_config exact",
    ),
    "braze-404-bad-url": (
        "braze.rest",
        "404",
        "Not Found",
        "configuration critical no our_config exact",
    ),
    "braze-401-status-alone": ("braze.rest", "401", None, "auth critical no our_config exact"),
    "braze-403-status-unlisted-message": (
        "braze.rest",
        "403",
        "Something New",
        "permission critical no our_config exact",
    ),
    "braze-404-status-alone": (
        "braze.rest",
        "404",
        None,
        "configuration critical no our_config exact",
    ),
    "braze-429-status-alone-not-4xx-class": (
        "braze.rest",
        "429",
        None,
        "throttled warning with_backoff our_app exact",
    ),
    "braze-429-status-unlisted-message": (
        "braze.rest",
        "429",
        "Too Many Requests",
        "throttled warning with_backoff our_app exact",
    ),
    "braze-429-rate-limited": (
        "braze.rest",
        "429",
        "Rate Limited",
        "throttled warning with_backoff our_app exact",
    ),
}


@pytest.mark.parametrize(
    ("source", "code", "message", "expected"), list(CASES.values()), ids=list(CASES)
)
def test_classification(source: str, code: str, message: str | None, expected: str) -> None:
    """Tricky rows get the labels docs/taxonomy.md gives their condition."""
    r = load_codebook().resolve(source, code, message=message)
    assert f"{r.category} {r.severity} {r.retryable} {r.owner} {r.match}" == expected
