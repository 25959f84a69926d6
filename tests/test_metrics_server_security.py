"""The /metrics server's connections, TLS, basic auth and response headers, over real sockets."""

from __future__ import annotations

import base64
import http.client
import socket
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest
from pki import Pki, make_pki
from sidecar_proc import wait_for

from exporter import CodebookMetrics, MetricsServer, start_metrics_server
from exporter.sidecar.webconfig import load_web_config

PASSWORD = "scrape-me"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
ROUTES = {
    "/healthz": lambda: (200, "text/plain; charset=utf-8", b"ok\n"),
    "/readyz": lambda: (200, "text/plain; charset=utf-8", b"ready\n"),
}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _server_context(pki: Pki) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.server_crt, pki.server_key)
    return ctx


def _client_context(pki: Pki) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pki.ca))


def _get(url: str, ctx: ssl.SSLContext | None = None, auth: str | None = None,
         ) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url)
    if auth is not None:
        req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
            return int(resp.status), dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def _connect(server: MetricsServer) -> socket.socket:
    sock = socket.create_connection((server.host, server.port), timeout=10)
    sock.settimeout(10)
    return sock


def _closed_by_server(sock: socket.socket) -> bytes:
    """Everything the server sends before it closes ``sock`` (bounded: 64 reads, 10 s each)."""
    data = b""
    for _ in range(64):
        try:
            chunk = sock.recv(4096)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk
    raise AssertionError(f"the server kept the connection open (got {data[:80]!r})")


@pytest.fixture
def tls_server(pki: Pki) -> Iterator[MetricsServer]:
    # A long timeout: nothing below may pass because a silent client timed out.
    server = start_metrics_server(CodebookMetrics(), port=0, ssl_context=_server_context(pki),
                                  timeout_seconds=120)
    yield server
    server.close()


def test_silent_client_does_not_block_https_scrapes(tls_server: MetricsServer, pki: Pki) -> None:
    """A client that connects and sends nothing does not stop a real HTTPS scrape meanwhile."""
    silent = [_connect(tls_server) for _ in range(3)]
    try:
        for _ in range(3):
            status, _, body = _get(tls_server.url, _client_context(pki))
            assert status == 200
            assert body.startswith(b"# HELP")
    finally:
        for sock in silent:
            sock.close()


def test_plaintext_client_on_the_tls_port_is_dropped(tls_server: MetricsServer, pki: Pki) -> None:
    """Plain HTTP to the TLS port gets the connection closed, never a response; TLS goes on."""
    with _connect(tls_server) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert not _closed_by_server(sock).startswith(b"HTTP/")
    assert _get(tls_server.url, _client_context(pki))[0] == 200


def test_connection_limit_closes_the_excess_and_recovers(pki: Pki) -> None:
    """Past max_connections new connections are closed at once; freed slots serve again."""
    server = start_metrics_server(CodebookMetrics(), port=0, ssl_context=_server_context(pki),
                                  max_connections=2, timeout_seconds=120)
    try:
        held = [_connect(server) for _ in range(2)]
        excess = [_connect(server) for _ in range(20)]
        for sock in excess:  # accepted in order, after the two that hold the slots
            assert _closed_by_server(sock) == b""
            sock.close()
        name = f"codebook-metrics-conn:{server.port}"
        serving = [t for t in threading.enumerate() if t.name == name]
        assert len(serving) == 2
        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
            _get(server.url, _client_context(pki))
        for sock in held:
            sock.close()

        def scraped() -> bool:
            try:
                return _get(server.url, _client_context(pki))[0] == 200
            except (ssl.SSLError, urllib.error.URLError, ConnectionError):
                return False

        wait_for(scraped)
    finally:
        server.close()


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[MetricsServer]:
    """/metrics behind TLS and basic auth, with probes and response headers from a web config."""
    web_file = tmp_path_factory.mktemp("web") / "web.yml"
    web_file.write_text(
        f"tls_server_config:\n  cert_file: {pki.server_crt}\n  key_file: {pki.server_key}\n"
        f"basic_auth_users:\n  prometheus: '{HASH}'\n"
        "http_server_config:\n  headers:\n    X-Frame-Options: deny\n"
        "    Strict-Transport-Security: max-age=31536000\n"
    )
    web = load_web_config(web_file)
    server = start_metrics_server(
        CodebookMetrics(), port=0, routes=ROUTES, authenticate=web.authenticate,
        auth_excluded_paths=("/healthz", "/readyz"), headers=web.headers,
        ssl_context=web.ssl_context,
    )
    yield server
    server.close()


AUTH_CASES = [
    # (id, path, credentials, status)
    ("healthz-without-credentials", "/healthz", None, 200),
    ("readyz-without-credentials", "/readyz", None, 200),
    ("healthz-with-wrong-credentials", "/healthz", "prometheus:wrong", 200),
    ("metrics-without-credentials", "/metrics", None, 401),
    ("metrics-with-wrong-password", "/metrics", "prometheus:wrong", 401),
    ("metrics-with-unknown-user", "/metrics", f"nobody:{PASSWORD}", 401),
    ("other-path-is-metrics-and-guarded", "/healthz/", None, 401),
    ("metrics-with-credentials", "/metrics", f"prometheus:{PASSWORD}", 200),
]


@pytest.mark.parametrize(("path", "auth", "status"), [c[1:] for c in AUTH_CASES],
                         ids=[c[0] for c in AUTH_CASES])
def test_probes_skip_basic_auth_metrics_does_not(
    guarded: MetricsServer, pki: Pki, path: str, auth: str | None, status: int
) -> None:
    """/healthz and /readyz answer without credentials; everything else needs them."""
    base = guarded.url.removesuffix("/metrics")
    got, headers, _ = _get(base + path, _client_context(pki), auth)
    assert got == status
    if status == 401:
        assert headers["WWW-Authenticate"] == 'Basic realm="codebook"'


def test_probes_still_need_tls(guarded: MetricsServer) -> None:
    """The auth exemption is not a TLS exemption: plain HTTP to /healthz is dropped."""
    conn = http.client.HTTPConnection(guarded.host, guarded.port, timeout=10)
    with pytest.raises((http.client.HTTPException, ConnectionError)):
        conn.request("GET", "/healthz")
        conn.getresponse()
    conn.close()


HEADER_CASES = [
    ("metrics", "/metrics", f"prometheus:{PASSWORD}", 200),
    ("healthz", "/healthz", None, 200),
    ("readyz", "/readyz", None, 200),
    ("refused", "/metrics", None, 401),
]


@pytest.mark.parametrize(("path", "auth", "status"), [c[1:] for c in HEADER_CASES],
                         ids=[c[0] for c in HEADER_CASES])
def test_configured_headers_are_on_every_response(
    guarded: MetricsServer, pki: Pki, path: str, auth: str | None, status: int
) -> None:
    """http_server_config.headers are added to /metrics, the probes and refusals alike."""
    base = guarded.url.removesuffix("/metrics")
    got, headers, _ = _get(base + path, _client_context(pki), auth)
    assert got == status
    assert headers["X-Frame-Options"] == "deny"
    assert headers["Strict-Transport-Security"] == "max-age=31536000"


def test_headers_apply_to_plain_http_and_other_methods() -> None:
    """Without TLS or auth the headers are added too, to a refused POST as well."""
    server = start_metrics_server(CodebookMetrics(), port=0,
                                  headers=[("X-Content-Type-Options", "nosniff")])
    try:
        conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
        conn.request("POST", "/metrics", b"")
        resp = conn.getresponse()
        resp.read()
        conn.close()
        assert resp.status == 405
        assert resp.getheader("X-Content-Type-Options") == "nosniff"
        assert _get(server.url)[1]["X-Content-Type-Options"] == "nosniff"
    finally:
        server.close()


def test_reconfigure_swaps_certificate_users_and_headers(tmp_path: Path, pki: Pki) -> None:
    """reconfigure() gives new connections the new certificate, users and headers."""
    other = make_pki(tmp_path, "other")
    server = start_metrics_server(CodebookMetrics(), port=0, ssl_context=_server_context(pki))
    try:
        assert _get(server.url, _client_context(pki))[0] == 200
        new_hash = bcrypt.hashpw(b"new", bcrypt.gensalt(rounds=4)).decode()
        web_file = tmp_path / "web.yml"
        web_file.write_text(
            f"tls_server_config:\n  cert_file: {other.server_crt}\n"
            f"  key_file: {other.server_key}\nbasic_auth_users:\n  p: '{new_hash}'\n"
            "http_server_config:\n  headers:\n    X-XSS-Protection: '0'\n"
        )
        web = load_web_config(web_file)
        server.reconfigure(ssl_context=web.ssl_context, authenticate=web.authenticate,
                           headers=web.headers)
        with pytest.raises((ssl.SSLError, urllib.error.URLError)):
            _get(server.url, _client_context(pki))  # the old CA no longer matches
        assert _get(server.url, _client_context(other))[0] == 401
        status, headers, _ = _get(server.url, _client_context(other), "p:new")
        assert (status, headers["X-XSS-Protection"]) == (200, "0")
        with pytest.raises(ValueError, match="between HTTP and HTTPS"):
            server.reconfigure(ssl_context=None)
    finally:
        server.close()
