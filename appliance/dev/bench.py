"""`scanside bench`: the numbers the appliance issue sets targets for, measured and printed.

1. scan-to-score for a 12 x 25 cine stack whose tags give the image count: the appliance runs as its own process
   (`scanside serve`), the first 299 files are written and taken, then the clock starts when the last file is
   closed (renamed into place, as DICOM nodes do) and stops when its result arrives on a gRPC stream;
2. ingest rate for 256 x 256 uncompressed MR against a plain `pydicom.dcmread` + `pixel_array` loop over the same
   files in the same run;
3. peak resident memory of the appliance process while 8 synthetic scanners write at once;
4. results back to PACS: building the SR of a 12 x 25 series, sending it over C-STORE to a pynetdicom storage SCP
   on loopback (the PACS stand-in), and draining a backlog of 16 queued SRs, through the appliance's own Exporter
   and SQLite queue;
5. hostile input: a 300-image study sent by dcmtk's storescu to the receiver, on a quiet line and with 100 idle
   and 20 junk connections held open (threads of the appliance meanwhile), and the memory a deflate bomb costs;
6. final reports arriving: scan-to-score with [hl7] on, without and then with a RIS sending ORU^R01 over MLLP
   back to back (at least 1,000 messages) while the studies are scored (`scanside bench --only oru` alone);
7. compressed MR: reading and decoding one image per transfer syntax next to uncompressed (bench_decode;
   `scanside bench --only decode` alone);
8. the encoder on a Triton Inference Server against local ONNX Runtime, per-study latency and throughput at batch 1
   and 4 (bench_triton; `scanside bench --only triton` alone, `--triton-url` for a server of your own).
9. a burst: 1, 2, 4, 8 and 16 scanners delivering 16 series at once as fast as they can, against one study's lower
   bound (bench_burst; `scanside bench --only burst` alone).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from prometheus_client import CollectorRegistry

from appliance import __version__
from appliance.assembly import Assembler
from appliance.bundle import load_bundle
from appliance.config import DEFAULT_BUNDLE, Settings
from appliance.dev.bench_decode import bench_decode
from appliance.dev.bench_triton import bench_triton
from appliance.dev.served import ServedAppliance, free_port
from appliance.dev.synth import SyntheticScanner, iter_instances, plan_study, write_instance
from appliance.metrics import Metrics
from appliance.pipeline.build import build_ingestor, build_store
from appliance.preprocess import prepare
from appliance.serve.client import ApplianceClient


@dataclass
class Numbers:
    rows: list[tuple[str, str, str]]

    def add(self, name: str, value: str, target: str) -> None:
        self.rows.append((name, value, target))
        print(f"  {name:52} {value:>22}   target {target}", flush=True)


def _stage(plan, folder: Path) -> tuple[list[Path], list[Path]]:
    """Write a study to a staging folder: (cine files in scanner order, other files)."""
    cine: list[Path] = []
    others: list[Path] = []
    for inst in iter_instances(plan):
        path = write_instance(inst, folder, mode="rename")
        (cine if inst.series_role == "cine_sax" else others).append(path)
    return cine, others


def _deliver(src: Path, dest: Path) -> None:
    """As a DICOM node writes: a temporary name in the same folder, then a rename."""
    tmp = dest.with_name("." + dest.name + ".tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


def _cine_uid(plan) -> str:
    return next(s.series_uid for s in plan.series if s.role == "cine_sax")


def bench_scan_to_score(work: Path, repeats: int, numbers: Numbers) -> None:
    staged = []
    for i in range(repeats):
        plan = plan_study(seed=1000 + i, vendor="A", n_slices=12, n_phases=25)
        staged.append((plan, *_stage(plan, work / "staged" / f"study{i}")))
    metrics_port = free_port()
    with ServedAppliance(work / "s2s", metrics={"enabled": True, "port": metrics_port}) as app:
        stream = app.client.stream(after_event_id=-1)
        latencies, server_side = _scan_to_score(app, _collect(stream), staged, "study")
        stream.cancel()
        stages = _stage_means_ms(metrics_port)
    lat = np.array(latencies)
    numbers.add(f"scan-to-score, 12x25 stack, median of {repeats} (ms)", f"{np.median(lat):.0f}", "-")
    numbers.add(f"scan-to-score, 12x25 stack, p95 of {repeats} (ms)", f"{np.percentile(lat, 95):.0f}", "<= 300")
    numbers.add("  as the appliance itself measures it, median (ms)", f"{np.median(server_side):.0f}", "-")
    for stage in ("preprocess", "quality", "inference", "scoring"):
        if stage in stages:
            numbers.add(f"  of which {stage}, mean per series (ms)", f"{stages[stage]:.1f}", "-")


def _stage_means_ms(port: int) -> dict[str, float]:
    """Mean milliseconds per observation of each scanside_stage_duration_seconds stage, from the served process."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "scanside_stage_duration_seconds":
            continue
        for sample in family.samples:
            if sample.name.endswith("_sum"):
                sums[sample.labels["stage"]] = sample.value
            elif sample.name.endswith("_count"):
                counts[sample.labels["stage"]] = sample.value
    return {k: 1000.0 * sums[k] / counts[k] for k in sums if counts.get(k)}


def _scan_to_score(app: ServedAppliance, events: _Events, staged, prefix: str) -> tuple[list[float], list[float]]:
    """Deliver each staged study but its last file, wait until the appliance holds them, then the last file: (ms
    from that file closed to its result on the stream, ms as the appliance measures it) per study."""
    latencies, server_side = [], []
    for k, (plan, cine, others) in enumerate(staged):
        target = app.incoming / f"{prefix}{k}"
        target.mkdir(parents=True)
        for n, p in enumerate(others + cine[:-1]):
            _deliver(p, target / f"{n:05d}.dcm")
        _wait_received(app.client, _cine_uid(plan), len(cine) - 1)
        _deliver(cine[-1], target / "last.dcm")
        closed = time.perf_counter()  # the last file is closed under its final name
        arrived, event = events.next_for(_cine_uid(plan), timeout=60)
        latencies.append((arrived - closed) * 1000)
        server_side.append(event.result.timings.scan_to_score_ms)
    return latencies, server_side


def bench_oru_load(work: Path, numbers: Numbers, repeats: int, messages: int = 1000,
                   yield_s: float | None = None) -> None:
    """Scan-to-score with [hl7] on, three times `repeats` vendor-A studies: with no HL7 traffic; while a RIS sends
    `messages` ORU^R01 over MLLP spread evenly over the time the quiet phase took; and while it sends them back to
    back, each after the previous ACK, until the last study is scored (at least `messages`). The reports are for the
    phase's own studies (so they match inside the results' transactions; by Study Instance UID or accession number
    only, now and then corrected) and for 50 studies never scanned (pending by accession number). `yield_s`: the
    [hl7] yield_to_scoring_s to run with (None: the default), named in the rows."""
    from appliance.dev.oru import MllpClient, oru_message, report_text

    tag = "" if yield_s is None else f", yield_to_scoring_s {yield_s:g}"
    folder = "oru" + ("" if yield_s is None else f"-yield{yield_s:g}")
    staged = []
    for i in range(3 * repeats):
        plan = plan_study(seed=6000 + i, vendor="A", n_slices=12, n_phases=25)
        staged.append((plan, *_stage(plan, work / f"{folder}-staged" / f"study{i}")))
    others = [plan_study(seed=6500 + k, vendor="AB"[k % 2]) for k in range(50)]
    texts = {p.study_uid: report_text(p) for p in [s[0] for s in staged] + others}
    port = free_port()

    def ris(phase: str, plans: list, interval_s: float, stop: threading.Event, sent: list[float]) -> None:
        reported = plans + others
        with MllpClient("127.0.0.1", port) as client:
            n = 0
            while n < messages or (interval_s == 0.0 and not stop.is_set()):
                plan = reported[n % len(reported)]
                status = "C" if n >= len(reported) and n % 7 == 0 else "F"
                where = "zds" if plan in plans and n % 2 else "none"
                code, _ = client.send(oru_message(plan, f"{phase}{n}", status=status, text=texts[plan.study_uid],
                                                  study_uid_in=where))
                assert code == "AA", code
                sent.append(time.perf_counter())
                n += 1
                if interval_s and stop.wait(max(0.0, sent[0] + n * interval_s - time.perf_counter())):
                    return

    rows = []
    hl7 = {"enabled": True, "port": port} | ({} if yield_s is None else {"yield_to_scoring_s": yield_s})
    with ServedAppliance(work / folder, hl7=hl7) as app:
        stream = app.client.stream(after_event_id=-1)
        events = _collect(stream)
        started = time.perf_counter()
        quiet, _ = _scan_to_score(app, events, staged[:repeats], "quiet")
        interval = (time.perf_counter() - started) / messages
        rows.append(("no ORU traffic", quiet, ""))
        for k, (phase, label, every) in enumerate((("P", f"{messages} ORU messages spread over the same time",
                                                    interval), ("R", "ORU messages back to back", 0.0))):
            phase_staged = staged[(k + 1) * repeats:(k + 2) * repeats]
            sent: list[float] = []
            stop = threading.Event()
            sender = threading.Thread(target=ris, args=(phase, [s[0] for s in phase_staged], every, stop, sent),
                                      daemon=True)
            sender.start()
            while not sent:
                time.sleep(0.01)
            began = sent[0]
            lat, _ = _scan_to_score(app, events, phase_staged, phase)
            during, elapsed = len(sent), time.perf_counter() - began
            stop.set()
            sender.join(300)
            rows.append((label, lat, f"{during} ACKed meanwhile ({during / elapsed:.0f}/s)"))
        stream.cancel()
    for label, lat, note in rows:
        numbers.add(f"scan-to-score, [hl7] on{tag}, {label}: median / p95 of {repeats} (ms)",
                    f"{np.median(lat):.0f} / {np.percentile(lat, 95):.0f}" + (f", {note}" if note else ""),
                    "no measurable cost" if note else "-")


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
                if event.kind == event.SCORED:
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
    cine: list[Path] = []
    for i in range(studies):
        plan = plan_study(seed=2000 + i, vendor="A", n_slices=12, n_phases=25, matrix=(256, 256))
        cine += _stage(plan, work / "ingest-staged" / f"study{i}")[0]
    n = len(cine)
    for p in cine:  # warm the page cache for both contenders alike
        p.read_bytes()

    started = time.perf_counter()
    for p in cine:
        _ = pydicom.dcmread(p).pixel_array
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
        on_complete = (lambda s, done=done: done.append(prepare(s, bundle.preprocess))) if with_preprocess \
            else done.append
        settings = Settings().replace(paths={"data_dir": str(root), "watch_dir": str(incoming)},
                                      assembly={"quiet_period_s": 5.0})
        ing = build_ingestor(settings, build_store(settings), Assembler(settings.assembly.quiet_period_s),
                             Metrics(CollectorRegistry()), on_complete)
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
    with ServedAppliance(work / "mem", assembly={"quiet_period_s": 2.0}) as app:
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


def bench_sr_export(work: Path, numbers: Numbers, repeats: int) -> None:
    from pydicom.uid import ComprehensiveSRStorage
    from pynetdicom import AE, evt

    from appliance.dev.served import free_port
    from appliance.export import build_exporter
    from appliance.export.source import capture_source
    from appliance.export.sr import build_sr
    from appliance.handovers import (
        ExportState,
        FindingScore,
        Scores,
        SeriesInfo,
        SeriesRole,
        SeriesState,
        StoredReport,
        StudyResult,
    )

    bundle = load_bundle(DEFAULT_BUNDLE)
    plans = [plan_study(seed=5000 + i, vendor="A") for i in range(16)]
    received: list[int] = []
    scp = AE(ae_title="BENCHPACS")
    scp.add_supported_context(ComprehensiveSRStorage)
    port = free_port()

    def on_store(event: evt.Event) -> int:
        received.append(len(event.encoded_dataset()))
        return 0x0000

    server = scp.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert server is not None
    settings = Settings().replace(paths={"data_dir": str(work / "sr")}, export={
        "pacs_ae_title": "BENCHPACS", "pacs_host": "127.0.0.1", "pacs_port": port, "max_attempts": 3,
        "retry_initial_s": 1.0, "retry_max_s": 1.0})
    settings.paths.data_dir.mkdir(parents=True, exist_ok=True)  # not prepare_folders: it sets this process' umask
    store = build_store(settings)
    exporter = build_exporter(settings, store, Metrics(CollectorRegistry()))
    assert exporter is not None
    pacs = exporter.destinations["pacs"]
    try:
        build_ms, send_ms = [], []
        for i, plan in enumerate(plans):
            cine, _ = _stage(plan, work / f"sr{i}")
            refs = tuple((str(d.SOPClassUID), str(d.SOPInstanceUID))
                         for d in (pydicom.dcmread(p, stop_before_pixels=True) for p in cine))
            source = capture_source(cine[0], refs)
            info = SeriesInfo(f"s{i:012d}", plan.study_uid, _cine_uid(plan), SeriesRole.CINE_SAX, "A", "cine",
                              len(cine), len(cine), "tags", time.time())
            findings = tuple(FindingScore(f.id, f.name, 0.3, f.threshold, 0.5, False, f.rare, ())
                             for f in bundle.label_bank.findings)
            result = StudyResult(info, Scores(findings, 3.0, ()), bundle.name, bundle.version, "onnxruntime",
                                 "fp32", {}, time.time())
            store.series.set_state(info, SeriesState.COMPLETE)
            store.exports.save_source(info.series_uid, source.header, source.instances_json())
            if i < repeats:  # one SR at a time, as results come in: build, then send over a fresh association
                started = time.perf_counter()
                doc = build_sr(result, source)
                build_ms.append((time.perf_counter() - started) * 1000)
                started = time.perf_counter()
                pacs.deliver([StoredReport(doc.sop_instance_uid, doc.data)])
                send_ms.append((time.perf_counter() - started) * 1000)
            store.results.save(result)
        kept = [store.exports.source(_cine_uid(p)) for p in plans]
        queued = sum(len(header) + len(instances) + len(used) for header, instances, used in filter(None, kept))
        started = time.perf_counter()
        while exporter.run_once():  # the backlog after an outage: built, then sent over one association
            pass
        drained = time.perf_counter() - started
        delivered = store.exports.counts().get(("pacs", ExportState.DELIVERED), 0)
    finally:
        server.shutdown()
        store.close()
    numbers.add("SR of a 12x25 series: build, median (ms)", f"{np.median(build_ms):.0f}", "-")
    numbers.add("SR size (kB)", f"{np.median(received[:repeats]) / 1024:.0f}", "-")
    numbers.add("SR C-STORE over a new association, median (ms)", f"{np.median(send_ms):.0f}", "-")
    numbers.add("patient data kept per queued series (kB)", f"{queued / len(plans) / 1024:.0f}", "0 once delivered")
    numbers.add(f"backlog of {len(plans)} SRs drained (s)", f"{drained:.2f} ({delivered} delivered)", "-")


def _threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("Threads:"))


def _status_mb(pid: int, key: str) -> float:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) / 1024 for line in fh if line.startswith(key + ":"))


def bench_hostile(work: Path, numbers: Numbers) -> None:
    import subprocess

    from appliance.dev.served import free_port
    from appliance.dev.synth.hostile import HostileNeighbour, deflate_bomb

    storescu = Path("/usr/bin/storescu")  # dcmtk's; pynetdicom's script of the same name shadows it in a venv
    port = free_port()
    with ServedAppliance(work / "hostile", dicom={"enabled": True, "port": port}) as app:
        pid = app.proc.pid
        if storescu.exists():
            def send(seed: int) -> float:
                plan = plan_study(seed=seed, vendor="A", n_slices=12, n_phases=25, matrix=(256, 256))
                folder = work / f"send{seed}"
                _cine, others = _stage(plan, folder)
                for path in others:
                    path.unlink()
                started = time.perf_counter()
                subprocess.run([str(storescu), "-aet", "MRI1", "-aec", "SCANSIDE", "+sd", "+r", "127.0.0.1", str(port),
                                str(folder)], check=True, capture_output=True, timeout=300,
                               env={**os.environ, "TCP_NODELAY": "1"})
                elapsed = time.perf_counter() - started
                _wait_received(app.client, _cine_uid(plan), 300)
                return elapsed

            quiet = send(7001)
            idle_threads = _threads(pid)
            with HostileNeighbour("127.0.0.1", port, idle=100, junk=20, sample=lambda: _threads(pid)) as flood:
                time.sleep(0.5)
                flooded = send(7002)
            numbers.add("C-STORE of 300 images by storescu, quiet line (s)", f"{quiet:.2f}", "-")
            numbers.add("  with 100 idle + 20 junk connections held open (s)",
                        f"{flooded:.2f} ({flood.reopened} re-opened)", "a few s")
            numbers.add("  appliance threads, idle / peak under the flood", f"{idle_threads} / {flood.peak}",
                        "bounded")
        else:
            print("  (dcmtk storescu not installed: the C-STORE numbers are skipped)", flush=True)
        idle = _status_mb(pid, "VmRSS")
        with open(f"/proc/{pid}/clear_refs", "w") as fh:
            fh.write("5")  # reset the peak resident set
        deflate_bomb(work / "bomb.dcm", 1024)
        shutil.copyfile(work / "bomb.dcm", app.incoming / "bomb.dcm")
        folder = app.data / "quarantine" / "too_large"
        deadline = time.monotonic() + 60
        while not list(folder.glob("*.reason.json")) and time.monotonic() < deadline:
            time.sleep(0.05)
        peak = _status_mb(pid, "VmHWM")
    numbers.add("deflate bomb (1 MB -> 1 GiB): peak above idle (MB)", f"{peak - idle:.0f}", "<= 100")


def _run_all(work: Path, numbers: Numbers, repeats: int, quick: bool) -> None:
    bench_scan_to_score(work, repeats, numbers)
    bench_ingest(work, numbers, studies=2 if quick else 4)
    bench_memory(work, numbers, studies_per_scanner=1 if quick else 2)
    bench_sr_export(work, numbers, repeats)
    bench_hostile(work, numbers)
    bench_oru_load(work, numbers, repeats, messages=100 if quick else 1000)
    bench_decode(work, numbers.add, images=30 if quick else 60)
    bench_triton(work, numbers.add, calls=15 if quick else 60)
    _burst(work, numbers, quick)


def _burst(work: Path, numbers: Numbers, quick: bool) -> None:
    from appliance.dev.bench_burst import bench_burst  # it reuses this module's stream helpers

    if quick:
        bench_burst(work, numbers.add, series=8, scanner_counts=(1, 8), single_repeats=6)
    else:
        bench_burst(work, numbers.add)


def run_bench(args: argparse.Namespace) -> int:
    repeats = 6 if args.quick else 20
    numbers = Numbers([])
    print(f"ScanSide {__version__} bench on {platform.machine()}, {os.cpu_count()} CPU(s), "
          f"Python {platform.python_version()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="scanside-bench-") as tmp:
        work = Path(tmp)
        if getattr(args, "only", None) == "oru":  # the reports' yield to scoring off, then as configured by default
            for yield_s in (0.0, None):
                bench_oru_load(work, numbers, repeats, messages=100 if args.quick else 1000, yield_s=yield_s)
        elif getattr(args, "only", None) == "decode":
            bench_decode(work, numbers.add, images=30 if args.quick else 60)
        elif getattr(args, "only", None) == "triton":
            bench_triton(work, numbers.add, url=getattr(args, "triton_url", None),
                         model=getattr(args, "triton_model", "scanside_encoder"), calls=15 if args.quick else 60)
        elif getattr(args, "only", None) == "burst":
            _burst(work, numbers, args.quick)
        else:
            _run_all(work, numbers, repeats, args.quick)
    if args.out:
        lines = [f"Measured {time.strftime('%Y-%m-%d')} by `scanside bench` (ScanSide {__version__}) on "
                 f"{platform.machine()}, {os.cpu_count()} CPU(s), Python {platform.python_version()}, "
                 f"bundle {DEFAULT_BUNDLE.relative_to(DEFAULT_BUNDLE.parents[1])} on ONNX Runtime (CPU).", "",
                 "| measure | value | target |", "|---|---:|---|"]
        lines += [f"| {name.strip()} | {value} | {target} |" for name, value, target in numbers.rows]
        Path(args.out).write_text("\n".join(lines) + "\n")
    return 0
