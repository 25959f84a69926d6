"""ACS Calling SDK, call-end and PSTN tables (seed 004): coverage and labels."""

from __future__ import annotations

import pytest
from seedrows import mismatched_rows, parsed_counts
from seedrows.acs_calling_pstn import EXPECTED_ROWS, rows

from exporter import load_codebook

CALL = "azure.acs.calling"
PSTN = "azure.acs.pstn"


def test_rows_parsed() -> None:
    """The parser finds exactly the rows counted by reading the seed."""
    assert parsed_counts(rows) == EXPECTED_ROWS


def test_every_row_mapped() -> None:
    """Every seed row resolves to an entry of its source (code+subcode, or code alone)."""
    assert mismatched_rows(rows) == []


# id: (source, code, subcode, "category severity retryable owner match")
CASES = {
    # the doc says "success" but the callee was reached and declined or was busy
    "call-0-603-declined-doc-success": (
        CALL,
        "603",
        "0",
        "recipient_declined info yes end_user exact",
    ),
    "call-560486-pstn-busy": (CALL, "486", "560486", "recipient_declined info yes end_user exact"),
    "call-10024-all-endpoints-declined": (
        CALL,
        "487",
        "10024",
        "recipient_declined info yes end_user exact",
    ),
    # ended without fault
    "call-0-0-local-hangup": (CALL, "0", "0", "call_ended_normal info no none exact"),
    "call-5300-removed-by-participant": (CALL, "0", "5300", "call_ended_normal info no none exact"),
    "call-10003-answered-elsewhere": (CALL, "487", "10003", "call_ended_normal info no none exact"),
    "call-5,317-thousands-separator": (CALL, "0", "5,317", "call_ended_normal info no none exact"),
    "call-5317-normalised": (CALL, 0, 5317, "call_ended_normal info no none exact"),
    # per-user ACS token: auth, but error/our_app
    "call-4507-no-valid-token": (CALL, "495", "4507", "auth error no our_app exact"),
    "call-10009-unauthenticated": (CALL, "401", "10009", "auth error no our_app exact"),
    "call-5828-not-invited-per-user": (CALL, "403", "5828", "permission error no our_app exact"),
    # device beats a 403 permission
    "call-43001-camera-permission-403": (CALL, "403", "43001", "device warning no end_user exact"),
    "call-43015-prompt-timeout-is-device": (
        CALL,
        "412",
        "43015",
        "device warning no end_user exact",
    ),
    "call-40606-speaker-unsupported": (CALL, "405", "40606", "unsupported error no our_app exact"),
    # "unsupported stream": rule 17 unsupported comes before rule 20 device
    "call-43017-unsupported-stream": (CALL, "412", "43017", "unsupported error no our_app exact"),
    # the doc says only "unknown error": rule 25, not provider_internal
    "call-43002-unknown-error": (
        CALL,
        "500",
        "43002",
        "unknown warning with_backoff unknown exact",
    ),
    # local network vs provider infrastructure
    "call-7-496-client-network": (CALL, "496", "7", "network warning with_backoff end_user exact"),
    "call-301004-media-connectivity": (
        CALL,
        "410",
        "301004",
        "network warning with_backoff end_user exact",
    ),
    "call-43204-acs-infra": (
        CALL,
        "500",
        "43204",
        "provider_internal error with_backoff provider exact",
    ),
    "call-10004-no-answer": (CALL, "487", "10004", "recipient_unreachable info yes end_user exact"),
    "call-41056-enterprise-voice-policy": (
        CALL,
        "412",
        "41056",
        "configuration critical no our_config exact",
    ),
    "call-41027-video-already-started": (
        CALL,
        "400",
        "41027",
        "invalid_state warning no our_app exact",
    ),
    # code-only rows, code lists and duplicates across the two tables
    "call-code-498-local-network": (
        CALL,
        "498",
        None,
        "network warning with_backoff end_user exact",
    ),
    "call-code-500-infra": (
        CALL,
        "500",
        None,
        "provider_internal error with_backoff provider exact",
    ),
    "call-code-600-busy-everywhere": (
        CALL,
        "600",
        None,
        "recipient_declined info yes end_user exact",
    ),
    "call-code-604-nonexistent": (CALL, "604", None, "recipient_invalid warning no end_user exact"),
    # class rules
    "call-class-599": (CALL, "599", None, "provider_internal error with_backoff provider class"),
    "call-class-650": (CALL, "650", None, "recipient_declined info yes end_user class"),
    "call-subcode-decides": (CALL, "500", "43001", "device warning no end_user exact"),
    # SIP 486 busy is recipient_declined even with an unlisted subcode (class before 4xx)
    "call-class-486-busy": (CALL, "486", "999", "recipient_declined info yes end_user class"),
    "call-class-484-still-4xx": (CALL, "484", None, "invalid_request error no our_app class"),
    # PSTN
    "pstn-560000-normal-clearing": (PSTN, "0", "560000", "call_ended_normal info no none exact"),
    "pstn-560487-seed-code-497": (PSTN, "497", "560487", "call_ended_normal info no none exact"),
    "pstn-560487-true-code-487": (PSTN, "487", "560487", "call_ended_normal info no none exact"),
    "pstn-60486-busy-as-seed-writes": (
        PSTN,
        "486",
        "60486",
        "recipient_declined info yes end_user exact",
    ),
    "pstn-540486-english-subcode": (
        PSTN,
        "486",
        "540486",
        "recipient_declined info yes end_user exact",
    ),
    "pstn-511532-trunk-config": (
        PSTN,
        "403",
        "511532",
        "configuration critical no our_config exact",
    ),
    "pstn-510403-alternate-id": (
        PSTN,
        "403",
        "510403",
        "sender_invalid critical no our_config exact",
    ),
    "pstn-531004-ice-our-firewall": (
        PSTN,
        "410",
        "531004",
        "network warning with_backoff our_config exact",
    ),
    "pstn-560480-no-answer": (
        PSTN,
        "480",
        "560480",
        "recipient_unreachable info yes end_user exact",
    ),
    "pstn-560484-malformed-number": (
        PSTN,
        "484",
        "560484",
        "invalid_request error no our_app exact",
    ),
    "pstn-560503-service-unavailable": (
        PSTN,
        "503",
        "560503",
        "provider_unavailable error with_backoff provider exact",
    ),
    "pstn-560603-declined": (PSTN, "603", "560603", "recipient_declined info yes end_user exact"),
    "pstn-class-502": (PSTN, "502", None, "provider_internal error with_backoff provider class"),
    "pstn-class-486-busy": (PSTN, "486", "1", "recipient_declined info yes end_user class"),
    # section introductions: ParticipantEndReason 0 and 603 with a subcode the tables do not list
    "pstn-code-0-unlisted-subcode": (PSTN, "0", "123", "call_ended_normal info no none exact"),
    "pstn-code-603-unlisted-subcode": (
        PSTN,
        "603",
        "1",
        "recipient_declined info yes end_user exact",
    ),
    # subcode 0 is "no specific subcode": it never decides alone, the code does (taxonomy §1)
    "pstn-500-0-by-code-class": (
        PSTN,
        "500",
        "0",
        "provider_internal error with_backoff provider class",
    ),
    "pstn-0-0-pair": (PSTN, "0", "0", "call_ended_normal info no none exact"),
    "call-487-0-pair": (CALL, "487", "0", "call_ended_normal info no none exact"),
    "call-500-0-by-code": (CALL, "500", "0", "provider_internal error with_backoff provider exact"),
    "pstn-unmapped-999": (PSTN, "999", None, "unknown warning with_backoff unknown unmapped"),
}


@pytest.mark.parametrize(
    ("source", "code", "subcode", "expected"), CASES.values(), ids=CASES.keys()
)
def test_classification(source: str, code: object, subcode: object, expected: str) -> None:
    r = load_codebook().resolve(source, code, subcode=subcode)
    got = " ".join(str(v) for v in (r.category, r.severity, r.retryable, r.owner, r.match))
    assert got == expected


# Rows naming several causes: classified by the code's name, flagged, alternative in the note.
AMBIGUOUS = {
    "call-560486-busy-or-technical": (CALL, "486", "560486"),
    "call-10057-callee-setup-network-or-exit": (CALL, "408", "10057"),
    "pstn-60486-busy-or-technical": (PSTN, "486", "60486"),
    "pstn-540486-busy-or-technical": (PSTN, "486", "540486"),
    "pstn-531004-firewall-or-sbc": (PSTN, "410", "531004"),
    "pstn-560484-number-or-sbc": (PSTN, "484", "560484"),
    "pstn-560403-forbidden-cancelled-rejected": (PSTN, "403", "560403"),
}


@pytest.mark.parametrize(("source", "code", "subcode"), AMBIGUOUS.values(), ids=AMBIGUOUS.keys())
def test_ambiguous_rows_flagged(source: str, code: str, subcode: str) -> None:
    r = load_codebook().resolve(source, code, subcode=subcode)
    assert r.rule is not None and r.rule.ambiguous and r.rule.note
