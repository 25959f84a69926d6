"""dashboards/ is tested code: promtool checks and unit tests, dashboard shape, and the contract.

The contract: every metric name, label name and enum label value that a dashboard or rule
uses is one the exporter really emits, read from the ``/metrics`` body of a real ``codebook
serve`` :class:`Sidecar` with a web config: its populated :class:`CodebookMetrics`, then its
own registry (process metrics and the web config reload metrics). promtool comes from Debian's
``prometheus`` package; without it these tests fail under CI=true and skip elsewhere.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from dashboard_queries import (
    DASHBOARD_FILES,
    DASHBOARDS,
    PROMTOOL_TESTS,
    RULE_FILES,
    load_dashboards,
    load_rule_groups,
    panels,
    require,
    substitute,
    targets,
    uses,
    variable_queries,
    variable_query,
)
from prometheus_client.parser import text_string_to_metric_families

from exporter import Category, Owner, Retryable, Severity, make_wsgi_app
from exporter.sidecar.config import load_config
from exporter.sidecar.serve import Sidecar
from exporter.sidecar.webconfig import load_web_config
from exporter.taxonomy import NON_ERROR_CATEGORIES

MAPPINGS = Path(__file__).parent / "testdata" / "dashboards_e2e"
RUNBOOK = DASHBOARDS / "RUNBOOK.md"
# The runbook base is a site setting (deploy/site.yaml; deploy/generate.py applies it).
RUNBOOK_URL = yaml.safe_load(
    (DASHBOARDS.parent / "deploy" / "site.yaml").read_text(encoding="utf-8")
)["runbook_base_url"]
STABLE_UIDS = {
    "codebook-overview.json": "codebook-overview",
    "codebook-source.json": "codebook-source",
}
FILTER_VARIABLES = ("source", "category", "severity", "owner")
# Labels Prometheus attaches to every scraped series; the exporter never sets them itself.
TARGET_LABELS = frozenset({"job", "instance"})
# A recorded series' labels are the level of its name (level:metric:operations);
# "codebook" is the level of the unlabelled threshold constants.
GLOBAL_LEVEL = "codebook"
RECORD_NAME = re.compile(r"^[a-z]+(?:_[a-z]+)*:[a-z0-9_]+:[a-z0-9_]+$")
ALERT_NAME = re.compile(r"^Codebook(?:[A-Z][a-z0-9]+)+$")
ENUM_VALUES = {
    "category": {c.value for c in Category},
    "severity": {s.value for s in Severity},
    "retryable": {r.value for r in Retryable},
    "owner": {o.value for o in Owner},
}


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=120, check=False
    )


def _ids(paths: list[Path]) -> list[str]:
    return [p.name for p in paths]


# -- promtool --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", RULE_FILES, ids=_ids(RULE_FILES))
def test_rule_file_passes_promtool_check(path: Path) -> None:
    """Each rule file passes ``promtool check rules``."""
    result = _run(require("promtool"), "check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", PROMTOOL_TESTS, ids=_ids(PROMTOOL_TESTS))
def test_promtool_unit_tests_pass(path: Path) -> None:
    """Each promtool unit test file under dashboards/tests/ passes ``promtool test rules``."""
    result = _run(require("promtool"), "test", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """Every panel query, variable selector and annotation query parses as PromQL."""
    exprs: dict[str, str] = {t.name: substitute(t.expr, {}) for t in targets()}
    for dashboard in load_dashboards().values():
        for name, query in variable_queries(dashboard).items():
            selector, _ = variable_query(query)
            if selector is not None:
                exprs[f"{dashboard['uid']} / variable {name}"] = substitute(selector, {})
    for alert, query in _annotation_queries():
        exprs[f"{alert} / annotation query"] = query
    names = list(exprs)
    rules = [{"record": f"dashboard_query_{i}", "expr": exprs[n]} for i, n in enumerate(names)]
    path = tmp_path / "queries.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "queries", "rules": rules}]}))
    result = _run(require("promtool"), "check", "rules", path)
    legend = "\n".join(f"dashboard_query_{i} = {n}" for i, n in enumerate(names))
    assert result.returncode == 0, f"{result.stdout}{result.stderr}\n{legend}"


# -- rules -----------------------------------------------------------------------------------


def _rules() -> Iterator[dict[str, Any]]:
    for group in load_rule_groups():
        yield from group["rules"]


def _alerts() -> list[dict[str, Any]]:
    return [r for r in _rules() if "alert" in r]


def _records() -> dict[str, dict[str, Any]]:
    return {r["record"]: r for r in _rules() if "record" in r}


ALERTS = _alerts()


@pytest.mark.parametrize("alert", ALERTS, ids=[a["alert"] for a in ALERTS])
def test_alert_follows_mixin_conventions(alert: dict[str, Any]) -> None:
    """Alerts are CamelCase Codebook*, have for:, severity, summary, description, runbook_url."""
    name = alert["alert"]
    assert ALERT_NAME.match(name), name
    assert "for" in alert, name
    assert alert["labels"]["severity"] in {"critical", "warning", "info"}
    annotations = alert["annotations"]
    assert set(annotations) == {"summary", "description", "runbook_url"}
    assert "{{" in annotations["description"], "the description shows templated values"
    assert annotations["runbook_url"] == f"{RUNBOOK_URL}#{name.lower()}"


def test_alert_names_are_unique() -> None:
    """No two alerts share a name."""
    names = [a["alert"] for a in ALERTS]
    assert len(names) == len(set(names))


def test_recording_rule_names_follow_level_metric_operations() -> None:
    """Recorded series are named level:metric:operations."""
    bad = [name for name in _records() if not RECORD_NAME.match(name)]
    assert bad == []


def _unit_tests() -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for path in PROMTOOL_TESTS:
        found.extend(yaml.safe_load(path.read_text(encoding="utf-8"))["tests"])
    return found


def test_every_alert_has_firing_and_silent_promtool_cases() -> None:
    """promtool tests make every alert fire somewhere and assert it silent somewhere else."""
    firing: set[str] = set()
    silent: set[str] = set()
    for case in _unit_tests():
        for check in case.get("alert_rule_test", []):
            (firing if check["exp_alerts"] else silent).add(check["alertname"])
    names = {a["alert"] for a in ALERTS}
    assert names - firing == set(), "alerts never asserted firing"
    assert names - silent == set(), "alerts never asserted silent"


def test_every_recording_rule_value_is_checked() -> None:
    """Every recorded series is the subject of some promql_expr_test."""
    checked: set[str] = set()
    for case in _unit_tests():
        for check in case.get("promql_expr_test", []):
            checked |= uses(check["expr"]).metrics
    assert set(_records()) - checked == set()


def test_every_firing_case_asserts_annotations() -> None:
    """A firing expectation pins labels and all three annotations exactly."""
    for case in _unit_tests():
        for check in case.get("alert_rule_test", []):
            for alert in check["exp_alerts"]:
                assert "severity" in alert["exp_labels"], check["alertname"]
                annotations = set(alert["exp_annotations"])
                assert annotations == {"summary", "description", "runbook_url"}, check


# -- runbook ---------------------------------------------------------------------------------


def _runbook_headings() -> list[str]:
    return re.findall(r"^## (\S+)\s*$", RUNBOOK.read_text(encoding="utf-8"), re.MULTILINE)


def test_runbook_has_one_section_per_alert() -> None:
    """Each alert has a RUNBOOK.md section whose heading (and so anchor) is its name."""
    headings = [h for h in _runbook_headings() if h.startswith("Codebook")]
    assert sorted(headings) == sorted(a["alert"] for a in ALERTS)


def test_runbook_sections_explain_confirm_act_per_owner() -> None:
    """Each alert section: meaning, how to confirm, what each owner does, the threshold."""
    text = RUNBOOK.read_text(encoding="utf-8")
    for alert in ALERTS:
        name = alert["alert"]
        section = text.split(f"\n## {name}\n", 1)[1].split("\n## ", 1)[0]
        for part in ("**What it means.**", "**Confirm.**", "**Act.**", "**Threshold.**"):
            assert part in section, f"{name}: missing {part}"
        act = section.split("**Act.**", 1)[1].split("**Threshold.**", 1)[0]
        for owner in ("our_config", "our_app", "provider", "end_user"):
            assert f"`{owner}`" in act, f"{name}: nothing for owner {owner}"


def test_runbook_names_only_panels_that_exist() -> None:
    """Every panel the runbook names ("panel X") is a panel title of a dashboard."""
    titles = {p["title"] for d in load_dashboards().values() for p in panels(d)}
    named = set(re.findall(r'panel "([^"]+)"', RUNBOOK.read_text(encoding="utf-8")))
    assert named, "the runbook points at dashboard panels"
    assert named - titles == set()


def test_runbook_states_the_thresholds_of_the_rules() -> None:
    """The runbook's threshold table shows the values the threshold rules record."""
    text = RUNBOOK.read_text(encoding="utf-8")
    for name, rule in _records().items():
        if name.startswith(f"{GLOBAL_LEVEL}:alert_threshold:"):
            value = re.fullmatch(r"vector\(([\d.]+)\)", rule["expr"].strip())
            assert value is not None, rule
            row = f"| `{name.rsplit(':', 1)[1]}` | {value.group(1)} |"
            assert row in text, f"RUNBOOK.md lacks the row {row!r}"


# -- dashboards ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=_ids(DASHBOARD_FILES))
def test_dashboard_is_importable(path: Path) -> None:
    """Stable uid, schemaVersion 39, a Prometheus datasource variable used by every panel."""
    dashboard = load_dashboards()[path]
    assert dashboard["uid"] == STABLE_UIDS[path.name]
    assert dashboard["schemaVersion"] == 39
    assert dashboard["title"].startswith("Codebook / ")
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in panels(dashboard):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        assert panel.get("description"), f"{panel['title']}: says what it shows"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=_ids(DASHBOARD_FILES))
def test_dashboard_has_filter_variables(path: Path) -> None:
    """source/category/severity/owner variables query provider_codes_total label values."""
    dashboard = load_dashboards()[path]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    for name in FILTER_VARIABLES:
        var = variables[name]
        assert var["type"] == "query"
        assert var["datasource"]["uid"] == "${datasource}"
        selector, label = variable_query(variable_queries(dashboard)[name])
        assert label == name
        assert selector is not None and selector.startswith("provider_codes_total")
        # The per-source dashboard is about one source; everything else filters freely.
        many = not (name == "source" and dashboard["uid"] == "codebook-source")
        assert var["multi"] is many and var["includeAll"] is many, name
        if many:
            assert var["allValue"] == ".*"


def test_dashboard_uids_are_unique() -> None:
    """No two dashboards share a uid."""
    uids = [d["uid"] for d in load_dashboards().values()]
    assert len(uids) == len(set(uids))


def test_filters_reach_the_code_panels() -> None:
    """Every selector of provider_codes_total in a dashboard honours the $source variable."""
    for target in targets():
        selectors = target.expr.count("provider_codes_total{")
        sources = [
            m.value
            for m in uses(target.expr).matchers
            if m.metric == "provider_codes_total" and m.label == "source"
        ]
        assert sources == ["$source"] * selectors, target.name


# -- the contract with the exporter ----------------------------------------------------------


def _sidecar_metrics_body() -> str:
    """GET /metrics of a real Sidecar with a web config, every metric populated."""
    with tempfile.TemporaryDirectory() as tmp:
        web_file = Path(tmp) / "web.yml"
        web_file.write_text("basic_auth_users: {}\n", encoding="utf-8")
        cfg = load_config(
            env={},
            overrides={
                "mappings.dirs": str(MAPPINGS),
                "mappings.builtin": "false",
                "metrics.max_unmapped_codes_per_source": "1",
                "metrics.web_config_file": str(web_file),
            },
        )
        sidecar = Sidecar(cfg, load_web_config(web_file))
        web_file.write_text("no_such_key: 1\n", encoding="utf-8")
        assert sidecar.web_reloader is not None
        assert not sidecar.web_reloader.reload(), "the broken web config must fail to reload"
    enricher, metrics = sidecar.enricher, sidecar.metrics
    for code in ("0", "1", "2", "4", "6", "8", "503", "9001", "9002"):
        enricher.enrich_span({"provider.source": "e2e.sms", "provider.code": code})
    enricher.enrich_span({"provider.source": "no.such.source", "provider.code": "1"})
    metrics.reload_outcome(False)
    metrics.telemetry_received("traces", "grpc")
    metrics.telemetry_rejected("traces", "http", "malformed")
    metrics.telemetry_forwarded("traces")
    metrics.telemetry_dropped("traces", "queue_full")
    metrics.webhook_request("azure_eventgrid", "accepted")
    metrics.webhook_events("azure_eventgrid", "accepted")
    metrics.forward_account("traces", queued=1, queued_bytes=100, redelivered=1)
    # The app the sidecar's /metrics server runs, with the sidecar's metrics and registry.
    app = make_wsgi_app(metrics, sidecar.registry)
    status: list[str] = []
    body = b"".join(app({"PATH_INFO": "/metrics"}, lambda s, h: status.append(s)))
    assert status == ["200 OK"], status
    return body.decode()


@cache
def exposition() -> dict[str, dict[str, set[str]]]:
    """Sample name -> label name -> values, from a sidecar's populated /metrics."""
    text = _sidecar_metrics_body()
    found: dict[str, dict[str, set[str]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = found.setdefault(sample.name, {})
            for name, value in sample.labels.items():
                labels.setdefault(name, set()).add(value)
    declared = set(re.findall(r"^# TYPE (\S+) ", text, re.MULTILINE))
    assert declared <= set(found), f"populate these too: {declared - set(found)}"
    return found


def _emitted_labels() -> set[str]:
    return {label for labels in exposition().values() for label in labels} | TARGET_LABELS


def _record_labels(name: str) -> set[str]:
    level = name.split(":", 1)[0]
    return set() if level == GLOBAL_LEVEL else set(level.split("_"))


def _annotation_queries() -> Iterator[tuple[str, str]]:
    """(alert, PromQL) for each query an alert's annotations run, %q filled with "x"."""
    for alert in ALERTS:
        for text in alert["annotations"].values():
            for action in re.findall(r"\{\{(.*?)\}\}", text, re.DOTALL):
                if re.search(r"\bquery\b", action):
                    for literal in re.findall(r'"((?:\\.|[^"\\])*)"', action):
                        yield alert["alert"], literal.replace("%q", '"x"')


def _all_exprs() -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every expression of the rules, dashboards and their annotations."""
    for rule in _rules():
        yield rule.get("alert") or rule["record"], rule["expr"]
    for target in targets():
        yield target.name, target.expr
    for dashboard in load_dashboards().values():
        for name, query in variable_queries(dashboard).items():
            selector, _ = variable_query(query)
            if selector is not None:
                yield f"{dashboard['uid']} / variable {name}", selector
    yield from _annotation_queries()


def test_contract_metric_names_are_emitted_or_recorded() -> None:
    """Every metric a dashboard or rule reads is exposed by the exporter or recorded by a rule."""
    known = set(exposition()) | set(_records())
    unknown = {(where, name) for where, expr in _all_exprs() for name in uses(expr).metrics - known}
    assert unknown == set()


def test_contract_selector_labels_belong_to_their_metric() -> None:
    """A label matcher names a label its metric has (or a label Prometheus adds)."""
    bad: set[tuple[str, str | None, str]] = set()
    for where, expr in _all_exprs():
        for m in uses(expr).matchers:
            if m.metric in exposition():
                allowed = set(exposition()[m.metric]) | TARGET_LABELS
            elif m.metric in _records():
                allowed = _record_labels(m.metric)
            else:
                allowed = _emitted_labels()
            if m.label not in allowed:
                bad.add((where, m.metric, m.label))
    assert bad == set()


def test_contract_recorded_labels_are_emitted_labels() -> None:
    """The labels a recorded series' name promises are labels the exporter emits."""
    for name in _records():
        assert _record_labels(name) <= _emitted_labels(), name


def test_contract_grouping_legend_and_annotation_labels_are_emitted() -> None:
    """Labels in by/on/ignoring/group_left, legends and $labels.x all exist."""
    known = _emitted_labels()
    used: set[tuple[str, str]] = set()
    for where, expr in _all_exprs():
        used |= {(where, label) for label in uses(expr).grouping}
    for target in targets():
        legend_labels = re.findall(r"\{\{\s*(\w+)\s*\}\}", target.legend)
        used |= {(target.name, label) for label in legend_labels}
    for alert in ALERTS:
        for text in alert["annotations"].values():
            used |= {(alert["alert"], label) for label in re.findall(r"\$labels\.(\w+)", text)}
    assert {(where, label) for where, label in used if label not in known} == set()


def _literal_alternatives(value: str) -> list[str] | None:
    """The values a matcher literal or simple a|b|c regex names; None for variables/patterns."""
    if "$" in value or re.search(r"[.*+?()\[\]\\^]", value):
        return None
    return value.split("|")


def test_contract_enum_label_values_are_taxonomy_values() -> None:
    """Matchers on category/severity/retryable/owner/outcome name values that exist."""
    enums = dict(ENUM_VALUES)
    enums["outcome"] = set().union(
        *(labels["outcome"] for labels in exposition().values() if "outcome" in labels)
    )
    bad: set[tuple[str, str, str]] = set()
    for where, expr in _all_exprs():
        for m in uses(expr).matchers:
            alternatives = _literal_alternatives(m.value)
            if m.label in enums and alternatives is not None:
                bad |= {(where, m.label, v) for v in alternatives if v not in enums[m.label]}
    assert bad == set()


def test_error_ratios_exclude_exactly_the_exporters_non_error_categories() -> None:
    """Errors are what error.type marks: every category but the exporter's non-error ones."""
    non_errors = {c.value for c in NON_ERROR_CATEGORIES}
    found = 0
    for _, expr in _all_exprs():
        for m in uses(expr).matchers:
            if m.label == "category" and m.op == "!~":
                assert set(m.value.split("|")) == non_errors, expr
                found += 1
    assert found, "some query defines errors by category"


def test_tokeniser_sees_names_labels_and_values() -> None:
    """The PromQL tokeniser used by the contract tests tells the parts of a query apart."""
    found = uses(
        'sum by (source) (rate(provider_codes_total{category!~"a|b", owner="x"}[5m]))'
        " / ignoring (owner) group_left () topk by (code) (1, provider_code_info)"
        " > on () group_left () codebook:alert_threshold:x or vector(0) # provider_nope"
    )
    assert found.metrics == {
        "provider_codes_total",
        "provider_code_info",
        "codebook:alert_threshold:x",
    }
    assert found.grouping == {"source", "owner", "code"}
    assert [(m.metric, m.label, m.op, m.value) for m in found.matchers] == [
        ("provider_codes_total", "category", "!~", "a|b"),
        ("provider_codes_total", "owner", "=", "x"),
    ]


def test_substitute_fills_grafana_variables() -> None:
    """Grafana's interval variables become durations; the others take the given values."""
    expr = 'rate(x{source=~"$source",owner=~"${owner}"}[$__rate_interval]) [$__range]'
    assert substitute(expr, {"source": "vonage.sms"}) == (
        'rate(x{source=~"vonage.sms",owner=~"x"}[5m]) [1h]'
    )
