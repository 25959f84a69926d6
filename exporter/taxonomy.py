"""The closed label sets of TAXONOMY.md and the defaults that follow from a category.

Every label value Codebook emits comes from one of the enums below; nothing else may become
a label. Defaults are the tables of TAXONOMY.md §3 (severity, retryable) and §4 (owner).
"""

from __future__ import annotations

from enum import Enum


class _Label(str, Enum):
    """A closed label value; ``str()`` gives the wire value."""

    def __str__(self) -> str:
        return self.value


class Category(_Label):
    """What happened, decided by the condition the provider doc describes (TAXONOMY.md §2)."""

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


class Severity(_Label):
    """How loudly to react (TAXONOMY.md §3)."""

    CRITICAL = "critical"
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


class Retryable(_Label):
    """Whether the same request may succeed if sent again (TAXONOMY.md §3)."""

    WITH_BACKOFF = "with_backoff"
    YES = "yes"
    NO = "no"


class Owner(_Label):
    """Who must change something for the same request to succeed (TAXONOMY.md §4)."""

    NONE = "none"
    END_USER = "end_user"
    OUR_APP = "our_app"
    OUR_CONFIG = "our_config"
    PROVIDER = "provider"
    UNKNOWN = "unknown"


class Match(_Label):
    """How a code was resolved: an entry, a class rule, or nothing."""

    EXACT = "exact"
    CLASS = "class"
    UNMAPPED = "unmapped"


C, S, R, O = Category, Severity, Retryable, Owner

DEFAULT_SEVERITY: dict[Category, Severity] = {
    **dict.fromkeys(
        (C.AUTH, C.PERMISSION, C.ACCOUNT_SUSPENDED, C.QUOTA_EXHAUSTED, C.CONFIGURATION,
         C.SENDER_INVALID),
        S.CRITICAL,
    ),
    **dict.fromkeys(
        (C.INVALID_REQUEST, C.PAYLOAD_TOO_LARGE, C.CONTENT_REJECTED, C.UNSUPPORTED,
         C.PROVIDER_UNAVAILABLE, C.PROVIDER_INTERNAL),
        S.ERROR,
    ),
    **dict.fromkeys(
        (C.RECIPIENT_INVALID, C.RECIPIENT_OPTED_OUT, C.THROTTLED, C.INVALID_STATE, C.DEVICE,
         C.NETWORK, C.TIMEOUT, C.UNKNOWN),
        S.WARNING,
    ),
    **dict.fromkeys(
        (C.SUCCESS, C.PENDING, C.CALL_ENDED_NORMAL, C.RECIPIENT_DECLINED,
         C.RECIPIENT_UNREACHABLE),
        S.INFO,
    ),
}

DEFAULT_RETRYABLE: dict[Category, Retryable] = {
    **dict.fromkeys(Category, R.NO),
    **dict.fromkeys(
        (C.THROTTLED, C.PROVIDER_UNAVAILABLE, C.PROVIDER_INTERNAL, C.NETWORK, C.TIMEOUT,
         C.UNKNOWN),
        R.WITH_BACKOFF,
    ),
    **dict.fromkeys((C.RECIPIENT_UNREACHABLE, C.RECIPIENT_DECLINED), R.YES),
}

# §4 names owners by situation; the category default is the common case and an entry
# overrides it (with a reason) for per-user credentials, the provider's upstream network, etc.
DEFAULT_OWNER: dict[Category, Owner] = {
    **dict.fromkeys((C.SUCCESS, C.PENDING, C.CALL_ENDED_NORMAL), O.NONE),
    **dict.fromkeys(
        (C.RECIPIENT_DECLINED, C.RECIPIENT_UNREACHABLE, C.RECIPIENT_OPTED_OUT,
         C.RECIPIENT_INVALID, C.DEVICE, C.NETWORK),
        O.END_USER,
    ),
    **dict.fromkeys(
        (C.INVALID_REQUEST, C.INVALID_STATE, C.PAYLOAD_TOO_LARGE, C.CONTENT_REJECTED,
         C.THROTTLED, C.UNSUPPORTED),
        O.OUR_APP,
    ),
    **dict.fromkeys(
        (C.ACCOUNT_SUSPENDED, C.QUOTA_EXHAUSTED, C.CONFIGURATION, C.SENDER_INVALID, C.AUTH,
         C.PERMISSION),
        O.OUR_CONFIG,
    ),
    **dict.fromkeys((C.PROVIDER_UNAVAILABLE, C.PROVIDER_INTERNAL, C.TIMEOUT), O.PROVIDER),
    C.UNKNOWN: O.UNKNOWN,
}

# The operation did not fail: no ``error.type`` and no span status change for these. Every
# other category, declined and unreachable included, means the message or call did not get
# through, which is what OpenTelemetry calls an error even when nobody should be paged.
NON_ERROR_CATEGORIES: frozenset[Category] = frozenset(
    (C.SUCCESS, C.PENDING, C.CALL_ENDED_NORMAL)
)

del C, S, R, O
