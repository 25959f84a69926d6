"""CodebookMetrics: counters, bounds, the info metric, and render() agreeing with the collector."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from exporter import Codebook, CodebookMetrics, Enricher, load_codebook

INPROC = Path(__file__).parent / "testdata" / "mappings_inproc"
CODE_LABELS = ("source", "code", "subcode", "category", "severity", "retryable", "owner")
UNKNOWN = ("unknown", "warning", "with_backoff", "unknown")


@pytest.fixture(scope="module")
def book() -> Codebook:
    return load_codebook([INPROC], builtin=False)


def _codes(metrics: CodebookMetrics, *labels: str) -> float | None:
    return metrics.value("provider_codes_total", dict(zip(CODE_LABELS, labels, strict=True)))


def _count(enricher: Enricher, source: object, code: object, subcode: object = None) -> None:
    attrs = {"provider.source": source, "provider.code": code}
    if subcode is not None:
        attrs["provider.subcode"] = subcode
    assert enricher.enrich_span(attrs) is not None


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _registry(metrics: CodebookMetrics) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(metrics.collector())
    return registry


def test_fresh_metrics_expose_reload_outcomes_at_zero(book: Codebook) -> None:
    """Both reload outcome series exist from the start, and the last reload reads successful."""
    metrics = CodebookMetrics()
    Enricher(book, metrics)
    registry = _registry(metrics)
    for outcome in ("success", "failure"):
        assert metrics.value("codebook_mapping_reloads_total", {"outcome": outcome}) == 0.0
        assert registry.get_sample_value(
            "codebook_mapping_reloads_total", {"outcome": outcome}
        ) == 0.0
    assert metrics.value("codebook_mapping_last_reload_successful") == 1.0
    assert metrics.value("codebook_mapping_entries", {"source": "test.sms"}) == 6.0
    assert metrics.value("codebook_mapping_entries", {"source": "test.calls"}) == 4.0


def test_reload_outcome_counted(book: Codebook) -> None:
    """reload_outcome counts by outcome and flips the last-reload gauge."""
    metrics = CodebookMetrics()
    metrics.reload_outcome(False)
    assert metrics.value("codebook_mapping_reloads_total", {"outcome": "failure"}) == 1.0
    assert metrics.value("codebook_mapping_last_reload_successful") == 0.0
    metrics.reload_outcome(True)
    assert metrics.value("codebook_mapping_reloads_total", {"outcome": "success"}) == 1.0
    assert metrics.value("codebook_mapping_last_reload_successful") == 1.0


SELF_CASES = [
    # (id, call, metric name, labels)
    ("received", lambda m: m.telemetry_received("traces", "sdk", 3),
     "codebook_telemetry_received_total", {"signal": "traces", "transport": "sdk"}),
    ("rejected", lambda m: m.telemetry_rejected("metrics", "http", "too_large", 3),
     "codebook_telemetry_rejected_total",
     {"signal": "metrics", "transport": "http", "reason": "too_large"}),
    ("forwarded", lambda m: m.telemetry_forwarded("logs", 3),
     "codebook_telemetry_forwarded_total", {"signal": "logs"}),
    ("dropped", lambda m: m.telemetry_dropped("traces", "queue_full", 3),
     "codebook_telemetry_dropped_total", {"signal": "traces", "reason": "queue_full"}),
]


@pytest.mark.parametrize(("call", "name", "labels"), [c[1:] for c in SELF_CASES],
                         ids=[c[0] for c in SELF_CASES])
def test_self_metrics_value_and_registry_agree(call, name: str, labels: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    """Each self-metric counts n and reads the same through value() and a registry."""
    metrics = CodebookMetrics()
    call(metrics)
    call(metrics)
    assert metrics.value(name, labels) == 6.0
    assert _registry(metrics).get_sample_value(name, labels) == 6.0


RAW_CODE_CASES = [
    # (id, raw unmapped code, label value)
    ("short-int", "4242", "4242"),
    ("int-type", 4243, "4243"),
    ("leading-zeros", "0042", "42"),
    ("identifier", "ERR_RATE.limit-2", "ERR_RATE.limit-2"),
    ("phone-number", "+15551234567", "_OTHER"),
    ("free-text", "the message body", "_OTHER"),
    ("long-identifier", "A" * 40, "_OTHER"),
    ("unicode", "コード", "_OTHER"),
    ("fractional", 1.5, "_OTHER"),
]


@pytest.mark.parametrize(("raw", "label"), [c[1:] for c in RAW_CODE_CASES],
                         ids=[c[0] for c in RAW_CODE_CASES])
def test_unmapped_code_label(book: Codebook, raw: object, label: str) -> None:
    """An unmapped code keeps its raw value only when it looks like a code."""
    metrics = CodebookMetrics()
    _count(Enricher(book, metrics), "test.sms", raw)
    assert _codes(metrics, "test.sms", label, "", *UNKNOWN) == 1.0
    assert metrics.value("codebook_unmapped_codes_total", {"source": "test.sms"}) == 1.0


def test_unknown_source_folds_to_other(book: Codebook) -> None:
    """A source no mapping declares is counted under source and code _OTHER."""
    metrics = CodebookMetrics()
    enricher = Enricher(book, metrics)
    _count(enricher, "twilio.sms", "1")
    _count(enricher, "+15551234567", "30008")
    assert _codes(metrics, "_OTHER", "_OTHER", "", *UNKNOWN) == 2.0
    assert metrics.value("codebook_unmapped_codes_total", {"source": "_OTHER"}) == 2.0
    assert "twilio" not in metrics.render().decode()


def test_mapped_code_label_is_canonical(book: Codebook) -> None:
    """Mapped codes are labelled with the mapping's code and subcode, whatever form arrives."""
    metrics = CodebookMetrics()
    enricher = Enricher(book, metrics)
    for code in ("1", 1, " 1 ", "001", 1.0):
        _count(enricher, "tsms", code)
    _count(enricher, "test.calls", "999", "41")
    assert _codes(metrics, "test.sms", "1", "", "throttled", "warning", "with_backoff",
                  "our_app") == 5.0
    assert _codes(metrics, "test.calls", "999", "41", "network", "warning", "with_backoff",
                  "end_user") == 1.0


def test_unmapped_codes_fold_past_limit(book: Codebook) -> None:
    """Past max_unmapped_codes_per_source distinct raw codes, new ones fold into _OTHER."""
    metrics = CodebookMetrics(max_unmapped_codes_per_source=3)
    enricher = Enricher(book, metrics)
    for code in range(1000, 1010):
        _count(enricher, "test.sms", code)
    _count(enricher, "test.sms", 1000)  # already kept: still its own series
    for code in range(1000, 1003):
        assert _codes(metrics, "test.sms", str(code), "", *UNKNOWN) == (2.0 if code == 1000
                                                                         else 1.0)
    assert _codes(metrics, "test.sms", "_OTHER", "", *UNKNOWN) == 7.0
    overflow = {"source": "test.sms", "limit": "unmapped_codes"}
    assert metrics.value("codebook_cardinality_overflow_total", overflow) == 7.0
    assert _registry(metrics).get_sample_value("codebook_cardinality_overflow_total",
                                               overflow) == 7.0


def test_series_limit_folds_code_and_subcode(book: Codebook) -> None:
    """Past max_series, new label sets fold into code and subcode _OTHER and are counted."""
    metrics = CodebookMetrics(max_series=2, zero_series=False)
    enricher = Enricher(book, metrics)
    for code in ("0", "1", "2", "7", "7"):
        _count(enricher, "test.sms", code)
    assert _codes(metrics, "test.sms", "0", "", "success", "info", "no", "none") == 1.0
    assert _codes(metrics, "test.sms", "1", "", "throttled", "warning", "with_backoff",
                  "our_app") == 1.0
    assert _codes(metrics, "test.sms", "_OTHER", "_OTHER", "invalid_request", "error", "no",
                  "our_app") == 1.0
    assert _codes(metrics, "test.sms", "_OTHER", "_OTHER", "recipient_opted_out", "warning",
                  "no", "end_user") == 2.0
    overflow = {"source": "test.sms", "limit": "series"}
    assert metrics.value("codebook_cardinality_overflow_total", overflow) >= 2.0  # type: ignore[operator]


def test_info_metric_lists_every_rule(book: Codebook) -> None:
    """provider_code_info has one series per entry and class rule, with its description."""
    metrics = CodebookMetrics()
    Enricher(book, metrics)
    registry = _registry(metrics)
    cases = [
        ({"source": "test.sms", "code": "1", "subcode": "",
          "description": "Sending faster than the account's rate limit"}),
        ({"source": "test.sms", "code": "5xx", "subcode": "",
          "description": "Gateway server error (HTTP 5xx class)"}),
        ({"source": "test.calls", "code": "", "subcode": "41",
          "description": "Media connectivity was lost"}),
        ({"source": "test.calls", "code": "487", "subcode": "560487",
          "description": "The caller cancelled the call"}),
    ]
    for labels in cases:
        assert registry.get_sample_value("provider_code_info", labels) == 1.0, labels
    info = [s for s in text_string_to_metric_families(metrics.render().decode())
            if s.name == "provider_code_info"]
    assert len(info[0].samples) == 10


def test_info_metric_joins_rules_of_one_pattern() -> None:
    """A class rule with message "*" shares its pattern's info series (one label set, both
    descriptions in file order), as the messages of one code share theirs; its counts go to
    the code's own series under its category."""
    metrics = CodebookMetrics()
    enricher = Enricher(load_codebook(), metrics)
    info = [s for f in text_string_to_metric_families(metrics.render().decode())
            if f.name == "provider_code_info" for s in f.samples
            if s.labels["source"] == "braze.rest" and s.labels["code"] == "2xx"]
    assert [s.labels["description"].split(" | ") for s in info] == [[
        "Request accepted (message: success); only means handed to the messaging services, "
        "not delivered",
        "Non-fatal error of an accepted request (an errors[] entry): that object was not "
        "processed",
    ]]
    for message in (None, "success", "'email' is not a valid email"):
        attrs = {"provider.source": "braze.rest", "provider.code": "201"}
        if message is not None:
            attrs["provider.message"] = message
        assert enricher.enrich_span(attrs) is not None
    assert _codes(metrics, "braze.rest", "201", "", "success", "info", "no", "none") == 2.0
    assert _codes(metrics, "braze.rest", "201", "", "invalid_request", "error", "no",
                  "our_app") == 1.0


def test_swapping_codebook_replaces_info(book: Codebook, tmp_path: Path) -> None:
    """A new codebook replaces the info series and entry counts; counters are kept."""
    metrics = CodebookMetrics()
    enricher = Enricher(book, metrics)
    _count(enricher, "test.sms", "1")
    (tmp_path / "one.yaml").write_text(
        "schema: 1\nsource: test.one\ntitle: One\nversion: '1'\nentries:\n"
        "  - code: '1'\n    category: success\n    description: 'Quote \" and back\\slash'\n"
        "    doc: {en: one}\n",
        encoding="utf-8",
    )
    enricher.swap(load_codebook([tmp_path], builtin=False))
    text = metrics.render().decode()
    assert 'source="test.sms",code="1",subcode="",description' not in text
    assert metrics.value("codebook_mapping_entries", {"source": "test.sms"}) is None
    assert metrics.value("codebook_mapping_entries", {"source": "test.one"}) == 1.0
    assert _codes(metrics, "test.sms", "1", "", "throttled", "warning", "with_backoff",
                  "our_app") == 1.0
    parsed = _samples(text)
    key = ("provider_code_info", (("code", "1"), ("description", 'Quote " and back\\slash'),
                                  ("source", "test.one"), ("subcode", "")))
    assert parsed[key] == 1.0


def test_render_agrees_with_collector(book: Codebook) -> None:
    """Every sample of render() has the same value through the prometheus_client collector."""
    metrics = CodebookMetrics(max_unmapped_codes_per_source=2)
    enricher = Enricher(book, metrics)
    for source, code in [("test.sms", "0"), ("test.sms", 503), ("test.sms", 77), ("x", 1),
                         ("test.sms", 78), ("test.sms", 79), ("test.calls", 1)]:
        _count(enricher, source, code)
    metrics.telemetry_received("traces", "sdk", 7)
    metrics.record_point("sms.sent", monotonic_sum=True, labels=("test.sms", "0", "", "success",
                         "info", "no", "none"), value=4.0, stream=1, delta=True)
    text = metrics.render().decode()
    assert "_created" not in text
    registry = _registry(metrics)
    samples = _samples(text)
    assert len(samples) > 20
    for (name, labels), value in samples.items():
        assert registry.get_sample_value(name, dict(labels)) == value, (name, labels)


def test_app_metric_names_are_sanitised_and_bounded() -> None:
    """App metric names become Prometheus names; reserved names are refused and counted."""
    metrics = CodebookMetrics()
    labels = ("test.sms", "1", "", "throttled", "warning", "with_backoff", "our_app")
    named = dict(zip(CODE_LABELS, labels, strict=True))
    metrics.record_point("sms.sent", monotonic_sum=True, labels=labels, value=1, stream=1,
                         delta=True)
    metrics.record_point("9-lives/ok", monotonic_sum=False, labels=labels, value=2, stream=2,
                         delta=False)
    metrics.record_point("provider_codes", monotonic_sum=True, labels=labels, value=5, stream=3,
                         delta=True)
    assert metrics.value("sms_sent_total", named) == 1.0
    assert metrics.value("_9_lives_ok", named) == 2.0
    assert metrics.value("provider_codes_total", named) is None
    overflow = {"source": "_OTHER", "limit": "metric_families"}
    assert metrics.value("codebook_cardinality_overflow_total", overflow) == 1.0


def test_cumulative_points_add_growth_and_survive_resets() -> None:
    """Cumulative points add their growth per stream; a drop (a restart) adds the new value."""
    metrics = CodebookMetrics()
    labels = ("test.sms", "1", "", "throttled", "warning", "with_backoff", "our_app")
    named = dict(zip(CODE_LABELS, labels, strict=True))
    for stream, value in [("a", 5), ("b", 2), ("a", 7), ("b", 2), ("a", 1)]:
        metrics.record_point("sent", monotonic_sum=True, labels=labels, value=value,
                             stream=stream, delta=False)
    assert metrics.value("sent_total", named) == 10.0


def test_runbook_first_occurrence_statement() -> None:
    """dashboards/RUNBOOK.md: every mapped code's series exists at 0 from start-up (so its
    first occurrence is an increase); unmapped codes, class-rule codes and a mapped code with
    an unlisted subcode are the exceptions, appearing only when counted."""
    book = load_codebook()
    metrics = CodebookMetrics()
    Enricher(book, metrics)
    published = {
        (s.labels["source"], s.labels["code"], s.labels["subcode"]): s.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for s in family.samples
        if s.name == "provider_codes_total"
    }
    mapped = {(r.source, r.code, r.subcode) for r in book.rules() if r.code and not r.pattern}
    assert mapped and mapped <= set(published)
    assert set(published.values()) == {0.0}
    for key in (("vonage.sms", "4242", ""), ("azure.acs.pstn", "503", ""),
                ("azure.acs.call_automation", "500", "0")):
        assert key not in published, key
    runbook = (Path(__file__).parents[1] / "dashboards" / "RUNBOOK.md").read_text()
    assert "published at 0 as soon as the mappings\nload" in runbook
    assert "with its second occurrence" not in runbook
