"""Parsers that pull every code row out of the seed documents in ../shared/seeds.

Each module here parses one seed document's tables from the text itself (never a hard-coded
list), so the coverage test notices a row that no mapping entry covers.
"""

from __future__ import annotations

import os
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
