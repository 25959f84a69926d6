"""The Prometheus exporter-toolkit web config file (``--web.config.file``) for ``/metrics``.

The same file format as node_exporter and Prometheus itself, so an existing setup works
unchanged::

    tls_server_config:
      cert_file: server.crt          # relative paths are relative to this file
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert
      client_ca_file: ca.crt
      min_version: TLS12
    basic_auth_users:
      prometheus: $2y$10$...         # bcrypt hash
    http_server_config:
      http2: false
      headers:                       # added to every response
        X-Content-Type-Options: nosniff

Strict: unknown keys, unknown enum values, missing files and malformed hashes are errors,
all reported in one pass as ``file:line: key: message`` (:class:`WebConfigError`). As in the
toolkit, ``headers`` may only set ``Strict-Transport-Security``, ``X-Content-Type-Options``
(``nosniff``), ``X-Frame-Options`` (``deny`` or ``sameorigin``), ``X-XSS-Protection`` and
``Content-Security-Policy``, so no configuration can override ``Content-Type``,
``Content-Length``, ``Content-Encoding``, ``WWW-Authenticate`` and the like. Toolkit
options Python's TLS cannot honour (``cipher_suites``, ``curve_preferences``,
``client_allowed_sans``, ``RequestClientCert`` and ``RequireAnyClientCert``, which accept
unverified client certificates) are refused rather than silently ignored.

:meth:`WebConfig.authenticate` is thread-safe and caches successful checks, so a scrape costs
one bcrypt round only the first time (bcrypt runs for unknown users too, against a fixed hash,
so response time does not reveal which users exist).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import ssl
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import yaml
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..loader import yaml_problem

_log = logging.getLogger(__name__)

_TLS_KEYS = frozenset(
    (
        "cert_file",
        "key_file",
        "client_auth_type",
        "client_ca_file",
        "min_version",
        "max_version",
        "prefer_server_cipher_suites",
    )
)
_UNSUPPORTED_TLS_KEYS = {
    "cipher_suites": "Go cipher suite names cannot be applied to Python's TLS",
    "curve_preferences": "curve preferences cannot be applied to Python's TLS",
    "client_allowed_sans": "SAN allow-lists are not supported",
    "cert": "inline certificates are not supported; use cert_file",
    "key": "inline keys are not supported; use key_file",
    "client_ca": "inline client CAs are not supported; use client_ca_file",
}
_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_CLIENT_AUTH_UNSUPPORTED = ("RequestClientCert", "RequireAnyClientCert")
_TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
_TOP_KEYS = frozenset(("tls_server_config", "basic_auth_users", "http_server_config"))
_HTTP_KEYS = frozenset(("http2", "headers"))
# The exporter-toolkit's extraHTTPHeaders (web/handler.go): only these response headers may be
# configured, some only with the listed values; names are matched exactly, as there.
_ALLOWED_HEADERS: dict[str, tuple[str, ...]] = {
    "Strict-Transport-Security": (),
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": (),
    "Content-Security-Policy": (),
}
_CANONICAL_HEADERS = {name.lower(): name for name in _ALLOWED_HEADERS}
# A valid bcrypt hash of a random secret: compared against when the user is unknown.
_DUMMY_HASH = bcrypt.hashpw(b"codebook-no-such-user", bcrypt.gensalt(rounds=10))
_CACHE_MAX = 256


class WebConfigError(ValueError):
    """Every problem in a web config file, as ``file:line: key: message`` lines."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = tuple(problems)


@dataclass
class WebConfig:
    """A validated web config: an SSL context (or None) and the basic-auth users."""

    path: str
    ssl_context: ssl.SSLContext | None = None
    users: dict[str, bytes] = field(default_factory=dict)
    headers: tuple[tuple[str, str], ...] = ()
    tls_line: int = field(default=1, repr=False)
    _cache: dict[bytes, bool] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def requires_auth(self) -> bool:
        """True when ``basic_auth_users`` is set."""
        return bool(self.users)

    def authenticate(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` header value passes (always True without users)."""
        if not self.users:
            return True
        if not authorization or authorization[:6].lower() != "basic ":
            return False
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        user_b, sep, password = decoded.partition(b":")
        if not sep:
            return False
        user = user_b.decode("utf-8", "replace")
        hashed = self.users.get(user)
        key = hashlib.sha256(user_b + b"\0" + password).digest()
        with self._lock:
            if hashed is not None and self._cache.get(key):
                return True
        ok = bcrypt.checkpw(password, hashed if hashed is not None else _DUMMY_HASH)
        ok = ok and hashed is not None
        if ok:
            with self._lock:
                if len(self._cache) >= _CACHE_MAX:
                    self._cache.clear()
                self._cache[key] = True
        return ok


class WebConfigReloader:
    """The running web config of a server, reloaded from its file on demand (SIGHUP).

    :meth:`reload` builds the new config completely, then hands it to ``apply`` (which swaps
    it into the server) and makes it :attr:`current`. A file with problems, or one that adds
    or removes ``tls_server_config`` (the scheme of ``/metrics`` would change: that takes a
    restart), keeps the running config; its problems are logged once per distinct set and
    the outcome is counted. Also a ``prometheus_client`` collector of
    ``codebook_web_config_reloads_total{outcome}`` and
    ``codebook_web_config_last_reload_successful`` (no ``_created`` series).
    """

    def __init__(self, running: WebConfig, apply: Callable[[WebConfig], None]) -> None:
        self.current = running
        self._apply = apply
        self._lock = threading.Lock()
        self._outcomes = {"success": 0, "failure": 0}
        self._last_ok = True
        self._last_problems: tuple[str, ...] = ()

    def reload(self) -> bool:
        """Re-read the file; True when the new config now serves. Thread-safe; never raises."""
        with self._lock:
            path = self.current.path
            try:
                new = load_web_config(path)
                had_tls = self.current.ssl_context is not None
                if (new.ssl_context is not None) != had_tls:
                    change = "removed" if had_tls else "added"
                    line = 1 if had_tls else new.tls_line
                    raise WebConfigError([
                        f"{path}:{line}: tls_server_config: cannot be {change} by a reload "
                        "(the scheme of /metrics would change); restart to apply"
                    ])
                self._apply(new)
            except WebConfigError as exc:
                self._record(False)
                if exc.problems != self._last_problems:  # the same problems again: no new log
                    self._last_problems = exc.problems
                    _log.error(
                        "codebook: web config reload failed; keeping the running one:\n%s",
                        "\n".join(exc.problems),
                    )
                return False
            except Exception:
                self._record(False)
                _log.exception("codebook: web config reload failed; keeping the running one")
                return False
            self.current = new
            self._last_problems = ()
            self._record(True)
            _log.info("codebook: web config %s reloaded", path)
            return True

    def _record(self, success: bool) -> None:
        self._outcomes["success" if success else "failure"] += 1
        self._last_ok = success

    def collect(self) -> Iterator[Metric]:
        """The reload counters, for a ``prometheus_client`` registry."""
        reloads = CounterMetricFamily(
            "codebook_web_config_reloads",
            "Web config file reloads (SIGHUP) by outcome.",
            labels=["outcome"],
        )
        for outcome, n in self._outcomes.items():
            reloads.add_metric([outcome], n)
        yield reloads
        yield GaugeMetricFamily(
            "codebook_web_config_last_reload_successful",
            "1 when the last web config reload succeeded (or none was tried), else 0.",
            value=1.0 if self._last_ok else 0.0,
        )

    def describe(self) -> Iterable[Metric]:
        """Nothing: collected on every scrape, not described up front."""
        return []


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def load_web_config(path: str | Path) -> WebConfig:
    """Load and validate ``path``; raises :class:`WebConfigError` listing every problem."""
    p = Path(path)
    problems: list[str] = []
    try:
        root = yaml.compose(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise WebConfigError([f"{p}:1: (file): {exc.strerror or exc}"]) from None
    except yaml.YAMLError as exc:
        raise WebConfigError([yaml_problem(str(p), exc, "(yaml)")]) from None
    cfg = WebConfig(path=str(p))
    if root is None:
        return cfg
    if not isinstance(root, yaml.MappingNode):
        raise WebConfigError([f"{p}:{_line(root)}: (root): expected a mapping"])

    def err(node: yaml.Node, key: str, message: str) -> None:
        problems.append(f"{p}:{_line(node)}: {key}: {message}")

    tls: dict[str, tuple[str, yaml.Node]] | None = None
    tls_key: yaml.Node = root
    for key_node, value in root.value:
        key = str(key_node.value)
        if key not in _TOP_KEYS:
            err(key_node, key, f"unknown key (known: {', '.join(sorted(_TOP_KEYS))})")
        elif key == "tls_server_config":
            tls = _tls_items(value, err)
            tls_key = key_node
        elif key == "basic_auth_users":
            cfg.users = _users(value, err)
        elif key == "http_server_config":
            cfg.headers = _http(value, err)
    if tls is not None:
        cfg.tls_line = _line(tls_key)
        cfg.ssl_context = _ssl_context(p.parent, tls, tls_key, err)
    if problems:
        raise WebConfigError(problems)
    return cfg


Err = Any  # Callable[[yaml.Node, str, str], None]; kept loose for readability


def _scalar_map(node: yaml.Node, where: str, err: Err) -> list[tuple[yaml.Node, yaml.Node]]:
    if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"):
        return []
    if not isinstance(node, yaml.MappingNode):
        err(node, where, "expected a mapping")
        return []
    return list(node.value)


def _tls_items(node: yaml.Node, err: Err) -> dict[str, tuple[str, yaml.Node]]:
    out: dict[str, tuple[str, yaml.Node]] = {}
    for key_node, value in _scalar_map(node, "tls_server_config", err):
        key = str(key_node.value)
        where = f"tls_server_config.{key}"
        if key in _UNSUPPORTED_TLS_KEYS:
            err(key_node, where, f"not supported: {_UNSUPPORTED_TLS_KEYS[key]}")
        elif key not in _TLS_KEYS:
            err(key_node, where, f"unknown key (known: {', '.join(sorted(_TLS_KEYS))})")
        elif not isinstance(value, yaml.ScalarNode):
            err(value, where, "expected a string")
        else:
            out[key] = (str(value.value), value)
    return out


def _users(node: yaml.Node, err: Err) -> dict[str, bytes]:
    users: dict[str, bytes] = {}
    for key_node, value in _scalar_map(node, "basic_auth_users", err):
        user = str(key_node.value)
        where = f"basic_auth_users.{user}"
        text = str(value.value) if isinstance(value, yaml.ScalarNode) else ""
        hashed = text.encode()
        if not text.startswith(("$2a$", "$2b$", "$2y$")) or len(hashed) != 60:
            err(value, where, "not a bcrypt hash (expected $2y$<cost>$ and 53 characters)")
            continue
        try:
            bcrypt.checkpw(b"", hashed)
        except ValueError as exc:
            err(value, where, f"invalid bcrypt hash: {exc}")
            continue
        users[user] = hashed
    return users


def _http(node: yaml.Node, err: Err) -> tuple[tuple[str, str], ...]:
    headers: tuple[tuple[str, str], ...] = ()
    for key_node, value in _scalar_map(node, "http_server_config", err):
        key = str(key_node.value)
        if key not in _HTTP_KEYS:
            err(key_node, f"http_server_config.{key}", "unknown key (known: headers, http2)")
        elif key == "headers":
            headers = _headers(value, err)
        elif not (isinstance(value, yaml.ScalarNode) and value.value in ("true", "false")):
            err(value, "http_server_config.http2", "expected true or false")
    return headers


def _headers(node: yaml.Node, err: Err) -> tuple[tuple[str, str], ...]:
    """``http_server_config.headers``, held to the exporter-toolkit's allow-list."""
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for key_node, value in _scalar_map(node, "http_server_config.headers", err):
        name = str(key_node.value)
        where = f"http_server_config.headers.{name}"
        if name in seen:
            err(key_node, where, "duplicate header")
            continue
        seen.add(name)
        if name not in _ALLOWED_HEADERS:
            canonical = _CANONICAL_HEADERS.get(name.lower())
            hint = (
                f" (did you mean {canonical!r}?)"
                if canonical
                else f" (allowed: {', '.join(sorted(_ALLOWED_HEADERS))})"
            )
            err(key_node, where, f"HTTP header {name!r} cannot be configured{hint}")
            continue
        if not isinstance(value, yaml.ScalarNode) or value.tag.endswith(":null"):
            err(value, where, "expected a string")
            continue
        text = str(value.value)
        allowed = _ALLOWED_HEADERS[name]
        if allowed and text not in allowed:
            err(value, where, f"{text!r} is not one of {', '.join(allowed)}")
        elif any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
            err(value, where, "control characters (line breaks) are not allowed in a header")
        else:
            out.append((name, text))
    return tuple(out)


def _ssl_context(
    base: Path, tls: Mapping[str, tuple[str, yaml.Node]], root: yaml.Node, err: Err
) -> ssl.SSLContext | None:
    def file(key: str) -> str | None:
        if key not in tls:
            return None
        text, node = tls[key]
        path = Path(text) if Path(text).is_absolute() else base / text
        if not path.is_file():
            err(node, f"tls_server_config.{key}", f"{text!r}: no such file")
            return None
        return str(path)

    cert, key = file("cert_file"), file("key_file")
    for name in ("cert_file", "key_file"):
        if name not in tls:
            err(root, f"tls_server_config.{name}", "required when tls_server_config is set")
    auth_text, auth_node = tls.get("client_auth_type", ("NoClientCert", root))
    if auth_text in _CLIENT_AUTH_UNSUPPORTED:
        err(
            auth_node,
            "tls_server_config.client_auth_type",
            f"{auth_text!r} accepts unverified client certificates, which Python's TLS "
            "cannot do; use VerifyClientCertIfGiven or RequireAndVerifyClientCert",
        )
    elif auth_text not in _CLIENT_AUTH:
        err(
            auth_node,
            "tls_server_config.client_auth_type",
            f"{auth_text!r} is not one of {', '.join([*_CLIENT_AUTH, *_CLIENT_AUTH_UNSUPPORTED])}",
        )
    ca = file("client_ca_file")
    verify = _CLIENT_AUTH.get(auth_text, ssl.CERT_NONE)
    if "client_ca_file" in tls and verify == ssl.CERT_NONE and auth_text in _CLIENT_AUTH:
        err(
            tls["client_ca_file"][1],
            "tls_server_config.client_ca_file",
            "client CAs are configured without a client_auth_type that verifies them",
        )
    if verify != ssl.CERT_NONE and "client_ca_file" not in tls:
        err(auth_node, "tls_server_config.client_ca_file", f"required by {auth_text}")
    versions: dict[str, ssl.TLSVersion] = {}
    for name in ("min_version", "max_version"):
        if name in tls:
            text, node = tls[name]
            if text not in _TLS_VERSIONS:
                err(node, f"tls_server_config.{name}", f"{text!r} is not one of TLS10..TLS13")
            else:
                versions[name] = _TLS_VERSIONS[text]
    if cert is None or key is None:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = versions.get("min_version", ssl.TLSVersion.TLSv1_2)
    if "max_version" in versions:
        ctx.maximum_version = versions["max_version"]
    try:
        ctx.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        err(tls["cert_file"][1], "tls_server_config.cert_file", f"cannot load: {exc}")
        return None
    ctx.verify_mode = verify
    if ca is not None:
        try:
            ctx.load_verify_locations(cafile=ca)
        except (ssl.SSLError, OSError) as exc:
            err(tls["client_ca_file"][1], "tls_server_config.client_ca_file", f"cannot load: {exc}")
    return ctx
