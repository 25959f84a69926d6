"""Test helper: a throwaway CA with a server certificate for 127.0.0.1 and a client certificate.

Made with the ``openssl`` command line (the ``cryptography`` package is not a dependency),
with P-256 keys so a test run creates several quickly.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pki:
    """The files of one CA and of the server and client certificates it signed."""

    ca: Path
    ca_key: Path
    server_crt: Path
    server_key: Path
    client_crt: Path
    client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _key(path: str, cwd: Path) -> None:
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path,
             cwd=cwd)


def make_pki(directory: Path, name: str = "test") -> Pki:
    """A new CA named ``name`` in ``directory`` and the two certificates it signs."""
    d = directory / name
    d.mkdir(parents=True, exist_ok=True)
    _key("ca.key", d)
    # The extensions RFC 5280 asks for, which Python 3.13's default verification
    # (VERIFY_X509_STRICT) checks: a CA without keyUsage, or a leaf without an authority key
    # identifier, is refused there.
    _openssl("req", "-x509", "-key", "ca.key", "-out", "ca.crt", "-days", "2",
             "-subj", f"/CN={name}-ca",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             "-addext", "subjectKeyIdentifier=hash", cwd=d)
    for who, usage in (("server", "serverAuth"), ("client", "clientAuth")):
        (d / f"{who}.ext").write_text(
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
            "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature\n"
            f"extendedKeyUsage={usage}\n"
            "subjectKeyIdentifier=hash\n"
            "authorityKeyIdentifier=keyid\n"
        )
        _key(f"{who}.key", d)
        _openssl("req", "-new", "-key", f"{who}.key", "-out", f"{who}.csr",
                 "-subj", f"/CN={name}-{who}", cwd=d)
        _openssl("x509", "-req", "-in", f"{who}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{who}.crt", "-days", "2",
                 "-extfile", f"{who}.ext", cwd=d)
    return Pki(
        ca=d / "ca.crt",
        ca_key=d / "ca.key",
        server_crt=d / "server.crt",
        server_key=d / "server.key",
        client_crt=d / "client.crt",
        client_key=d / "client.key",
    )
