"""Code rows of the Alibaba Cloud Mobile Push status code tables (seed 003, Japanese).

The seed has seven tables, each introduced by a heading line and a `状態コード | …` header:
the common push status codes and one table per push channel (Apple, Huawei, Xiaomi, OPPO,
vivo, FCM). Body rows are `code | cell | … |` lines; a supplementary cell may continue on the
following lines (APNs 2009 and 2024), which belong to the row above and hold no code.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from seedrows import SeedRow, seed_file

COMMON = "alibaba.mobile_push"

# Heading line of each table (its first word) -> source id.
_SECTIONS = {
    "共通のメッセージプッシュ状態コード": COMMON,
    "apple": f"{COMMON}.apns",
    "huawei": f"{COMMON}.huawei",
    "xiaomi": f"{COMMON}.xiaomi",
    "oppo": f"{COMMON}.oppo",
    "vivo": f"{COMMON}.vivo",
    "fcm": f"{COMMON}.fcm",
}

# Established by reading seed 003 table by table: common -1, 0, 1, 2, 99999999; APNs
# 2001-2011, 2013, 2014, 2023-2025; Huawei 100-111 (8 codes) and 14 eight-digit codes
# (80300008 listed last); Xiaomi 36 rows (10001 … 22103, then 20301); OPPO 12; vivo 18
# (10104 listed last); FCM 7. No row lists more than one code.
EXPECTED_ROWS = {
    COMMON: 5,
    f"{COMMON}.apns": 16,
    f"{COMMON}.huawei": 22,
    f"{COMMON}.xiaomi": 36,
    f"{COMMON}.oppo": 12,
    f"{COMMON}.vivo": 18,
    f"{COMMON}.fcm": 7,
}

_HEADER = re.compile(r"^状態コード\s*\|")
_ROW = re.compile(r"^(?P<code>-?\d[\d,]*)\s*\|(?P<rest>.*)$")


def _table_rows(path: Path) -> Iterator[tuple[str, int, str, list[str]]]:
    """Yield (source, line, code, cells after the code) per body row, continuation lines joined.

    A continuation line (one that is not a row, not a heading and either follows a row left
    open without a closing pipe or itself carries table pipes) is appended to the row's last
    non-empty cell. Prose after a table (vivo's "詳細については…") is neither.
    """
    lines = path.read_text(encoding="utf-8").splitlines()
    source: str | None = None
    current: tuple[str, int, str, list[str]] | None = None
    is_open = False
    for index, raw in enumerate(lines):
        text = raw.strip()
        following = lines[index + 1].strip() if index + 1 < len(lines) else ""
        if _HEADER.match(following) and "|" not in text:
            if current is not None:
                yield current
                current = None
            source = _SECTIONS[text.split()[0].lower()]
            continue
        if source is None or _HEADER.match(text):
            continue
        row = _ROW.match(text)
        if row is not None:
            if current is not None:
                yield current
            cells = [cell.strip() for cell in row["rest"].split("|")]
            current = (source, index + 1, row["code"], [cell for cell in cells if cell])
            is_open = not text.endswith("|")
        elif current is not None and (is_open or "|" in text):
            extra = " ".join(cell.strip() for cell in text.split("|") if cell.strip())
            if extra:
                current[3][-1] = f"{current[3][-1]} {extra}"
            is_open = not text.endswith("|")
        elif current is not None:
            yield current
            current = None
    if current is not None:
        yield current


def rows(seeds: Path) -> list[SeedRow]:
    """Every code row of seed 003, one per code, with the source id of its table."""
    path = seed_file(seeds, "003")
    return [
        SeedRow(seed=path.name, line=line, source=source, code=code)
        for source, line, code, _cells in _table_rows(path)
    ]
