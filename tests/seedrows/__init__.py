"""Parsers that pull every code row out of the seed documents in ../shared/seeds.

Each module here parses one seed document's tables from the text itself (never a hard-coded
list), so the coverage test notices a row that no mapping entry covers.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SeedRow:
    """One code row of a seed table, as the seed writes it."""

    seed: str
    line: int
    source: str
    code: str | None
    subcode: str | None = None
    message: str | None = None
    expect: str = "exact"  # "class" for a row that names a whole class (Braze `5XX`)


def seeds_dir() -> Path | None:
    """The shared seeds folder beside the project root, or None in a user's clone."""
    env = os.environ.get("CODEBOOK_SEEDS_DIR")
    path = Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "seeds"
    return path if path.is_dir() else None


def seed_file(seeds: Path, prefix: str) -> Path:
    """The seed document whose name starts with ``prefix`` (e.g. ``"003"``)."""
    (found,) = sorted(seeds.glob(f"{prefix}_*.txt"))
    return found


def _seeds_or_skip() -> Path:
    import pytest

    seeds = seeds_dir()
    if seeds is None:
        pytest.skip("seed documents not available")
    return seeds


def parsed_counts(rows: Callable[[Path], list[SeedRow]]) -> dict[str, int]:
    """Rows per source that ``rows`` parses from the seeds; skips the test without seeds."""
    return dict(Counter(row.source for row in rows(_seeds_or_skip())))


def mismatched_rows(rows: Callable[[Path], list[SeedRow]]) -> list[str]:
    """Every parsed row that does not resolve as it expects (exact entry, or a class rule).

    A class row (`5XX`) is resolved through a concrete code in its range (`500`). Skips the
    test without seeds.
    """
    from exporter import load_codebook

    book = load_codebook()
    failures = []
    for row in rows(_seeds_or_skip()):
        code = row.code
        if row.expect == "class" and code is not None:
            code = code.upper().replace("X", "0")
        r = book.resolve(row.source, code, subcode=row.subcode, message=row.message)
        if r.match != row.expect:
            failures.append(f"{row.seed}:{row.line}: {row.source} {row.code}/{row.subcode} "
                            f"{row.message or ''}: {r.match}")
    return failures
