"""Test helper: run a real ``codebook serve`` subprocess on free loopback ports and scrape it."""

from __future__ import annotations

import base64
import json
import os
import selectors
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parent.parent

BASE_CONFIG: dict[str, Any] = {
    "receivers": {
        "grpc": {"endpoint": "127.0.0.1:0"},
        "http": {"endpoint": "127.0.0.1:0"},
    },
    "metrics": {"endpoint": "127.0.0.1:0"},
    "shutdown_timeout_seconds": 5,
}


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """A deep merge of two config dicts (``extra`` wins)."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def wait_for(check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last: {last!r})")


class SidecarProcess:
    """A ``python -m exporter serve`` child; use as a context manager.

    Set ``tls`` (a client SSL context) and ``auth`` (``user:password``) when /metrics is behind
    a web config; :meth:`get` and the scrape helpers use them.
    """

    def __init__(
        self,
        tmp: Path,
        config: dict[str, Any] | None = None,
        *,
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.config_path = tmp / f"sidecar-{time.monotonic_ns()}.yaml"
        self.config_path.write_text(yaml.safe_dump(merge(BASE_CONFIG, config or {})))
        self.log_path = tmp / f"sidecar-{time.monotonic_ns()}.log"
        self.args = args
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.addresses: dict[str, str] = {}
        self.tls: ssl.SSLContext | None = None
        self.auth: str | None = None

    def __enter__(self) -> SidecarProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 20.0) -> None:
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "exporter", "serve", "--config", str(self.config_path),
             *self.args],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=self.env,
        )
        assert self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        buf = b""
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                self.stop()
                raise AssertionError(f"sidecar did not start:\n{self.log()}")
            if sel.select(min(left, 0.5)):
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                if not chunk:
                    continue
                buf += chunk
        sel.close()
        line = json.loads(buf.split(b"\n", 1)[0])
        assert line["event"] == "listening"
        self.addresses = line

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def grpc(self) -> str:
        return self.addresses["grpc"]

    @property
    def http(self) -> str:
        return f"http://{self.addresses['http']}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.addresses['metrics']}/metrics"

    def get(self, path: str) -> tuple[int, bytes]:
        scheme = "http" if self.tls is None else "https"
        req = urllib.request.Request(f"{scheme}://{self.addresses['metrics']}{path}")
        if self.auth is not None:
            token = base64.b64encode(self.auth.encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(req, timeout=10, context=self.tls) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def scrape(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        """Every sample on /metrics, keyed by (name, labels)."""
        status, body = self.get("/metrics")
        assert status == 200
        out = {}
        for family in text_string_to_metric_families(body.decode()):
            for s in family.samples:
                out[(s.name, frozenset(s.labels.items()))] = s.value
        return out

    def value(self, name: str, **labels: str) -> float:
        """One sample's value (0 when absent)."""
        return self.scrape().get((name, frozenset(labels.items())), 0.0)

    def total(self, name: str, **labels: str) -> float:
        """The sum of every sample of ``name`` whose labels include ``labels``."""
        want = set(labels.items())
        return sum(v for (n, lab), v in self.scrape().items() if n == name and want <= lab)

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, wait, SIGKILL past the deadline; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()
        return self.proc.returncode
