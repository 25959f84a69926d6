"""The sidecar's config file, env and flag overrides, and the exporter-toolkit web config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import bcrypt
import pytest

from exporter.sidecar.config import ConfigError, load_config, parse_endpoint
from exporter.sidecar.webconfig import WebConfigError, load_web_config


def _write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "problems"),
    [
        (
            "receivers:\n  grpc:\n    endpiont: x\n",
            ["{f}:3: receivers.grpc.endpiont: unknown key (did you mean 'endpoint'?)"],
        ),
        (
            "forward:\n  protocol: http\n  queue_max_requests: 0\n",
            [
                "{f}:2: forward.protocol: 'http' is not one of grpc, http/protobuf "
                "(did you mean 'http/protobuf'?)",
                "{f}:3: forward.queue_max_requests: 0 is below the minimum 1",
            ],
        ),
        (
            "metrics:\n  max_series: lots\nlog_level: loud\nextra: 1\n",
            [
                "{f}:2: metrics.max_series: 'lots' is not an integer",
                "{f}:3: log_level: 'loud' is not one of debug, info, warning, error",
                "{f}:4: extra: unknown key",
            ],
        ),
        (
            "receivers: [1]\n",
            ["{f}:1: receivers: expected a mapping"],
        ),
        (
            "receivers:\n  http:\n    endpoint: nowhere\n",
            ["{f}:3: receivers.http.endpoint: 'nowhere' is not host:port"],
        ),
        (
            "forward:\n  endpoint: collector:4318\n  protocol: http/protobuf\n",
            ["{f}:2: forward.endpoint: 'collector:4318': forward.protocol http/protobuf "
             "({f}:3) needs an http(s) URL"],
        ),
    ],
    ids=["typo-with-hint", "enum-and-minimum", "types-all-in-one-pass", "not-a-mapping",
         "bad-endpoint", "http-needs-url"],
)
def test_config_errors_name_file_line_key(
    tmp_path: Path, text: str, problems: list[str]
) -> None:
    """Every problem is reported at once as file:line: key: message."""
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert list(info.value.problems) == [p.format(f=path) for p in problems]


ORIGIN_CASES = [
    # (id, file text, env, flags, problem); {f} is the file's path
    ("file-line-of-ca-file",
     "forward:\n  endpoint: collector:4317\n  ca_file: {ca}\n", {}, {},
     "{f}:3: forward.ca_file: set, but forward.endpoint 'collector:4317' ({f}:2) is not TLS "
     "(use 'https://collector:4317')"),
    ("env-endpoint-file-ca",
     "forward:\n  ca_file: {ca}\n", {"CODEBOOK_FORWARD_ENDPOINT": "collector:4317"}, {},
     "{f}:2: forward.ca_file: set, but forward.endpoint 'collector:4317' "
     "(env:CODEBOOK_FORWARD_ENDPOINT) is not TLS (use 'https://collector:4317')"),
    ("flag-beats-file-origin",
     "metrics:\n  endpoint: ':9464'\n", {}, {"metrics.endpoint": "nowhere"},
     "flag:metrics.endpoint: metrics.endpoint: 'nowhere' is not host:port"),
    ("env-mappings-dir",
     "", {"CODEBOOK_MAPPINGS": "/no/such/dir"}, {},
     "env:CODEBOOK_MAPPINGS: mappings.dirs: '/no/such/dir': no such file or directory"),
]


@pytest.mark.parametrize(("text", "env", "flags", "problem"), [c[1:] for c in ORIGIN_CASES],
                         ids=[c[0] for c in ORIGIN_CASES])
def test_combined_settings_name_where_the_setting_was_made(
    tmp_path: Path, text: str, env: dict[str, str], flags: dict[str, str], problem: str
) -> None:
    """A problem found only when settings combine names the file and line (or env var, or
    flag) of the setting at fault, and of the other setting involved."""
    from pki import make_pki

    ca = str(make_pki(tmp_path).ca)
    path = _write(tmp_path, text.format(ca=ca) or "{}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env=env, overrides=flags)
    assert list(info.value.problems) == [problem.format(f=path)]


@pytest.mark.parametrize(("flag", "hint"), [
    ("forward.endpiont", " (did you mean forward.endpoint?)"),
    ("metrics.max_serie", " (did you mean metrics.max_series?)"),
    ("nothing.like.it", ""),
], ids=["endpoint-typo", "max-series-typo", "no-close-key"])
def test_set_typo_did_you_mean(flag: str, hint: str) -> None:
    """--set with an unknown key gets the same "did you mean" as an env var typo."""
    with pytest.raises(ConfigError) as info:
        load_config(None, env={}, overrides={flag: "x"})
    assert list(info.value.problems) == [f"flag:{flag}: unknown setting{hint}"]


def test_yaml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    """A YAML syntax error in the config is file:line:col with what the parser saw."""
    path = _write(tmp_path, "receivers:\n  grpc: [1,\nlog_level: info\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    (problem,) = info.value.problems
    assert problem.startswith(f"{path}:4:1: (yaml): invalid YAML: expected ',' or ']'")
    assert problem.endswith("(while parsing a flow sequence at 2:9)")

FORWARD_TLS_CASES = [
    # (id, forward settings, problems); {ca} is a real CA file, {bad} a file that is not PEM
    ("ca-file-on-plain-grpc", {"endpoint": "collector:4317", "ca_file": "{ca}"},
     ["flag:forward.ca_file: forward.ca_file: set, but forward.endpoint 'collector:4317' "
      "(flag:forward.endpoint) is not TLS (use 'https://collector:4317')"]),
    ("ca-file-on-plain-http", {"endpoint": "http://collector:4318", "ca_file": "{ca}",
                               "protocol": "http/protobuf"},
     ["flag:forward.ca_file: forward.ca_file: set, but forward.endpoint "
      "'http://collector:4318' (flag:forward.endpoint) is not TLS "
      "(use 'https://collector:4318')"]),
    ("skip-verify-on-grpc", {"endpoint": "https://collector:4317",
                             "insecure_skip_verify": "true"},
     ["flag:forward.insecure_skip_verify: forward.insecure_skip_verify: not supported with "
      "protocol grpc (default; grpcio cannot skip certificate verification); set "
      "forward.ca_file to the upstream's CA"]),
    ("ca-file-not-pem", {"endpoint": "https://collector:4317", "ca_file": "{bad}"},
     ["flag:forward.ca_file: forward.ca_file: '{bad}': not a PEM CA bundle: [X509: "
      "NO_CERTIFICATE_OR_CRL_FOUND] no certificate or crl found"]),
    ("https-with-ca-file-is-fine", {"endpoint": "https://collector:4318", "ca_file": "{ca}",
                                    "protocol": "http/protobuf", "insecure_skip_verify": "true"},
     []),
]


@pytest.mark.parametrize(("forward", "problems"), [c[1:] for c in FORWARD_TLS_CASES],
                         ids=[c[0] for c in FORWARD_TLS_CASES])
def test_forward_tls_settings_that_would_not_apply_are_errors(
    tmp_path: Path, forward: dict[str, str], problems: list[str]
) -> None:
    """ca_file and insecure_skip_verify never quietly fall back to plaintext or to nothing."""
    from pki import make_pki

    files = {"ca": str(make_pki(tmp_path).ca), "bad": str(_write(tmp_path, "x", "bad.pem"))}
    overrides = {f"forward.{k}": v.format(**files) for k, v in forward.items()}
    if not problems:
        load_config(None, env={}, overrides=overrides)
        return
    with pytest.raises(ConfigError) as info:
        load_config(None, env={}, overrides=overrides)
    got = [p.split(" (_ssl.c", 1)[0] for p in info.value.problems]
    assert got == [p.format(**files) for p in problems]


def test_precedence_file_env_flag(tmp_path: Path) -> None:
    """Defaults < file < CODEBOOK_* env < flags."""
    path = _write(tmp_path, "forward:\n  endpoint: a:1\n  timeout_seconds: 3\n")
    env = {"CODEBOOK_FORWARD_ENDPOINT": "b:2", "CODEBOOK_FORWARD_HEADERS": "x=1, y=2",
           "CODEBOOK_MAPPINGS": str(tmp_path)}
    cfg = load_config(path, env=env, overrides={"forward.endpoint": "c:3"})
    assert cfg.forward.endpoint == "c:3"
    assert cfg.forward.timeout_seconds == 3.0
    assert cfg.forward.headers == {"x": "1", "y": "2"}
    assert cfg.mappings.dirs == [str(tmp_path)]
    assert cfg.receivers.grpc.endpoint == "127.0.0.1:4317"  # receivers bind loopback


def test_env_errors(tmp_path: Path) -> None:
    """Bad and misspelt env settings are errors naming the variable."""
    env = {"CODEBOOK_RECEIVERS_GRPC_MAX_WORKERS": "many", "CODEBOOK_FORWARD_ENDPIONT": "x",
           "CODEBOOK_METRICS_PORT": "9464", "CODEBOOK_UNRELATED": "kept"}
    with pytest.raises(ConfigError) as info:
        load_config(None, env=env)
    assert list(info.value.problems) == [
        "env:CODEBOOK_FORWARD_ENDPIONT: unknown setting (did you mean CODEBOOK_FORWARD_ENDPOINT?)",
        "env:CODEBOOK_RECEIVERS_GRPC_MAX_WORKERS: 'many' is not an integer",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:4317", ("127.0.0.1", 4317)), (":9464", ("0.0.0.0", 9464)),
     ("[::1]:0", ("::1", 0))],
    ids=["v4", "all-interfaces", "v6"],
)
def test_parse_endpoint(text: str, expected: tuple[str, int]) -> None:
    """Endpoints are host:port, [v6]:port or :port."""
    assert parse_endpoint(text) == expected


def test_check_config_prints_effective_config(tmp_path: Path) -> None:
    """`codebook serve --check-config` validates and prints the effective config, redacted."""
    path = _write(tmp_path, "forward:\n  endpoint: a:1\n  headers: {authorization: secret}\n")
    out = subprocess.run(
        [sys.executable, "-m", "exporter", "serve", "--config", str(path), "--check-config",
         "--grpc-endpoint", "127.0.0.1:5317"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "endpoint: 127.0.0.1:5317" in out.stdout
    assert ": secret" not in out.stdout  # the header value (key names may say secret)
    bad = _write(tmp_path, "forward:\n  endpoint: 5\n", "bad.yaml")
    out = subprocess.run(
        [sys.executable, "-m", "exporter", "serve", "--config", str(bad), "--check-config"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert out.returncode == 1
    assert f"{bad}:2: forward.endpoint: 5 is not a string" in out.stderr


HASH = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()


@pytest.mark.parametrize(
    ("text", "problems"),
    [
        (
            "basic_auth_users:\n  alice: plain\ntls_server_config:\n  cipher_suites: [x]\n"
            "surprise: 1\n",
            [
                "{f}:2: basic_auth_users.alice: not a bcrypt hash (expected $2y$<cost>$ and "
                "53 characters)",
                "{f}:4: tls_server_config.cipher_suites: not supported: Go cipher suite names "
                "cannot be applied to Python's TLS",
                "{f}:5: surprise: unknown key (known: basic_auth_users, http_server_config, "
                "tls_server_config)",
                "{f}:3: tls_server_config.cert_file: required when tls_server_config is set",
                "{f}:3: tls_server_config.key_file: required when tls_server_config is set",
            ],
        ),
        (
            "tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n"
            "  client_auth_type: RequireAnyClientCert\n",
            [
                "{f}:2: tls_server_config.cert_file: 'missing.crt': no such file",
                "{f}:3: tls_server_config.key_file: 'missing.key': no such file",
                "{f}:4: tls_server_config.client_auth_type: 'RequireAnyClientCert' accepts "
                "unverified client certificates, which Python's TLS cannot do; use "
                "VerifyClientCertIfGiven or RequireAndVerifyClientCert",
            ],
        ),
        (
            "http_server_config:\n  headers:\n    Content-Type: text/html\n"
            "    x-frame-options: deny\n    X-Frame-Options: allow\n"
            "    Content-Security-Policy: \"default-src 'self'\\r\\nSet-Cookie: a=b\"\n"
            "    Server: codebook\n    X-XSS-Protection: [1]\n    X-Frame-Options: deny\n",
            [
                "{f}:3: http_server_config.headers.Content-Type: HTTP header 'Content-Type' "
                "cannot be configured (allowed: Content-Security-Policy, "
                "Strict-Transport-Security, X-Content-Type-Options, X-Frame-Options, "
                "X-XSS-Protection)",
                "{f}:4: http_server_config.headers.x-frame-options: HTTP header "
                "'x-frame-options' cannot be configured (did you mean 'X-Frame-Options'?)",
                "{f}:5: http_server_config.headers.X-Frame-Options: 'allow' is not one of "
                "deny, sameorigin",
                "{f}:6: http_server_config.headers.Content-Security-Policy: control "
                "characters (line breaks) are not allowed in a header",
                "{f}:7: http_server_config.headers.Server: HTTP header 'Server' cannot be "
                "configured (allowed: Content-Security-Policy, Strict-Transport-Security, "
                "X-Content-Type-Options, X-Frame-Options, X-XSS-Protection)",
                "{f}:8: http_server_config.headers.X-XSS-Protection: expected a string",
                "{f}:9: http_server_config.headers.X-Frame-Options: duplicate header",
            ],
        ),
        (
            "http_server_config:\n  headers: [X-Frame-Options]\n",
            ["{f}:2: http_server_config.headers: expected a mapping"],
        ),
    ],
    ids=["auth-and-unknown-keys", "tls-files-and-auth-type", "refused-headers",
         "headers-not-a-map"],
)
def test_web_config_errors(tmp_path: Path, text: str, problems: list[str]) -> None:
    """Web config problems are all reported, each with file:line."""
    path = _write(tmp_path, text, "web.yaml")
    with pytest.raises(WebConfigError) as info:
        load_web_config(path)
    assert list(info.value.problems) == [p.format(f=path) for p in problems]


def test_web_config_headers_load(tmp_path: Path) -> None:
    """Allowed headers load in file order, with their values as written."""
    cfg = load_web_config(_write(
        tmp_path,
        "http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n"
        "    Content-Security-Policy: \"default-src 'self'\"\n",
        "w.yaml",
    ))
    assert cfg.headers == (
        ("X-Content-Type-Options", "nosniff"),
        ("Content-Security-Policy", "default-src 'self'"),
    )


def test_basic_auth_checks_bcrypt(tmp_path: Path) -> None:
    """Only the right user and password pass; malformed headers fail."""
    import base64

    cfg = load_web_config(_write(tmp_path, f"basic_auth_users:\n  alice: '{HASH}'\n", "w.yaml"))

    def header(user: str, pw: str) -> str:
        return "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()

    assert cfg.authenticate(header("alice", "s3cret"))
    assert cfg.authenticate(header("alice", "s3cret"))  # the cached path
    assert not cfg.authenticate(header("alice", "wrong"))
    assert not cfg.authenticate(header("bob", "s3cret"))
    assert not cfg.authenticate(None)
    assert not cfg.authenticate("Basic !!!")
    assert not cfg.authenticate("Bearer x")


def test_web_config_reload_refuses_to_add_tls(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A reload may not turn TLS on; the problem names the tls_server_config line."""
    from pki import make_pki

    from exporter.sidecar.webconfig import WebConfigReloader

    pki = make_pki(tmp_path)
    path = _write(tmp_path, f"basic_auth_users:\n  alice: '{HASH}'\n", "w.yaml")
    applied: list[object] = []
    reloader = WebConfigReloader(load_web_config(path), applied.append)
    path.write_text(f"basic_auth_users:\n  alice: '{HASH}'\ntls_server_config:\n"
                    f"  cert_file: {pki.server_crt}\n  key_file: {pki.server_key}\n")
    assert not reloader.reload()
    assert applied == []
    assert (f"{path}:3: tls_server_config: cannot be added by a reload (the scheme of /metrics "
            "would change); restart to apply") in caplog.text
    path.write_text(f"basic_auth_users:\n  bob: '{HASH}'\n")
    assert reloader.reload()
    assert applied == [reloader.current]
    assert set(reloader.current.users) == {"bob"}
    samples = {(s.name, s.labels.get("outcome")): s.value
               for m in reloader.collect() for s in m.samples}
    assert samples == {
        ("codebook_web_config_reloads_total", "success"): 1,
        ("codebook_web_config_reloads_total", "failure"): 1,
        ("codebook_web_config_last_reload_successful", None): 1,
    }
