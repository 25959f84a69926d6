"""Code rows of the Vonage SMS `status` tables (000 ja, 001 zh) and Braze fatal errors (002).

Both documents keep their codes in Markdown pipe tables. Vonage rows start with the numeric
`status`; Braze rows start with a backquoted "`STATUS Message`" cell, where the status may be
a class such as `5XX`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from seedrows import SeedRow, seed_file

VONAGE = "vonage.sms"
BRAZE = "braze.rest"

# Established by reading the seeds: 000 and 001 each list the same 20 `status` codes
# (0-12, 14, 15, 22, 23, 29, 32, 33); 002's fatal error table has 22 rows, including
# `5XX Internal Server Error` and three `400 Bad Request` rows.
EXPECTED_ROWS = {VONAGE: 40, BRAZE: 22}

_SEPARATOR = re.compile(r"^\|[\s:|-]+\|$")
_VONAGE_CODE = re.compile(r"^\d+$")
_BRAZE_CELL = re.compile(r"^`(?P<code>[1-9](?:\d\d|XX))\s+(?P<message>[^`]+)`$", re.IGNORECASE)


def _table_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """Yield (first line number, cells) for each pipe-table body row, joining multi-line rows."""
    start = 0
    pending = ""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        text = line.strip()
        if pending:
            pending += "\n" + text
        elif text.startswith("|"):
            start, pending = number, text
        else:
            continue
        # A row is complete once it closes with a pipe; a cell holding a newline does not.
        if len(pending) > 1 and pending.endswith("|"):
            row, pending = pending, ""
            if not _SEPARATOR.match(row):
                yield start, [cell.strip() for cell in row[1:-1].split("|")]


def _vonage(seeds: Path, prefix: str) -> list[SeedRow]:
    path = seed_file(seeds, prefix)
    return [
        SeedRow(seed=path.name, line=line, source=VONAGE, code=cells[0])
        for line, cells in _table_rows(path)
        if _VONAGE_CODE.match(cells[0])
    ]


def _braze(seeds: Path) -> list[SeedRow]:
    path = seed_file(seeds, "002")
    found = []
    for line, cells in _table_rows(path):
        match = _BRAZE_CELL.match(cells[0])
        if match is None:
            continue
        code = match["code"]
        found.append(
            SeedRow(
                seed=path.name,
                line=line,
                source=BRAZE,
                code=code,
                message=" ".join(match["message"].split()),
                expect="class" if code.upper().endswith("XX") else "exact",
            )
        )
    return found


def rows(seeds: Path) -> list[SeedRow]:
    """Every code row of seeds 000, 001 (vonage.sms) and 002 (braze.rest)."""
    return [*_vonage(seeds, "000"), *_vonage(seeds, "001"), *_braze(seeds)]
