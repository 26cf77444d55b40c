"""`scanside bench`: the numbers the appliance issue sets targets for, measured and printed.

1. scan-to-score for a 12 x 25 cine stack whose tags give the image count: the appliance runs as its own process
   (`scanside serve`), the first 299 files are written and taken, then the clock starts when the last file is
   closed (renamed into place, as DICOM nodes do) and stops when its result arrives on a gRPC stream;
2. ingest rate for 256 x 256 uncompressed MR against a plain `pydicom.dcmread` + `pixel_array` loop over the same
   files in the same run;
3. peak resident memory of the appliance process while 8 synthetic scanners write at once.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from prometheus_client import CollectorRegistry

from . import __version__
from .assembly import Assembler
from .bundle import load_bundle
from .client import ApplianceClient
from .config import DEFAULT_BUNDLE
from .ingest import Ingestor, Quarantine
from .metrics import Metrics
from .preprocess import prepare
from .store import Store
from .synth import SyntheticScanner, plan_study, write_study
from .synth.writer import iter_instances, write_instance


@dataclass
class Numbers:
    rows: list[tuple[str, str, str]]

    def add(self, name: str, value: str, target: str) -> None:
        self.rows.append((name, value, target))
        print(f"  {name:52} {value:>22}   target {target}", flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServedAppliance:
    """`scanside serve` in a child process on a fresh data folder, as an operator would run it."""

    def __init__(self, root: Path, quiet_period_s: float = 5.0) -> None:
        self.root = root
        self.port = _free_port()
        self.config = root / "scanside.toml"
        self.config.write_text(
            f'[paths]\ndata_dir = "{root / "data"}"\nwatch_dir = "{root / "incoming"}"\n'
            f'[grpc]\nport = {self.port}\n[metrics]\nenabled = false\n'
            f'[assembly]\nquiet_period_s = {quiet_period_s}\n[logging]\nlevel = "WARNING"\n')
        self.incoming = root / "incoming"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "ServedAppliance":
        self.proc = subprocess.Popen([sys.executable, "-m", "appliance", "serve", "--config", str(self.config)])
        self.client = ApplianceClient(f"127.0.0.1:{self.port}")
        self.client.wait_until_serving(timeout_s=120)
        return self

    def peak_rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
        return float("nan")

    def __exit__(self, *_: object) -> None:
        self.client.close()
        self.proc.terminate()
        self.proc.wait(30)


def bench_scan_to_score(work: Path, repeats: int, numbers: Numbers) -> None:
    staged = []
    for i in range(repeats):
        plan = plan_study(seed=1000 + i, vendor="A", n_slices=12, n_phases=25)
        folder = work / "staged" / f"study{i}"
        write_study(plan, folder, mode="rename")
        cine = sorted((p for p in folder.rglob("*") if p.is_file()), key=lambda p: str(p))
        staged.append((plan, folder))
    latencies, server_side = [], []
    with ServedAppliance(work / "s2s") as app:
        stream = app.client.stream(after_event_id=-1)
        events = _collect(stream)
        for plan, folder in staged:
            files = [p for p in folder.rglob("*") if p.is_file()]
            cine = [p for p in files if pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID
                    == plan.cine_series_uid]
            others = [p for p in files if p not in cine]
            target = app.incoming / folder.name
            target.mkdir(parents=True)
            for p in others + cine[:-1]:
                shutil.copy(p, target / p.name)
            _wait_received(app.client, plan.cine_series_uid, len(cine) - 1)
            last = cine[-1]
            tmp = target / ("." + last.name + ".tmp")
            shutil.copy(last, tmp)
            os.replace(tmp, target / last.name)  # the moment the last file is closed under its final name
            closed = time.perf_counter()
            arrived, event = events.next_for(plan.cine_series_uid, timeout=60)
            latencies.append((arrived - closed) * 1000)
            server_side.append(event.result.timings.scan_to_score_ms)
        stream.cancel()
    lat = np.array(latencies)
    numbers.add("scan-to-score, 12x25 stack, median (ms)", f"{np.median(lat):.0f}", "-")
    numbers.add("scan-to-score, 12x25 stack, p95 (ms)", f"{np.percentile(lat, 95):.0f}", "<= 300")
    numbers.add("  appliance's own scan_to_score, median (ms)", f"{np.median(server_side):.0f}", "-")


class _Events:
    def __init__(self) -> None:
        self.by_series: dict[str, tuple[float, object]] = {}
        self.cond = threading.Condition()

    def next_for(self, series_uid: str, timeout: float):
        deadline = time.monotonic() + timeout
        with self.cond:
            while series_uid not in self.by_series:
                if not self.cond.wait(max(deadline - time.monotonic(), 0)) and time.monotonic() > deadline:
                    raise TimeoutError("no result within the timeout")
            return self.by_series[series_uid]


def _collect(stream) -> _Events:
    events = _Events()

    def run() -> None:
        try:
            for event in stream:
                now = time.perf_counter()
                if event.HasField("result"):
                    with events.cond:
                        events.by_series[event.result.series_instance_uid] = (now, event)
                        events.cond.notify_all()
        except Exception:
            pass  # cancelled at the end

    threading.Thread(target=run, daemon=True).start()
    return events


def _wait_received(client: ApplianceClient, series_uid: str, n: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if client.series_status(series_uid).images_received >= n:
                return
        except Exception:
            pass
        time.sleep(0.02)
    raise TimeoutError(f"appliance did not take {n} images in {timeout} s")


def bench_ingest(work: Path, numbers: Numbers, studies: int) -> None:
    staged = work / "ingest-staged"
    cine: list[Path] = []
    for i in range(studies):
        plan = plan_study(seed=2000 + i, vendor="A", n_slices=12, n_phases=25, matrix=(256, 256))
        for inst in iter_instances(plan):
            if inst.series_role == "cine_sax":
                cine.append(write_instance(inst, staged, mode="rename"))
    n = len(cine)
    for p in cine:  # warm the page cache for both contenders alike
        p.read_bytes()

    started = time.perf_counter()
    for p in cine:
        pydicom.dcmread(p).pixel_array
    plain = n / (time.perf_counter() - started)

    bundle = load_bundle(DEFAULT_BUNDLE)
    rates = {}
    for label, with_preprocess in (("ingest (parse, spool, assemble)", False),
                                   ("ingest + preprocess to the model tensor", True)):
        incoming, root = work / f"in-{with_preprocess}", work / f"root-{with_preprocess}"
        incoming.mkdir()
        copies = []
        for k, p in enumerate(cine):
            dest = incoming / f"{k:06d}.dcm"
            shutil.copy(p, dest)
            copies.append(dest)
        done: list = []
        on_complete = (lambda s: done.append(prepare(s, bundle.preprocess))) if with_preprocess else done.append
        ing = Ingestor(root / "spool", Quarantine(root / "q"), Store(root / "db.sqlite"), Assembler(5.0),
                       Metrics(CollectorRegistry()), on_complete)
        for p in copies:
            p.stat()
        started = time.perf_counter()
        for p in copies:
            ing.submit(str(p))
        ing.run_once()
        elapsed = time.perf_counter() - started
        assert len(done) == studies, f"expected {studies} complete series, got {len(done)}"
        rates[label] = n / elapsed
    numbers.add("plain pydicom dcmread + pixel_array (images/s)", f"{plain:.0f}", "baseline")
    for label, rate in rates.items():
        numbers.add(f"{label} (images/s)", f"{rate:.0f} ({rate / plain:.1f}x)",
                    ">= 3x baseline" if "preprocess" not in label else "-")


def bench_memory(work: Path, numbers: Numbers, studies_per_scanner: int) -> None:
    with ServedAppliance(work / "mem", quiet_period_s=2.0) as app:
        scanners = []
        for k in range(8):
            plans = [plan_study(seed=3000 + 10 * k + j, vendor="ABC"[(k + j) % 3])
                     for j in range(studies_per_scanner)]
            scanners.append(SyntheticScanner(app.incoming / f"scanner{k + 1}", plans, pace_s=0.0))
        expected = 8 * studies_per_scanner
        stream = app.client.stream(after_event_id=0)
        events = _collect(stream)
        started = time.perf_counter()
        for s in scanners:
            s.start()
        deadline = time.monotonic() + 900
        while len(events.by_series) < expected and time.monotonic() < deadline:
            time.sleep(0.2)
        elapsed = time.perf_counter() - started
        for s in scanners:
            s.join(5)
        stream.cancel()
        peak = app.peak_rss_mb()
    numbers.add(f"8 scanners x {studies_per_scanner} studies: scored", f"{len(events.by_series)}/{expected}",
                "all")
    numbers.add("  wall time (s)", f"{elapsed:.1f}", "-")
    numbers.add("peak resident memory of the appliance (MB)", f"{peak:.0f}", "<= 500")


def run_bench(args: argparse.Namespace) -> int:
    repeats = 6 if args.quick else 20
    numbers = Numbers([])
    print(f"ScanSide {__version__} bench on {platform.machine()}, {os.cpu_count()} CPU(s), "
          f"Python {platform.python_version()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="scanside-bench-") as tmp:
        work = Path(tmp)
        bench_scan_to_score(work, repeats, numbers)
        bench_ingest(work, numbers, studies=2 if args.quick else 4)
        bench_memory(work, numbers, studies_per_scanner=1 if args.quick else 2)
    if args.out:
        lines = ["| measure | value | target |", "|---|---:|---|"]
        lines += [f"| {name.strip()} | {value} | {target} |" for name, value, target in numbers.rows]
        Path(args.out).write_text("\n".join(lines) + "\n")
    return 0
