"""The product's docs stand on their own: every taxonomy citation and relative link resolves."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TAXONOMY = REPO / "docs" / "taxonomy.md"

# Where the taxonomy is cited: the mappings and their README, the top-level docs, the code.
CITING = sorted(
    {
        *REPO.glob("mappings/*.yaml"),
        REPO / "mappings" / "README.md",
        REPO / "README.md",
        *REPO.glob("docs/*.md"),
        *REPO.glob("dashboards/*.md"),
        *REPO.glob("exporter/**/*.py"),
        *REPO.glob("exporter/*.c"),
        *REPO.glob("tests/*.py"),
    }
)
# "§2", "§2 #13", "§1-§5" (each end is checked).
CITATION = re.compile(r"§(\d+)(?:\s*#(\d+))?")
LINK = re.compile(r"\[[^\]]*\]\(([^)#\s]+)(?:#[^)]*)?\)")


def _sections() -> set[int]:
    return {int(m) for m in re.findall(r"^## §(\d+)\. ", TAXONOMY.read_text(), re.MULTILINE)}


def _category_rows() -> set[int]:
    text = TAXONOMY.read_text()
    table = text.split("## §2.", 1)[1].split("\n## ", 1)[0]
    return {int(m) for m in re.findall(r"^\| (\d+) \| `", table, re.MULTILINE)}


def test_taxonomy_has_its_sections_and_rows() -> None:
    """docs/taxonomy.md keeps the numbering §1 to §5 and the 25 numbered categories of §2."""
    assert _sections() == {1, 2, 3, 4, 5}
    assert _category_rows() == set(range(1, 26))


@pytest.mark.parametrize("path", CITING, ids=[str(p.relative_to(REPO)) for p in CITING])
def test_every_citation_resolves(path: Path) -> None:
    """Each §N cited exists in docs/taxonomy.md; each §2 #N is a row of its category table."""
    sections, rows = _sections(), _category_rows()
    text = path.read_text(encoding="utf-8")
    for m in CITATION.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        assert int(m.group(1)) in sections, f"{path.name}:{line}: §{m.group(1)} does not exist"
        if m.group(2) and int(m.group(1)) == 2:
            assert int(m.group(2)) in rows, f"{path.name}:{line}: §2 #{m.group(2)} does not exist"
    assert "../shared/" + "TAXONOMY" not in text, f"{path.name} cites a file users lack"


DOCS = [REPO / "README.md", REPO / "mappings" / "README.md", REPO / "dashboards" / "RUNBOOK.md",
        *sorted(REPO.glob("docs/*.md"))]


@pytest.mark.parametrize("path", DOCS, ids=[str(p.relative_to(REPO)) for p in DOCS])
def test_relative_links_resolve(path: Path) -> None:
    """Every relative Markdown link points at a file or folder of the repository."""
    for target in LINK.findall(path.read_text(encoding="utf-8")):
        if "://" in target or target.startswith("mailto:"):
            continue
        assert (path.parent / target).exists(), f"{path.name}: broken link {target}"


@pytest.mark.parametrize("path", [REPO / "README.md", REPO / "mappings" / "README.md"],
                         ids=["README.md", "mappings/README.md"])
def test_taxonomy_is_linked(path: Path) -> None:
    """The README and the mappings README link to the shipped taxonomy."""
    targets = LINK.findall(path.read_text(encoding="utf-8"))
    assert any((path.parent / t).resolve() == TAXONOMY for t in targets)
