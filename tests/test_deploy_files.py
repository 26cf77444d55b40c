"""The files in deploy/ agree with the code: the example configuration, the systemd unit and the Prometheus rules.

These files are read by the configuration loader, systemd and Prometheus, and nothing in the appliance's own code
touches them. A renamed metric or a new setting would otherwise break them without any test failing. External
tools (promtool, systemd-analyze, PyYAML) are used where the host has them and skipped with a reason where not.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import sys
import typing
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from appliance.config import Settings, load_settings
from appliance.metrics import EvidenceMetrics, Metrics, TritonMetrics

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
TOML = DEPLOY / "scanside.toml"
UNIT = DEPLOY / "systemd" / "scanside.service"
PROM_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
PROM_RULES = DEPLOY / "prometheus" / "scanside-alerts.yml"

# Only these settings are expected to differ from the built-in defaults. They are all paths, because the
# defaults are relative paths meant for a checkout or a demo.
PRODUCTION_PATHS = {
    "paths": {"data_dir": Path("/var/lib/scanside"), "watch_dir": Path("/data/scanner-out")},
    "engine": {"bundle": Path("/opt/scanside/engines/reference-v1"), "plan_dir": Path("/var/lib/scanside/plans")},
}

# Sample-name suffixes that the text exposition adds to a family's name.
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
}


def _registered_names() -> tuple[set[str], set[str]]:
    """(queryable series names, family names): the first for PromQL, the second also for prose in annotations."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.watch_series_states(lambda: {})  # scanside_series exists only once a store is attached
    metrics.watch_exports(lambda: {})  # scanside_sr_exports only where [export] is configured
    EvidenceMetrics(registry, [], [], [], [])  # scanside_evidence_* once the evidence monitor runs
    TritonMetrics(registry).watch(lambda: None)  # scanside_triton_* only with engine.backend = "triton"
    series: set[str] = set()
    families: set[str] = set()
    for family in registry.collect():
        families.add(family.name)
        series.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
        series.update(sample.name for sample in family.samples)
    return series, families


def _rules_text() -> str:
    return PROM_RULES.read_text(encoding="utf-8")


def _expressions(text: str) -> list[str]:
    """Each rule's expr, whether inline or a block scalar (its more-indented lines)."""
    exprs: list[str] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)expr:\s*(.*)$", line)
        if not m:
            continue
        indent, body = len(m.group(1)), [m.group(2).lstrip("|>-")]
        for following in lines[i + 1:]:
            if following.strip() and len(following) - len(following.lstrip()) <= indent:
                break
            body.append(following)
        exprs.append("\n".join(body))
    return exprs


# --- configuration -------------------------------------------------------------------------------------------------

def test_example_configuration_sets_every_setting():
    raw = tomllib.loads(TOML.read_text(encoding="utf-8"))
    for section, cls in typing.get_type_hints(Settings).items():
        fields = {f.name for f in dataclasses.fields(cls)}
        assert set(raw.get(section, {})) == fields, f"[{section}] in {TOML.name} should set exactly {sorted(fields)}"


def test_example_configuration_is_the_defaults_except_paths():
    settings = load_settings(TOML, env={})
    expected = Settings().replace(**{section: {k: str(v) for k, v in values.items()}
                                     for section, values in PRODUCTION_PATHS.items()})
    assert settings == expected


# --- systemd -------------------------------------------------------------------------------------------------------

def _unit_values(key: str) -> list[str]:
    return [line.split("=", 1)[1].strip() for line in UNIT.read_text(encoding="utf-8").splitlines()
            if line.startswith(key + "=")]


def test_unit_runs_the_installed_configuration_and_may_write_its_folders():
    (exec_start,) = _unit_values("ExecStart")
    assert exec_start.endswith("scanside serve --config /etc/scanside/scanside.toml")
    writable = {w for value in _unit_values("ReadWritePaths") for w in value.split()}
    settings = load_settings(TOML, env={})
    # Under ProtectSystem=strict, a folder missing from this list fails at the first write, not at start.
    assert {str(settings.paths.data_dir), str(settings.paths.incoming)} <= writable
    assert _unit_values("ProtectSystem") == ["strict"]
    assert _unit_values("User") == ["scanside"] and _unit_values("Restart") == ["on-failure"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed on this host")
def test_unit_passes_systemd_analyze(tmp_path):
    # verify requires the ExecStart binary to exist, and /opt/scanside exists only on an installed host.
    text = re.sub(r"(?m)^ExecStart=.*$", "ExecStart=/bin/true", UNIT.read_text(encoding="utf-8"))
    unit = tmp_path / UNIT.name
    unit.write_text(text, encoding="utf-8")
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


# --- Prometheus ----------------------------------------------------------------------------------------------------

def test_alert_rules_use_only_registered_metric_names():
    series, families = _registered_names()
    metric_name = re.compile(r"\bscanside_[a-zA-Z0-9_]+")
    exprs = _expressions(_rules_text())
    assert len(exprs) == len(re.findall(r"(?m)^\s*- alert:", _rules_text()))
    used = {name for expr in exprs for name in metric_name.findall(expr)}
    unknown = sorted(used - series)
    assert not unknown, f"{PROM_RULES.name} queries series appliance/metrics.py does not export: {unknown}"
    # Annotations and comments may name a histogram by its family name, which is what the README lists.
    mentioned = sorted(set(metric_name.findall(_rules_text())) - series - families)
    assert not mentioned, f"{PROM_RULES.name} mentions metrics that do not exist: {mentioned}"
    # The signals the rules exist for. If this file loses one of them, a whole failure mode has no alert.
    for name in ("scanside_ready", "scanside_files_quarantined_total", "scanside_scan_to_score_seconds_bucket",
                 "scanside_inference_queue_depth", "scanside_series_failed_total", "scanside_sr_exports"):
        assert name in used, f"no alert rule uses {name}"


def test_alert_rules_have_the_expected_alerts():
    alerts = re.findall(r"(?m)^\s*- alert:\s*(\S+)\s*$", _rules_text())
    assert len(alerts) == len(set(alerts))
    assert {"ScanSideDown", "ScanSideNotReady", "ScanSideQuarantineRising", "ScanSideScanToScoreSlow",
            "ScanSideInferenceQueueHigh", "ScanSideSeriesFailed", "ScanSideSrExportFailed",
            "ScanSideSrExportBacklog"} <= set(alerts)


def test_scrape_target_is_the_default_metrics_endpoint():
    metrics = Settings().metrics
    assert f'"{metrics.host}:{metrics.port}"' in PROM_CONFIG.read_text(encoding="utf-8")
    assert re.search(r"(?m)^\s*-\s*" + re.escape(PROM_RULES.name) + r"\s*$", PROM_CONFIG.read_text(encoding="utf-8"))


def test_prometheus_files_are_valid_yaml():
    yaml = pytest.importorskip("yaml", reason="PyYAML is not a declared dependency; promtool and the regex "
                                              "checks above cover these files without it")
    config = yaml.safe_load(PROM_CONFIG.read_text(encoding="utf-8"))
    assert PROM_RULES.name in config["rule_files"]
    rules = yaml.safe_load(_rules_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert rule["expr"] and rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]


_PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(_PROMTOOL is None,
                                    reason="promtool is not on PATH (Debian package 'prometheus' provides it)")


def _promtool(*args: str) -> None:
    done = subprocess.run([_PROMTOOL, *args], capture_output=True, text=True, timeout=30)  # type: ignore[list-item]
    assert done.returncode == 0, done.stdout + done.stderr


@needs_promtool
def test_promtool_accepts_rules_and_config():
    _promtool("check", "rules", str(PROM_RULES))
    _promtool("check", "config", str(PROM_CONFIG))


# Rule unit tests. These check that the trickier expressions fire when they should and stay quiet otherwise.
# promtool compares annotations exactly, so the test runs against a copy with the annotations removed. That
# way, rewording an annotation does not break this test.
_RULE_TESTS = """
rule_files: [{rules}]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      # 10 of 20 series per minute are slower than 0.3 s: the p95 lies far above the target.
      - series: 'scanside_scan_to_score_seconds_bucket{{job="scanside",instance="slow",le="0.3"}}'
        values: '0+10x30'
      - series: 'scanside_scan_to_score_seconds_bucket{{job="scanside",instance="slow",le="0.5"}}'
        values: '0+20x30'
      - series: 'scanside_scan_to_score_seconds_bucket{{job="scanside",instance="slow",le="+Inf"}}'
        values: '0+20x30'
      # Every series within 0.3 s.
      - series: 'scanside_scan_to_score_seconds_bucket{{job="scanside",instance="fast",le="0.3"}}'
        values: '0+20x30'
      - series: 'scanside_scan_to_score_seconds_bucket{{job="scanside",instance="fast",le="0.5"}}'
        values: '0+20x30'
      - series: 'scanside_scan_to_score_seconds_bucket{{job="scanside",instance="fast",le="+Inf"}}'
        values: '0+20x30'
      # The first failure since start: the counter appears at 1 from nothing.
      - series: 'scanside_series_failed_total{{job="scanside",instance="slow",stage="preprocess"}}'
        values: '_x20 1x10'
      # Every stage is exported at 0 from the start: a zero that appears after a restart is not a failure.
      - series: 'scanside_series_failed_total{{job="scanside",instance="fast",stage="inference"}}'
        values: '_x20 0x10'
      # 10 files a minute, 1 of them truncated: 10% of files, and well over 5 in 15 minutes.
      - series: 'scanside_files_ingested_total{{job="scanside",instance="slow"}}'
        values: '0+9x30'
      - series: 'scanside_files_quarantined_total{{job="scanside",instance="slow",reason="truncated"}}'
        values: '0+1x30'
      # One odd file on a quiet host: a high share but too few files to mean anything.
      - series: 'scanside_files_ingested_total{{job="scanside",instance="fast"}}'
        values: '0x30'
      - series: 'scanside_files_quarantined_total{{job="scanside",instance="fast",reason="not_dicom"}}'
        values: '0 1x29'
      - series: 'scanside_ready{{job="scanside",instance="slow"}}'
        values: '0x30'
      - series: 'scanside_ready{{job="scanside",instance="fast"}}'
        values: '0 1x29'
      # The PACS is down for the whole window on "slow"; "fast" delivers each SR within a minute.
      - series: 'scanside_sr_exports{{job="scanside",instance="slow",destination="pacs",state="pending"}}'
        values: '3x40'
      - series: 'scanside_sr_exports{{job="scanside",instance="fast",destination="pacs",state="pending"}}'
        values: '1 0 1 0 1 0 1 0 1 0 1 0 1 0 1 0 1 0 1 0 1 0 1 0 1 0 1 0 1 0 1 0 1 0 1 0 1 0 1 0'
      - series: 'scanside_sr_exports{{job="scanside",instance="slow",destination="pacs",state="failed"}}'
        values: '0x10 2x30'
      - series: 'scanside_sr_exports{{job="scanside",instance="fast",destination="pacs",state="failed"}}'
        values: '0x40'
    alert_rule_test:
      - eval_time: 20m
        alertname: ScanSideScanToScoreSlow
        exp_alerts:
          - exp_labels: {{severity: warning, instance: slow}}
      - eval_time: 21m
        alertname: ScanSideSeriesFailed
        exp_alerts:
          - exp_labels: {{severity: critical, instance: slow, stage: preprocess}}
      - eval_time: 25m
        alertname: ScanSideQuarantineRising
        exp_alerts:
          - exp_labels: {{severity: warning, instance: slow, reason: truncated}}
      - eval_time: 35m
        alertname: ScanSideSrExportBacklog
        exp_alerts:
          - exp_labels: {{severity: warning, job: scanside, instance: slow, destination: pacs, state: pending}}
      - eval_time: 12m
        alertname: ScanSideSrExportFailed
        exp_alerts:
          - exp_labels: {{severity: warning, job: scanside, instance: slow, destination: pacs, state: failed}}
      - eval_time: 5m
        alertname: ScanSideNotReady
        exp_alerts:
          - exp_labels: {{severity: critical, job: scanside, instance: slow}}
"""


def _without_annotations(text: str) -> str:
    out, skipping_below = [], None
    for line in text.splitlines():
        indent = len(line) - len(line.lstrip())
        if skipping_below is not None and (not line.strip() or indent > skipping_below):
            continue
        skipping_below = indent if line.strip() == "annotations:" else None
        if skipping_below is None:
            out.append(line)
    return "\n".join(out) + "\n"


@needs_promtool
def test_promtool_rule_unit_tests(tmp_path):
    rules = tmp_path / PROM_RULES.name
    rules.write_text(_without_annotations(_rules_text()), encoding="utf-8")
    assert not re.search(r"(?m)^\s*annotations:", rules.read_text(encoding="utf-8"))
    tests = tmp_path / "scanside-alerts.test.yml"
    tests.write_text(_RULE_TESTS.format(rules=rules.name), encoding="utf-8")
    _promtool("test", "rules", str(tests))
