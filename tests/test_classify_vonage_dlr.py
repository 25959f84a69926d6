"""Vonage SMS delivery-receipt `err-code` (source vonage.sms_dlr): coverage and labels."""

from __future__ import annotations

import pytest

from exporter import load_codebook

BOOK = load_codebook()
# Vonage's published DLR error codes (mappings/vonage_sms_dlr.yaml cites where from).
PUBLISHED = [*range(0, 17), 50, 51, 52, 53, 54, 99]

CASES = [
    # (err-code, DLR status, category, severity, retryable, owner)
    ("0", "delivered", "success", "info", "no", "none"),
    ("0", "accepted", "pending", "info", "no", "none"),
    ("0", "buffered", "pending", "info", "no", "none"),
    ("0", "expired", "recipient_unreachable", "info", "yes", "end_user"),
    ("0", "failed", "unknown", "warning", "with_backoff", "unknown"),
    ("1", "failed", "unknown", "warning", "with_backoff", "unknown"),
    ("2", "failed", "recipient_unreachable", "info", "yes", "end_user"),
    ("3", "failed", "recipient_invalid", "warning", "no", "end_user"),
    ("4", "rejected", "recipient_opted_out", "warning", "no", "end_user"),
    ("6", "rejected", "content_rejected", "error", "no", "our_app"),
    ("8", "failed", "network", "warning", "with_backoff", "provider"),
    ("11", "rejected", "unsupported", "error", "no", "provider"),
    ("15", "failed", "recipient_unreachable", "info", "yes", "end_user"),
    ("99", "failed", "provider_internal", "error", "with_backoff", "provider"),
]


def test_every_published_code_is_mapped() -> None:
    """Each err-code Vonage publishes has an exact entry; nothing else is invented."""
    codes = {r.code for r in BOOK.rules("vonage.sms_dlr")}
    assert codes == {str(c) for c in PUBLISHED}
    for code in PUBLISHED:
        assert BOOK.resolve("vonage.sms_dlr", str(code), None, "failed").match.value == "exact"


@pytest.mark.parametrize(
    ("code", "status", "category", "severity", "retryable", "owner"),
    CASES,
    ids=[f"{c}-{s}" for c, s, *_ in CASES],
)
def test_labels(
    code: str, status: str, category: str, severity: str, retryable: str, owner: str
) -> None:
    """err-code with the DLR status as message resolves to the TAXONOMY labels."""
    res = BOOK.resolve("vonage.sms_dlr", code, None, status)
    assert (res.category.value, res.severity.value, res.retryable.value, res.owner.value) == (
        category, severity, retryable, owner,
    )


def test_alias_and_unmapped() -> None:
    """The nexmo alias resolves; an unpublished code is unmapped, never guessed."""
    assert BOOK.resolve("nexmo.sms_dlr", "6").category.value == "content_rejected"
    assert BOOK.resolve("vonage.sms_dlr", "77", None, "failed").match.value == "unmapped"
