"""Reloading mappings: swap on success, keep the old codebook on failure, count both."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from exporter import CodebookMetrics, Enricher, MappingWatcher, make_asgi_app

GOOD = """schema: 1
source: test.reload
title: Reload test
version: "{version}"
entries:
  - code: "1"
    category: {category}
    description: Status one
    doc: {{en: one}}
"""


def _write(folder: Path, category: str, version: str = "1") -> None:
    path = folder / "reload.yaml"
    path.write_text(GOOD.format(category=category, version=version), encoding="utf-8")
    # Make the change visible to an mtime+size poll even within one clock tick.
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    _write(tmp_path, "throttled")
    return tmp_path


def _reloads(metrics: CodebookMetrics, outcome: str) -> float | None:
    return metrics.value("codebook_mapping_reloads_total", {"outcome": outcome})


def test_reload_swaps_on_success(folder: Path) -> None:
    """A good file change is picked up whole and counted as a success."""
    enricher = Enricher(mapping_dirs=[folder])
    assert enricher.book.resolve("test.reload", "1").category == "throttled"
    _write(folder, "quota_exhausted", "2")
    assert enricher.reload() is True
    assert enricher.book.resolve("test.reload", "1").category == "quota_exhausted"
    assert _reloads(enricher.metrics, "success") == 1.0
    assert _reloads(enricher.metrics, "failure") == 0.0
    assert enricher.metrics.value("codebook_mapping_last_reload_successful") == 1.0


def test_failed_reload_keeps_old_and_logs_once(
    folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A broken file leaves the running codebook in place; the same problems log only once."""
    enricher = Enricher(mapping_dirs=[folder])
    old = enricher.book
    (folder / "reload.yaml").write_text(GOOD.format(category="throttle", version="3"),
                                        encoding="utf-8")
    with caplog.at_level(logging.ERROR, logger="exporter.enrich"):
        assert enricher.reload() is False
        assert enricher.reload() is False
    assert enricher.book is old
    assert enricher.book.resolve("test.reload", "1").category == "throttled"
    assert _reloads(enricher.metrics, "failure") == 2.0
    assert enricher.metrics.value("codebook_mapping_last_reload_successful") == 0.0
    errors = [r for r in caplog.records if "reload failed" in r.getMessage()]
    assert len(errors) == 1
    assert "reload.yaml:7: entries[0].category: 'throttle' is not a category" in (
        errors[0].getMessage())


def test_watcher_reloads_on_change_only(folder: Path) -> None:
    """The watcher reloads when a file changes, and not otherwise."""
    enricher = Enricher(mapping_dirs=[folder])
    watcher = MappingWatcher(enricher, interval_seconds=3600)
    assert watcher.check() is None
    _write(folder, "auth", "2")
    assert watcher.check() is True
    assert enricher.book.resolve("test.reload", "1").category == "auth"
    assert watcher.check() is None
    (folder / "extra.yml").write_text("not: [valid", encoding="utf-8")
    assert watcher.check() is False
    assert enricher.book.resolve("test.reload", "1").category == "auth"
    watcher.start()
    watcher.stop()


def test_asgi_app_serves_metrics(folder: Path) -> None:
    """The ASGI app answers GET with the exposition and refuses other methods."""
    enricher = Enricher(mapping_dirs=[folder])
    enricher.enrich_span({"provider.source": "test.reload", "provider.code": 1})
    app = make_asgi_app(enricher.metrics)

    async def call(method: str) -> list[dict[str, Any]]:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app({"type": "http", "method": method, "path": "/metrics"}, receive, send)
        return sent

    start, body = asyncio.run(call("GET"))
    assert start["status"] == 200
    assert (b"content-type", b"text/plain; version=0.0.4; charset=utf-8") in start["headers"]
    series = b'provider_codes_total{source="test.reload",code="1",subcode="",category="throttled"'
    assert series in body["body"]
    start, _ = asyncio.run(call("POST"))
    assert start["status"] == 405


ASGI_PATHS = [
    ("metrics", "/metrics", "", 200, b"provider_codes_total"),
    ("mounted-at-prefix-child-path", "/", "/metrics", 200, b"provider_codes_total"),
    ("mounted-at-prefix-full-path", "/metrics", "/metrics", 200, b"provider_codes_total"),
    ("mounted-empty-path", "", "/metrics", 200, b"provider_codes_total"),
    ("landing", "/", "", 200, b"/metrics"),
    ("unknown", "/nope", "", 404, b"Not Found"),
    ("unknown-under-mount", "/metrics/nope", "/metrics", 404, b"Not Found"),
]


@pytest.mark.parametrize(("path", "root", "status", "snippet"), [c[1:] for c in ASGI_PATHS],
                         ids=[c[0] for c in ASGI_PATHS])
def test_asgi_app_paths(path: str, root: str, status: int, snippet: bytes) -> None:
    """The ASGI app serves the same paths as the WSGI one: /metrics, the mount point, a
    landing line at /, and 404 for anything else."""
    app = make_asgi_app(Enricher().metrics)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "root_path": root}
    asyncio.run(app(scope, receive, send))
    start, body = sent
    assert start["status"] == status
    assert snippet in body["body"]
