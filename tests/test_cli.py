"""The `codebook` command line: lookup, list, validate, and their errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from exporter.cli import main

OVERLAY = str(Path(__file__).parent / "testdata" / "overlay_new")


def test_lookup_text(capsys: pytest.CaptureFixture[str]) -> None:
    """A lookup prints the labels, the description and the doc text."""
    assert main(["lookup", "acme", "7", "--mappings", OVERLAY]) == 0
    out = capsys.readouterr().out
    assert "source       acme.sms" in out
    assert "category     recipient_opted_out" in out
    assert "owner        end_user" in out
    assert "match        exact" in out
    assert "doc.en       Opted out" in out


def test_lookup_json(capsys: pytest.CaptureFixture[str]) -> None:
    """--json prints one JSON object with the contract's fields."""
    assert main(["lookup", "acme.sms", "503", "--json", "--mappings", OVERLAY]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["source"] == "acme.sms"
    assert (data["category"], data["severity"], data["retryable"], data["owner"], data["match"]) \
        == ("provider_unavailable", "error", "with_backoff", "provider", "class")
    assert data["mapping"].endswith("acme.yaml:7")


def test_lookup_unmapped_code(capsys: pytest.CaptureFixture[str]) -> None:
    """An unmapped code of a known source is an answer (unknown/unmapped), not an error."""
    assert main(["lookup", "acme.sms", "42", "--json", "--mappings", OVERLAY]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["category"], data["match"], data["owner"]) == ("unknown", "unmapped", "unknown")


def test_lookup_unknown_source(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown source is an error on stderr naming the known ones, exit 2."""
    assert main(["lookup", "acme.smss", "1", "--mappings", OVERLAY]) == 2
    err = capsys.readouterr().err
    assert "unknown source 'acme.smss'" in err and "acme.sms" in err


def test_list(capsys: pytest.CaptureFixture[str]) -> None:
    """`list` shows sources; `list SOURCE` shows its codes and class rules."""
    assert main(["list", "--mappings", OVERLAY]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == [
        "SOURCE", "VERSION", "ENTRIES", "CLASSES", "ALIASES", "TITLE"]
    assert any(line.split()[:5] == ["acme.sms", "2026.1", "2", "1", "acme"]
               for line in out.splitlines())
    assert main(["list", "acme", "--mappings", OVERLAY]) == 0
    rows = [line.split()[:4] for line in capsys.readouterr().out.splitlines()[1:]]
    assert rows == [["0", "success", "info", "no"], ["7", "recipient_opted_out", "warning", "no"],
                    ["5xx", "provider_unavailable", "error", "with_backoff"]]
    assert main(["list", "nope", "--mappings", OVERLAY]) == 2


def test_broken_overlay_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A lookup with a broken overlay reports its problems and exits 1."""
    (tmp_path / "x.yaml").write_text("schema: 1\nsource: x\n", encoding="utf-8")
    assert main(["lookup", "x", "1", "--mappings", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'x.yaml'}:1: title: missing required key" in err


def test_help_and_module_entry() -> None:
    """`python -m exporter --help` lists the contract verbs; a bad verb is a usage error."""
    out = subprocess.run([sys.executable, "-m", "exporter", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for verb in ("lookup", "validate", "list", "serve"):
        assert verb in out
    bad = subprocess.run([sys.executable, "-m", "exporter", "frobnicate"], capture_output=True,
                         text=True, check=False)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


def test_builtin_done_criterion() -> None:
    """`codebook lookup vonage.sms 1` prints throttled/warning (issue 2's done criterion)."""
    out = subprocess.run([sys.executable, "-m", "exporter", "lookup", "vonage.sms", "1"],
                         capture_output=True, text=True, check=True).stdout
    assert "category     throttled" in out and "severity     warning" in out
