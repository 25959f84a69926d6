"""What the dashboards and rules in dashboards/ query: loading, Grafana variables, PromQL tokens.

Shared by tests/test_dashboards.py (promtool and the metric contract) and
tests/test_prometheus_e2e.py (a real Prometheus). Not a PromQL parser: a tokeniser that knows
enough of the grammar to tell metric names, label names and label values apart.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = ROOT / "dashboards"
RULE_FILES = sorted((DASHBOARDS / "rules").glob("*.yml"))
PROMTOOL_TESTS = sorted((DASHBOARDS / "tests").glob("*.yml"))
DASHBOARD_FILES = sorted(DASHBOARDS.glob("*.json"))

# Grafana's built-in interval variables, as Grafana would fill them in for a 1h range.
GRAFANA_INTERVALS = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}
_GRAFANA_VAR = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def require(binary: str) -> str:
    """The path of ``binary``; fail when CI=true (CI installs it), else skip."""
    path = shutil.which(binary)
    if path is None:
        message = f"{binary} is not installed (Debian package: prometheus)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def load_dashboards() -> dict[Path, dict[str, Any]]:
    """Every dashboard JSON file under dashboards/, parsed."""
    return {path: json.loads(path.read_text(encoding="utf-8")) for path in DASHBOARD_FILES}


def load_rule_groups() -> list[dict[str, Any]]:
    """Every rule group of every rule file under dashboards/rules/."""
    groups: list[dict[str, Any]] = []
    for path in RULE_FILES:
        groups.extend(yaml.safe_load(path.read_text(encoding="utf-8"))["groups"])
    return groups


def panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


@dataclass(frozen=True)
class Target:
    """One panel query of one dashboard."""

    dashboard: str
    panel: str
    ref_id: str
    expr: str
    legend: str

    @property
    def name(self) -> str:
        return f"{self.dashboard} / {self.panel} / {self.ref_id}"


def targets() -> list[Target]:
    """Every query of every panel of every dashboard."""
    found: list[Target] = []
    for dashboard in load_dashboards().values():
        for panel in panels(dashboard):
            for target in panel.get("targets", []):
                found.append(
                    Target(
                        dashboard["uid"],
                        panel["title"],
                        target["refId"],
                        target["expr"],
                        target.get("legendFormat", ""),
                    )
                )
    return found


def substitute(expr: str, values: Mapping[str, str], default: str = "x") -> str:
    """``expr`` with Grafana variables filled in: intervals, then ``values``, else ``default``."""

    def fill(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return GRAFANA_INTERVALS.get(name) or values.get(name, default)

    return _GRAFANA_VAR.sub(fill, expr)


# -- tokens ----------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<number>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?(?:(?:ms|[smhdwy])\d*)*)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<variable>\$\{\w+(?::\w+)?\}|\$\w+)
  | (?P<op>=~|!~|!=|==|>=|<=|[-+*/%^<>=(){}\[\],@])
    """,
    re.VERBOSE,
)
_AGGREGATIONS = frozenset(
    [
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ]
)
_GROUPING = frozenset(["by", "without", "on", "ignoring", "group_left", "group_right"])
_KEYWORDS = frozenset(["and", "or", "unless", "bool", "offset", "inf", "nan", "atan2"]) | _GROUPING
_MATCH_OPS = frozenset(("=", "!=", "=~", "!~"))


@dataclass(frozen=True)
class Matcher:
    """One label matcher of a selector; ``metric`` is None for a selector without a name."""

    metric: str | None
    label: str
    op: str
    value: str


@dataclass
class Uses:
    """The metric names, label matchers and grouping labels an expression uses."""

    metrics: set[str] = field(default_factory=set)
    matchers: list[Matcher] = field(default_factory=list)
    grouping: set[str] = field(default_factory=set)


def tokens(expr: str) -> list[tuple[str, str]]:
    """The (kind, text) tokens of PromQL (Grafana variables allowed), without spaces/comments."""
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        if match is None:
            raise ValueError(f"cannot tokenise PromQL at {expr[pos : pos + 20]!r} in {expr!r}")
        kind = match.lastgroup or ""
        if kind not in ("ws", "comment"):
            out.append((kind, match.group()))
        pos = match.end()
    return out


def uses(expr: str) -> Uses:
    """What ``expr`` reads: metric names, label matchers, and labels of by/on/... clauses."""
    toks = tokens(expr)
    found = Uses()
    metric: str | None = None
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        following = toks[i + 1][1] if i + 1 < len(toks) else ""
        if kind == "ident" and text in _GROUPING and following == "(":
            i += 2
            while toks[i][1] != ")":
                if toks[i][0] == "ident":
                    found.grouping.add(toks[i][1])
                i += 1
        elif text == "{":
            metric = toks[i - 1][1] if i and toks[i - 1][0] == "ident" else None
            i += 1
            while toks[i][1] != "}":
                if toks[i][0] == "ident" and toks[i + 1][1] in _MATCH_OPS:
                    value = toks[i + 2][1][1:-1]
                    found.matchers.append(Matcher(metric, toks[i][1], toks[i + 1][1], value))
                    i += 2
                i += 1
        elif kind == "ident" and not (
            text in _KEYWORDS or text in _AGGREGATIONS or following == "("
        ):
            found.metrics.add(text)
        i += 1
    return found


_LABEL_VALUES = re.compile(r"^label_values\((?:(?P<selector>.+),\s*)?(?P<label>\w+)\)$")


def variable_query(query: str) -> tuple[str | None, str]:
    """(selector, label) of a Grafana ``label_values(selector, label)`` variable query."""
    match = _LABEL_VALUES.match(query.strip())
    if match is None:
        raise ValueError(f"not a label_values() query: {query!r}")
    return match.group("selector"), match.group("label")


def variable_queries(dashboard: Mapping[str, Any]) -> dict[str, str]:
    """Template variable name -> its query text, for query variables."""
    out: dict[str, str] = {}
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]
            out[var["name"]] = query["query"] if isinstance(query, dict) else query
    return out
