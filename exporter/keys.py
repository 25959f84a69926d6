"""Normalising codes, subcodes and messages into lookup keys (docs/taxonomy.md §1).

The same functions run when mappings load and when telemetry is resolved, so a key written
``5,317`` in a mapping and ``"5317"`` or ``5317`` on a span meet in one dict slot.
"""

from __future__ import annotations

import re

# Longer inputs cannot be a code of any table we know; refusing them early keeps hostile
# values (megabyte strings, 10k-digit numbers) away from int() and the regexes.
MAX_KEY_CHARS = 64
MAX_MESSAGE_CHARS = 256

_THOUSANDS = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+")
_INTEGER = re.compile(r"[+-]?\d+")


def normalize_code(value: object) -> str | None:
    """Return the canonical text of a code or subcode, or None when there is none.

    Integers and integer-looking text compare as the integer's decimal form (``"007"`` is
    ``"7"``); thousands separators are dropped; surrounding space is trimmed. Never raises.
    """
    if value is None:
        return None
    if isinstance(value, int):  # bool too: True hashes as 1, so a cache hit and this agree
        return str(int(value)) if -(10**18) < value < 10**18 else None
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return None
    if isinstance(value, (bytes, bytearray)):
        if len(value) > MAX_KEY_CHARS * 4:
            return None
        value = bytes(value).decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not text or len(text) > MAX_KEY_CHARS:
        return None
    if "," in text and _THOUSANDS.fullmatch(text):
        text = text.replace(",", "")
    if _INTEGER.fullmatch(text):
        return str(int(text))
    return text


def normalize_message(value: object) -> str | None:
    """Return a message folded for matching (case and runs of space), or None. Never raises."""
    if isinstance(value, (bytes, bytearray)):
        if len(value) > MAX_MESSAGE_CHARS * 4:
            return None
        value = bytes(value).decode("utf-8", "replace")
    if not isinstance(value, str) or len(value) > MAX_MESSAGE_CHARS:
        return None
    folded = " ".join(value.split()).casefold()
    return folded or None
