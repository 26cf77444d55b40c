"""The fleet's Prometheus files agree with each other, with the box's own Prometheus and with the alert rules: the
agent's configuration is the same file in deploy/prometheus/ and in the Kubernetes ConfigMap, scrapes what
prometheus.yml scrapes at the same interval, and labels the box with site, appliance and room only, from the
environment; every aggregation and match of the alert rules keeps those labels, so boxes that share a scrape address
are not summed together at the centre; docs/fleet.md names what it must. (The processes themselves:
tests/test_fleet_prometheus.py.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from test_dashboard_files import IDENTIFYING
from test_deploy_files import PROM_CONFIG, PROM_RULES, TOML

from appliance.config import load_settings

yaml = pytest.importorskip("yaml", reason="PyYAML comes with the test extra")

ROOT = Path(__file__).resolve().parent.parent
AGENT = ROOT / "deploy" / "prometheus" / "agent.yml"
K8S_AGENT = ROOT / "deploy" / "k8s" / "appliance" / "agent.yml"
CENTRAL = ROOT / "deploy" / "prometheus" / "central.yml"
DOC = ROOT / "docs" / "fleet.md"
FLEET_LABELS = ("site", "appliance", "room")


def _agent() -> dict:
    return yaml.safe_load(AGENT.read_text(encoding="utf-8"))


def test_the_kubernetes_configmaps_agent_configuration_is_the_same_file():
    assert K8S_AGENT.read_bytes() == AGENT.read_bytes(), "cp deploy/prometheus/agent.yml deploy/k8s/appliance/"


def test_the_agent_scrapes_what_the_boxs_own_prometheus_scrapes_at_the_same_interval():
    agent, own = _agent(), yaml.safe_load(PROM_CONFIG.read_text(encoding="utf-8"))
    assert agent["global"]["scrape_interval"] == own["global"]["scrape_interval"]  # the rules' windows assume it
    jobs = {j["job_name"]: j for j in agent["scrape_configs"]}
    (own_job,) = [j for j in own["scrape_configs"] if j["job_name"] == "scanside"]
    assert jobs["scanside"]["static_configs"] == own_job["static_configs"]
    assert jobs["scanside"]["static_configs"][0]["targets"] == [f"127.0.0.1:{load_settings(TOML).metrics.port}"]
    assert "rule_files" not in agent and "alerting" not in agent  # agent mode evaluates nothing: the centre does


def test_the_box_is_named_by_three_labels_from_the_environment_and_nothing_else():
    labels = _agent()["global"]["external_labels"]
    assert tuple(labels) == FLEET_LABELS
    # values are only the operator's variables, never a literal, so nothing from a study can end up there
    assert labels == {name: f"${{SCANSIDE_{name.upper()}}}" for name in FLEET_LABELS}
    assert not [name for name in labels if IDENTIFYING.search(name)]


def test_the_agent_writes_to_the_centre_over_tls_with_its_own_certificate():
    (write,) = _agent()["remote_write"]
    assert write["url"].startswith("https://") and write["url"].endswith("/api/v1/write")
    assert set(write["tls_config"]) == {"ca_file", "cert_file", "key_file"}
    central = yaml.safe_load(CENTRAL.read_text(encoding="utf-8"))
    assert central["rule_files"] == [PROM_RULES.name]


def test_every_aggregation_and_match_in_the_alert_rules_keeps_the_box():
    text = PROM_RULES.read_text(encoding="utf-8")
    clauses = re.findall(r"\b(by|on)\s*\(([^)]*)\)", text)
    assert len(clauses) >= 15
    for keyword, group in clauses:
        labels = {label.strip() for label in group.split(",")}
        assert {"site", "appliance"} <= labels, f"{keyword} ({group}) drops the box at a central Prometheus"
        if "instance" in labels:
            assert "room" in labels, f"{keyword} ({group}) drops the room its alert would name"
    assert not re.search(r"\bwithout\s*\(", text)  # a `without` could drop them unnoticed


def test_the_doc_names_the_labels_the_receiver_flag_and_every_deploy_file():
    doc = DOC.read_text(encoding="utf-8")
    for needed in ("--web.enable-remote-write-receiver", "--enable-feature=agent", "--agent",
                   *(f"`{label}`" for label in FLEET_LABELS), "$site", "$appliance", "ScanSideApplianceSilent"):
        assert needed in doc, needed
    deploy = ROOT / "deploy"
    files = [p for folder in ("k8s", "cpu") for p in (deploy / folder).rglob("*") if p.is_file()]
    files += [AGENT, CENTRAL, deploy / "prometheus" / "central-web.yml"]
    missing = [str(p.relative_to(deploy)) for p in files
               if str(p.relative_to(deploy)) not in doc and p.name != "kustomization.yaml"]
    assert not missing, f"docs/fleet.md does not name: {missing}"
