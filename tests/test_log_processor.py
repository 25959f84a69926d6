"""The log record processor in a real logs SDK pipeline: enrichment, pass-through, counts."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler, LogRecordLimits
from opentelemetry.sdk._logs import LogRecordProcessor as SdkLogRecordProcessor
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource

from exporter import CodebookLogRecordProcessor, CodebookMetrics, Enricher, load_codebook
from exporter import log_processor as log_processor_module

try:  # the name in current SDKs; older ones only have InMemoryLogExporter
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter as InMemory
except ImportError:  # pragma: no cover - older SDK
    from opentelemetry.sdk._logs.export import InMemoryLogExporter as InMemory

INPROC = Path(__file__).parent / "testdata" / "mappings_inproc"
RESOURCE = Resource.create({"service.name": "log-processor-test"})
BOOK = load_codebook([INPROC], builtin=False)
THROTTLED = {"source": "test.sms", "code": "1", "subcode": "", "category": "throttled",
             "severity": "warning", "retryable": "with_backoff", "owner": "our_app"}
OUTPUTS = ("provider.category", "provider.severity", "provider.retryable", "provider.owner",
           "provider.match")


class Pipeline:
    """LoggerProvider -> CodebookLogRecordProcessor -> Simple -> in-memory exporter."""

    def __init__(self, limits: LogRecordLimits | None = None) -> None:
        self.exporter = InMemory()
        self.enricher = Enricher(BOOK, CodebookMetrics())
        self.processor = CodebookLogRecordProcessor(
            SimpleLogRecordProcessor(self.exporter), self.enricher
        )
        kwargs: dict[str, Any] = {"resource": RESOURCE}
        if limits is not None:
            kwargs["log_record_limits"] = limits
        try:
            self.provider = LoggerProvider(**kwargs)
        except TypeError:  # an SDK without configurable log record limits
            pytest.skip("this logs SDK takes no log_record_limits")
        self.provider.add_log_record_processor(self.processor)
        self.logger = logging.getLogger(f"codebook.test.{id(self)}")
        self.logger.propagate = False
        self.logger.setLevel(logging.DEBUG)
        self.logger.addHandler(LoggingHandler(logger_provider=self.provider))

    def records(self) -> list[Any]:
        return [getattr(d, "log_record", d) for d in self.exporter.get_finished_logs()]

    def count(self, labels: dict[str, str] = THROTTLED) -> float | None:
        return self.enricher.metrics.value("provider_codes_total", labels)

    def total(self) -> float:
        """Every provider_codes_total series summed (mapped codes' series start at 0)."""
        text = self.enricher.metrics.render().decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("provider_codes_total{"))


@pytest.fixture
def pipe() -> Iterator[Pipeline]:
    p = Pipeline()
    yield p
    p.provider.shutdown()


CASES = [
    ("string-code", {"provider.source": "test.sms", "provider.code": "1"},
     {"provider.category": "throttled", "error.type": "throttled", "provider.match": "exact"}),
    ("int-code-alias", {"provider.source": "tsms", "provider.code": 1},
     {"provider.category": "throttled", "provider.owner": "our_app"}),
    ("success-no-error-type", {"provider.source": "test.sms", "provider.code": "0"},
     {"provider.category": "success", "provider.match": "exact"}),
    ("unmapped", {"provider.source": "test.sms", "provider.code": "4242"},
     {"provider.match": "unmapped"}),
    ("class-rule", {"provider.source": "test.sms", "provider.code": 503},
     {"provider.match": "class", "provider.category": "provider_internal"}),
    ("subcode", {"provider.source": "test.calls", "provider.code": "999",
                 "provider.subcode": "41"}, {"provider.category": "network"}),
    ("stale-outputs-replaced", {"provider.source": "test.sms", "provider.code": "0",
                                "provider.category": "bogus"}, {"provider.category": "success"}),
]


@pytest.mark.parametrize(("extra", "want"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_records_with_a_code_are_enriched(
    pipe: Pipeline, extra: dict[str, object], want: dict[str, str]
) -> None:
    pipe.logger.warning("send failed", extra=extra)
    (record,) = pipe.records()
    attrs = dict(record.attributes or {})
    for key, value in want.items():
        assert attrs[key] == value, key
    assert all(k in attrs for k in OUTPUTS)
    assert ("error.type" in attrs) == (attrs["provider.category"] not in (
        "success", "pending", "call_ended_normal", "unknown"))
    assert attrs["provider.code"] == extra["provider.code"]  # inputs kept as the app set them
    assert record.severity_text == "WARN" and record.severity_number.value == 13  # untouched
    assert record.body == "send failed"


NO_CODE = [
    ("no-attributes", {}),
    ("other-attributes", {"app.user": "u1"}),
    ("source-only", {"provider.source": "test.sms"}),
    ("code-only", {"provider.code": "1"}),
]


@pytest.mark.parametrize("extra", [c[1] for c in NO_CODE], ids=[c[0] for c in NO_CODE])
def test_records_without_a_code_pass_unchanged(pipe: Pipeline, extra: dict[str, object]) -> None:
    pipe.logger.error("plain", extra=extra)
    (record,) = pipe.records()
    attrs = dict(record.attributes or {})
    assert not any(k in attrs for k in (*OUTPUTS, "error.type"))
    for key, value in extra.items():
        assert attrs[key] == value
    assert pipe.total() == 0.0


def test_each_record_counts_once(pipe: Pipeline) -> None:
    for _ in range(5):
        pipe.logger.info("x", extra={"provider.source": "test.sms", "provider.code": "1"})
    pipe.logger.info("y")
    assert pipe.count() == pipe.total() == 5.0
    assert len(pipe.records()) == 6


def test_logger_emit_api_records(pipe: Pipeline) -> None:
    """A record emitted through the logs API (not logging) is enriched the same way."""
    from opentelemetry._logs import SeverityNumber

    logger = pipe.provider.get_logger("tests.api")
    try:
        logger.emit(severity_number=SeverityNumber.WARN, body="api",
                    attributes={"provider.source": "test.sms", "provider.code": "1"})
    except TypeError:  # pragma: no cover - older SDKs take a LogRecord only
        pytest.skip("this logs API takes a LogRecord")
    (record,) = pipe.records()
    assert dict(record.attributes or {})["provider.category"] == "throttled"
    assert record.severity_number == SeverityNumber.WARN
    assert pipe.count() == 1.0


def test_attribute_limit_never_pushes_app_attributes_out() -> None:
    """The output attributes are added beyond the record limit; the app's own stay."""
    p = Pipeline(LogRecordLimits(max_attributes=3))
    extra = {"provider.source": "test.sms", "provider.code": "1", "app.k": "v"}
    p.provider.get_logger("t").emit(attributes=extra)
    (record,) = p.records()
    attrs = dict(record.attributes or {})
    assert {k: attrs[k] for k in extra} == extra
    assert attrs["provider.category"] == "throttled"
    p.provider.shutdown()


class Boom(SdkLogRecordProcessor):
    def on_emit(self, log_record: Any) -> None:
        raise ValueError("boom")

    emit = on_emit

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def test_failing_downstream_is_counted_and_the_next_still_gets_the_record() -> None:
    exporter = InMemory()
    enricher = Enricher(BOOK, CodebookMetrics())
    proc = CodebookLogRecordProcessor([Boom(), SimpleLogRecordProcessor(exporter)], enricher)
    provider = LoggerProvider(resource=RESOURCE)
    provider.add_log_record_processor(proc)
    provider.get_logger("t").emit(attributes={"provider.source": "test.sms",
                                              "provider.code": "1"})
    assert len(exporter.get_finished_logs()) == 1
    assert enricher.metrics.value(
        "codebook_telemetry_dropped_total", {"signal": "logs", "reason": "internal_error"}
    ) == 1.0
    assert proc.force_flush() is True
    provider.shutdown()


def test_enricher_failure_passes_the_record_and_counts_under_logs(
    pipe: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("resolve failed")

    monkeypatch.setattr(pipe.enricher, "_span_miss", broken)
    pipe.logger.warning("x", extra={"provider.source": "test.sms", "provider.code": "1"})
    (record,) = pipe.records()
    assert "provider.category" not in dict(record.attributes or {})
    assert pipe.enricher.metrics.value(
        "codebook_telemetry_dropped_total", {"signal": "logs", "reason": "internal_error"}
    ) == 1.0


def test_unhashable_and_odd_values_never_raise(pipe: Pipeline) -> None:
    for code in (["1", "2"], 1.5, True, b"1", "9" * 10_000):
        pipe.provider.get_logger("t").emit(
            attributes={"provider.source": "test.sms", "provider.code": code}
        )
    assert len(pipe.records()) == 5
    # As on spans: whatever the value, the code is classified and counted.
    matches = [dict(r.attributes or {})["provider.match"] for r in pipe.records()]
    assert matches[0] == matches[1] == matches[4] == "unmapped"
    assert pipe.total() == 5.0


def test_threads_count_exactly(pipe: Pipeline) -> None:
    def work() -> None:
        for _ in range(200):
            pipe.logger.info("t", extra={"provider.source": "test.sms", "provider.code": "1"})

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert pipe.count() == 800.0


def test_old_sdk_entry_point_and_downstream_method() -> None:
    """``emit`` (the older SDKs' name) is on_emit; a downstream with only ``emit`` is called."""

    class OldStyle:
        def __init__(self) -> None:
            self.got: list[Any] = []

        def emit(self, log_data: Any) -> None:
            self.got.append(log_data)

    assert CodebookLogRecordProcessor.emit is CodebookLogRecordProcessor.on_emit
    assert log_processor_module._emit_method(OldStyle()).__name__ == "emit"


class Picky(SdkLogRecordProcessor):
    """A downstream that takes warnings and above only (SDKs that ask processors first)."""

    def __init__(self) -> None:
        self.got: list[Any] = []

    def on_emit(self, log_record: Any) -> None:
        self.got.append(log_record)

    emit = on_emit

    def enabled(self, **kwargs: Any) -> bool:
        severity = kwargs.get("severity_number")
        return severity is None or severity.value >= 13

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def test_enabled_asks_the_downstream() -> None:
    from opentelemetry._logs import SeverityNumber

    picky = Picky()
    proc = CodebookLogRecordProcessor([picky], Enricher(BOOK, CodebookMetrics()))
    assert proc.enabled(severity_number=SeverityNumber.WARN) is True
    assert proc.enabled(severity_number=SeverityNumber.DEBUG) is False
    both = CodebookLogRecordProcessor([picky, SimpleLogRecordProcessor(InMemory())])
    assert both.enabled(severity_number=SeverityNumber.DEBUG) is True
