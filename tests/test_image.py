"""The container image: the Dockerfile is hadolint-clean and says what the docs say, and what
the image does is done here without a Docker engine: build the wheel, install it into a fresh
venv, and run ``codebook serve`` with the image's config as UID/GID 65532 on a read-only root
filesystem (a private mount namespace with ``/`` remounted read-only, a tmpfs for the queue
volume), scrape it, forward through it, stop it.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from otlp_upstream import GrpcUpstream
from sidecar_proc import wait_for
from test_forward_accounting import _request

from exporter.sidecar.config import load_config, parse_endpoint

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"
IMAGE_CONFIG = REPO / "deploy" / "image" / "config.yaml"
UID = 65532
CI = os.environ.get("CI") == "true"


def _tool(name: str) -> str:
    """A tool from the venv or PATH; skip without it (fail under CI=true)."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        if CI:
            pytest.fail(f"{name} is required under CI (pip install '.[test]')")
        pytest.skip(f"{name} is not installed")
    return found


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_is_hadolint_clean() -> None:
    hadolint = _tool("hadolint")
    proc = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_shape() -> None:
    """Multi-stage; the runtime runs as 65532 with the documented entrypoint, command, ports."""
    ins = _instructions()
    froms = [args for word, args in ins if word == "FROM"]
    assert len(froms) == 2 and froms[0].endswith(" AS builder") and "slim" in froms[1]
    runtime = ins[max(i for i, (w, _) in enumerate(ins) if w == "FROM"):]
    last = {word: args for word, args in runtime}
    assert last["USER"] == f"{UID}:{UID}"
    assert json.loads(last["ENTRYPOINT"]) == ["codebook"]
    cmd = json.loads(last["CMD"])
    assert cmd == ["serve", "--config", "/etc/codebook/config.yaml"]
    assert f"COPY deploy/image/config.yaml {cmd[2]}" in [f"COPY {a}" for w, a in runtime
                                                          if w == "COPY"]
    assert "PYTHONDONTWRITEBYTECODE=1" in last["ENV"]  # read-only root: no bytecode writes
    # The exposed ports are the ones the image's config listens on.
    cfg = load_config(IMAGE_CONFIG, env={})
    ports = {parse_endpoint(e)[1] for e in (cfg.receivers.grpc.endpoint,
                                             cfg.receivers.http.endpoint, cfg.metrics.endpoint)}
    assert {int(p) for p in last["EXPOSE"].split()} == ports
    # In a container loopback is private: the image's config binds every interface.
    assert {parse_endpoint(e)[0] for e in (cfg.receivers.grpc.endpoint,
                                           cfg.receivers.http.endpoint)} == {"0.0.0.0"}


@pytest.fixture(scope="module")
def installed() -> Iterator[Path]:
    """A fresh venv (world-readable, owned by root) with the freshly built wheel installed."""
    root = Path(tempfile.mkdtemp(prefix="codebook-image-"))
    try:
        root.chmod(0o755)
        wheels = root / "wheels"
        build = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels),
             str(REPO)],
            capture_output=True, text=True, timeout=900, check=False,
        )
        assert build.returncode == 0, build.stdout + build.stderr
        (wheel,) = wheels.glob("codebook_exporter-*.whl")
        names = zipfile.ZipFile(wheel).namelist()
        for ext in ("exporter/_wire", "exporter/_hot"):  # what the builder stage insists on
            assert any(n.startswith(ext) and n.endswith(".so") for n in names), ext
        assert any(n.startswith("exporter/mappings/") for n in names)
        venv = root / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        pip = subprocess.run(
            [str(venv / "bin" / "pip"), "install", "-q", "--no-cache-dir", str(wheel)],
            capture_output=True, text=True, timeout=900, check=False,
        )
        assert pip.returncode == 0, pip.stdout + pip.stderr
        yield venv
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _can_sandbox() -> bool:
    if not (shutil.which("unshare") and shutil.which("setpriv")) or os.geteuid() != 0:
        return False
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
         "mount -o remount,bind,ro / && ! touch /.codebook-probe 2>/dev/null"],
        capture_output=True, timeout=30, check=False,
    )
    return probe.returncode == 0


@pytest.mark.slow
def test_image_runs_unprivileged_on_a_read_only_root(installed: Path, tmp_path: Path) -> None:
    if not _can_sandbox():
        if CI:
            pytest.fail("CI runs as root with unshare and setpriv (util-linux)")
        pytest.skip("needs root, unshare and setpriv")
    etc = Path(tempfile.mkdtemp(prefix="codebook-etc-"))
    state = Path(tempfile.mkdtemp(prefix="codebook-state-"))
    upstream = GrpcUpstream()
    proc: subprocess.Popen[bytes] | None = None
    try:
        etc.chmod(0o755)
        config = etc / "config.yaml"
        shutil.copy(IMAGE_CONFIG, config)
        config.chmod(0o444)
        env = {
            "PATH": f"{installed / 'bin'}:/usr/bin:/bin",
            "HOME": "/nonexistent",
            "PYTHONDONTWRITEBYTECODE": "1",  # as the Dockerfile's ENV
            "PYTHONUNBUFFERED": "1",
            # What `docker run -e ...` would set: free loopback ports for the test, an
            # upstream, and the persistent queue on the (tmpfs) volume.
            "CODEBOOK_RECEIVERS_GRPC_ENDPOINT": "127.0.0.1:0",
            "CODEBOOK_RECEIVERS_HTTP_ENDPOINT": "127.0.0.1:0",
            "CODEBOOK_METRICS_ENDPOINT": "127.0.0.1:0",
            "CODEBOOK_FORWARD_ENDPOINT": f"127.0.0.1:{upstream.port}",
            "CODEBOOK_FORWARD_QUEUE_DIR": str(state / "queue"),
        }
        script = (
            f"mount -o remount,bind,ro / && "
            f"mount -t tmpfs -o uid={UID},gid={UID},mode=0700,size=16m tmpfs {state} && "
            f"cd {state} && exec setpriv --reuid {UID} --regid {UID} --clear-groups "
            f"--no-new-privs -- codebook serve --config {config}"
        )
        proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script],
            stdout=subprocess.PIPE, stderr=(tmp_path / "serve.log").open("wb"), env=env,
        )
        assert proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        assert sel.select(60), (tmp_path / "serve.log").read_text()
        line = proc.stdout.readline()
        assert line, (tmp_path / "serve.log").read_text()
        addresses = json.loads(line)
        metrics = f"http://{addresses['metrics']}"
        for path in ("/healthz", "/readyz"):
            with urllib.request.urlopen(metrics + path, timeout=10) as resp:
                assert resp.status == 200
        status_file = Path(f"/proc/{proc.pid}/status").read_text()
        assert re.search(rf"^Uid:\s+{UID}\s+{UID}\s+{UID}\s+{UID}$", status_file, re.M)
        req = urllib.request.Request(
            f"http://{addresses['http']}/v1/traces", data=_request(["img-0", "img-1"]),
            headers={"Content-Type": "application/x-protobuf"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200
        wait_for(lambda: len(upstream.requests) == 1, timeout=20)

        def scrape() -> str:
            with urllib.request.urlopen(metrics + "/metrics", timeout=10) as resp:
                return str(resp.read().decode())

        body = wait_for(lambda: (lambda b: b if 'codebook_telemetry_forwarded_total{signal='
                                 '"traces"} 2.0' in b else None)(scrape()), timeout=10)
        assert 'provider_codes_total{source="vonage.sms",code="0"' in body
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        log = (tmp_path / "serve.log").read_text()
        assert "Read-only file system" not in log and "Permission denied" not in log, log
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)
        upstream.close()
        shutil.rmtree(etc, ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)
