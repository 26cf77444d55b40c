"""Writes deploy/grafana/dashboards/scanside.json, the ScanSide ops dashboard, from the panel list below.

    python deploy/grafana/make_dashboard.py          # rewrite the JSON after changing a panel here
    python deploy/grafana/make_dashboard.py --check  # exit 1 if the committed JSON is not what this writes

Standard library only. Every query names the box by `job="scanside", site="$site", appliance="$appliance",
instance="$instance"`: at a central Prometheus the agents' external labels site and appliance tell the boxes apart
(docs/fleet.md); on a box's own Prometheus the series have no such labels, the two variables find no value and
Grafana puts an empty string, which matches a label that is absent. No label of any ScanSide metric carries a
patient, study or series identifier (appliance/metrics.py). docs/dashboard.md describes each panel,
and tests/test_dashboard.py runs every query below against a real Prometheus scraping a real appliance.
Research software, not for clinical or diagnostic use.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards" / "scanside.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
BOX = 'job="scanside", site="$site", appliance="$appliance", instance="$instance"'
RATE = "$__rate_interval"


def sel(metric: str, extra: str = "") -> str:
    """`metric{job=..., instance=..., extra}`: the selected box's series."""
    return f"{metric}{{{BOX}{', ' + extra if extra else ''}}}"


def quantile(q: float, bucket: str, by: str = "") -> str:
    """The q-quantile of a histogram over the rate window, per `by` labels."""
    return f"histogram_quantile({q}, sum by ({by + ', ' if by else ''}le) (rate({sel(bucket)}[{RATE}])))"


def per_minute(counter: str, by: str = "") -> str:
    return f"60 * sum{f' by ({by}) ' if by else ''}(rate({sel(counter)}[{RATE}]))"


def in_range(counter: str, by: str) -> str:
    """How many in the dashboard's time range, per `by` label (an instant query)."""
    return f"sum by ({by}) (increase({sel(counter)}[$__range]))"


def target(expr: str, legend: str = "", instant: bool = False, table: bool = False) -> dict[str, Any]:
    t: dict[str, Any] = {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend or "__auto"}
    if instant or table:
        t.update(instant=True, range=False)
    else:
        t.update(instant=False, range=True)
    if table:
        t["format"] = "table"
    return t


class Layout:
    """Panels placed left to right in rows of 24 grid units; `row()` starts a collapsible section."""

    def __init__(self) -> None:
        self.panels: list[dict[str, Any]] = []
        self.x = self.y = self.height = 0

    def row(self, title: str) -> None:
        self.y += self.height
        self.x = self.height = 0
        self.panels.append({"type": "row", "title": title, "collapsed": False, "panels": [],
                            "gridPos": {"x": 0, "y": self.y, "w": 24, "h": 1}})
        self.y += 1

    def add(self, panel: dict[str, Any], w: int, h: int = 8) -> None:
        if self.x + w > 24:
            self.x, self.y, self.height = 0, self.y + self.height, 0
        panel["gridPos"] = {"x": self.x, "y": self.y, "w": w, "h": h}
        self.x += w
        self.height = max(self.height, h)
        self.panels.append(panel)


def _refs(targets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"refId": chr(ord("A") + i), **t} for i, t in enumerate(targets)]


def timeseries(title: str, description: str, targets: list[dict[str, Any]], unit: str = "short",
               lines: tuple[float, ...] = (), stack: bool = False) -> dict[str, Any]:
    """A time series; `lines`: thresholds drawn as dashed red lines (an alert's threshold)."""
    steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
    steps += [{"color": "red", "value": v} for v in lines]
    custom: dict[str, Any] = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never",
                              "spanNulls": False, "thresholdsStyle": {"mode": "dashed" if lines else "off"}}
    if stack:
        custom["stacking"] = {"mode": "normal", "group": "A"}
    return {"type": "timeseries", "title": title, "description": description, "datasource": DATASOURCE,
            "fieldConfig": {"defaults": {"unit": unit, "min": 0, "custom": custom,
                                         "thresholds": {"mode": "absolute", "steps": steps}},
                            "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                        "tooltip": {"mode": "multi", "sort": "desc"}},
            "targets": _refs(targets)}


def stat(title: str, description: str, targets: list[dict[str, Any]], unit: str = "short",
         mappings: dict[str, tuple[str, str]] | None = None, red_at: float | None = None) -> dict[str, Any]:
    """The last value, big. `mappings`: value -> (text, colour); `red_at`: the value from which it turns red."""
    steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
    if red_at is not None:
        steps.append({"color": "red", "value": red_at})
    maps = [{"type": "value", "options": {v: {"text": text, "color": colour, "index": i}
                                          for i, (v, (text, colour)) in enumerate((mappings or {}).items())}}]
    return {"type": "stat", "title": title, "description": description, "datasource": DATASOURCE,
            "fieldConfig": {"defaults": {"unit": unit, "mappings": maps if mappings else [],
                                         "thresholds": {"mode": "absolute", "steps": steps},
                                         "color": {"mode": "thresholds"}},
                            "overrides": []},
            "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                        "colorMode": "background" if mappings or red_at is not None else "value",
                        "graphMode": "none", "textMode": "auto", "orientation": "auto", "justifyMode": "auto"},
            "targets": _refs(targets)}


def bars(title: str, description: str, targets: list[dict[str, Any]], red_at: float = 1) -> dict[str, Any]:
    """Counts in the time range, one bar per label value, red from `red_at`."""
    return {"type": "bargauge", "title": title, "description": description, "datasource": DATASOURCE,
            "fieldConfig": {"defaults": {"unit": "short", "min": 0, "decimals": 0,
                                         "thresholds": {"mode": "absolute", "steps": [
                                             {"color": "green", "value": None}, {"color": "red", "value": red_at}]},
                                         "color": {"mode": "thresholds"}},
                            "overrides": []},
            "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                        "orientation": "horizontal", "displayMode": "basic", "showUnfilled": True,
                        "valueMode": "color", "namePlacement": "left", "sizing": "auto"},
            "targets": _refs(targets)}


def table(title: str, description: str, targets: list[dict[str, Any]], hide: tuple[str, ...] = ()) -> dict[str, Any]:
    """An instant query's label sets as rows; `hide`: columns left out (Time, __name__, job are always)."""
    excluded = {name: True for name in ("Time", "__name__", "job", *hide)}
    return {"type": "table", "title": title, "description": description, "datasource": DATASOURCE,
            "fieldConfig": {"defaults": {}, "overrides": []},
            "options": {"showHeader": True, "cellHeight": "sm"},
            "transformations": [{"id": "merge", "options": {}},
                                {"id": "organize", "options": {"excludeByName": excluded}}],
            "targets": _refs(targets)}


def panels() -> list[dict[str, Any]]:
    g = Layout()
    ev = 'manufacturer="$manufacturer", station="all"'

    g.row("Health")
    g.add(stat("Metrics endpoint", "Prometheus' last scrape of the appliance: down means the process or its "
               "metrics port is gone (alert ScanSideDown).", [target(f"up{{{BOX}}}", instant=True)],
               mappings={"0": ("down", "red"), "1": ("up", "green")}), w=4, h=4)
    g.add(stat("Ready", "1 once the engine is loaded and warmed up; 0 during start-up and shutdown (alert "
               "ScanSideNotReady).", [target(sel("scanside_ready"), instant=True)],
               mappings={"0": ("not ready", "red"), "1": ("ready", "green")}), w=4, h=4)
    g.add(stat("Series by state", "Series this appliance knows, by state, read from its database at each scrape.",
               [target(f"sum by (state) ({sel('scanside_series')})", "{{state}}", instant=True)]), w=10, h=4)
    g.add(stat("SRs failed for good", "SRs whose last allowed try failed: not in PACS until someone runs "
               "`scanside exports retry` (alert ScanSideSrExportFailed). Only with [export] on.",
               [target("sum(" + sel("scanside_sr_exports", 'state="failed"') + ")", instant=True)], red_at=1),
          w=6, h=4)

    g.row("Scan to score and throughput")
    g.add(timeseries("Scan-to-score", "From the last file of a series seen to its result stored: median, 95th and "
                     "99th percentile over the rate window. The dashed line is the 0.3 s target of alert "
                     "ScanSideScanToScoreSlow (it holds where the tags give the image count).",
                     [target(quantile(q, "scanside_scan_to_score_seconds_bucket"), f"p{round(q * 100)}")
                      for q in (0.5, 0.95, 0.99)], unit="s", lines=(0.3,)), w=12)
    g.add(timeseries("Stage time, 95th percentile", "Time per item in each pipeline stage (parse is per file, the "
                     "others per series). The slow stage when scan-to-score rises.",
                     [target(quantile(0.95, "scanside_stage_duration_seconds_bucket", "stage"), "{{stage}}")],
                     unit="s"), w=12)
    g.add(timeseries("Series scored per minute", "Results stored, split by whether a person must look "
                     "(near threshold, rare finding, out of distribution, not assessable).",
                     [target(per_minute("scanside_results_total", "needs_review"), "needs review: {{needs_review}}")],
                     stack=True), w=8)
    g.add(timeseries("Files in per second", "DICOM files accepted into the spool, and parses cut short by a file "
                     "still being written (retried).",
                     [target(f"sum(rate({sel('scanside_files_ingested_total')}[{RATE}]))", "accepted"),
                      target(f"sum(rate({sel('scanside_file_parse_retries_total')}[{RATE}]))", "parse retried")]),
          w=8)
    g.add(timeseries("Inference queue and batch size", "Prepared series waiting for the engine (ingest blocks when "
                     "it is full; the dashed line is alert ScanSideInferenceQueueHigh's 12, for queue_size 16), and "
                     "the mean series per inference call.",
                     [target(sel("scanside_inference_queue_depth"), "queue depth"),
                      target(f"sum(rate({sel('scanside_inference_batch_size_sum')}[{RATE}])) / "
                             f"sum(rate({sel('scanside_inference_batch_size_count')}[{RATE}]))", "mean batch size")],
                     lines=(12,)), w=8)

    g.row("Quarantine, failures, not assessable")
    g.add(timeseries("Quarantined, failed, not assessable per minute", "Files quarantined, series failed and "
                     "series found not assessable, per minute. The bars beside say why.",
                     [target(per_minute("scanside_files_quarantined_total"), "files quarantined"),
                      target(per_minute("scanside_series_failed_total"), "series failed"),
                      target(per_minute("scanside_series_not_assessable_total"), "not assessable (by reason)")]),
          w=6, h=10)
    g.add(bars("Files quarantined, by reason", "In the time range. Files set aside under quarantine/<reason>/ "
               "with a .reason.json; a steady stream of one reason usually means a scanner or router changed its "
               "export (alert ScanSideQuarantineRising).",
               [target(in_range("scanside_files_quarantined_total", "reason"), "{{reason}}", instant=True)]),
          w=6, h=10)
    g.add(bars("Series failed, by stage", "In the time range. A failed series is never scored: its images are "
               "under quarantine/failed_series/<key>/ with the reason (alert ScanSideSeriesFailed).",
               [target(in_range("scanside_series_failed_total", "stage"), "{{stage}}", instant=True)]), w=6, h=10)
    g.add(bars("Not assessable, by reason", "In the time range. Series the input quality gate refused: stored with "
               "no finding positive, shown as not assessable. A series can count under several reasons.",
               [target(in_range("scanside_series_not_assessable_total", "reason"), "{{reason}}", instant=True)]),
          w=6, h=10)
    g.add(bars("DICOM receiver refusals, by reason", "In the time range. Associations and C-STOREs the receiver "
               "refused (only with [dicom] on; all 0 otherwise).",
               [target(in_range("scanside_dicom_rejections_total", "reason"), "{{reason}}", instant=True)]), w=12,
          h=10)
    g.add(timeseries("DICOM connections", "Connections now open to the C-STORE receiver: negotiating or associated.",
                     [target(f"sum by (state) ({sel('scanside_dicom_connections')})", "{{state}}")]), w=12, h=10)
    g.add(bars("DICOM instances received, by transfer syntax", "In the time range. How senders encode what they "
               "send: uncompressed, lossless or lossy compression (the receiver prefers them in that order; "
               "docs/conformance.md).",
               [target(in_range("scanside_dicom_instances_by_transfer_syntax_total", "transfer_syntax"),
                       "{{transfer_syntax}}", instant=True)]), w=24, h=8)

    g.row("Results to PACS (DICOM SR)")
    g.add(timeseries("SR queue", "SRs in the export queue by destination and state: pending waits for a try, "
                     "failed is out of tries. Pending that never empties means the PACS is unreachable (alert "
                     "ScanSideSrExportBacklog).",
                     [target(f"sum by (destination, state) ({sel('scanside_sr_exports')})",
                             "{{destination}} {{state}}")]), w=8)
    g.add(timeseries("SR tries per minute", "Tries to deliver an SR by destination and outcome: delivered, retry "
                     "(queued again) or failed (no tries left).",
                     [target(per_minute("scanside_sr_export_tries_total", "destination, outcome"),
                             "{{destination}} {{outcome}}")]), w=8)
    g.add(timeseries("Result to SR delivered, 95th percentile", "From a result stored to its SR delivered, per "
                     "destination: seconds while the PACS is up, hours across an outage.",
                     [target(quantile(0.95, "scanside_sr_export_delay_seconds_bucket", "destination"),
                             "{{destination}}")],
                     unit="s"), w=8)

    g.row("Storage commitment")
    g.add(timeseries("Commitment requests per minute", "Storage commitment requests from senders to the receiver "
                     "(scp) and from the PACS destination to PACS (scu), by outcome: accepted, refused (a failure "
                     "status), not_recorded (the database could not take it), not_offered (the PACS does not accept "
                     "the SOP class), no_response.",
                     [target(per_minute("scanside_commitment_requests_total", "side, outcome"),
                             "{{side}} {{outcome}}")]), w=8)
    g.add(timeseries("Committed and failed instances per minute", "Instances in storage commitment results, by "
                     "side and result: committed, or the Failure Reason. On the scp side a failure means a sender "
                     "asked about an instance the receiver never answered Success for; on the scu side the PACS did "
                     "not commit an SR (its try is retried).",
                     [target(per_minute("scanside_commitment_instances_total", "side, result"),
                             "{{side}} {{result}}")]), w=8)
    g.add(timeseries("Commitment reports per minute", "Reports sent to senders (scp: on their own association or "
                     "a new one; failed: given up, a sender is left without its answer) and received from PACS "
                     "(scu: matched to a waiting request, or unmatched).",
                     [target(per_minute("scanside_commitment_reports_total", "side, association, outcome"),
                             "{{side}} {{association}} {{outcome}}")]), w=8)

    g.row("Backend and GPU")
    g.add(table("Model and backend", "The engine bundle and backend in use, and the appliance version.",
                [target(sel("scanside_model_info"), table=True)], hide=("Value",)), w=12, h=5)
    g.add(stat("TensorRT fallback", "1: TensorRT was configured but could not be used, and ONNX Runtime on the CPU "
               "serves instead (the reason is in the journal and GetModelInfo). The series exists only where "
               "TensorRT is configured; elsewhere this shows 0 through `or vector(0)`.",
               [target(f"max({sel('scanside_backend_fallback')}) or vector(0)", instant=True)],
               mappings={"0": ("no", "green"), "1": ("fell back to CPU", "red")}), w=4, h=5)
    g.add(stat("GPU statistics", "Whether the GPU sampler (NVML on a T4, tegrastats or jtop on a Jetson) gave its "
               "last sample. Only where TensorRT runs; a CPU box has no GPU series at all, and the GPU panels stay "
               "empty.", [target(f"max by (source) ({sel('scanside_gpu_stats_up')})", "{{source}}", instant=True)],
               mappings={"0": ("no sample", "red"), "1": ("sampling", "green")}), w=8, h=5)
    g.add(table("TensorRT plan", "The plan in use: file, TensorRT version, GPU, compute capability, precision, "
                "build time, encoder hash. Only where TensorRT runs.",
                [target(sel("scanside_engine_build_info"), table=True)], hide=("Value",)), w=24, h=5)
    g.add(timeseries("GPU utilisation", "Busy fraction over the sampler's interval.",
                     [target(sel("scanside_gpu_utilization_ratio"), "utilisation")], unit="percentunit"), w=8)
    g.add(timeseries("GPU memory", "In use and in total (on a Jetson: the RAM that CPU and GPU share).",
                     [target(sel("scanside_gpu_memory_used_bytes"), "used ({{memory}})"),
                      target(sel("scanside_gpu_memory_total_bytes"), "total ({{memory}})")], unit="bytes"), w=8)
    g.add(timeseries("GPU temperature", "GPU sensor (Jetson boards without one: the junction maximum).",
                     [target(sel("scanside_gpu_temperature_celsius"), "temperature")], unit="celsius"), w=8)
    g.add(stat("Triton", "1: the Triton Inference Server answered the last request; 0: a batch failed after its "
               "retries (it ran on local ONNX Runtime, or failed without engine.fallback_to_onnxruntime) or Triton "
               "could not be used at start (10 minutes: alert ScanSideTritonOut). Only where engine.backend = "
               "\"triton\"; elsewhere No data.",
               [target(f"max({sel('scanside_triton_up')})", instant=True)],
               mappings={"0": ("out: local ONNX Runtime or failing", "red"), "1": ("serving", "green")}), w=6, h=5)
    g.add(timeseries("Triton requests per minute", "Inference requests to Triton by outcome (ok, retried, failed) "
                     "and the batches local ONNX Runtime ran instead (docs/triton.md).",
                     [target(per_minute("scanside_triton_requests_total", "outcome"), "{{outcome}}"),
                      target(per_minute("scanside_triton_local_batches_total"), "on local ONNX Runtime")]),
          w=10, h=5)
    g.add(table("Triton model", "The model Triton serves: name, the version of its last answer (each result "
                "records it too), the server's version.",
                [target(sel("scanside_triton_model_info"), table=True)], hide=("Value",)), w=8, h=5)

    g.row("Ground truth, live performance, drift")
    g.add(timeseries("Studies and ground truth", "Scored assessable studies under the current bundle, and those "
                     "matched with a final report or assessment (no growth for days: alert ScanSideNoGroundTruth); "
                     "report records by state.",
                     [target(f"sum by (state) ({sel('scanside_evidence_studies')})", "studies {{state}}"),
                      target(f"sum by (state) ({sel('scanside_truth_records')})", "reports {{state}}")]), w=8)
    g.add(timeseries("Final reports received per minute", "HL7 ORU messages answered by the MLLP listener, by ACK "
                     "code: AA stored (or not needed), AE the sender retries, AR refused; and the MLLP connections "
                     "open now (a RIS usually holds one). Only with [hl7] on.",
                     [target(per_minute("scanside_hl7_messages_total", "ack"), "{{ack}}"),
                      target(f"max({sel('scanside_hl7_connections')})", "connections open")]), w=8)
    g.add(stat("Evidence age", "Seconds since the evidence monitor last recomputed (every "
               "evidence.refresh_interval_s, 300 s by default; alert ScanSideEvidenceStale after 30 min).",
               [target(f"time() - max({sel('scanside_evidence_refreshed_timestamp_seconds')})", instant=True)],
               unit="s", red_at=1800), w=8)
    g.add(timeseries("Sensitivity", "Per finding, for the chosen manufacturer ('all': pooled), all stations: the "
                     "estimate among cases with ground truth. Gaps: too few cases yet (NaN). Alert "
                     "ScanSideSensitivityLow watches the Wilson lower bound per slice.",
                     [target(sel("scanside_evidence_sensitivity", f'{ev}, bound="estimate"'), "{{finding}}")],
                     unit="percentunit"), w=8)
    g.add(timeseries("Specificity", "As Sensitivity, for the negatives.",
                     [target(sel("scanside_evidence_specificity", f'{ev}, bound="estimate"'), "{{finding}}")],
                     unit="percentunit"), w=8)
    g.add(timeseries("AUROC", "Per finding; NaN (a gap) until a slice has evidence.min_auroc_cases positives and "
                     "as many negatives.",
                     [target(sel("scanside_evidence_auroc", f'{ev}, bound="estimate"'), "{{finding}}")]), w=8)
    g.add(timeseries("Calibration error", "Expected calibration error of the calibrated probability per finding "
                     "(alert ScanSideCalibrationPoor above 0.15 over 100 cases).",
                     [target(sel("scanside_evidence_calibration_error", ev), "{{finding}}")], lines=(0.15,)), w=8)
    g.add(timeseries("Brier score", "Brier score of the calibrated probability per finding.",
                     [target(sel("scanside_evidence_brier_score", ev), "{{finding}}")]), w=8)
    g.add(timeseries("Cases with ground truth", "Scored, assessable, matched cases per truth, over all findings.",
                     [target(f"sum by (truth) ({sel('scanside_evidence_cases', ev)})", "{{truth}}")]), w=8)
    g.add(table("Drifting signals", "Each drift signal that rejects now, by manufacturer (1), beside those that "
                "do not (0); alert ScanSideInputDrift after 30 minutes. Signals: ood_rate, ood_distance, "
                "positive_rate:<finding>.",
                [target(f"max by (manufacturer, signal) ({sel('scanside_evidence_drifting')})", table=True)]),
          w=8, h=10)
    g.add(timeseries("Out-of-distribution rate", "Share of the drift window's studies beyond the bundle's OOD "
                     "threshold, by manufacturer.",
                     [target(sel("scanside_evidence_ood_rate"), "{{manufacturer}}")], unit="percentunit"), w=8, h=10)
    g.add(timeseries("OOD distance and window", "Mean out-of-distribution distance over the window, and the "
                     "window's studies, for the chosen manufacturer.",
                     [target(sel("scanside_evidence_ood_distance_mean", 'manufacturer="$manufacturer"'),
                             "mean OOD distance"),
                      target(sel("scanside_evidence_window_studies", 'manufacturer="$manufacturer"'),
                             "studies in window")]), w=8, h=10)
    g.add(timeseries("Positive rate against the bank", "Per finding, the window's positive rate divided by the "
                     "bank's prevalence, for the chosen manufacturer: 1 is as expected.",
                     [target(sel("scanside_evidence_positive_rate_ratio", 'manufacturer="$manufacturer"'),
                             "{{finding}}")]), w=24)
    for i, panel in enumerate(g.panels, start=1):
        panel["id"] = i
    return g.panels


def variable(name: str, label: str, query: str, current: str = "") -> dict[str, Any]:
    v: dict[str, Any] = {"name": name, "label": label, "type": "query", "datasource": DATASOURCE,
                         "definition": query, "query": {"query": query, "refId": name}, "refresh": 2,
                         "sort": 1, "multi": False, "includeAll": False, "hide": 0, "options": []}
    v["current"] = {"text": current, "value": current} if current else {}
    return v


def dashboard() -> dict[str, Any]:
    return {
        "uid": "scanside-ops",
        "title": "ScanSide appliance",
        "description": "Research software, not for clinical or diagnostic use. One appliance at a time "
                       "(choose the site and appliance at a central Prometheus, the instance on a box's own); "
                       "docs/dashboard.md describes every panel.",
        "tags": ["scanside"],
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "time": {"from": "now-6h", "to": "now"},
        "timezone": "browser",
        "version": 1,
        "annotations": {"list": []},
        "links": [],
        "templating": {"list": [
            {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
             "hide": 0, "current": {}, "options": [], "refresh": 1, "regex": ""},
            variable("site", "Site", 'label_values(scanside_ready{job="scanside"}, site)'),
            variable("appliance", "Appliance",
                     'label_values(scanside_ready{job="scanside", site="$site"}, appliance)'),
            variable("instance", "Instance",
                     'label_values(scanside_ready{job="scanside", site="$site", appliance="$appliance"}, instance)'),
            variable("manufacturer", "Manufacturer (evidence)",
                     f"label_values(scanside_evidence_window_studies{{{BOX}}}, manufacturer)", current="all"),
        ]},
        "panels": panels(),
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if argv[1:] == ["--check"]:
        same = OUT.exists() and OUT.read_text(encoding="utf-8") == text
        if not same:
            print(f"{OUT} is not what {Path(__file__).name} writes; run it", file=sys.stderr)
        return 0 if same else 1
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT} ({len(dashboard()['panels'])} panels)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
