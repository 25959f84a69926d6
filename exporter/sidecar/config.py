"""The sidecar's configuration: a YAML file, overridden by ``CODEBOOK_*`` env vars, then flags.

Precedence, lowest first: the defaults below, the file (``--config``), the environment, the
command line. Every key of the file has an env var named by its path in upper case joined
with ``_`` (``forward.endpoint`` is ``CODEBOOK_FORWARD_ENDPOINT``, ``receivers.grpc.endpoint``
is ``CODEBOOK_RECEIVERS_GRPC_ENDPOINT``); lists in env vars are ``os.pathsep``-separated, maps
are ``k=v,k2=v2``. ``CODEBOOK_MAPPINGS`` is accepted for ``mappings.dirs`` as in process.

Strict like the mapping loader: unknown keys, wrong types, values out of range and unknown
enum values are errors, all reported in one pass as ``file:line: key: message``
(:class:`ConfigError`). Loading never starts anything; it may read files and raise.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import os
import ssl
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..loader import yaml_problem

ENV_PREFIX = "CODEBOOK_"
# In-process settings (exporter/autoconfig.py) that may share an environment with the sidecar.
_IN_PROCESS_ENV = frozenset(
    ("CODEBOOK_METRICS_ADDR", "CODEBOOK_METRICS_PORT", "CODEBOOK_WATCH_SECONDS")
)


def _opt(default: Any, *, minimum: float | None = None, choices: Sequence[str] = ()) -> Any:
    return field(default=default, metadata={"minimum": minimum, "choices": tuple(choices)})


@dataclass
class GrpcReceiverConfig:
    """``receivers.grpc``: the OTLP/gRPC server."""

    enabled: bool = _opt(True)
    endpoint: str = _opt("127.0.0.1:4317")
    max_workers: int = _opt(4, minimum=1)
    max_concurrent_rpcs: int = _opt(64, minimum=1)


@dataclass
class HttpReceiverConfig:
    """``receivers.http``: the OTLP/HTTP server."""

    enabled: bool = _opt(True)
    endpoint: str = _opt("127.0.0.1:4318")
    threads: int = _opt(4, minimum=1)
    connection_limit: int = _opt(100, minimum=1)
    idle_timeout_seconds: int = _opt(60, minimum=1)
    read_timeout_seconds: float = _opt(10.0, minimum=1)


@dataclass
class ReceiversConfig:
    """``receivers``: limits shared by both servers."""

    grpc: GrpcReceiverConfig = field(default_factory=GrpcReceiverConfig)
    http: HttpReceiverConfig = field(default_factory=HttpReceiverConfig)
    max_request_bytes: int = _opt(4 << 20, minimum=1024)
    max_in_flight_bytes: int = _opt(64 << 20, minimum=1 << 20)
    max_pending_requests: int = _opt(16, minimum=0)
    retry_after_seconds: int = _opt(1, minimum=1)
    # false: spans/points a Codebook upstream already enriched (provider.match) pass uncounted.
    count_enriched: bool = _opt(True)


@dataclass
class MetricsConfig:
    """``metrics``: the ``/metrics``, ``/healthz``, ``/readyz`` server and series bounds."""

    endpoint: str = _opt(":9464")
    web_config_file: str = _opt("")
    max_connections: int = _opt(32, minimum=1)
    connection_timeout_seconds: float = _opt(10.0, minimum=0.001)
    max_unmapped_codes_per_source: int = _opt(50, minimum=0)
    max_series: int = _opt(10_000, minimum=1)


@dataclass
class MappingsConfig:
    """``mappings``: folders overlaid on the built-in mappings; reloaded on SIGHUP."""

    dirs: list[str] = field(default_factory=list)
    builtin: bool = _opt(True)
    watch_interval_seconds: float = _opt(0.0, minimum=0)


@dataclass
class ForwardConfig:
    """``forward``: the optional upstream OTLP endpoint (empty endpoint: no forwarding)."""

    endpoint: str = _opt("")
    protocol: str = _opt("grpc", choices=("grpc", "http/protobuf"))
    headers: dict[str, str] = field(default_factory=dict)
    compression: str = _opt("gzip", choices=("gzip", "none"))
    queue_max_requests: int = _opt(256, minimum=1)
    queue_max_bytes: int = _opt(32 << 20, minimum=1024)
    timeout_seconds: float = _opt(10.0, minimum=0.001)
    initial_backoff_seconds: float = _opt(0.5, minimum=0)
    max_backoff_seconds: float = _opt(30.0, minimum=0)
    max_elapsed_seconds: float = _opt(60.0, minimum=0)
    ca_file: str = _opt("")
    insecure_skip_verify: bool = _opt(False)
    # Persistent queue (exporter/sidecar/queue.py): empty = memory only.
    queue_dir: str = _opt("")
    queue_sync: str = _opt("normal", choices=("normal", "full"))
    # /readyz is 503 while the queue is fuller than this (requests or bytes).
    ready_max_queue_fraction: float = _opt(0.9, minimum=0.0)


@dataclass
class VonageWebhookConfig:
    """``webhooks.vonage``: signed delivery receipts (empty secret: DLRs are not signed)."""

    signature_secret: str = _opt("")
    signature_method: str = _opt(
        "md5hash", choices=("md5hash", "md5", "sha1", "sha256", "sha512")
    )
    max_clock_skew_seconds: int = _opt(300, minimum=1)


@dataclass
class WebhooksConfig:
    """``webhooks``: the provider webhook listener (empty endpoint: off)."""

    endpoint: str = _opt("")
    token: str = _opt("")
    max_body_bytes: int = _opt(2 << 20, minimum=1024)
    dedup_window_seconds: float = _opt(86_400.0, minimum=0)
    dedup_max_events: int = _opt(100_000, minimum=1)
    threads: int = _opt(4, minimum=1)
    connection_limit: int = _opt(100, minimum=1)
    idle_timeout_seconds: int = _opt(60, minimum=1)
    vonage: VonageWebhookConfig = field(default_factory=VonageWebhookConfig)


@dataclass
class Config:
    """The whole sidecar configuration (see the module docstring for sources)."""

    receivers: ReceiversConfig = field(default_factory=ReceiversConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    mappings: MappingsConfig = field(default_factory=MappingsConfig)
    forward: ForwardConfig = field(default_factory=ForwardConfig)
    webhooks: WebhooksConfig = field(default_factory=WebhooksConfig)
    shutdown_timeout_seconds: float = _opt(10.0, minimum=0)
    log_level: str = _opt("info", choices=("debug", "info", "warning", "error"))


class ConfigError(ValueError):
    """Every configuration problem, one ``file:line: key: message`` per line."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = tuple(problems)


def parse_endpoint(text: str) -> tuple[str, int]:
    """``host:port``, ``[v6]:port`` or ``:port`` (all interfaces) as (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{text!r} is not host:port")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    return host or "0.0.0.0", int(port)


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _leaf_paths(cls: type, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    out: dict[tuple[str, ...], Any] = {}
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        t = hints[f.name]
        if dataclasses.is_dataclass(t):
            out.update(_leaf_paths(t, (*prefix, f.name)))  # type: ignore[arg-type]
        else:
            out[(*prefix, f.name)] = f
    return out


def _convert(value: Any, hint: Any, f: dataclasses.Field[Any], from_text: bool) -> Any:
    """Convert ``value`` to ``hint``'s type (from YAML or from env/flag text); may raise."""
    origin = typing.get_origin(hint)
    if origin is list:
        if from_text:
            return [v for v in str(value).split(os.pathsep) if v]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError("expected a list of strings")
        return list(value)
    if origin is dict:
        if from_text:
            pairs = [p for p in str(value).split(",") if p.strip()]
            out = {}
            for pair in pairs:
                k, sep, v = pair.partition("=")
                if not sep or not k.strip():
                    raise ValueError(f"{pair!r} is not key=value")
                out[k.strip()] = v.strip()
            return out
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise ValueError("expected a map of strings to strings")
        return dict(value)
    if hint is bool:
        if from_text:
            low = str(value).strip().lower()
            if low in ("true", "1", "yes", "on"):
                return True
            if low in ("false", "0", "no", "off"):
                return False
            raise ValueError(f"{value!r} is not true or false")
        if not isinstance(value, bool):
            raise ValueError(f"{value!r} is not true or false")
        return value
    if hint is int:
        if from_text:
            try:
                value = int(str(value).strip())
            except ValueError:
                raise ValueError(f"{value!r} is not an integer") from None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{value!r} is not an integer")
    elif hint is float:
        if from_text:
            try:
                value = float(str(value).strip())
            except ValueError:
                raise ValueError(f"{value!r} is not a number") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{value!r} is not a number")
        value = float(value)
    elif hint is str:
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise ValueError(f"{value!r} is not a string")
    minimum = f.metadata.get("minimum")
    if minimum is not None and value < minimum:
        raise ValueError(f"{value!r} is below the minimum {minimum}")
    choices = f.metadata.get("choices") or ()
    if choices and value not in choices:
        close = difflib.get_close_matches(str(value), choices, n=1) or [
            c for c in choices if c.startswith(str(value))
        ][:1]
        hint_text = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"{value!r} is not one of {', '.join(choices)}{hint_text}")
    return value


def _set(cfg: Config, path: tuple[str, ...], value: Any) -> None:
    obj: Any = cfg
    for name in path[:-1]:
        obj = getattr(obj, name)
    setattr(obj, path[-1], value)


def _hint_of(path: tuple[str, ...]) -> Any:
    cls: Any = Config
    for name in path[:-1]:
        cls = _hints(cls)[name]
    return _hints(cls)[path[-1]]


def _apply_yaml(
    cfg: Config,
    file: str,
    node: yaml.Node,
    problems: list[str],
    origins: dict[str, str] | None = None,
) -> None:
    def walk(cls: type, node: yaml.Node, path: tuple[str, ...]) -> None:
        where = ".".join(path) or "(root)"
        if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"):
            return
        if not isinstance(node, yaml.MappingNode):
            problems.append(f"{file}:{node.start_mark.line + 1}: {where}: expected a mapping")
            return
        hints = _hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            kpath = (*path, key)
            line = key_node.start_mark.line + 1
            name = ".".join(kpath)
            if key in seen:
                problems.append(f"{file}:{line}: {name}: duplicate key")
                continue
            seen.add(key)
            if key not in fields:
                close = difflib.get_close_matches(key, list(fields), n=1)
                hint_text = f" (did you mean {close[0]!r}?)" if close else ""
                problems.append(f"{file}:{line}: {name}: unknown key{hint_text}")
                continue
            hint = hints[key]
            if dataclasses.is_dataclass(hint):
                walk(hint, value_node, kpath)  # type: ignore[arg-type]
                continue
            try:
                value = yaml.safe_load(yaml.serialize(value_node))
                _set(cfg, kpath, _convert(value, hint, fields[key], from_text=False))
                if origins is not None:
                    origins[name] = f"{file}:{line}"
            except (ValueError, yaml.YAMLError) as exc:
                vline = value_node.start_mark.line + 1
                problems.append(f"{file}:{vline}: {name}: {exc}")

    walk(Config, node, ())


def load_config(
    path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, str] | None = None,
) -> Config:
    """Build the configuration from ``path``, ``env`` (default ``os.environ``) and ``overrides``.

    ``overrides`` maps dotted key paths (``forward.endpoint``) to text, as flags give them.
    Raises :class:`ConfigError` with every problem found.
    """
    cfg = Config()
    problems: list[str] = []
    # Where each setting came from ("file:line", "env:NAME", "flag:key"), for the problems
    # that only show when settings combine (_check).
    origins: dict[str, str] = {}
    if path is not None:
        file = str(path)
        try:
            node = yaml.compose(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError([f"{file}:1: (file): {exc.strerror or exc}"]) from None
        except yaml.YAMLError as exc:
            raise ConfigError([yaml_problem(file, exc, "(yaml)")]) from None
        if node is not None:
            _apply_yaml(cfg, file, node, problems, origins)
    leaves = _leaf_paths(Config)
    environ = os.environ if env is None else env
    by_env = {ENV_PREFIX + "_".join(p).upper(): p for p in leaves}
    by_env[ENV_PREFIX + "MAPPINGS"] = ("mappings", "dirs")
    sections = tuple(ENV_PREFIX + f.name.upper() + "_" for f in dataclasses.fields(Config))
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in _IN_PROCESS_ENV:
            continue
        path_ = by_env.get(name)
        if path_ is None:
            if name.startswith(sections):
                close = difflib.get_close_matches(name, list(by_env), n=1)
                hint_text = f" (did you mean {close[0]}?)" if close else ""
                problems.append(f"env:{name}: unknown setting{hint_text}")
            continue
        if _override(cfg, path_, environ[name], f"env:{name}", leaves, problems):
            origins[".".join(path_)] = f"env:{name}"
    dotted_keys = [".".join(p) for p in leaves]
    for dotted, text in (overrides or {}).items():
        key = tuple(dotted.split("."))
        if key not in leaves:
            close = difflib.get_close_matches(dotted, dotted_keys, n=1)
            hint_text = f" (did you mean {close[0]}?)" if close else ""
            problems.append(f"flag:{dotted}: unknown setting{hint_text}")
            continue
        if _override(cfg, key, text, f"flag:{dotted}", leaves, problems):
            origins[dotted] = f"flag:{dotted}"
    _check(cfg, problems, origins)
    if problems:
        raise ConfigError(problems)
    return cfg


def _override(
    cfg: Config,
    path: tuple[str, ...],
    text: str,
    where: str,
    leaves: Mapping[tuple[str, ...], Any],
    problems: list[str],
) -> bool:
    try:
        _set(cfg, path, _convert(text, _hint_of(path), leaves[path], from_text=True))
    except ValueError as exc:
        problems.append(f"{where}: {exc}")
        return False
    return True


def _check(cfg: Config, problems: list[str], origins: Mapping[str, str] | None = None) -> None:
    """Cross-field checks, after every source has been applied.

    Each problem names where the setting at fault was set (``file:line``, ``env:NAME`` or
    ``flag:key``; ``config`` for a default).
    """
    at = dict(origins or {})

    def where(key: str) -> str:
        return at.get(key, "config")

    def set_at(key: str) -> str:
        return at.get(key, "default")

    for name, text in (
        ("receivers.grpc.endpoint", cfg.receivers.grpc.endpoint),
        ("receivers.http.endpoint", cfg.receivers.http.endpoint),
        ("metrics.endpoint", cfg.metrics.endpoint),
    ):
        try:
            parse_endpoint(text)
        except ValueError as exc:
            problems.append(f"{where(name)}: {name}: {exc}")
    for d in cfg.mappings.dirs:
        if not Path(d).exists():
            problems.append(
                f"{where('mappings.dirs')}: mappings.dirs: {d!r}: no such file or directory"
            )
    for name, p in (
        ("metrics.web_config_file", cfg.metrics.web_config_file),
        ("forward.ca_file", cfg.forward.ca_file),
    ):
        if p and not Path(p).is_file():
            problems.append(f"{where(name)}: {name}: {p!r}: no such file")
    ca = cfg.forward.ca_file
    if ca and Path(ca).is_file():
        try:
            ssl.create_default_context(cafile=ca)
        except (ssl.SSLError, OSError) as exc:
            problems.append(
                f"{where('forward.ca_file')}: forward.ca_file: {ca!r}: not a PEM CA bundle: {exc}"
            )
    fwd = cfg.forward.endpoint
    if fwd and cfg.forward.protocol == "http/protobuf" and not fwd.startswith(
        ("http://", "https://")
    ):
        problems.append(
            f"{where('forward.endpoint')}: forward.endpoint: {fwd!r}: forward.protocol "
            f"http/protobuf ({set_at('forward.protocol')}) needs an http(s) URL"
        )
    # TLS settings that would not apply are errors, not silently plaintext.
    tls = fwd.startswith(("https://", "grpcs://"))
    for name, value in (
        ("forward.ca_file", cfg.forward.ca_file),
        ("forward.insecure_skip_verify", cfg.forward.insecure_skip_verify),
    ):
        if value and fwd and not tls:
            host = fwd.split("://", 1)[-1]
            problems.append(
                f"{where(name)}: {name}: set, but forward.endpoint {fwd!r} "
                f"({set_at('forward.endpoint')}) is not TLS "
                f"(use 'https://{host}')"
            )
    _check_webhooks(cfg.webhooks, problems)
    if cfg.forward.ready_max_queue_fraction > 1:
        problems.append(
            f"config: forward.ready_max_queue_fraction: {cfg.forward.ready_max_queue_fraction!r}"
            " is above 1 (a fraction of the queue's bounds)"
        )
    qdir = cfg.forward.queue_dir
    if qdir and Path(qdir).exists() and not Path(qdir).is_dir():
        problems.append(f"config: forward.queue_dir: {qdir!r}: not a directory")
    if cfg.forward.insecure_skip_verify and cfg.forward.protocol == "grpc":
        problems.append(
            f"{where('forward.insecure_skip_verify')}: forward.insecure_skip_verify: not "
            f"supported with protocol grpc ({set_at('forward.protocol')}; grpcio cannot skip "
            "certificate verification); set forward.ca_file to the upstream's CA"
        )


def _check_webhooks(hooks: WebhooksConfig, problems: list[str]) -> None:
    """The webhook listener faces the internet through an ingress: off loopback it needs a token."""
    if not hooks.endpoint:
        return
    try:
        host, _ = parse_endpoint(hooks.endpoint)
    except ValueError as exc:
        problems.append(f"config: webhooks.endpoint: {exc}")
        return
    if not hooks.token and not _is_loopback(host):
        problems.append(
            f"config: webhooks.token: required when webhooks.endpoint {hooks.endpoint!r} is not "
            "a loopback address (set a long random secret; providers send it as ?token=)"
        )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def dump(cfg: Config) -> str:
    """The effective configuration as YAML (what ``--check-config`` prints; header values,
    which often hold credentials, are redacted)."""
    doc = dataclasses.asdict(cfg)
    doc["forward"]["headers"] = {k: "<redacted>" for k in cfg.forward.headers}
    hooks = doc["webhooks"]
    for section, key in ((hooks, "token"), (hooks["vonage"], "signature_secret")):
        if section[key]:
            section[key] = "<redacted>"
    return yaml.safe_dump(doc, sort_keys=False)
