"""`scanside demo`: the whole appliance on a temporary data folder, fed by synthetic scanners at scanner pace.

The terminal shows results arriving through a real gRPC client, as a technologist's display would, then a summary.
"""

from __future__ import annotations

import logging
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TextIO

from prometheus_client import CollectorRegistry

from appliance import RESEARCH_NOTICE
from appliance.cli.table import ResultsTable
from appliance.config import Settings
from appliance.dev.synth import SyntheticScanner, demo_cohort
from appliance.handovers import ExportState
from appliance.serve.client import ApplianceClient
from appliance.service import Appliance

log = logging.getLogger(__name__)


def run_demo(settings: Settings, studies: int = 4, seed: int = 7, pace_s: float = 0.01, timeout_s: float = 300.0,
             out: TextIO = sys.stdout, keep: bool = False, sr_out: Path | None = None) -> int:
    tmp = None
    if settings.paths.data_dir == Settings().paths.data_dir:
        tmp = tempfile.TemporaryDirectory(prefix="scanside-demo-")
        settings = settings.replace(paths={"data_dir": tmp.name, "watch_dir": str(Path(tmp.name) / "incoming")})
    settings = settings.replace(grpc={"port": 0}, metrics={"port": 0})
    # Synthetic patients never go to a real PACS, whatever the configuration says; --sr-out shows what would.
    export = {"pacs_ae_title": ""}
    if sr_out is not None:
        export["folder"] = str(Path(sr_out).resolve())
    settings = settings.replace(export=export)
    out.write(f"ScanSide demo. {RESEARCH_NOTICE}\n")
    out.write(f"data folder: {settings.paths.data_dir}\n")
    appliance = Appliance(settings, registry=CollectorRegistry())
    try:
        appliance.start()
        out.write(f"gRPC on {appliance.grpc_address}, Prometheus metrics on "
                  f"http://{settings.metrics.host}:{appliance.metrics_port}/metrics\n")
        plans = demo_cohort(studies, seed)
        # Two scanners writing at once, as two magnets sharing one appliance would.
        scanners = [SyntheticScanner(Path(settings.paths.incoming) / f"scanner{i + 1}", plans[i::2], pace_s=pace_s)
                    for i in range(min(2, len(plans)))]
        expected = len(plans)  # one cine short-axis series per synthetic study
        out.write(f"{len(scanners)} synthetic scanner(s) writing {expected} studies "
                  f"({', '.join(f'vendor {p.vendor}: {p.condition}' for p in plans)})\n\n")
        truth = {p.study_uid: f"{p.condition} (vendor {p.vendor})" for p in plans}
        before = appliance.store.exports.counts()  # a configured data folder may hold SRs of earlier runs
        code, scored = _watch(appliance.grpc_address, scanners, expected, timeout_s, out, truth)
        if sr_out is not None and scored:
            code = max(code, _await_srs(appliance, scored, before, Path(sr_out), out))
        return code
    finally:
        appliance.stop()
        if tmp is not None and not keep:
            tmp.cleanup()


def _await_srs(appliance: Appliance, expected: int, before: dict, folder: Path, out: TextIO,
               timeout_s: float = 60.0) -> int:
    """Wait until this run's SRs are written or failed for good (a failed write is retried with backoff first)."""
    def count(state: ExportState) -> int:
        key = ("folder", state)
        return appliance.store.exports.counts().get(key, 0) - before.get(key, 0)

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and count(ExportState.DELIVERED) + count(ExportState.FAILED) < expected:
        time.sleep(0.1)
    delivered, failed = count(ExportState.DELIVERED), count(ExportState.FAILED)
    out.write(f"DICOM SR: {delivered} of {expected} written to {folder} (e.g. `dsrdump {folder}/<file>.dcm`)\n")
    for item in appliance.store.exports.items(state=ExportState.FAILED, limit=failed) if failed > 0 else []:
        out.write(f"  SR of {item.key} failed: {item.last_error}\n")
    return 0 if delivered >= expected else 1


def _watch(address: str, scanners: list[SyntheticScanner], expected: int, timeout_s: float, out: TextIO,
           truth: dict[str, str]) -> tuple[int, int]:
    """Show results as they stream in; (exit code, studies scored)."""
    with ApplianceClient(address) as client:
        client.wait_until_serving()
        table = ResultsTable(out)
        table.header(client.model_info())
        stream = client.stream(after_event_id=0)
        timer = threading.Timer(timeout_s, stream.cancel)
        timer.start()
        started = time.monotonic()
        for scanner in scanners:
            scanner.start()
        latencies, review, failed = [], 0, 0
        try:
            for event in stream:
                table.add(event)
                if event.kind == event.SR_UPDATED:
                    continue  # an SR reached its folder; the count is of scored studies
                if event.kind == event.SCORED:
                    # The synthetic scanner knows what it drew; a real appliance never does.
                    out.write(f"{'':10}synthetic truth: {truth.get(event.result.study_instance_uid, '?')}\n")
                    latencies.append(event.result.timings.scan_to_score_ms)
                    review += event.result.needs_review
                else:
                    failed += 1
                if len(latencies) + failed >= expected:
                    break
        except Exception as exc:  # grpc.RpcError on cancel (timeout)
            reason = exc.code() if hasattr(exc, "code") else exc
            out.write(f"\nstream ended: {reason}\n")
        finally:
            timer.cancel()
            stream.cancel()
            for scanner in scanners:
                scanner.stop()
        elapsed = time.monotonic() - started
    out.write("\n")
    if not latencies:
        out.write("no study was scored\n")
        return 1, 0
    out.write(f"summary: {len(latencies)} studies scored, {failed} failed, {review} flagged for review, "
              f"in {elapsed:.1f} s\n")
    out.write(f"scan-to-score: median {statistics.median(latencies):.0f} ms, max {max(latencies):.0f} ms "
              "(series whose tags give no image count wait for the quiet period)\n")
    out.write(RESEARCH_NOTICE + "\n")
    return (0 if len(latencies) + failed >= expected and failed == 0 else 1), len(latencies)
