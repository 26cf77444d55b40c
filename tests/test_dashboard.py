"""The Grafana dashboard (deploy/grafana/dashboards/scanside.json) against a real Prometheus: the Debian `prometheus`
server on a free loopback port, with its own storage folder and a 1 s scrape interval, scrapes a real appliance
(watch folder, SQLite, ONNX Runtime, gRPC, an SR folder destination, the MLLP listener, the evidence monitor)
while the synthetic scanner writes studies into its watch folder, a non-DICOM file lands there and a RIS sends
final reports. Then every query of every panel, with Grafana's variables replaced by concrete values, must parse
and return data, and every alert rule of deploy/prometheus/ must evaluate without error on what was scraped.

Grafana itself is not installable here (no Debian package), so its rendering is not tested; the queries are.

What stands in: this host has no GPU sampler that works (no NVML, no Jetson), and TensorRT is not installed, so
the GPU families are created the way `appliance.pipeline.build.watch_gpu` creates them on a TensorRT box
(`GpuMetrics` on the appliance's own registry, an engine-info dict with the TensorRT backend's keys) and fed by the
real NVML sampler where one opens, else by a fixed `GpuSample`. Everything else is the appliance's own metrics.
"""

from __future__ import annotations

import functools
import json
import math
import re
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_for

from appliance.dev.oru import MllpClient, oru_message
from appliance.dev.served import free_port
from appliance.dev.synth import SyntheticScanner, plan_study
from appliance.inference.gpu_stats import GpuSample, open_sampler
from appliance.metrics import GpuMetrics

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "scanside.json"
RULES = ROOT / "deploy" / "prometheus" / "scanside-alerts.yml"
PROMETHEUS, PROMTOOL = shutil.which("prometheus"), shutil.which("promtool")
STUDIES = 4
# Grafana's own variables, as concrete values at a 1 s scrape interval: windows longer than the whole run, so that
# each covers every event of it even on a slow machine (rate() extrapolates no further than the samples it has).
WINDOWS = {"$__rate_interval": "5m", "$__range": "5m", "$__interval": "1s"}
# The only statistics that may be NaN in this short run, and why: with a handful of matched studies these are "not
# enough cases yet" by design (appliance/metrics.py pre-sets them to NaN). Every other query must give a number.
MAY_BE_NAN = {
    "scanside_evidence_sensitivity": "needs positives among the matched cases",
    "scanside_evidence_specificity": "needs negatives among the matched cases",
    "scanside_evidence_auroc": "needs evidence.min_auroc_cases (20) positives and negatives",
    "scanside_evidence_calibration_error": "per slice, needs matched cases in it",
    "scanside_evidence_brier_score": "per slice, needs matched cases in it",
    "scanside_evidence_ood_rate": "needs evidence.min_window_studies after the baseline",
    "scanside_evidence_ood_distance_mean": "needs evidence.min_window_studies after the baseline",
    "scanside_evidence_positive_rate_ratio": "needs evidence.min_window_studies after the baseline",
}

# Panels that must show what this run did: their first query has a value above 0.
SHOW_THIS_RUN = {
    "Series by state": "studies scored", "Scan-to-score": "studies scored", "Series scored per minute": "the same",
    "Files in per second": "files accepted",
    "Files quarantined, by reason": "the non-DICOM file", "SR queue": "SRs delivered to the folder",
    "SR tries per minute": "the same", "Result to SR delivered, 95th percentile": "the same",
    "Final reports received per minute": "two reports, AA", "Studies and ground truth": "two matched",
    "Cases with ground truth": "the matched studies' findings", "Evidence age": "refreshed every second",
}


def panel_targets(dashboard: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for panel in dashboard["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            found += [(inner["title"], t) for t in inner.get("targets", [])]
    return found


def concrete(expr: str, values: dict[str, str]) -> str:
    for name, value in sorted(values.items(), key=lambda kv: -len(kv[0])):  # $__range before a shorter prefix
        expr = expr.replace(name, value).replace("${" + name[1:] + "}", value)
    left = re.findall(r"\$\{?\w+", expr)
    assert not left, f"a Grafana variable the test does not know: {left} in {expr}"
    return expr


class Prometheus:
    """A Prometheus server of its own on a free loopback port. Subclasses (tests/test_fleet_prometheus.py) change
    its command line (`args`), its environment, and reach it over TLS (`scheme`, `context`)."""

    scheme = "http"
    context: ssl.SSLContext | None = None  # the client side of TLS, with a client certificate where one is asked for
    env: dict[str, str] | None = None  # the process' environment; None: this one's

    def __init__(self, root: Path, target: str, interval_s: int = 1) -> None:
        self.port = free_port()
        self.root = root
        shutil.copy(RULES, root / RULES.name)
        self.config = root / "prometheus.yml"
        self.config.write_text(
            f"global:\n  scrape_interval: {interval_s}s\n  evaluation_interval: {interval_s}s\n"
            f"rule_files: [{RULES.name}]\n"
            f"scrape_configs:\n  - job_name: scanside\n    scrape_timeout: {interval_s}s\n"
            f"    static_configs:\n      - targets: ['{target}']\n", encoding="utf-8")
        self.proc: subprocess.Popen[bytes] | None = None

    def args(self) -> list[str]:
        return [f"--config.file={self.config}", f"--storage.tsdb.path={self.root / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=1h"]

    def start(self) -> Prometheus:
        self.log = open(self.root / "prometheus.log", "wb")  # noqa: SIM115 - held by the child until stop()
        self.proc = subprocess.Popen([PROMETHEUS, *self.args()],  # type: ignore[list-item]
                                     stdout=self.log, stderr=subprocess.STDOUT, env=self.env)
        try:
            wait_for(self.ready, timeout=30, interval=0.2, what="prometheus ready")
        except BaseException:
            self.stop()
            raise
        return self

    def ready(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, (self.root / "prometheus.log").read_text()
        try:
            with urllib.request.urlopen(f"{self.scheme}://127.0.0.1:{self.port}/-/ready", timeout=2,
                                        context=self.context) as reply:
                return reply.status == 200
        except OSError:
            return False

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.scheme}://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10, context=self.context) as reply:
                answer = json.load(reply)
        except urllib.error.HTTPError as exc:  # 400 for a query that does not parse: say why
            raise AssertionError(f"{path} {params}: {exc.code} {exc.read().decode()}") from None
        assert answer["status"] == "success", answer
        return answer["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] in ("vector", "scalar"), data
        return data["result"] if data["resultType"] == "vector" else [{"metric": {}, "value": data["result"]}]

    def value(self, expr: str) -> float:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else math.nan

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)
        self.log.close()


def check_variables(prom: Prometheus, dashboard: dict[str, Any], values: dict[str, str]) -> None:
    """Each query variable of the dashboard, asked as Grafana asks it (label_values: the label's values among the
    series its selector matches, with the variables before it put in), offers the value given for it in `values`;
    one given as "" must find nothing, which is how Grafana comes to put "" (its "None")."""
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        m = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["query"]["query"])
        assert m, variable
        offered = prom.api(f"label/{m.group(2)}/values", **{"match[]": concrete(m.group(1), values)})
        wanted = values["$" + variable["name"]]
        assert (wanted in offered) if wanted else offered == [], (variable["name"], wanted, offered)


def stand_in_triton(registry) -> None:
    """The Triton families a box with engine.backend = "triton" exports (appliance.pipeline.build.watch_triton), from
    fixed stats: tests/test_triton_server.py runs the real ones against a real tritonserver."""
    from appliance.inference.triton_backend import TritonStats
    from appliance.metrics import TritonMetrics

    stats = TritonStats(up=True, requests={"ok": 12, "retried": 1, "failed": 0}, model="scanside_encoder",
                        model_version="1", server_version="stand-in")
    TritonMetrics(registry).watch(lambda: stats)


def stand_in_gpu(registry) -> str:
    """The GPU families a TensorRT box exports (appliance.pipeline.build.watch_gpu), on this appliance's registry."""
    gpu = GpuMetrics(registry)
    gpu.fallback.set(0)
    gpu.set_engine({"plan": "encoder.b4.fp16.plan", "tensorrt_version": "stand-in", "gpu": "stand-in",
                    "compute_capability": "0.0", "precision": "fp16", "typing": "strong",
                    "profile_max_batch": "4", "built_at": "stand-in", "onnx_sha256": "0" * 16,
                    "cuda_binding": "stand-in"})
    sampler = open_sampler("nvml")
    if sampler is not None:
        gpu.watch_gpu(sampler.sample, sampler.source)
        return "nvml"
    fixed = GpuSample("nvml", memory_used_bytes=2.0e9, memory_total_bytes=16.0e9, utilization=0.25,
                      temperature_c=48.0, at=time.monotonic())
    gpu.watch_gpu(lambda: fixed, "nvml")
    return "fixed sample"


@pytest.mark.skipif(PROMETHEUS is None, reason="the prometheus server is not on PATH (Debian package 'prometheus'; "
                                               ".ci/run installs it)")
def test_every_panel_query_returns_data_from_a_real_prometheus(appliance, tmp_path):
    sr_folder = tmp_path / "sr"
    app = appliance(export={"folder": str(sr_folder)}, hl7={"enabled": True, "port": 0},
                    evidence={"refresh_interval_s": 1})
    stand_in_gpu(app.registry)
    stand_in_triton(app.registry)
    instance = f"127.0.0.1:{app.metrics_port}"
    (tmp_path / "prom").mkdir()
    prom = Prometheus(tmp_path / "prom", instance).start()
    try:
        plans = [plan_study(seed=70 + i, vendor="AB"[i % 2], n_slices=8, n_phases=20, matrix=(160, 160))
                 for i in range(STUDIES)]
        box = f'job="scanside", instance="{instance}"'
        # Scraped once before anything happens, so that every counter below is seen rising from its first value.
        wait_for(lambda: prom.value(f"up{{{box}}}") == 1, timeout=30, interval=0.2, what="the first scrape")
        incoming = Path(app.settings.paths.incoming)
        (incoming / "readme.txt").write_text("not a DICOM file\n")  # quarantined: not_dicom
        scanner = SyntheticScanner(incoming / "magnet", plans, pace_s=0)
        scanner.start()
        assert scanner.join(60) and scanner.error is None
        wait_for(lambda: len(list(app.store.results.all())) == STUDIES, timeout=60, what="all studies scored")
        with MllpClient("127.0.0.1", app.pipeline.mllp.port) as ris:
            for i, plan in enumerate(plans[:2]):
                assert ris.send(oru_message(plan, f"R{i}"))[0] == "AA"
        # Everything that happened has reached Prometheus: scored, reported, matched, SRs delivered, quarantined.
        for expr, what in ((f'scanside_series{{{box}, state="scored"}}', STUDIES),
                           (f'scanside_evidence_studies{{{box}, state="matched"}}', 2),
                           (f'sum(scanside_sr_exports{{{box}, state="delivered"}})', STUDIES),
                           (f'scanside_files_quarantined_total{{{box}, reason="not_dicom"}}', 1)):
            wait_for(functools.partial(lambda e, n: prom.value(e) >= n, expr, what), timeout=30, interval=0.5,
                     what=expr)
        time.sleep(2.5)  # two more scrapes, so that each rate() window holds the last change and a sample after it

        dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
        # A box's own Prometheus: its series have no site or appliance label (those are the fleet agents' external
        # labels, docs/fleet.md), so those variables find nothing and Grafana puts "" for them.
        values = {**WINDOWS, "$site": "", "$appliance": "", "$instance": instance, "$manufacturer": "all"}
        check_variables(prom, dashboard, values)

        targets = panel_targets(dashboard)
        assert len(targets) >= 40
        empty, not_numbers, not_shown, seen = [], [], [], set()
        for title, t in targets:
            expr = concrete(t["expr"], values)
            result = prom.query(expr)  # raises, with Prometheus' message, where the query does not parse
            if not result:
                empty.append(f"{title}: {expr}")
                continue
            numbers = [float(r["value"][1]) for r in result]
            if title in SHOW_THIS_RUN and t["refId"] == "A":
                seen.add(title)
                if not any(v > 0 for v in numbers):
                    not_shown.append(f"{title} ({SHOW_THIS_RUN[title]}): {expr} -> {numbers}")
            if not any(math.isfinite(v) for v in numbers) and not any(name in expr for name in MAY_BE_NAN):
                not_numbers.append(f"{title}: {expr} -> {numbers}")
            if " or vector(0)" in expr:  # the fallback covers boxes without the series, not this run
                assert prom.query(expr.split(" or vector(0)")[0]), f"{title}: only the fallback answered"
        assert not empty, "panel queries with no data:\n" + "\n".join(empty)
        assert not not_numbers, "panel queries with no number:\n" + "\n".join(not_numbers)
        assert seen == set(SHOW_THIS_RUN), set(SHOW_THIS_RUN) - seen
        assert not not_shown, "panels that miss what this run did:\n" + "\n".join(not_shown)

        # The alert rules ran on the same data: every rule evaluated without an error.
        groups = prom.api("rules")["groups"]
        rules = [r for g in groups for r in g["rules"]]
        assert len(rules) == len(re.findall(r"(?m)^\s*- alert:", RULES.read_text(encoding="utf-8")))
        wait_for(lambda: all(r.get("lastEvaluation", "").startswith("20") for g in prom.api("rules")["groups"]
                             for r in g["rules"]), timeout=10, what="every rule evaluated")
        broken = [(r["name"], r.get("lastError")) for g in prom.api("rules")["groups"] for r in g["rules"]
                  if r["health"] != "ok"]
        assert not broken, broken
    finally:
        prom.stop()


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not on PATH (Debian package 'prometheus' provides it)")
def test_the_test_prometheus_configuration_passes_promtool(tmp_path):
    prom = Prometheus(tmp_path, "127.0.0.1:9108")
    done = subprocess.run([PROMTOOL, "check", "config", str(prom.config)],  # type: ignore[list-item]
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
