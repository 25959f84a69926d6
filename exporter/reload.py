"""Reloading mappings when their files change (polling; no platform file-watch APIs)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from pathlib import Path

from .codebook import builtin_mappings_dir
from .enrich import Enricher
from .loader import mapping_files

_log = logging.getLogger(__name__)


def _fingerprint(dirs: Iterable[str | Path]) -> tuple[tuple[str, int, int], ...]:
    out = []
    for path in mapping_files(dirs):
        try:
            st = path.stat()
        except OSError:
            continue
        out.append((str(path), st.st_mtime_ns, st.st_size))
    return tuple(out)


class MappingWatcher:
    """Polls the mapping folders every ``interval_seconds`` and reloads when a file changes.

    Runs on its own daemon thread; a failed reload keeps the running mappings (the enricher
    logs and counts it) and is not retried until the files change again.
    """

    def __init__(self, enricher: Enricher, interval_seconds: float = 5.0) -> None:
        self.enricher = enricher
        self.interval_seconds = interval_seconds
        self._dirs = [
            *([builtin_mappings_dir()] if enricher.builtin else []),
            *enricher.mapping_dirs,
        ]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seen = _fingerprint(self._dirs)

    def check(self) -> bool | None:
        """Reload now if any file changed; returns the reload outcome, or None if unchanged."""
        current = _fingerprint(self._dirs)
        if current == self._seen:
            return None
        self._seen = current
        return self.enricher.reload()

    def start(self) -> MappingWatcher:
        """Start polling in the background; returns self."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="codebook-watch", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_seconds):
            try:
                self.check()
            except Exception:  # the watcher must outlive any one bad poll
                _log.exception("codebook: mapping watch failed")

    def stop(self) -> None:
        """Stop polling and wait for the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
