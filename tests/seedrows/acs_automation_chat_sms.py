"""Code rows of seed 004's Call Automation, Chat SDK and SMS tables (Azure Communication Services).

The seed keeps its tables as pipe rows without a leading pipe (`404 | 8522 | ... |`), each
table introduced by a header row and a `---|---|` separator. The sections are found by their
headings: `Call Automation SDK のエラー コード` (up to the PSTN section), `Chat SDK のエラー コード`
and `SMS エラー コード`. Inside Call Automation the header decides what the first cells are:

- `コード | サブコード | ...` — the most common errors: code + subcode;
- `状態コード | 説明` — the generic 4xx/5xx/6xx status codes: code only;
- `サブコード | 説明` — the generic subcodes: subcode only.

A cell may hold a newline, so a row is complete only once it has as many pipes as its header
has columns; codes are kept as the seed writes them (`8,540` stays `8,540`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from seedrows import SeedRow, seed_file

AUTOMATION = "azure.acs.call_automation"
CHAT = "azure.acs.chat"
SMS = "azure.acs.sms"

# Established by reading seed 004: the most common Call Automation errors table has 14
# code/subcode rows (8522 twice: 404 and 405); the generic status tables list 14 4xx, 5 5xx
# and 1 6xx codes; the generic subcode table has 118 rows (0 ... 9999). Chat lists 4 codes
# (401, 403, 429, 503); SMS lists 16 DeliveryStatusDetails codes (2000 ... 5002, 9999).
EXPECTED_ROWS = {AUTOMATION: 14 + 14 + 5 + 1 + 118, CHAT: 4, SMS: 16}

# Section headings (whole lines) and the source their tables belong to; None ends a section.
_SECTIONS = {
    "Call Automation SDK のエラー コード": AUTOMATION,
    "ParticipantEndReason を伴う PSTN 通話応答コード": None,
    "Chat SDK のエラー コード": CHAT,
    "SMS エラー コード": SMS,
}
_SEPARATOR = re.compile(r"^\|?\s*-{3,}\s*(\|\s*-{3,}\s*)*\|?$")
_CODE = re.compile(r"^\d{1,3}(,\d{3})+$|^\d+$")


def _cells(row: str) -> list[str]:
    text = row.strip()
    if text.startswith("|"):
        text = text[1:]
    if text.endswith("|"):
        text = text[:-1]
    return [cell.strip() for cell in text.split("|")]


def _tables(path: Path) -> Iterator[tuple[str, list[str], int, list[str]]]:
    """Yield (source, header cells, first line number, cells) for each row of our sections."""
    lines = path.read_text(encoding="utf-8").splitlines()
    source: str | None = None
    header: list[str] | None = None
    start, pending = 0, ""
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if pending:
            pending += "\n" + text
        elif text in _SECTIONS:
            source, header = _SECTIONS[text], None
            continue
        elif source is None:
            continue
        elif _SEPARATOR.match(text) and number > 1 and "|" in lines[number - 2]:
            header = _cells(lines[number - 2])
            continue
        elif header is not None and "|" in text and _CODE.match(_cells(text)[0]):
            start, pending = number, text
        else:
            if "|" not in text:
                header = None  # prose between tables ends the current table
            continue
        # Complete once the row has one closing pipe per header column.
        if source and header is not None and pending.count("|") >= len(header):
            row, pending = pending, ""
            yield source, header, start, _cells(row)
    if pending:
        raise ValueError(f"{path.name}:{start}: unterminated table row")


def rows(seeds: Path) -> list[SeedRow]:
    """Every code row of seed 004's Call Automation, Chat SDK and SMS tables."""
    path = seed_file(seeds, "004")
    found: list[SeedRow] = []
    for source, header, line, cells in _tables(path):
        first = header[0]
        if source == AUTOMATION and first == "コード" and header[1] == "サブコード":
            row = SeedRow(path.name, line, source, code=cells[0], subcode=cells[1])
        elif source == AUTOMATION and first == "サブコード":
            row = SeedRow(path.name, line, source, code=None, subcode=cells[0])
        elif first in ("コード", "状態コード"):
            row = SeedRow(path.name, line, source, code=cells[0])
        else:
            raise ValueError(f"{path.name}:{line}: unexpected table header {header!r}")
        found.append(row)
    return found
