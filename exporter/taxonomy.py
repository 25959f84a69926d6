"""The closed label sets of docs/taxonomy.md and the defaults that follow from a category.

Every label value Codebook emits comes from one of the enums below; nothing else may become
a label. Defaults are the tables of docs/taxonomy.md §3 (severity, retryable) and §4 (owner).
"""

from __future__ import annotations

from enum import StrEnum


class Category(StrEnum):
    """What happened, decided by the condition the provider doc describes (docs/taxonomy.md §2)."""

    SUCCESS = "success"
    PENDING = "pending"
    CALL_ENDED_NORMAL = "call_ended_normal"
    RECIPIENT_DECLINED = "recipient_declined"
    AUTH = "auth"
    ACCOUNT_SUSPENDED = "account_suspended"
    QUOTA_EXHAUSTED = "quota_exhausted"
    THROTTLED = "throttled"
    PERMISSION = "permission"
    CONFIGURATION = "configuration"
    SENDER_INVALID = "sender_invalid"
    RECIPIENT_OPTED_OUT = "recipient_opted_out"
    RECIPIENT_INVALID = "recipient_invalid"
    RECIPIENT_UNREACHABLE = "recipient_unreachable"
    CONTENT_REJECTED = "content_rejected"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNSUPPORTED = "unsupported"
    INVALID_STATE = "invalid_state"
    INVALID_REQUEST = "invalid_request"
    DEVICE = "device"
    NETWORK = "network"
    TIMEOUT = "timeout"
    PROVIDER_UNAVAILABLE = "provider_unavailable"
    PROVIDER_INTERNAL = "provider_internal"
    UNKNOWN = "unknown"


class Severity(StrEnum):
    """How loudly to react (docs/taxonomy.md §3)."""

    CRITICAL = "critical"
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


class Retryable(StrEnum):
    """Whether the same request may succeed if sent again (docs/taxonomy.md §3)."""

    WITH_BACKOFF = "with_backoff"
    YES = "yes"
    NO = "no"


class Owner(StrEnum):
    """Who must change something for the same request to succeed (docs/taxonomy.md §4)."""

    NONE = "none"
    END_USER = "end_user"
    OUR_APP = "our_app"
    OUR_CONFIG = "our_config"
    PROVIDER = "provider"
    UNKNOWN = "unknown"


class Match(StrEnum):
    """How a code was resolved: an entry, a class rule, or nothing."""

    EXACT = "exact"
    CLASS = "class"
    UNMAPPED = "unmapped"


Cat, Sev, Ret, Own = Category, Severity, Retryable, Owner

DEFAULT_SEVERITY: dict[Category, Severity] = {
    **dict.fromkeys(
        (
            Cat.AUTH,
            Cat.PERMISSION,
            Cat.ACCOUNT_SUSPENDED,
            Cat.QUOTA_EXHAUSTED,
            Cat.CONFIGURATION,
            Cat.SENDER_INVALID,
        ),
        Sev.CRITICAL,
    ),
    **dict.fromkeys(
        (
            Cat.INVALID_REQUEST,
            Cat.PAYLOAD_TOO_LARGE,
            Cat.CONTENT_REJECTED,
            Cat.UNSUPPORTED,
            Cat.PROVIDER_UNAVAILABLE,
            Cat.PROVIDER_INTERNAL,
        ),
        Sev.ERROR,
    ),
    **dict.fromkeys(
        (
            Cat.RECIPIENT_INVALID,
            Cat.RECIPIENT_OPTED_OUT,
            Cat.THROTTLED,
            Cat.INVALID_STATE,
            Cat.DEVICE,
            Cat.NETWORK,
            Cat.TIMEOUT,
            Cat.UNKNOWN,
        ),
        Sev.WARNING,
    ),
    **dict.fromkeys(
        (
            Cat.SUCCESS,
            Cat.PENDING,
            Cat.CALL_ENDED_NORMAL,
            Cat.RECIPIENT_DECLINED,
            Cat.RECIPIENT_UNREACHABLE,
        ),
        Sev.INFO,
    ),
}

DEFAULT_RETRYABLE: dict[Category, Retryable] = {
    **dict.fromkeys(Category, Ret.NO),
    **dict.fromkeys(
        (
            Cat.THROTTLED,
            Cat.PROVIDER_UNAVAILABLE,
            Cat.PROVIDER_INTERNAL,
            Cat.NETWORK,
            Cat.TIMEOUT,
            Cat.UNKNOWN,
        ),
        Ret.WITH_BACKOFF,
    ),
    **dict.fromkeys((Cat.RECIPIENT_UNREACHABLE, Cat.RECIPIENT_DECLINED), Ret.YES),
}

# §4 names owners by situation; the category default is the common case and an entry
# overrides it (with a reason) for per-user credentials, the provider's upstream network, etc.
DEFAULT_OWNER: dict[Category, Owner] = {
    **dict.fromkeys((Cat.SUCCESS, Cat.PENDING, Cat.CALL_ENDED_NORMAL), Own.NONE),
    **dict.fromkeys(
        (
            Cat.RECIPIENT_DECLINED,
            Cat.RECIPIENT_UNREACHABLE,
            Cat.RECIPIENT_OPTED_OUT,
            Cat.RECIPIENT_INVALID,
            Cat.DEVICE,
            Cat.NETWORK,
        ),
        Own.END_USER,
    ),
    **dict.fromkeys(
        (
            Cat.INVALID_REQUEST,
            Cat.INVALID_STATE,
            Cat.PAYLOAD_TOO_LARGE,
            Cat.CONTENT_REJECTED,
            Cat.THROTTLED,
            Cat.UNSUPPORTED,
        ),
        Own.OUR_APP,
    ),
    **dict.fromkeys(
        (
            Cat.ACCOUNT_SUSPENDED,
            Cat.QUOTA_EXHAUSTED,
            Cat.CONFIGURATION,
            Cat.SENDER_INVALID,
            Cat.AUTH,
            Cat.PERMISSION,
        ),
        Own.OUR_CONFIG,
    ),
    **dict.fromkeys((Cat.PROVIDER_UNAVAILABLE, Cat.PROVIDER_INTERNAL, Cat.TIMEOUT), Own.PROVIDER),
    Cat.UNKNOWN: Own.UNKNOWN,
}

# Not evidence of a failed operation: no ``error.type`` and no span status change for these.
# ``unknown`` (an unmapped code, or a doc that says "unknown state") is not evidence either.
# Every other category, declined and unreachable included, means the message or call did not
# get through, which OpenTelemetry calls an error even when nobody should be paged for it.
NON_ERROR_CATEGORIES: frozenset[Category] = frozenset(
    (Cat.SUCCESS, Cat.PENDING, Cat.CALL_ENDED_NORMAL, Cat.UNKNOWN)
)

del Cat, Sev, Ret, Own
