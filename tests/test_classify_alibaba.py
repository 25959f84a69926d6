"""Alibaba Cloud Mobile Push status codes (seed 003): coverage and labels of the tricky rows."""

from __future__ import annotations

import pytest
from seedrows import mismatched_rows, parsed_counts
from seedrows.alibaba import EXPECTED_ROWS, rows

from exporter import load_codebook

P = "alibaba.mobile_push"


def test_rows_parsed() -> None:
    """The parser finds exactly the rows counted by reading the seed."""
    assert parsed_counts(rows) == EXPECTED_ROWS


def test_every_row_mapped() -> None:
    """Every seed row resolves to its own entry."""
    assert mismatched_rows(rows) == []


# id: (source, code, "category severity retryable owner match")
CASES = {
    "common-0-waiting-for-device": (P, "0", "pending info no none exact"),
    "common-minus1-waiting-verify": (P, "-1", "pending info no none exact"),
    "common-1-no-binding-our-app": (P, "1", "recipient_invalid warning no our_app exact"),
    "common-2-acked-handed-to-vendor": (P, "2", "success info no none exact"),
    "common-99999999-unknown-state": (P, "99999999", "unknown warning with_backoff unknown exact"),
    "apns-2008-missing-token": (f"{P}.apns", "2008", "recipient_invalid warning no our_app exact"),
    "apns-2009-bad-device-token-our-binding": (
        f"{P}.apns",
        "2009",
        "recipient_invalid warning no our_app exact",
    ),
    "apns-2010-token-not-for-topic-our-binding": (
        f"{P}.apns",
        "2010",
        "recipient_invalid warning no our_app exact",
    ),
    "apns-2011-unregistered": (f"{P}.apns", "2011", "recipient_invalid warning no end_user exact"),
    "apns-2013-cert-environment": (
        f"{P}.apns",
        "2013",
        "configuration critical no our_config exact",
    ),
    "apns-2014-bad-certificate": (f"{P}.apns", "2014", "auth critical no our_config exact"),
    "apns-2024-connclosed-lost-causes": (
        f"{P}.apns",
        "2024",
        "configuration critical no our_config exact",
    ),
    "apns-2025-upstream-network": (
        f"{P}.apns",
        "2025",
        "network warning with_backoff provider exact",
    ),
    "huawei-80300008-auth-label-but-too-large": (
        f"{P}.huawei",
        "80300008",
        "payload_too_large error no our_app exact",
    ),
    "huawei-80300002-token-of-another-app-our-binding": (
        f"{P}.huawei",
        "80300002",
        "recipient_invalid warning no our_app exact",
    ),
    "huawei-80000003-offline": (
        f"{P}.huawei",
        "80000003",
        "recipient_unreachable info yes end_user exact",
    ),
    "huawei-80000007-region-not-covered": (
        f"{P}.huawei",
        "80000007",
        "unsupported error no provider exact",
    ),
    "huawei-109-nsp-ts-drift-default-owner": (
        f"{P}.huawei",
        "109",
        "invalid_request error no our_app exact",
    ),
    "huawei-111-busy": (
        f"{P}.huawei",
        "111",
        "provider_unavailable error with_backoff provider exact",
    ),
    "xiaomi-10004-ip-allow-list": (
        f"{P}.xiaomi",
        "10004",
        "permission critical no our_config exact",
    ),
    "xiaomi-10026-blacklisted-app": (
        f"{P}.xiaomi",
        "10026",
        "account_suspended critical no our_config exact",
    ),
    "xiaomi-10027-frequency": (
        f"{P}.xiaomi",
        "10027",
        "throttled warning with_backoff our_app exact",
    ),
    "xiaomi-22021-user-grant-per-user-our-app": (
        f"{P}.xiaomi",
        "22021",
        "permission error no our_app exact",
    ),
    "oppo-minus2-flow-control": (f"{P}.oppo", "-2", "throttled warning with_backoff our_app exact"),
    "oppo-13-call-count": (f"{P}.oppo", "13", "quota_exhausted critical no our_config exact"),
    "oppo-10000-malformed-registration-id-our-app": (
        f"{P}.oppo",
        "10000",
        "recipient_invalid warning no our_app exact",
    ),
    "vivo-10000-auth-not-oppo": (f"{P}.vivo", "10000", "auth critical no our_config exact"),
    "vivo-10066-pair-count": (f"{P}.vivo", "10066", "payload_too_large error no our_app exact"),
    "vivo-10070-total-sent": (f"{P}.vivo", "10070", "quota_exhausted critical no our_config exact"),
    "vivo-10104-test-content": (f"{P}.vivo", "10104", "content_rejected error no our_app exact"),
    "vivo-10303-duplicate-request": (
        f"{P}.vivo",
        "10303",
        "invalid_state warning no our_app exact",
    ),
    "fcm-90000003-not-registered": (
        f"{P}.fcm",
        "90000003",
        "recipient_invalid warning no end_user exact",
    ),
    "fcm-90000401-authentication": (f"{P}.fcm", "90000401", "auth critical no our_config exact"),
    # an entry's unique provider name resolves as its code (docs/taxonomy.md §1)
    "apns-name-BadDeviceToken-is-2009": (
        f"{P}.apns",
        "BadDeviceToken",
        "recipient_invalid warning no our_app exact",
    ),
    "apns-name-is-case-sensitive": (
        f"{P}.apns",
        "baddevicetoken",
        "unknown warning with_backoff unknown unmapped",
    ),
    # APNs' HTTP status 410 is not a code of Alibaba's table (it reports 2011 Unregistered)
    "apns-http-410-not-a-code": (
        f"{P}.apns",
        "410",
        "unknown warning with_backoff unknown unmapped",
    ),
    "fcm-name-NotRegistered": (
        f"{P}.fcm",
        "NotRegistered",
        "recipient_invalid warning no end_user exact",
    ),
    "oppo-name-with-spaces": (
        f"{P}.oppo",
        " Invalid RegistrationId ",
        "recipient_invalid warning no our_app exact",
    ),
    "fcm-unlisted-code-unmapped": (
        f"{P}.fcm",
        "90000999",
        "unknown warning with_backoff unknown unmapped",
    ),
}


@pytest.mark.parametrize(("source", "code", "expected"), list(CASES.values()), ids=list(CASES))
def test_classification(source: str, code: str, expected: str) -> None:
    """Tricky rows get the labels docs/taxonomy.md gives their condition."""
    r = load_codebook().resolve(source, code)
    assert f"{r.category} {r.severity} {r.retryable} {r.owner} {r.match}" == expected
