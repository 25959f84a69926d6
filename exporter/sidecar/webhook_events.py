"""Provider webhook payloads -> events carrying a provider code (parsing only, no I/O).

Three payload families (shapes: ``../shared/PROVIDERS.md`` §3 in the project notes, and the
README section "Webhooks"):

- Azure Event Grid, Event Grid schema (a JSON array of ``{id, eventType, data, ...}``) or
  CloudEvents 1.0 structured mode (one object, or an array: ``{id, type, source, data, ...}``).
- Azure Communication Services Call Automation callbacks: a JSON array of CloudEvents.
- Vonage SMS delivery receipts (DLR): flat key/value parameters (query, form or JSON).

Classification (which source a code resolves in):

- ``Microsoft.Communication.SMSDeliveryReportReceived`` -> ``azure.acs.sms``. The code is the
  first 4-digit ACS SMS code (2000, 4xxx, 5xxx, 9999) found in ``deliveryStatusDetails``
  (leading or embedded). Without one, the text is looked up among the source's entry
  ``name`` s (Microsoft's English messages, e.g. ``Message blocked by Destination carrier.`` ->
  4005), compared by :func:`fold_text` (case, runs of space, a trailing period); an entry
  (overlay) whose code is the text itself wins; else the text is the code and resolves
  ``unmapped`` (its ``provider_codes_total`` label is ``_OTHER``). Nothing is guessed, nothing
  is inferred from ``deliveryStatus``.
- A ``Microsoft.Communication.*`` event whose data carries ``resultInformation`` (Call
  Automation, through Event Grid or the callback URL): ``CallDisconnected`` resolves in
  ``azure.acs.calling`` (the seed's call-end code/subcode table: 0/7000, 5300, 540000,
  560000, 560486 ...); every other event type in ``azure.acs.call_automation`` (the seed's
  Call Automation code/subcode table with its generic codes and subcodes: 8522, 8523, 8583,
  7504 ...). When the event's own table has no exact entry for the (code, subcode) and the
  other table has one, the other table decides (the seed lists ``callDisconnected`` as an
  example of a Call Automation error callback, and some call-end subcodes, e.g. 7000, appear
  in both). See :func:`call_source`.
- Vonage DLR: ``err-code`` in ``vonage.sms_dlr`` with the DLR ``status`` as the entry's
  message (``err-code`` 0 is only delivered when ``status`` says so).

Other event types (``IncomingCall``, ``SMSReceived``, ``ParticipantsUpdated`` ...) carry no
code: they are acknowledged and counted as ``ignored``. Keys of ``data`` match
case-insensitively (older ACS samples use PascalCase). Ids copied to the log record are the
event's own identifiers only: never phone numbers (``from``, ``to``, ``msisdn``, Event Grid
``subject``), message text, tags or application-supplied context.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, NamedTuple

from ..codebook import Codebook
from ..taxonomy import Match

SOURCE_SMS = "azure.acs.sms"
SOURCE_CALLING = "azure.acs.calling"
SOURCE_CALL_AUTOMATION = "azure.acs.call_automation"
SOURCE_VONAGE_DLR = "vonage.sms_dlr"

TYPE_VALIDATION = "microsoft.eventgrid.subscriptionvalidationevent"
TYPE_SMS_REPORT = "microsoft.communication.smsdeliveryreportreceived"
TYPE_CALL_DISCONNECTED = "microsoft.communication.calldisconnected"
_ACS_PREFIX = "microsoft.communication."

# The ACS SMS DeliveryStatusDetails codes (seed 004): 2000, 4000-4010, 5000-5002, 9999.
_SMS_CODE = re.compile(r"(?<!\d)(2000|4\d{3}|5\d{3}|9999)(?!\d)")
VONAGE_STATUSES = frozenset(
    ("accepted", "delivered", "buffered", "expired", "failed", "rejected", "unknown")
)
SIGNATURE_METHODS = ("md5hash", "md5", "sha1", "sha256", "sha512")
MAX_ID_CHARS = 256
MAX_TEXT_CODE_CHARS = 200


class BadEvent(Exception):
    """One event (or the whole body) is malformed; ``str(exc)`` is the reason."""


class Event(NamedTuple):
    """One provider event. ``source`` is None for event types that carry no code."""

    event_type: str
    dedup_key: str
    source: str | None = None
    code: str | None = None
    subcode: str | None = None
    message: str | None = None
    time_text: str = ""  # RFC 3339; parsed only when a log record is built (parse_time)
    ids: tuple[tuple[str, str], ...] = ()


class Validation(NamedTuple):
    """An Event Grid subscription-validation handshake event."""

    code: str


Parsed = Event | Validation | BadEvent


def _event(fields: tuple[Any, ...]) -> Event:
    """``Event(*fields)`` without the keyword handling of the generated ``__new__``."""
    return tuple.__new__(Event, fields)


def _names(*names: str) -> dict[str, str]:
    return {n.lower(): n for n in names}


_ENVELOPE = _names(
    "id", "type", "source", "specversion", "time", "eventType", "topic", "eventTime", "data"
)
_DATA = _names(
    "messageId", "deliveryStatus", "deliveryStatusDetails", "resultInformation",
    "callConnectionId", "serverCallId", "correlationId", "validationCode",
)
_RESULT = _names("code", "subCode")


def _canonical(obj: dict[str, Any], names: Mapping[str, str], *required: str) -> dict[str, Any]:
    """``obj`` when it has every ``required`` key as documented; else a copy whose keys that
    match ``names`` case-insensitively (PascalCase samples) are renamed to the documented form.
    """
    for key in required:
        if key not in obj:
            break
    else:
        return obj
    return {names.get(k.lower(), k) if isinstance(k, str) else k: v for k, v in obj.items()}


def _text(value: Any, what: str, limit: int = MAX_ID_CHARS) -> str:
    if type(value) is str:  # the usual case first
        text = value.strip()
        if text and len(text) <= limit:
            return text
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise BadEvent(f"{what} must be a string")
    text = str(value).strip()
    if not text:
        raise BadEvent(f"{what} is empty")
    if len(text) > limit:
        raise BadEvent(f"{what} is longer than {limit} characters")
    return text


def _opt_id(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if type(value) is str:  # the usual case first
        text = value.strip()
        return text[:MAX_ID_CHARS] if text else None
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        text = str(value).strip()
        if text:
            return text[:MAX_ID_CHARS]
    return None


def parse_time(value: Any) -> int:
    """RFC 3339 time -> Unix nanoseconds; 0 when absent or unparseable (never raises)."""
    if not isinstance(value, str) or not value:
        return 0
    try:
        dt = datetime.fromisoformat(value.strip())
    except ValueError:
        return 0
    if dt.tzinfo is None:
        return 0
    return int(dt.timestamp() * 1_000_000) * 1000


def call_source(book: Codebook, event_type: str, code: object, subcode: object) -> str:
    """The source a Call Automation ``resultInformation`` resolves in (module docstring)."""
    if event_type.lower() == TYPE_CALL_DISCONNECTED:
        first, second = SOURCE_CALLING, SOURCE_CALL_AUTOMATION
    else:
        first, second = SOURCE_CALL_AUTOMATION, SOURCE_CALLING
    if book.resolve(first, code, subcode).match is Match.EXACT:
        return first
    if book.resolve(second, code, subcode).match is Match.EXACT:
        return second
    return first


def sms_code(details: Any) -> str | None:
    """The code of an ACS SMS ``deliveryStatusDetails``: a 4-digit code, else the text."""
    if type(details) is str:  # a few distinct texts recur: remember them (bounded)
        code = _sms_codes.get(details)
        if code is None:
            code = _sms_code(details)
            if len(_sms_codes) >= _SMS_CACHE_SIZE:
                _sms_codes.clear()
            _sms_codes[details] = code if code is not None else ""
        return code or None
    return _sms_code(details)


def fold_text(text: str) -> str:
    """A delivery-status text folded for comparing with an entry ``name``: runs of space to
    one, case folded, a typographic apostrophe as ``'``, a trailing period dropped.
    """
    return " ".join(text.replace("\u2019", "'").split()).casefold().rstrip(".").rstrip()


def sms_names(book: Codebook) -> dict[str, str]:
    """``azure.acs.sms`` entry names (folded) -> code, for names that stand for one code."""
    seen: dict[str, set[str]] = {}
    for rule in book.rules(SOURCE_SMS):
        if rule.name and rule.code and not rule.pattern:
            seen.setdefault(fold_text(rule.name), set()).add(rule.code)
    return {name: codes.pop() for name, codes in seen.items() if name and len(codes) == 1}


_SMS_CACHE_SIZE = 1024
_sms_codes: dict[str, str] = {}


def _sms_code(details: Any) -> str | None:
    if isinstance(details, bool):
        return None
    if isinstance(details, int):
        return str(details)
    if not isinstance(details, str) or not details.strip():
        return None
    found = _SMS_CODE.search(details)
    if found is not None:
        return found.group(1)
    return " ".join(details.split())[:MAX_TEXT_CODE_CHARS]


_kinds: dict[str, str] = {}  # event type -> lower case (a few dozen types; bounded)


def _kind(event_type: str) -> str:
    kind = event_type.lower()
    if len(_kinds) >= 256:
        _kinds.clear()
    _kinds[event_type] = kind
    return kind


class EventParser:
    """Turns decoded webhook bodies into :class:`Event` lists; ``book`` gives the codebook now.

    Thread-safe and stateless apart from reading ``book()``; every method raises only
    :class:`BadEvent` (for the body as a whole); per-event problems come back in the list.
    """

    def __init__(self, book: Callable[[], Codebook]) -> None:
        self._book = book
        self._sms_names: tuple[Codebook, dict[str, str]] | None = None

    def _sms_text_code(self, text: str) -> str:
        """The ``azure.acs.sms`` code whose entry ``name`` is ``text`` (:func:`fold_text`
        equal), else ``text`` itself (an entry or overlay whose code is the text, or unmapped).
        """
        book = self._book()
        names = self._sms_names
        if names is None or names[0] is not book:  # a reload: read the names again
            names = self._sms_names = (book, sms_names(book))
        code = names[1].get(fold_text(text))
        if code is None or book.resolve(SOURCE_SMS, text).match is Match.EXACT:
            return text
        return code

    # -- Azure ---------------------------------------------------------------------------------

    def eventgrid(self, doc: Any) -> list[Parsed]:
        """An Event Grid delivery: Event Grid schema array, or CloudEvents single or batch."""
        if isinstance(doc, dict):
            return [self._one(doc, 0)]
        if not isinstance(doc, list):
            raise BadEvent("the body is neither a JSON array nor an object of events")
        if not doc:
            raise BadEvent("the batch is empty")
        return [self._one(item, i) for i, item in enumerate(doc)]

    def callautomation(self, doc: Any) -> list[Parsed]:
        """A Call Automation callback: a JSON array of CloudEvents (a single object is accepted)."""
        items = [doc] if isinstance(doc, dict) else doc
        if not isinstance(items, list):
            raise BadEvent("the body is neither a JSON array nor an object of events")
        if not items:
            raise BadEvent("the batch is empty")
        out: list[Parsed] = []
        for i, item in enumerate(items):
            parsed = self._one(item, i)
            if isinstance(parsed, Validation):
                parsed = BadEvent(f"[{i}]: subscription validation is for the eventgrid route")
            out.append(parsed)
        return out

    def _one(self, item: Any, index: int) -> Parsed:
        try:
            if not isinstance(item, dict):
                raise BadEvent("an event must be a JSON object")
            if "id" not in item or ("specversion" not in item and "eventType" not in item):
                item = _canonical(item, _ENVELOPE, "id")
            spec = item.get("specversion")
            if spec is not None:
                if spec != "1.0":
                    raise BadEvent(f"specversion {str(spec)[:20]!r} is not 1.0")
                event_type = _text(item.get("type"), "type")
                event_id = _text(item.get("id"), "id")
                origin = _text(item.get("source"), "source", 1024)
                when = item.get("time")
            else:  # Event Grid schema: the busiest shape, _text's usual case inlined
                value = item.get("eventType")
                event_type = value.strip() if type(value) is str else ""
                if not event_type or len(event_type) > MAX_ID_CHARS:
                    event_type = _text(value, "eventType")
                value = item.get("id")
                event_id = value.strip() if type(value) is str else ""
                if not event_id or len(event_id) > MAX_ID_CHARS:
                    event_id = _text(value, "id")
                origin = str(item.get("topic") or "")[:1024]
                when = item.get("eventTime")
            ids = [("cloudevents.event_id", event_id)]
            data = item.get("data")
            if not isinstance(data, dict):
                raise BadEvent("data must be a JSON object")
            key = f"azure|{origin}|{event_id}"
            when = when if isinstance(when, str) else ""
            return self._classify(event_type, data, key, when, ids)
        except BadEvent as exc:
            return BadEvent(f"[{index}]: {exc}")
        except RecursionError:
            return BadEvent(f"[{index}]: nested too deeply")

    def _classify(
        self,
        event_type: str,
        data: dict[str, Any],
        key: str,
        when: str,
        ids: list[tuple[str, str]],
    ) -> Parsed:
        kind = _kinds.get(event_type) or _kind(event_type)
        if kind == TYPE_VALIDATION:
            data = _canonical(data, _DATA, "validationCode")
            return Validation(_text(data.get("validationCode"), "data.validationCode"))
        if kind == TYPE_SMS_REPORT:  # the busiest event type: the common cases inlined
            if "deliveryStatusDetails" not in data or "messageId" not in data:
                data = _canonical(data, _DATA, "deliveryStatusDetails", "messageId")
            value = data.get("messageId")
            message_id = (
                value.strip()[:MAX_ID_CHARS] if type(value) is str else _opt_id(data, "messageId")
            )
            if message_id:
                ids.append(("messaging.message.id", message_id))
            value = data.get("deliveryStatus")
            status = value.strip() if type(value) is str else _opt_id(data, "deliveryStatus")
            if status:
                ids.append(("acs.sms.delivery_status", status[:32]))
            details = data.get("deliveryStatusDetails")
            code = _sms_codes.get(details) or sms_code(details) if type(details) is str else (
                sms_code(details)
            )
            if code is None:
                raise BadEvent("data.deliveryStatusDetails is missing or empty")
            if not code.isdigit():  # no code in the details: the text may name one
                code = self._sms_text_code(code)
            return _event((event_type, key, SOURCE_SMS, code, None, None, when, tuple(ids)))
        if not kind.startswith(_ACS_PREFIX):
            return Event(event_type, key, ids=tuple(ids), time_text=when)
        data = _canonical(data, _DATA, "resultInformation", "callConnectionId")
        info = data.get("resultInformation")
        if info is not None:
            if not isinstance(info, dict):
                raise BadEvent("data.resultInformation must be a JSON object")
            info = _canonical(info, _RESULT, "code", "subCode")
            code = _text(info.get("code"), "data.resultInformation.code", 32)
            sub = info.get("subCode")
            subcode = None if sub is None else _text(sub, "data.resultInformation.subCode", 32)
            for name, attr in (
                ("callConnectionId", "acs.call_connection_id"),
                ("serverCallId", "acs.server_call_id"),
                ("correlationId", "acs.correlation_id"),
            ):
                value = _opt_id(data, name)
                if value:
                    ids.append((attr, value))
            source = call_source(self._book(), event_type, code, subcode)
            return Event(event_type, key, source, code, subcode, None, when, tuple(ids))
        return Event(event_type, key, ids=tuple(ids), time_text=when)

    # -- Vonage ------------------------------------------------------------------------------

    def vonage_dlr(self, params: Mapping[str, str]) -> Event:
        """A Vonage SMS delivery receipt from its flat parameters; raises :class:`BadEvent`."""
        message_id = _text(params.get("messageId") or params.get("message-id"), "messageId")
        status = _text(params.get("status"), "status", 32).lower()
        if status not in VONAGE_STATUSES:
            raise BadEvent(f"status {status!r} is not one of {', '.join(sorted(VONAGE_STATUSES))}")
        code = _text(params.get("err-code"), "err-code", 16)
        ids = (
            ("messaging.message.id", message_id),
            ("vonage.dlr.status", status),
        )
        stamp = params.get("message-timestamp")
        # ``YYYY-MM-DD HH:MM:SS`` in UTC -> RFC 3339 (parse_time checks it when a log is built)
        when = stamp.strip().replace(" ", "T") + "+00:00" if isinstance(stamp, str) else ""
        key = f"vonage|{message_id}|{status}"
        return Event("vonage.sms.dlr", key, SOURCE_VONAGE_DLR, code, None, status, when, ids)


def vonage_signature(params: Mapping[str, Any], secret: str, method: str) -> str:
    """The hex signature Vonage computes over ``params`` (``sig`` excluded).

    ``md5hash``: MD5 of ``&k=v`` for the sorted keys followed by the secret; ``md5``, ``sha1``,
    ``sha256``, ``sha512``: HMAC of the same string keyed by the secret. ``&`` and ``=`` in
    values are replaced by ``_`` (as Vonage and its SDKs do).
    """
    text = "".join(
        f"&{k}={str(params[k]).replace('&', '_').replace('=', '_')}"
        for k in sorted(params)
        if k != "sig"
    ).encode("utf-8")
    if method == "md5hash":
        return hashlib.md5(text + secret.encode("utf-8"), usedforsecurity=False).hexdigest()
    return hmac.new(secret.encode("utf-8"), text, method).hexdigest()


def check_vonage_signature(
    params: Mapping[str, Any],
    secret: str,
    method: str,
    now: float,
    max_skew_seconds: float,
) -> str | None:
    """None when ``params`` carry a valid, fresh signature; else the reason it is refused."""
    sig = params.get("sig")
    if not isinstance(sig, str) or not sig:
        return "the delivery receipt is not signed (no sig)"
    try:
        stamp = float(str(params.get("timestamp", "")).strip())
    except ValueError:
        return "the signature timestamp is missing or not a number"
    if abs(now - stamp) > max_skew_seconds:
        return f"the signature timestamp is more than {max_skew_seconds:g} s from now"
    expected = vonage_signature(params, secret, method)
    if not hmac.compare_digest(sig.strip().lower().encode(), expected.encode()):
        return "bad signature"
    return None
