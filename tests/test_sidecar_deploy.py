"""The deploy/ files: valid, consistent with each other, with the image and with the sidecar.

Core Kubernetes objects are validated against the Kubernetes OpenAPI schemas bundled in
``kubernetes-validate`` (offline, strict: unknown fields are errors). The prometheus-operator
objects (PodMonitor, PrometheusRule) have no bundled schema: their shape is checked here and
the PrometheusRule's rules go through ``promtool check rules``. ``prometheus.yaml`` goes
through ``promtool check config`` as committed. The generated files must be what
``deploy/generate.py`` writes from the committed sources.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from dashboard_queries import require

from exporter.sidecar.config import load_config, parse_endpoint

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
KUBE = DEPLOY / "kubernetes"
sys.path.insert(0, str(DEPLOY))
import generate  # noqa: E402  (deploy/generate.py: a script, not a package)

CORE_FILES = ["deployment.yaml", "grafana-dashboards.yaml"]
OPERATOR = "monitoring.coreos.com/v1"


def _docs(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _by_kind(name: str) -> dict[str, Any]:
    return {d["kind"]: d for d in _docs(KUBE / name)}


def _pod_spec() -> dict[str, Any]:
    return dict(_by_kind("deployment.yaml")["Deployment"]["spec"]["template"]["spec"])


def _containers() -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in _pod_spec()["containers"]}


@pytest.mark.parametrize("path", sorted(DEPLOY.rglob("*.yaml")), ids=lambda p: p.name)
def test_every_file_is_valid_yaml(path: Path) -> None:
    """Each deploy file parses as YAML with at least one document."""
    assert _docs(path)


@pytest.mark.parametrize("name", CORE_FILES)
def test_core_objects_pass_the_kubernetes_schema(name: str) -> None:
    version = kubernetes_validate.latest_version()
    for doc in _docs(KUBE / name):
        kubernetes_validate.validate(doc, version, strict=True)


def test_kubernetes_validate_catches_a_typo() -> None:
    """The schema check is real: an unknown container field fails it."""
    deployment = _by_kind("deployment.yaml")["Deployment"]
    deployment["spec"]["template"]["spec"]["containers"][1]["imagePulPolicy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError, match="imagePulPolicy"):
        kubernetes_validate.validate(deployment, kubernetes_validate.latest_version(), strict=True)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    manifests = {p.name for p in KUBE.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == manifests


def test_sidecar_config_in_the_configmap_loads(tmp_path: Path) -> None:
    """The ConfigMap's sidecar config passes the strict loader; receivers stay on loopback;
    the persistent queue lives on the writable volume; forwarding reaches the Collector."""
    text = _by_kind("deployment.yaml")["ConfigMap"]["data"]["config.yaml"]
    path = tmp_path / "config.yaml"
    path.write_text(text)
    cfg = load_config(path, env={})
    assert parse_endpoint(cfg.receivers.grpc.endpoint)[0] == "127.0.0.1"
    assert parse_endpoint(cfg.receivers.http.endpoint)[0] == "127.0.0.1"
    assert parse_endpoint(cfg.metrics.endpoint)[1] == 9464
    collector = yaml.safe_load((DEPLOY / "otel-collector" / "config.yaml").read_text())
    grpc_port = collector["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].rsplit(":", 1)[1]
    assert cfg.forward.endpoint.endswith(f":{grpc_port}")
    mounts = {m["mountPath"]: m for m in _containers()["codebook"]["volumeMounts"]}
    writable = [p for p, m in mounts.items() if not m.get("readOnly")]
    assert any(cfg.forward.queue_dir.startswith(p + "/") for p in writable)
    assert 0 < cfg.forward.ready_max_queue_fraction <= 1


def test_deployment_runs_app_and_hardened_sidecar() -> None:
    """App + sidecar; probes on /healthz and /readyz; the image's user, read-only root."""
    containers = _containers()
    assert set(containers) == {"app", "codebook"}
    sidecar = containers["codebook"]
    assert sidecar["args"] == ["serve", "--config", "/etc/codebook/config.yaml"]
    port = {p["name"]: p["containerPort"] for p in sidecar["ports"]}
    assert port == {"cb-metrics": 9464}
    assert sidecar["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "cb-metrics"}
    assert sidecar["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "cb-metrics"}
    sc = sidecar["securityContext"]
    dockerfile = (REPO / "Dockerfile").read_text()
    assert f"USER {sc['runAsUser']}:{sc['runAsGroup']}" in dockerfile
    assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
    assert sc["capabilities"] == {"drop": ["ALL"]}
    for c in containers.values():
        assert {"cpu", "memory"} <= set(c["resources"]["requests"])
    env = {e["name"]: e["value"] for e in containers["app"]["env"]}
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:4317"
    config_mount = next(m for m in sidecar["volumeMounts"] if m["mountPath"] == "/etc/codebook")
    assert config_mount["readOnly"] is True


def test_pod_monitor_selects_the_sidecar_port() -> None:
    monitor = _by_kind("podmonitor.yaml")["PodMonitor"]
    assert monitor["apiVersion"] == OPERATOR
    template = _by_kind("deployment.yaml")["Deployment"]["spec"]["template"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= template["metadata"]["labels"].items()
    ports = {p["name"] for c in template["spec"]["containers"] for p in c.get("ports", [])}
    for endpoint in monitor["spec"]["podMetricsEndpoints"]:
        assert endpoint["port"] in ports and endpoint["path"] == "/metrics"


def test_prometheus_rule_carries_every_rule_group(tmp_path: Path) -> None:
    """The PrometheusRule holds the groups of dashboards/rules/*.yml; promtool accepts them."""
    rule = _by_kind("prometheusrule.yaml")["PrometheusRule"]
    assert rule["apiVersion"] == OPERATOR and rule["metadata"]["name"]
    groups = rule["spec"]["groups"]
    expected = [g for p in generate.rule_files() for g in yaml.safe_load(p.read_text())["groups"]]
    assert groups == expected
    for group in groups:
        for r in group["rules"]:
            assert ("alert" in r) != ("record" in r) and r["expr"]
    path = tmp_path / "operator-rules.yml"
    path.write_text(yaml.safe_dump({"groups": groups}))
    proc = subprocess.run([require("promtool"), "check", "rules", str(path)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_grafana_configmap_holds_the_dashboards() -> None:
    cm = _by_kind("grafana-dashboards.yaml")["ConfigMap"]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    data = cm["data"]
    assert set(data) == {p.name for p in generate.dashboard_files()}
    for name, text in data.items():
        assert json.loads(text) == json.loads((REPO / "dashboards" / name).read_text())


def test_generated_files_are_up_to_date() -> None:
    """Fails when a committed generated file differs from what deploy/generate.py writes:
    run `python deploy/generate.py` and commit."""
    assert generate.main(["--check"]) == 0


def _runbook_links(files: dict[Path, str]) -> list[str]:
    out = []
    for path, text in files.items():
        if path.suffix == ".json":
            out += [link["url"] for link in json.loads(text).get("links", [])
                    if link.get("title") == "Runbook"]
        else:
            out += re.findall(r"runbook_url:\s*(\S+)", text)
    return out


@pytest.mark.parametrize(
    "base",
    ["https://git.example.com/sre/codebook/-/blob/main/dashboards/RUNBOOK.md",
     "https://wiki.example.com/display/SRE/Codebook+Runbook"],
    ids=["git-server", "wiki"],
)
def test_one_setting_moves_every_runbook_link(base: str) -> None:
    """runbook_base_url in site.yaml reaches every alert, promtool test and dashboard link."""
    site = {**generate.load_site(), "runbook_base_url": base}
    rendered = generate.render(site)
    links = _runbook_links({p: t for p, t in rendered.items() if p.parent.name != "kubernetes"})
    alerts = [r["alert"] for p in generate.rule_files()
              for g in yaml.safe_load(p.read_text())["groups"] for r in g["rules"] if "alert" in r]
    assert len(links) >= len(alerts) + len(generate.dashboard_files())
    assert all(link == base or link.startswith(base + "#") for link in links), links
    operator = yaml.safe_load(rendered[KUBE / "prometheusrule.yaml"])
    urls = [r["annotations"]["runbook_url"] for g in operator["spec"]["groups"]
            for r in g["rules"] if "alert" in r]
    assert urls == [f"{base}#{a.lower()}" for a in alerts]


def test_committed_runbook_links_use_the_site_setting() -> None:
    base = generate.load_site()["runbook_base_url"]
    links = _runbook_links({p: p.read_text() for p in generate.rebased_sources(base)})
    assert links and all(link == base or link.startswith(base + "#") for link in links)
    anchors = {re.sub(r"[^a-z0-9]", "", h.lower()) for h in re.findall(
        r"^#+\s+(.*)$", (REPO / "dashboards" / "RUNBOOK.md").read_text(), re.M)}
    for link in links:
        if "#" in link:
            assert link.split("#", 1)[1] in anchors, link


@pytest.mark.parametrize(
    ("patch", "message"),
    [({"runbook_base_url": "ftp://x"}, "not an http"),
     ({"runbook_base_url": "https://x/RUNBOOK.md#top"}, "without '#'"),
     ({"colour": "blue"}, "colour: unknown key"),
     ({"grafana_folder": 3}, "grafana_folder: expected a str")],
    ids=["scheme", "fragment", "unknown-key", "type"],
)
def test_site_settings_are_strict(tmp_path: Path, patch: dict[str, Any], message: str) -> None:
    site = yaml.safe_load(generate.SITE.read_text())
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump({**site, **patch}))
    with pytest.raises(generate.SiteError, match=re.escape(message)):
        generate.load_site(path)


def test_prometheus_config_passes_promtool_as_committed() -> None:
    """promtool checks prometheus.yaml whole, with the rule files it loads."""
    path = DEPLOY / "prometheus" / "prometheus.yaml"
    proc = subprocess.run([require("promtool"), "check", "config", str(path)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(generate.rule_files())} rule files found" in proc.stdout


def test_kubernetes_sd_job_in_the_comment_matches_the_deployment() -> None:
    """The commented Kubernetes SD job is well-formed and keeps the sidecar's port name."""
    text = (DEPLOY / "prometheus" / "prometheus.yaml").read_text()
    block = re.search(r"^#   - job_name: codebook-sidecar\n(?:#     .*\n)+", text, re.M)
    assert block, "the Kubernetes SD job is documented in prometheus.yaml"
    job = yaml.safe_load("\n".join(line[4:] for line in block.group(0).splitlines()))[0]
    assert job["kubernetes_sd_configs"] == [{"role": "pod"}]
    keep = job["relabel_configs"][0]
    assert keep["action"] == "keep"
    assert keep["regex"] in {p["name"] for p in _containers()["codebook"]["ports"]}


def test_collector_pipelines_use_defined_components() -> None:
    """Every pipeline names receivers, processors and exporters the file defines."""
    config = yaml.safe_load((DEPLOY / "otel-collector" / "config.yaml").read_text())
    pipelines = config["service"]["pipelines"]
    assert set(pipelines) == {"traces", "metrics", "logs"}
    for pipeline in pipelines.values():
        for kind in ("receivers", "processors", "exporters"):
            for name in pipeline.get(kind, []):
                assert name in config[kind], f"{name} is not defined under {kind}"
