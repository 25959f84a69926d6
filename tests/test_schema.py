"""mappings/mapping.schema.json agrees with the loader and the taxonomy."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from exporter.codebook import builtin_mappings_dir
from exporter.taxonomy import Category, Owner, Retryable, Severity

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((ROOT / "mappings" / "mapping.schema.json").read_text(encoding="utf-8"))
VALID = sorted(builtin_mappings_dir().glob("*.yaml")) + sorted(
    (ROOT / "tests" / "testdata").glob("overlay_*/*.yaml"))
# Not syntax.yaml (no YAML at all) nor duplicates.yaml (keys repeated across entries, which
# JSON Schema cannot see; the loader checks it).
INVALID = [p for p in sorted((ROOT / "tests" / "testdata" / "invalid").glob("*.yaml"))
           if p.stem not in ("syntax", "duplicates")]


def test_schema_enums_match_taxonomy() -> None:
    """The JSON Schema's closed sets are exactly the taxonomy enums."""
    props = SCHEMA["$defs"]["entry"]["properties"]
    for key, enum in (("category", Category), ("severity", Severity),
                      ("retryable", Retryable), ("owner", Owner)):
        assert props[key]["enum"] == [m.value for m in enum]


@pytest.mark.parametrize("path", VALID, ids=[p.name for p in VALID])
def test_valid_files_pass_json_schema(path: Path) -> None:
    """Every file the loader accepts also passes the editor schema."""
    jsonschema.validate(yaml.safe_load(path.read_text(encoding="utf-8")), SCHEMA)


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_files_fail_json_schema(path: Path) -> None:
    """Files the loader rejects for schema reasons are rejected by the editor schema too."""
    if path.stem == "overrides":
        # JSON Schema cannot compare an override with the category default.
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        doc["entries"] = doc["entries"][1:]
    else:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, SCHEMA)
