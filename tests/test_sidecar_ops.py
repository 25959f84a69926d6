"""Operating the sidecar: SIGHUP reloads, SIGTERM drains, /metrics behind TLS and basic auth."""

from __future__ import annotations

import base64
import signal
import ssl
import urllib.error
import urllib.request
from pathlib import Path

import bcrypt
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from pki import Pki, make_pki
from sidecar_proc import SidecarProcess, wait_for

pytestmark = pytest.mark.slow

MAPPING = """schema: 1
source: test.hup
title: SIGHUP test
version: "1"
entries:
  - code: "1"
    category: {category}
    description: Status one
    doc: {{en: one}}
"""


def _send_one(sidecar: SidecarProcess) -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(
        endpoint=f"{sidecar.http}/v1/traces")))
    with provider.get_tracer("hup").start_as_current_span(
        "s", attributes={"provider.source": "test.hup", "provider.code": "1"}
    ):
        pass
    provider.shutdown()


def _count(sidecar: SidecarProcess, category: str) -> float:
    return sidecar.total("provider_codes_total", source="test.hup", category=category)


def test_listening_once_and_unknown_paths_404(tmp_path: Path) -> None:
    """The start-up "listening" line appears once (JSON on stdout, no log copy on stderr);
    /metrics and the probes answer, any other path is 404."""
    with SidecarProcess(tmp_path, {"log_level": "debug"}) as sidecar:
        assert sidecar.addresses["event"] == "listening"
        assert [sidecar.get(p)[0] for p in ("/metrics", "/healthz", "/readyz", "/nope")] == [
            200, 200, 200, 404]
    assert "listening" not in sidecar.log()


def test_sighup_with_broken_mapping_keeps_serving_the_old_one(tmp_path: Path) -> None:
    """A broken mapping on SIGHUP is refused and counted; a good one then swaps in."""
    mappings = tmp_path / "mappings"
    mappings.mkdir()
    (mappings / "hup.yaml").write_text(MAPPING.format(category="throttled"))
    with SidecarProcess(tmp_path, {"mappings": {"dirs": [str(mappings)]}}) as sidecar:
        _send_one(sidecar)
        assert _count(sidecar, "throttled") == 1
        (mappings / "hup.yaml").write_text(MAPPING.format(category="no_such_category"))
        sidecar.signal(signal.SIGHUP)
        wait_for(lambda: sidecar.value("codebook_mapping_reloads_total", outcome="failure") == 1)
        assert sidecar.value("codebook_mapping_last_reload_successful") == 0
        _send_one(sidecar)
        assert _count(sidecar, "throttled") == 2  # the old mapping still answers
        (mappings / "hup.yaml").write_text(MAPPING.format(category="quota_exhausted"))
        sidecar.signal(signal.SIGHUP)
        wait_for(lambda: sidecar.value("codebook_mapping_reloads_total", outcome="success") == 1)
        _send_one(sidecar)
        assert _count(sidecar, "quota_exhausted") == 1
        assert "no_such_category" in sidecar.log()


def test_sigterm_drains_and_exits_zero(tmp_path: Path) -> None:
    """SIGTERM drains and stops the sidecar with exit status 0 (stop() kills a hang)."""
    sidecar = SidecarProcess(tmp_path, {"shutdown_timeout_seconds": 3})
    sidecar.start()
    _send_one(sidecar)
    assert sidecar.stop(timeout=30) == 0
    log = sidecar.log()
    assert "draining" in log and "stopped" in log


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA, a server certificate for 127.0.0.1 and a client certificate."""
    return make_pki(tmp_path_factory.mktemp("pki"))


def _get(url: str, ctx: ssl.SSLContext, auth: str | None = None) -> int:
    return _request(url, ctx, auth)[0]


def _request(url: str, ctx: ssl.SSLContext, auth: str | None = None,
             ) -> tuple[int, dict[str, str]]:
    req = urllib.request.Request(url)
    if auth is not None:
        req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
            return int(resp.status), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)


def test_metrics_behind_tls_and_basic_auth(tmp_path: Path, pki: Pki) -> None:
    """A web config puts /metrics behind TLS with client certs and bcrypt; probes skip auth."""
    hashed = bcrypt.hashpw(b"scrape-me", bcrypt.gensalt(rounds=4)).decode()
    web = tmp_path / "web.yml"
    web.write_text(
        f"tls_server_config:\n  cert_file: {pki.server_crt}\n  key_file: {pki.server_key}\n"
        f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {pki.ca}\n"
        f"basic_auth_users:\n  prometheus: '{hashed}'\n"
        "http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n"
    )
    with SidecarProcess(tmp_path, args=("--web.config.file", str(web))) as sidecar:
        base = f"https://{sidecar.addresses['metrics']}"
        url = f"{base}/metrics"
        ctx = ssl.create_default_context(cafile=str(pki.ca))
        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
            _get(url, ctx, "prometheus:scrape-me")  # no client certificate
        ctx.load_cert_chain(str(pki.client_crt), str(pki.client_key))
        status, headers = _request(url, ctx)
        assert (status, headers["WWW-Authenticate"]) == (401, 'Basic realm="codebook"')
        assert _get(url, ctx, "prometheus:wrong") == 401
        status, headers = _request(url, ctx, "prometheus:scrape-me")
        assert (status, headers["X-Content-Type-Options"]) == (200, "nosniff")
        for probe in ("/healthz", "/readyz"):  # kubelet probes send no credentials
            status, headers = _request(base + probe, ctx)
            assert (status, headers["X-Content-Type-Options"]) == (200, "nosniff")
        plain = urllib.request.Request(f"http://{sidecar.addresses['metrics']}/metrics")
        with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
            urllib.request.urlopen(plain, timeout=5).read()


def test_bad_web_config_refuses_to_start(tmp_path: Path) -> None:
    """A web config with problems stops the sidecar before it listens, with exit 1."""
    web = tmp_path / "web.yml"
    web.write_text("basic_auth_users:\n  prometheus: not-a-hash\n")
    sidecar = SidecarProcess(tmp_path, args=("--web.config.file", str(web)))
    with pytest.raises(AssertionError, match="not a bcrypt hash"):
        sidecar.start()


def _web_config(path: Path, pki: Pki, password: str, extra: str = "") -> None:
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    path.write_text(
        f"tls_server_config:\n  cert_file: {pki.server_crt}\n  key_file: {pki.server_key}\n"
        f"basic_auth_users:\n  prometheus: '{hashed}'\n{extra}"
    )


def _reloads(sidecar: SidecarProcess, outcome: str) -> float:
    return sidecar.value("codebook_web_config_reloads_total", outcome=outcome)


def test_sighup_reloads_the_web_config(tmp_path: Path, pki: Pki) -> None:
    """SIGHUP rotates the certificate and password; a broken file keeps them, logged and counted."""
    rotated = make_pki(tmp_path, "rotated")
    web = tmp_path / "web.yml"
    _web_config(web, pki, "first")
    with SidecarProcess(tmp_path, args=("--web.config.file", str(web))) as sidecar:
        url = f"https://{sidecar.addresses['metrics']}/metrics"
        old_ca = ssl.create_default_context(cafile=str(pki.ca))
        new_ca = ssl.create_default_context(cafile=str(rotated.ca))
        sidecar.tls, sidecar.auth = old_ca, "prometheus:first"
        assert _reloads(sidecar, "success") == 0
        assert _reloads(sidecar, "failure") == 0
        assert sidecar.value("codebook_web_config_last_reload_successful") == 1

        _web_config(web, rotated, "second")
        sidecar.signal(signal.SIGHUP)
        sidecar.tls, sidecar.auth = new_ca, "prometheus:second"

        def rotated_in() -> bool:
            try:
                return _get(url, new_ca, "prometheus:second") == 200
            except (ssl.SSLError, urllib.error.URLError):
                return False  # still the old certificate

        wait_for(rotated_in)
        assert _reloads(sidecar, "success") == 1
        with pytest.raises((ssl.SSLError, urllib.error.URLError)):
            _get(url, old_ca, "prometheus:first")  # the old certificate is gone
        assert _get(url, new_ca, "prometheus:first") == 401  # and so is the old password

        web.write_text(
            "tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n"
            "basic_auth_users:\n  prometheus: not-a-hash\n"
        )
        for _ in range(2):  # the same problems twice: counted twice, logged once
            before = _reloads(sidecar, "failure")
            sidecar.signal(signal.SIGHUP)
            wait_for(lambda before=before: _reloads(sidecar, "failure") == before + 1)
        assert sidecar.value("codebook_web_config_last_reload_successful") == 0
        assert _get(url, new_ca, "prometheus:second") == 200  # the running config serves on
        log = sidecar.log()
        for problem in (
            f"{web}:2: tls_server_config.cert_file: 'missing.crt': no such file",
            f"{web}:3: tls_server_config.key_file: 'missing.key': no such file",
            f"{web}:5: basic_auth_users.prometheus: not a bcrypt hash",
        ):
            assert log.count(problem) == 1, log

        third = bcrypt.hashpw(b"third", bcrypt.gensalt(rounds=4)).decode()
        web.write_text(f"basic_auth_users:\n  prometheus: '{third}'\n")  # and no TLS
        sidecar.signal(signal.SIGHUP)
        wait_for(lambda: _reloads(sidecar, "failure") == 3)
        assert f"{web}:1: tls_server_config: cannot be removed by a reload" in sidecar.log()
        assert _get(url, new_ca, "prometheus:second") == 200
        assert sidecar.proc is not None and sidecar.proc.poll() is None
