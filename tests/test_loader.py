"""The mapping loader: strict schema, exact error text, every problem in one pass, overlays."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from exporter import MappingError, load_codebook
from exporter.cli import main
from exporter.loader import load_tables

TESTDATA = Path(__file__).parent / "testdata"
INVALID = sorted((TESTDATA / "invalid").glob("*.yaml"))


def _problems(*paths: Path) -> list[str]:
    with pytest.raises(MappingError) as info:
        load_tables([list(paths)])
    return list(info.value.problems)


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_fixture_reports_exact_errors(path: Path) -> None:
    """Each invalid fixture yields exactly the problems pinned in its .expected file."""
    expected = path.with_suffix(".expected").read_text(encoding="utf-8").splitlines()
    got = [p.replace(f"{path.parent}/", "") for p in _problems(path)]
    assert [g.split("/")[-1] for g in got] == expected


def test_all_files_reported_in_one_pass() -> None:
    """Problems of every file come back together, sorted by file and line."""
    got = _problems(*INVALID)
    files = {p.split(":", 1)[0].rsplit("/", 1)[-1] for p in got}
    assert files == {p.name for p in INVALID}
    expected_count = sum(
        len(p.with_suffix(".expected").read_text(encoding="utf-8").splitlines()) for p in INVALID
    )
    assert len(got) == expected_count


def test_validate_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`codebook validate` exits 1 and prints file:line: key: message on stderr."""
    bad = tmp_path / "bad.yaml"
    shutil.copy(TESTDATA / "invalid" / "bad_enums.yaml", bad)
    assert main(["validate", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:7: entries[0].category: 'throttle' is not a category" in err
    assert main(["validate", str(tmp_path / "missing.yaml")]) == 1
    assert "no such file or directory" in capsys.readouterr().err
    assert main(["validate", "--no-builtin", str(TESTDATA / "overlay_new")]) == 0
    assert capsys.readouterr().out == "ok: 1 source(s), 2 entries\n"
    assert main(["validate", str(TESTDATA / "overlay_new")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok: ") and out.endswith(" with the built-in mappings\n")


VALIDATE_CASES = [
    # (id, file text, --no-builtin exit, default exit, the problem the default reports)
    ("adds-builtin-code-without-override",
     "schema: 1\nsource: vonage.sms\ntitle: t\nversion: '1'\nseeds: [x]\nentries:\n"
     "  - code: '1'\n    category: throttled\n    description: d\n    doc: {en: d}\n",
     0, 1, "x.yaml:7: entries: code='1' of 'vonage.sms' conflicts with "),
    ("override-is-fine",
     "schema: 1\nsource: vonage.sms\noverride: true\ntitle: t\nversion: '1'\nseeds: [x]\n"
     "entries:\n  - code: '1'\n    category: throttled\n    description: d\n"
     "    doc: {en: d}\n",
     0, 0, ""),
    ("alias-taken-by-a-builtin",
     "schema: 1\nsource: my.sms\naliases: [nexmo.sms]\ntitle: t\nversion: '1'\n"
     "seeds: [x]\nentries:\n  - code: '1'\n    category: throttled\n"
     "    description: d\n    doc: {en: d}\n",
     0, 1, "'nexmo.sms' already names source"),
    ("adds-builtin-message-class-without-override",
     "schema: 1\nsource: braze.rest\ntitle: t\nversion: '1'\nclasses:\n  - pattern: 2XX\n"
     "    message: '*'\n    category: unknown\n    description: d\nentries: []\n",
     0, 1, "x.yaml:6: classes: pattern '2xx' with message '*' of 'braze.rest' conflicts with "),
    ("override-message-class-is-fine",
     "schema: 1\nsource: braze.rest\noverride: true\ntitle: t\nversion: '1'\nclasses:\n"
     "  - pattern: 2xx\n    message: '*'\n    category: unknown\n    description: d\n"
     "entries: []\n",
     0, 0, ""),
    ("message-class-beside-a-builtin-plain-class",
     "schema: 1\nsource: braze.rest\ntitle: t\nversion: '1'\nclasses:\n  - pattern: 5xx\n"
     "    message: '*'\n    category: unknown\n    description: d\nentries: []\n",
     0, 0, ""),
]


@pytest.mark.parametrize(("text", "alone", "default", "problem"),
                         [c[1:] for c in VALIDATE_CASES], ids=[c[0] for c in VALIDATE_CASES])
def test_validate_checks_against_the_builtins(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, alone: int, default: int,
    problem: str,
) -> None:
    """`validate DIR` overlays DIR on the built-in mappings, so ok means it loads;
    `--no-builtin` checks the files alone."""
    (tmp_path / "x.yaml").write_text(text, encoding="utf-8")
    assert main(["validate", "--no-builtin", str(tmp_path)]) == alone
    capsys.readouterr()
    assert main(["validate", str(tmp_path)]) == default
    err = capsys.readouterr().err
    assert problem in err
    loads = True
    try:
        load_codebook([tmp_path])
    except MappingError:
        loads = False
    assert loads == (default == 0)


def test_builtin_mappings_validate(capsys: pytest.CaptureFixture[str]) -> None:
    """The shipped mappings load without a single problem and cover every contract source;
    naming their folder (or a file of it) checks them, not them over themselves."""
    assert main(["validate"]) == 0
    from exporter.codebook import builtin_mappings_dir

    for path in (builtin_mappings_dir(), builtin_mappings_dir() / "vonage_sms.yaml"):
        assert main(["validate", str(path)]) == 0
        assert main(["validate", "--no-builtin", str(path)]) == 0
    book = load_codebook()
    contract = {
        "vonage.sms", "braze.rest", "alibaba.mobile_push", "alibaba.mobile_push.apns",
        "alibaba.mobile_push.huawei", "alibaba.mobile_push.xiaomi", "alibaba.mobile_push.oppo",
        "alibaba.mobile_push.vivo", "alibaba.mobile_push.fcm", "azure.acs.calling",
        "azure.acs.call_automation", "azure.acs.pstn", "azure.acs.chat", "azure.acs.sms",
    }
    assert contract <= set(book.sources)
    for source in contract:
        table = book.tables[source]
        assert table.seeds, f"{source} cites no seed document"
        assert table.entries, f"{source} has no entries"


def test_overlay_conflict_is_reported() -> None:
    """An overlay entry with a built-in key and no override flag is a conflict, not a silent win."""
    with pytest.raises(MappingError) as info:
        load_codebook([TESTDATA / "overlay_conflict"])
    (problem,) = info.value.problems
    where, rest = problem.split(":6: entries: ", 1)
    assert where.endswith("overlay_conflict/vonage_extra.yaml")
    assert rest.startswith("code='1' of 'vonage.sms' conflicts with ")
    assert "mappings/vonage_sms.yaml:" in rest
    assert "set 'override: true' in the overlay file to replace it" in problem


def test_overlay_override_replaces_and_adds() -> None:
    """`override: true` replaces the built-in entry and adds new codes; the rest stay."""
    book = load_codebook([TESTDATA / "overlay_override"])
    assert book.resolve("vonage.sms", "1").category == "provider_unavailable"
    assert book.resolve("vonage.sms", 900001).category == "content_rejected"
    assert book.resolve("vonage.sms", "0").category == "success"
    assert book.tables["vonage.sms"].version.endswith("+local.1")


def test_overlay_message_class(tmp_path: Path) -> None:
    """An overlay's class rule with message "*" sits beside the plain rule of its pattern and
    replaces only its own kind (pattern and message) with `override: true`."""
    (tmp_path / "braze.yaml").write_text(
        "schema: 1\nsource: braze.rest\noverride: true\ntitle: t\nversion: local.1\n"
        "classes:\n  - pattern: 2xx\n    message: '*'\n    category: unknown\n"
        "    description: mine\n  - pattern: 5xx\n    message: '*'\n"
        "    category: provider_unavailable\n    description: busy\nentries: []\n",
        encoding="utf-8")
    book = load_codebook([tmp_path])
    got = {(code, message): (r.category, r.match, r.description)
           for code, message in (("201", "oops"), ("201", None), ("503", "Busy"), ("503", None))
           for r in (book.resolve("braze.rest", code, message=message),)}
    assert got[("201", "oops")] == ("unknown", "class", "mine")
    assert got[("201", None)][:2] == ("success", "class")
    assert got[("503", "Busy")] == ("provider_unavailable", "class", "busy")
    assert got[("503", None)][:2] == ("provider_internal", "class")
    assert len(book.tables["braze.rest"].classes) == 5


def test_overlay_adds_source_with_alias_and_class() -> None:
    """A user's own source resolves by id and alias, and through its class rule."""
    book = load_codebook([TESTDATA / "overlay_new"])
    assert book.resolve("acme", "7").category == "recipient_opted_out"
    r = book.resolve("acme.sms", "503")
    assert (r.category, r.match) == ("provider_unavailable", "class")


def test_alias_clash_is_an_error(tmp_path: Path) -> None:
    """Two sources may not claim the same name."""
    text = (TESTDATA / "overlay_new" / "acme.yaml").read_text(encoding="utf-8")
    (tmp_path / "a.yaml").write_text(text, encoding="utf-8")
    (tmp_path / "b.yaml").write_text(
        text.replace("source: acme.sms", "source: acme.other"), encoding="utf-8"
    )
    problems = _problems(tmp_path / "a.yaml", tmp_path / "b.yaml")
    assert problems == [f"{tmp_path / 'b.yaml'}:1: aliases: 'acme' already names source 'acme.sms'"]
