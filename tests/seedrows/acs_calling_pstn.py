"""Code rows of seed 004's Calling SDK, call-end and PSTN tables (Azure Communication Services).

The tables are pipe rows without a leading pipe (`40101 | 408 | ... |`), introduced by the
header `サブコード | コード | メッセージ | 結果カテゴリ | 通知 |` and a `---|---|` separator. The
sections are found by their headings:

- `Azure Communication Services Calling SDK クライアントのエラー コードとサブコード` and
  `通話終了コードとサブコードの呼び出し` → `azure.acs.calling` (ending at the Call Automation
  section `通話のコードとサブコードについて`);
- `ParticipantEndReason を伴う PSTN 通話応答コード` → `azure.acs.pstn` (four tables, one per
  ParticipantEndReason class, ending at `Chat SDK のエラー コード`).

A row normally has `subcode | code | message | result category | notes |`. The last rows of
the two calling tables give a code (or a list of codes joined with `、`) and no subcode, shifted
one column left (`480 | message | mitigation | ||`): a row whose second cell is not a number is
such a code-only row. Cells may hold newlines, and the last row of several tables lacks its
closing pipes, so a row runs until it has one pipe per header column, the next row starts, or
a line without any pipe (prose, a heading) ends the table. Codes and subcodes are kept as the
seed writes them (`5,317`, `60486`, `497` for 560487).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from seedrows import SeedRow, seed_file

CALLING = "azure.acs.calling"
PSTN = "azure.acs.pstn"

# Established by reading seed 004:
# - Calling SDK client table: 45 subcode/code rows (40101 ... 43220) and 9 code-only rows naming
#   14 codes (480, 481, 487, 490/491/496/497/498, 503/504, 600, 603, 604, 606) → 59;
# - call-end table: 37 subcode/code rows (0/0 ... 560486/486) and 8 code-only rows naming
#   14 codes (404, 408, 410, 430, 480, 481, 490/491/496/497/498, 500/503/504) → 51;
# - PSTN ParticipantEndReason tables: 0 (3 rows), 4xx (13), 5xx (2), 603 (1) → 19.
EXPECTED_ROWS = {CALLING: 59 + 51, PSTN: 3 + 13 + 2 + 1}

# Section headings (whole lines) and the source their tables belong to; None ends a section.
_SECTIONS = {
    "Azure Communication Services Calling SDK クライアントのエラー コードとサブコード": CALLING,
    "通話終了コードとサブコードの呼び出し": CALLING,
    "通話のコードとサブコードについて": None,
    "ParticipantEndReason を伴う PSTN 通話応答コード": PSTN,
    "Chat SDK のエラー コード": None,
}
_SEPARATOR = re.compile(r"^\|?\s*-{3,}\s*(\|\s*-{3,}\s*)*\|?$")
_NUMBER = re.compile(r"^\d{1,3}(,\d{3})+$|^\d+$")
_CODE_LIST = re.compile(r"^\d+(\s*、\s*\d+)*$")


def _cells(row: str) -> list[str]:
    return [cell.strip() for cell in row.split("|")]


def _starts_row(text: str) -> bool:
    return "|" in text and bool(_CODE_LIST.match(_cells(text)[0]) or _NUMBER.match(_cells(text)[0]))


def _tables(path: Path) -> Iterator[tuple[str, int, list[str]]]:
    """Yield (source, first line number, cells) for each table row of our sections."""
    lines = path.read_text(encoding="utf-8").splitlines()
    source: str | None = None
    columns = 0  # pipes in the current table's header; 0 = not inside a table
    start, pending = 0, ""

    def flush() -> Iterator[tuple[str, int, list[str]]]:
        nonlocal pending
        if pending and source is not None:
            yield source, start, _cells(pending)
        pending = ""

    for number, line in enumerate(lines, 1):
        text = line.strip()
        if text in _SECTIONS:
            yield from flush()
            source, columns = _SECTIONS[text], 0
            continue
        if source is None:
            continue
        if _SEPARATOR.match(text) and number > 1 and "|" in lines[number - 2]:
            yield from flush()
            columns = lines[number - 2].count("|")
            continue
        if not columns:
            continue
        if _starts_row(text):
            yield from flush()
            start, pending = number, text
        elif "|" not in text:
            yield from flush()  # prose or a heading ends the table
            columns = 0
            continue
        elif pending:
            pending += "\n" + text
        else:
            continue
        if pending.count("|") >= columns:
            yield from flush()
    yield from flush()


def rows(seeds: Path) -> list[SeedRow]:
    """Every code row of seed 004's Calling SDK, call-end and PSTN tables (one per code)."""
    path = seed_file(seeds, "004")
    found: list[SeedRow] = []
    for source, line, cells in _tables(path):
        first, second = cells[0], cells[1] if len(cells) > 1 else ""
        if _NUMBER.match(first) and _NUMBER.match(second):
            found.append(SeedRow(path.name, line, source, code=second, subcode=first))
        elif _CODE_LIST.match(first):
            for code in re.split(r"\s*、\s*", first):
                found.append(SeedRow(path.name, line, source, code=code))
        else:
            raise ValueError(f"{path.name}:{line}: unexpected table row {cells!r}")
    return found


def row_texts(seeds: Path) -> list[tuple[str, int, list[str]]]:
    """(source, line, cells) of every table row, for inspecting the doc text of a row."""
    return list(_tables(seed_file(seeds, "004")))
