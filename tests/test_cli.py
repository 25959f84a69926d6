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
    """An unknown source is an error on stderr with a "did you mean", exit 2."""
    assert main(["lookup", "acme.smss", "1", "--mappings", OVERLAY]) == 2
    err = capsys.readouterr().err
    assert "unknown source 'acme.smss' (did you mean 'acme.sms'?)" in err


SOURCE_CASES = [
    # (id, argv, exit status, what stdout has, what stderr has)
    ("case-insensitive-id", ["lookup", "Vonage.SMS", "1"], 0, "source       vonage.sms", ""),
    ("case-insensitive-alias", ["lookup", "NEXMO.sms", "1"], 0, "source       vonage.sms", ""),
    ("near-miss", ["lookup", "vonage.sm", "1"], 2, "",
     "unknown source 'vonage.sm' (did you mean 'vonage.sms' or 'vonage.sms_dlr'?)"),
    ("provider-prefix", ["lookup", "braze", "400"], 2, "",
     "unknown source 'braze' (did you mean 'braze.rest'?)"),
    ("no-close-match", ["lookup", "zzz", "1"], 2, "", "unknown source 'zzz'; `codebook list`"),
    ("list-case-insensitive", ["list", "Azure.ACS.SMS"], 0, "CODE  SUBCODE", ""),
    ("list-near-miss", ["list", "azure.acs.sm"], 2, "",
     "(did you mean 'azure.acs.sms' or "),
]


@pytest.mark.parametrize(("argv", "status", "out", "err"), [c[1:] for c in SOURCE_CASES],
                         ids=[c[0] for c in SOURCE_CASES])
def test_source_ids(
    capsys: pytest.CaptureFixture[str], argv: list[str], status: int, out: str, err: str
) -> None:
    """Source ids match case-insensitively; a wrong one gets "did you mean", not a list."""
    assert main(argv) == status
    got = capsys.readouterr()
    assert out in got.out and err in got.err
    assert "vonage.sms, " not in got.err  # no list of every id


JSON_ERROR_CASES = [
    # (id, argv, exit status, expected keys and values)
    ("lookup-unknown-source", ["lookup", "braze", "1", "--json"], 2,
     {"source": "braze", "did_you_mean": ["braze.rest"]}),
    ("list-unknown-source", ["list", "nope.nope", "--json"], 2,
     {"source": "nope.nope", "did_you_mean": []}),
]


@pytest.mark.parametrize(("argv", "status", "expected"), [c[1:] for c in JSON_ERROR_CASES],
                         ids=[c[0] for c in JSON_ERROR_CASES])
def test_json_errors_are_json(
    capsys: pytest.CaptureFixture[str], argv: list[str], status: int, expected: dict[str, object]
) -> None:
    """With --json, an error is one JSON object on stdout (and the same exit status)."""
    assert main(argv) == status
    got = capsys.readouterr()
    data = json.loads(got.out)
    assert data["error"].startswith("unknown source")
    assert {k: data[k] for k in expected} == expected
    assert got.err == ""


def test_json_mapping_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Broken overlays under --json: the problems as a JSON list, exit 1."""
    (tmp_path / "x.yaml").write_text("schema: 1\nsource: x\n", encoding="utf-8")
    assert main(["lookup", "x", "1", "--json", "--mappings", str(tmp_path)]) == 1
    data = json.loads(capsys.readouterr().out)
    assert f"{tmp_path / 'x.yaml'}:1: title: missing required key" in data["problems"]
    assert main(["validate", "--json", str(tmp_path)]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["error"] == f"{len(data['problems'])} problem(s)"


def test_list_json(capsys: pytest.CaptureFixture[str]) -> None:
    """`list --json`: every source with its counts; `list SOURCE --json`: every rule."""
    assert main(["list", "--json"]) == 0
    sources = {s["source"]: s for s in json.loads(capsys.readouterr().out)}
    assert sources["vonage.sms"]["aliases"] == ["nexmo.sms"]
    assert sources["vonage.sms"]["entries"] > 0
    assert main(["list", "alibaba.mobile_push.apns", "--json"]) == 0
    rules = json.loads(capsys.readouterr().out)
    bad = next(r for r in rules if r["code"] == "2009")
    assert (bad["name"], bad["category"]) == ("BadDeviceToken", "recipient_invalid")
    assert bad["mapping"].endswith("alibaba_mobile_push_apns.yaml:63")


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    """`codebook --version` and `exporter.__version__` are the installed package's version."""
    from importlib.metadata import version

    import exporter

    assert exporter.__version__ == version("codebook-exporter")
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"codebook {exporter.__version__}\n"


def test_lookup_by_provider_name(capsys: pytest.CaptureFixture[str]) -> None:
    """A native channel reason that names one entry resolves as that entry's code."""
    assert main(["lookup", "alibaba.mobile_push.apns", "BadDeviceToken", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["category"], data["match"], data["name"]) == (
        "recipient_invalid", "exact", "BadDeviceToken")
    assert data["mapping"].endswith("alibaba_mobile_push_apns.yaml:63")


def test_lookup_subcode_zero_resolves_by_code(capsys: pytest.CaptureFixture[str]) -> None:
    """The issue's case: Call Automation 500 with subcode 0 is the 500, not "success"."""
    assert main(["lookup", "azure.acs.call_automation", "500", "--subcode", "0", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["category"], data["match"]) == ("provider_internal", "exact")


def test_class_rule_with_any_message(capsys: pytest.CaptureFixture[str]) -> None:
    """A Braze 2xx with a non-fatal error's text resolves by the 2xx rule with message "*";
    `list` shows that rule with its '*' beside the plain 2xx rule."""
    argv = ["lookup", "braze.rest", "201", "--message", "'email' is not a valid email", "--json"]
    assert main(argv) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["category"], data["owner"], data["match"], data["mapped_message"]) == (
        "invalid_request", "our_app", "class", "*")
    assert main(["lookup", "braze.rest", "201", "--message", "success", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["category"], data["match"], data["mapped_message"]) == (
        "success", "exact", "success")
    assert main(["list", "braze.rest", "--json"]) == 0
    classes = [(r["pattern"], r["message"], r["category"])
               for r in json.loads(capsys.readouterr().out) if r["pattern"] == "2xx"]
    assert classes == [("2xx", "", "success"), ("2xx", "*", "invalid_request")]
    assert main(["list", "braze.rest"]) == 0
    rows = [line.split()[:3] for line in capsys.readouterr().out.splitlines()]
    assert ["2xx", "*", "invalid_request"] in rows and ["2xx", "success", "info"] in rows


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


@pytest.mark.parametrize("argv", [["lookup", "vonage.sms", "--json"], ["lookup", "--json"],
                                  ["list", "--json", "--nope"], ["validate", "--json", "--bogus"]],
                         ids=["missing-code", "missing-both", "unknown-option", "validate-unknown"])
def test_usage_errors_are_json_under_json(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    """With --json, a usage error is one JSON object on stdout too (exit status 2)."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    out = json.loads(capsys.readouterr().out)
    assert out["error"] and out["usage"].startswith("usage: codebook")
