"""``codebook serve``: the sidecar process (OTLP in, enriched OTLP out, counters on /metrics).

Wiring only: configuration (``config``), the receivers (``otlp_grpc``, ``otlp_http``), the
shared intake (``otlp``), the optional upstream (``forwarder``) and ``/metrics`` with
``/healthz`` and ``/readyz`` (``server``, secured by ``webconfig``).

Process contract: once every listener is bound, one JSON line goes to stdout naming the bound
addresses (``{"event": "listening", "grpc": "127.0.0.1:4317", ...}``; port 0 in the config
picks free ports). SIGHUP reloads the mappings and re-reads the web config file with the
certificates, keys and users it names (new connections get the new ones); a broken mapping or
web config keeps the running one, and each outcome is logged and counted. ``/readyz`` is 503 while
the forward queue is fuller than ``forward.ready_max_queue_fraction``. SIGTERM or SIGINT:
``/readyz`` turns 503, the receivers stop accepting and finish what they hold, the forwarder
flushes, all within ``shutdown_timeout_seconds``; then exit 0. Exit 1 on a configuration or
mapping error.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

from ..enrich import Enricher
from ..metrics import CodebookMetrics
from ..reload import MappingWatcher
from ..server import MetricsServer, start_metrics_server
from .budget import InFlightBudget, return_freed_memory
from .config import Config, ConfigError, dump, load_config, parse_endpoint
from .forwarder import Forwarder
from .otlp import OtlpIntake
from .otlp_grpc import OtlpGrpcReceiver
from .otlp_http import OtlpHttpReceiver
from .queue import QueueError
from .webconfig import WebConfig, WebConfigError, WebConfigReloader, load_web_config
from .webhook import WebhookHandler
from .webhook_listener import WebhookListener

_log = logging.getLogger("exporter.serve")

# Flags that set one config key each (dest -> dotted key).
_FLAG_KEYS = {
    "grpc_endpoint": "receivers.grpc.endpoint",
    "http_endpoint": "receivers.http.endpoint",
    "metrics_endpoint": "metrics.endpoint",
    "web_config_file": "metrics.web_config_file",
    "forward_endpoint": "forward.endpoint",
    "forward_protocol": "forward.protocol",
    "log_level": "log_level",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``serve`` options to ``parser``."""
    parser.add_argument("--config", metavar="FILE", help="YAML config file")
    parser.add_argument(
        "--check-config",
        action="store_true",
        help="validate the config, web config and mappings, print the effective config, exit",
    )
    parser.add_argument("--grpc-endpoint", metavar="HOST:PORT", help="OTLP/gRPC listen address")
    parser.add_argument("--http-endpoint", metavar="HOST:PORT", help="OTLP/HTTP listen address")
    parser.add_argument("--metrics-endpoint", metavar="HOST:PORT", help="/metrics listen address")
    parser.add_argument(
        "--web.config.file",
        dest="web_config_file",
        metavar="FILE",
        help="exporter-toolkit web config (TLS, basic auth) for /metrics",
    )
    parser.add_argument("--forward-endpoint", metavar="URL", help="upstream OTLP endpoint")
    parser.add_argument("--forward-protocol", choices=("grpc", "http/protobuf"))
    parser.add_argument(
        "--mappings",
        action="append",
        default=[],
        metavar="DIR",
        help="extra mapping folder overlaid on the built-in ones (repeatable)",
    )
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set any config key by its dotted path, e.g. forward.queue_max_requests=64",
    )


def _overrides(args: argparse.Namespace) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in getattr(args, "set", []) or []:
        key, sep, value = item.partition("=")
        out[key.strip()] = value if sep else ""
    for dest, key in _FLAG_KEYS.items():
        value = getattr(args, dest, None)
        if value is not None:
            out[key] = value
    mappings = getattr(args, "mappings", None)
    if mappings:
        import os

        out["mappings.dirs"] = os.pathsep.join(mappings)
    return out


class Sidecar:
    """Every running part of the sidecar; ``start()`` binds and serves, ``stop()`` drains."""

    PROBES = ("/healthz", "/readyz")

    def __init__(self, cfg: Config, web: WebConfig | None = None) -> None:
        self.cfg = cfg
        self.metrics = CodebookMetrics(
            max_unmapped_codes_per_source=cfg.metrics.max_unmapped_codes_per_source,
            max_series=cfg.metrics.max_series,
        )
        self.enricher = Enricher(
            metrics=self.metrics,
            mapping_dirs=cfg.mappings.dirs,
            builtin=cfg.mappings.builtin,
        )
        self.forwarder: Forwarder | None = None
        if cfg.forward.endpoint:
            f = cfg.forward
            self.forwarder = Forwarder(
                f.endpoint,
                self.metrics,
                protocol=f.protocol,
                headers=f.headers,
                compression=f.compression,
                queue_max_requests=f.queue_max_requests,
                queue_max_bytes=f.queue_max_bytes,
                queue_dir=f.queue_dir,
                queue_sync=f.queue_sync,
                timeout_seconds=f.timeout_seconds,
                initial_backoff_seconds=f.initial_backoff_seconds,
                max_backoff_seconds=f.max_backoff_seconds,
                max_elapsed_seconds=f.max_elapsed_seconds,
                ca_file=f.ca_file or None,
                insecure_skip_verify=f.insecure_skip_verify,
            )
        self.intake = OtlpIntake(
            self.enricher, self.forwarder, count_enriched=cfg.receivers.count_enriched
        )
        self.grpc: OtlpGrpcReceiver | None = None
        self.http: OtlpHttpReceiver | None = None
        self.webhooks: WebhookListener | None = None
        self.metrics_server: MetricsServer | None = None
        self.watcher: MappingWatcher | None = None
        self.ready = False
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.web_reloader: WebConfigReloader | None = None
        if web is not None:
            self.web_reloader = WebConfigReloader(web, self._apply_web)
            self.registry.register(self.web_reloader)

    @property
    def web(self) -> WebConfig | None:
        """The web config serving now (it changes on a successful reload)."""
        return None if self.web_reloader is None else self.web_reloader.current

    def start(self) -> dict[str, str]:
        """Bind every listener and start serving; returns the bound addresses by name."""
        r = self.cfg.receivers
        budget = InFlightBudget(r.max_in_flight_bytes)  # shared by both receivers
        if self.forwarder is not None:
            self.forwarder.start()
        if r.grpc.enabled:
            host, port = parse_endpoint(r.grpc.endpoint)
            self.grpc = OtlpGrpcReceiver(
                self.intake,
                host,
                port,
                max_workers=r.grpc.max_workers,
                max_concurrent_rpcs=r.grpc.max_concurrent_rpcs,
                max_pending_requests=r.max_pending_requests,
                max_request_bytes=r.max_request_bytes,
                retry_after_seconds=r.retry_after_seconds,
                budget=budget,
            ).start()
        if r.http.enabled:
            host, port = parse_endpoint(r.http.endpoint)
            self.http = OtlpHttpReceiver(
                self.intake,
                host,
                port,
                threads=r.http.threads,
                connection_limit=r.http.connection_limit,
                max_request_bytes=r.max_request_bytes,
                max_pending_requests=r.max_pending_requests,
                retry_after_seconds=r.retry_after_seconds,
                idle_timeout_seconds=r.http.idle_timeout_seconds,
                read_timeout_seconds=r.http.read_timeout_seconds,
                budget=budget,
            ).start()
        hooks = self.cfg.webhooks
        if hooks.endpoint:
            host, port = parse_endpoint(hooks.endpoint)
            handler = WebhookHandler(
                self.enricher,
                sink=self.forwarder,
                token=hooks.token,
                vonage_signature_secret=hooks.vonage.signature_secret,
                vonage_signature_method=hooks.vonage.signature_method,
                vonage_max_clock_skew_seconds=hooks.vonage.max_clock_skew_seconds,
                max_body_bytes=hooks.max_body_bytes,
                dedup_window_seconds=hooks.dedup_window_seconds,
                dedup_max_events=hooks.dedup_max_events,
            )
            self.webhooks = WebhookListener(
                handler,
                host,
                port,
                threads=hooks.threads,
                connection_limit=hooks.connection_limit,
                idle_timeout_seconds=hooks.idle_timeout_seconds,
            ).start()
        host, port = parse_endpoint(self.cfg.metrics.endpoint)
        web = self.web
        self.metrics_server = start_metrics_server(
            self.metrics,
            port,
            host,
            registry=self.registry,
            routes={"/healthz": self._healthz, "/readyz": self._readyz},
            authenticate=_authenticator(web),
            auth_excluded_paths=self.PROBES,  # kubelet probes cannot send credentials
            headers=web.headers if web is not None else (),
            ssl_context=web.ssl_context if web is not None else None,
            max_connections=self.cfg.metrics.max_connections,
            timeout_seconds=self.cfg.metrics.connection_timeout_seconds,
        )
        if self.cfg.mappings.watch_interval_seconds > 0:
            self.watcher = MappingWatcher(
                self.enricher, self.cfg.mappings.watch_interval_seconds
            ).start()
        self.ready = True
        out = {"metrics": f"{_fmt(self.metrics_server.host)}:{self.metrics_server.port}"}
        if self.grpc is not None:
            out["grpc"] = f"{_fmt(self.grpc.host)}:{self.grpc.port}"
        if self.http is not None:
            out["http"] = f"{_fmt(self.http.host)}:{self.http.port}"
        if self.webhooks is not None:
            out["webhooks"] = f"{_fmt(self.webhooks.host)}:{self.webhooks.port}"
        return out

    def _healthz(self) -> tuple[int, str, bytes]:
        return 200, "text/plain; charset=utf-8", b"ok\n"

    def _readyz(self) -> tuple[int, str, bytes]:
        if not self.ready:
            return 503, "text/plain; charset=utf-8", b"not ready\n"
        if self.forwarder is not None:
            fill = self.forwarder.fill_fraction()
            if fill > self.cfg.forward.ready_max_queue_fraction:
                body = f"not ready: forward queue {fill:.0%} full\n".encode()
                return 503, "text/plain; charset=utf-8", body
        return 200, "text/plain; charset=utf-8", b"ready\n"

    def _apply_web(self, web: WebConfig) -> None:
        if self.metrics_server is not None:
            self.metrics_server.reconfigure(
                ssl_context=web.ssl_context, authenticate=_authenticator(web), headers=web.headers
            )

    def reload(self) -> bool:
        """Reload the mappings and the web config (SIGHUP); each keeps the old on failure."""
        ok = self.enricher.reload()
        if self.web_reloader is not None:
            ok = self.web_reloader.reload() and ok
        return ok

    def stop(self) -> None:
        """Drain and stop everything within ``shutdown_timeout_seconds``."""
        self.ready = False
        deadline = time.monotonic() + self.cfg.shutdown_timeout_seconds

        def left() -> float:
            return max(0.0, deadline - time.monotonic())

        if self.watcher is not None:
            self.watcher.stop()
        threads = []
        for receiver in (self.grpc, self.http, self.webhooks):
            if receiver is not None:
                t = threading.Thread(target=receiver.stop, args=(left() * 0.5,), daemon=True)
                t.start()
                threads.append(t)
        for t in threads:
            t.join(left())
        if self.forwarder is not None:
            self.forwarder.shutdown(left())
        if self.metrics_server is not None:
            self.metrics_server.close()


def _authenticator(web: WebConfig | None) -> Callable[[str | None], bool] | None:
    return web.authenticate if web is not None and web.requires_auth else None


def _fmt(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def main(args: argparse.Namespace) -> int:
    """Run the sidecar until SIGTERM; returns the exit status."""
    try:
        cfg = load_config(getattr(args, "config", None), overrides=_overrides(args))
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"codebook: {len(exc.problems)} config problem(s)", file=sys.stderr)
        return 1
    logging.basicConfig(
        level=cfg.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    web = None
    if cfg.metrics.web_config_file:
        try:
            web = load_web_config(cfg.metrics.web_config_file)
        except WebConfigError as exc:
            for problem in exc.problems:
                print(problem, file=sys.stderr)
            return 1
    return_freed_memory()  # request buffers go back to the system (exporter/sidecar/budget.py)
    sidecar = Sidecar(cfg, web)  # MappingError propagates: the CLI prints every problem
    if getattr(args, "check_config", False):
        print(dump(cfg), end="")
        book = sidecar.enricher.book
        print(f"# ok: {len(book.sources)} source(s)", file=sys.stderr)
        return 0
    stop = threading.Event()
    hup = threading.Event()

    def on_term(signum: int, frame: FrameType | None) -> None:
        stop.set()

    def on_hup(signum: int, frame: FrameType | None) -> None:
        hup.set()

    previous: dict[signal.Signals, Callable[..., object] | int | None] = {}
    handlers = ((signal.SIGTERM, on_term), (signal.SIGINT, on_term), (signal.SIGHUP, on_hup))
    for sig, handler in handlers:
        previous[sig] = signal.signal(sig, handler)
    try:
        try:
            addresses = sidecar.start()
        except QueueError as exc:
            print(f"codebook: {exc}", file=sys.stderr)
            sidecar.stop()
            return 1
        except (OSError, RuntimeError) as exc:
            print(f"codebook: cannot listen: {exc}", file=sys.stderr)
            sidecar.stop()
            return 1
        # The one "listening" line: JSON on stdout, the process contract (no log copy of it).
        print(json.dumps({"event": "listening", **addresses}), flush=True)
        while not stop.is_set():
            stop.wait(0.2)
            if hup.is_set():
                hup.clear()
                sidecar.reload()
        _log.info("codebook serve: draining")
        sidecar.stop()
        _log.info("codebook serve: stopped")
        return 0
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
