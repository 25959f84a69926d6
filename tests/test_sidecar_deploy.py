"""The deploy/ examples: valid YAML, consistent with each other and with the sidecar."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.sidecar.config import load_config, parse_endpoint

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def _docs(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


@pytest.mark.parametrize("path", sorted(DEPLOY.rglob("*.yaml")), ids=lambda p: p.name)
def test_every_file_is_valid_yaml(path: Path) -> None:
    """Each deploy file parses as YAML with at least one document."""
    assert _docs(path)


def _pod_and_config() -> tuple[dict[str, Any], str]:
    docs = {d["kind"]: d for d in _docs(DEPLOY / "kubernetes" / "pod.yaml")}
    return docs["Pod"], docs["ConfigMap"]["data"]["config.yaml"]


def test_sidecar_config_in_the_configmap_loads(tmp_path: Path) -> None:
    """The ConfigMap's sidecar config passes the strict loader; receivers stay on loopback."""
    _, text = _pod_and_config()
    path = tmp_path / "config.yaml"
    path.write_text(text)
    cfg = load_config(path, env={})
    assert parse_endpoint(cfg.receivers.grpc.endpoint)[0] == "127.0.0.1"
    assert parse_endpoint(cfg.receivers.http.endpoint)[0] == "127.0.0.1"
    assert parse_endpoint(cfg.metrics.endpoint)[1] == 9464
    collector = yaml.safe_load((DEPLOY / "otel-collector" / "config.yaml").read_text())
    grpc_port = collector["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].rsplit(":", 1)[1]
    assert cfg.forward.endpoint.endswith(f":{grpc_port}")


def test_pod_has_app_and_sidecar_with_probes_and_requests() -> None:
    """The pod runs app + sidecar; the sidecar has probes on /healthz and /readyz and requests."""
    pod, _ = _pod_and_config()
    containers = {c["name"]: c for c in pod["spec"]["containers"]}
    assert set(containers) == {"app", "codebook"}
    sidecar = containers["codebook"]
    assert sidecar["args"][0] == "serve"
    port = {p["name"]: p["containerPort"] for p in sidecar["ports"]}
    assert port == {"cb-metrics": 9464}
    assert sidecar["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "cb-metrics"}
    assert sidecar["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "cb-metrics"}
    for c in containers.values():
        assert {"cpu", "memory"} <= set(c["resources"]["requests"])
    env = {e["name"]: e["value"] for e in containers["app"]["env"]}
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:4317"


def test_prometheus_scrape_config_targets_the_sidecar_port(tmp_path: Path) -> None:
    """The scrape config keeps the sidecar's port name; promtool accepts it."""
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yaml").read_text())
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    keep = jobs["codebook-sidecar"]["relabel_configs"][0]
    assert keep["action"] == "keep" and keep["regex"] == "cb-metrics"
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed")
    # Debian's Prometheus is built without Kubernetes service discovery: check the rest there.
    probe = subprocess.run([promtool, "check", "config", str(DEPLOY / "prometheus" /
                                                             "prometheus.yaml")],
                           capture_output=True, text=True, timeout=60, check=False)
    if "kubernetes_sd_configs not found" in probe.stdout + probe.stderr:
        config["scrape_configs"] = [
            j for j in config["scrape_configs"] if "kubernetes_sd_configs" not in j
        ]
        path = tmp_path / "prometheus.yaml"
        path.write_text(yaml.safe_dump(config))
        probe = subprocess.run([promtool, "check", "config", str(path)],
                               capture_output=True, text=True, timeout=60, check=False)
    assert probe.returncode == 0, probe.stdout + probe.stderr


def test_collector_pipelines_use_defined_components() -> None:
    """Every pipeline names receivers, processors and exporters the file defines."""
    config = yaml.safe_load((DEPLOY / "otel-collector" / "config.yaml").read_text())
    pipelines = config["service"]["pipelines"]
    assert set(pipelines) == {"traces", "metrics", "logs"}
    for pipeline in pipelines.values():
        for kind in ("receivers", "processors", "exporters"):
            for name in pipeline.get(kind, []):
                assert name in config[kind], f"{name} is not defined under {kind}"
