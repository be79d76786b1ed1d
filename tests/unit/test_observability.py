"""The observability profile's files: Prometheus scrapes what compose runs, the rules and
the Grafana dashboard use metrics the services export, Grafana is wired to Prometheus.

Prometheus itself loads the config and the rules in the compose tests
(`tests/compose`); here the names are checked against the services' sources.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SERVICE_PORTS = {
    "ingestion": 8001,
    "features": 6066,
    "training": 8003,
    "serving": 8000,
    "monitoring": 8002,
}
SUFFIXES = re.compile(r"_(bucket|sum|count|total)$")


def _exported() -> set[str]:
    """Every metric name the services define, or the shared library defines for them
    (`driftline_registry_rejected_total`), with the suffixes Prometheus adds stripped."""
    names: set[str] = set()
    for path in [*(ROOT / "services").rglob("*.py"), *(ROOT / "shared").rglob("*.py")]:
        text = path.read_text()
        names |= set(re.findall(r'"(driftline_[a-z_]+)"', text))
        if 'P = "driftline_monitoring_"' in text:
            names |= {f"driftline_monitoring_{n}" for n in re.findall(r'f"\{P\}([a-z_]+)"', text)}
    return {SUFFIXES.sub("", name) for name in names}


def _used(expr: str) -> set[str]:
    return {SUFFIXES.sub("", name) for name in re.findall(r"\b(driftline_[a-z_]+)", expr)}


def _compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def _rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((DEPLOY / "prometheus" / "rules.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _dashboard() -> dict[str, Any]:
    return json.loads((DEPLOY / "grafana" / "dashboards" / "driftline.json").read_text())


def test_prometheus_scrapes_every_service_compose_runs() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = {
        job["job_name"]: [t for c in job["static_configs"] for t in c["targets"]]
        for job in config["scrape_configs"]
    }
    assert targets == {name: [f"{name}:{port}"] for name, port in SERVICE_PORTS.items()}
    services = _compose()["services"]
    for name, port in SERVICE_PORTS.items():
        assert f"127.0.0.1:{port}:{port}" in services[name]["ports"]
    assert config["rule_files"] == ["/etc/prometheus/rules.yml"]


@pytest.mark.parametrize("rule", _rules(), ids=lambda r: r["alert"])
def test_each_rule_alerts_on_metrics_the_services_export(rule: dict[str, Any]) -> None:
    used = _used(rule["expr"])
    assert used or rule["expr"].startswith("up{"), "a rule on no Driftline metric"
    assert used <= _exported(), sorted(used - _exported())
    assert rule["labels"]["severity"] in {"warning", "critical"}
    assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_the_dashboard_charts_metrics_the_services_export() -> None:
    dashboard = _dashboard()
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = set().union(*(_used(e) for e in exprs))
    assert used <= _exported(), sorted(used - _exported())
    titles = " ".join(p["title"] for p in dashboard["panels"]).lower()
    for topic in ("accuracy", "drift", "lag", "throughput", "latency", "alerts"):
        assert topic in titles, topic


def test_grafana_is_provisioned_with_prometheus_and_the_dashboard() -> None:
    provisioning = DEPLOY / "grafana" / "provisioning"
    source = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    [datasource] = source["datasources"]
    assert datasource["url"] == "http://prometheus:9090"
    uids = {p["datasource"]["uid"] for p in _dashboard()["panels"]}
    assert uids == {datasource["uid"]}
    provider = yaml.safe_load((provisioning / "dashboards" / "driftline.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    grafana = _compose()["services"]["grafana"]
    assert f"./deploy/grafana/dashboards:{path}:ro" in grafana["volumes"]
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]


def test_the_observability_profile_is_opt_in_official_and_on_loopback() -> None:
    services = _compose()["services"]
    for name, image, port in (
        ("prometheus", "prom/prometheus:v", 9090),
        ("grafana", "grafana/grafana:", 3000),
    ):
        service = services[name]
        assert service["profiles"] == ["observability"]
        assert image in service["image"]
        assert service["ports"] == [f"127.0.0.1:{port}:{port}"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in services["prometheus"]["volumes"]
    assert all("profiles" not in services[name] for name in SERVICE_PORTS)
