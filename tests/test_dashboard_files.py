"""The Grafana files in deploy/grafana/ agree with their generator, with appliance/metrics.py and with the Prometheus
configuration beside them; no panel groups or labels by anything but the metrics' closed label sets. (Whether each
query returns data from a real Prometheus: tests/test_dashboard.py.)"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from test_dashboard import DASHBOARD, panel_targets
from test_deploy_files import PROM_CONFIG

from appliance.inference.triton_backend import TritonStats
from appliance.ingest.reader.errors import REJECT_REASONS
from appliance.metrics import QUARANTINE_REASONS, EvidenceMetrics, GpuMetrics, Metrics, TritonMetrics

GRAFANA = DASHBOARD.parent.parent
DATASOURCE = GRAFANA / "provisioning" / "datasources" / "scanside.yml"
PROVIDER = GRAFANA / "provisioning" / "dashboards" / "scanside.yml"
DOC = Path(__file__).resolve().parent.parent / "docs" / "dashboard.md"

# Families deliberately not on the dashboard, and why. A new metric fails test_every_metric_is_shown_or_excused
# until it is given a panel or a line here.
NOT_SHOWN = {
    "scanside_ingested_bytes": "files per second says the same to an operator",
    "scanside_files_ignored": "duplicates and late files are dropped by design; nothing for ops to do",
    "scanside_ledger_entries": "the ledger is audited with `scanside ledger verify`, not watched",
    "scanside_dicom_associations": "refusals and open connections are what needs watching",
    "scanside_dicom_instances_received": "counted again in files accepted",
    "scanside_dicom_received_bytes": "counted again in files accepted",
    "scanside_grpc_denied": "a security event for the site's audit, only present once a call was refused",
    "scanside_hl7_refusals": "MLLP connection refusals: for the interface engine's owner, in the journal too",
}
IDENTIFYING = re.compile(r"(?i)patient|study|series_uid|accession|station_name|name\b|uid\b")


def _families() -> dict[str, set[str]]:
    """Every family the appliance can export -> its label names (GPU and evidence ones included)."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.watch_series_states(lambda: {})
    metrics.watch_exports(lambda: {})
    metrics.watch_truth(lambda: {"pending": 0})
    metrics.preset_hl7([("AA", "stored")], ["peer"])
    EvidenceMetrics(registry, [("f", "all", "all")], ["ood_rate"], ["all"], ["f"])
    gpu = GpuMetrics(registry)
    gpu.set_engine({"plan": "x"})
    gpu.watch_gpu(lambda: _Sample(), "nvml")
    TritonMetrics(registry).watch(lambda: TritonStats(up=True, model="m", model_version="1", server_version="2"))
    families: dict[str, set[str]] = {}
    for family in registry.collect():
        labels = families.setdefault(family.name, set())
        for sample in family.samples:
            labels.update(sample.labels)
    return families


class _Sample:
    memory_used_bytes = memory_total_bytes = utilization = temperature_c = 1.0


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def _exprs() -> list[str]:
    return [t["expr"] for _, t in panel_targets(_dashboard())]


def _generator():
    spec = importlib.util.spec_from_file_location("make_dashboard", GRAFANA / "make_dashboard.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_json_is_what_the_generator_writes():
    assert DASHBOARD.read_text(encoding="utf-8") == _generator().render(), \
        "run python deploy/grafana/make_dashboard.py and commit the JSON"


def test_panels_are_placed_and_described():
    panels = _dashboard()["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    for p in panels:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        if p["type"] != "row":
            assert p["description"] and p["targets"], p["title"]
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
    # every panel starts below the one above it in its column: no two overlap
    cells: set[tuple[int, int]] = set()
    for p in panels:
        g = p["gridPos"]
        cell = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cell & cells, p["title"]
        cells |= cell


def test_every_query_names_the_box_and_only_registered_metrics():
    families = _families()
    series = set(families) | {f + s for f in families for s in ("_total", "_bucket", "_sum", "_count", "_info")}
    for expr in _exprs():
        names = set(re.findall(r"\b(?:scanside_[a-z0-9_]+|up)\b(?=\s*\{)", expr))
        assert names, expr
        assert names <= series | {"up"}, f"not exported by appliance/metrics.py: {names - series} in {expr}"
        for selector in re.findall(r"\{([^}]*)\}", expr):
            assert selector.startswith('job="scanside", site="$site", appliance="$appliance", instance="$instance"'), \
                expr


def test_every_metric_is_shown_or_excused():
    families = set(_families())
    shown = {f for f in families if any(re.search(rf"\b{f}(_total|_bucket|_sum|_count|_info)?\b", e)
                                        for e in _exprs())}
    missing = sorted(families - shown - set(NOT_SHOWN))
    assert not missing, f"metrics with no panel and no reason in NOT_SHOWN: {missing}"
    assert not set(NOT_SHOWN) - families, "NOT_SHOWN names metrics that do not exist"
    assert not set(NOT_SHOWN) & shown, "NOT_SHOWN names metrics that are shown"


def test_grouped_and_legend_labels_are_closed_sets_never_identifiers():
    families = _families()
    known = set().union(*families.values()) | {"job", "instance"}
    used = set()
    for _, t in panel_targets(_dashboard()):
        for group in re.findall(r"\bby \(([^)]*)\)", t["expr"]):
            used |= {label.strip() for label in group.split(",")} - {"le"}
        used |= set(re.findall(r"\{\{(\w+)\}\}", t["legendFormat"]))
    assert used <= known, used - known
    assert not [label for label in known | used if IDENTIFYING.search(label)]


def test_quarantine_reasons_preset_in_metrics_are_the_readers():
    assert set(QUARANTINE_REASONS) == REJECT_REASONS and len(QUARANTINE_REASONS) == len(REJECT_REASONS)


def _yaml(path: Path) -> Any:
    yaml = pytest.importorskip("yaml", reason="PyYAML is not a declared dependency (it comes with the train extra)")
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def test_provisioning_points_at_the_prometheus_and_the_folder_the_docs_name():
    (source,) = _yaml(DATASOURCE)["datasources"]
    prometheus = _yaml(PROM_CONFIG)
    assert source["type"] == "prometheus" and source["access"] == "proxy"
    own = [c for c in prometheus["scrape_configs"] if c["job_name"] == "prometheus"]
    assert source["url"] == "http://" + own[0]["static_configs"][0]["targets"][0]
    # $__rate_interval is computed from this: it must be the scrape interval Prometheus really uses
    assert source["jsonData"]["timeInterval"] == prometheus["global"]["scrape_interval"]
    (provider,) = _yaml(PROVIDER)["providers"]
    assert provider["type"] == "file"
    doc = DOC.read_text(encoding="utf-8")
    assert provider["options"]["path"] in doc and source["uid"] in doc
    assert _dashboard()["uid"] in doc


def test_the_doc_describes_every_panel():
    doc = DOC.read_text(encoding="utf-8")
    missing = [p["title"] for p in _dashboard()["panels"] if p["title"] not in doc]
    assert not missing, f"docs/dashboard.md does not name these panels: {missing}"
