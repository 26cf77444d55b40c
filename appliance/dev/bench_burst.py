"""`scanside bench`, a burst: after a PACS or network outage a receiver gets its backlog all at once, and many
scanners write at once.

For 1, 2, 4, 8 and 16 synthetic scanners, each delivers its share of the same 16 vendor-A 12 x 25 cine series (300
files each) to a served appliance (`scanside serve`, its own process, a fresh data folder per case) as fast as it
can: the files are staged beforehand (hard links, outside the watch folder, on its filesystem) and each scanner
renames them into its own folder of the watch folder one after another, series by series, as a DICOM node's last
rename does. Per case: series/s (16 over the time from the first rename to the last result on a gRPC stream),
scan-to-score p95 (from each series' last rename to its result on the stream), the ratio to one scanner, and the
appliance process's CPU time per series (user + system, which a loaded machine shifts less than wall time).

Beside them, in the same run: the lower bound for one study (reading its 300 files raw, page cache warm; one
inference of its tensor on ONNX Runtime; one SQLite commit, the appliance's own transaction) and the single-study
scan-to-score as `bench_scan_to_score` takes it (299 files taken, then the clock from the last one), against 2x that
bound.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from appliance.dev.served import ServedAppliance
from appliance.dev.synth import iter_instances, plan_study, write_instance

Add = Callable[[str, str, str], None]
SCANNER_COUNTS = (1, 2, 4, 8, 16)


@dataclass(frozen=True)
class _Series:
    uid: str
    files: tuple[Path, ...]  # in scanner order


@dataclass(frozen=True)
class BurstCase:
    scanners: int
    series: int
    series_per_s: float
    p95_ms: float
    median_ms: float
    cpu_ms_per_series: float


def _stage_cine(work: Path, count: int, seed: int = 8000) -> list[_Series]:
    """`count` vendor-A 12 x 25 cine series written once (the other series of each study are not written)."""
    out = []
    for i in range(count):
        plan = plan_study(seed=seed + i, vendor="A", n_slices=12, n_phases=25)
        uid = next(s.series_uid for s in plan.series if s.role == "cine_sax")
        files = [write_instance(inst, work / "burst-staged" / f"series{i:02d}", mode="rename")
                 for inst in iter_instances(plan) if inst.series_role == "cine_sax"]
        out.append(_Series(uid, tuple(files)))
    return out


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def run_case(work: Path, staged: Sequence[_Series], scanners: int, timeout_s: float = 600.0) -> BurstCase:
    """One case: `scanners` threads, series i going to scanner i % scanners, each renaming its files in order."""
    from appliance.dev.bench import _collect  # bench imports this module

    with ServedAppliance(work / f"burst{scanners}") as app:
        links = app.root / "links"  # beside the watch folder: same filesystem, outside the watch
        shares: list[list[tuple[str, list[tuple[Path, Path]]]]] = [[] for _ in range(scanners)]
        for i, series in enumerate(staged):
            k = i % scanners
            folder = app.incoming / f"scanner{k + 1:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            moves = []
            for n, src in enumerate(series.files):
                link = links / f"{i:02d}-{n:04d}.dcm"
                link.parent.mkdir(parents=True, exist_ok=True)
                os.link(src, link)
                moves.append((link, folder / f"se{i:02d}-{n:04d}.dcm"))
            shares[k].append((series.uid, moves))
        time.sleep(1.0)  # the scanner folders' watches are in place
        stream = app.client.stream(after_event_id=-1)
        events = _collect(stream)
        last_file: dict[str, float] = {}
        gate = threading.Barrier(scanners + 1)

        def scanner(share: list[tuple[str, list[tuple[Path, Path]]]]) -> None:
            gate.wait()
            for uid, moves in share:
                for src, dest in moves:
                    os.replace(src, dest)
                last_file[uid] = time.perf_counter()

        threads = [threading.Thread(target=scanner, args=(share,), daemon=True) for share in shares]
        for t in threads:
            t.start()
        cpu0 = _cpu_s(app.proc.pid)
        gate.wait()
        started = time.perf_counter()
        arrivals = [events.next_for(s.uid, timeout=timeout_s)[0] for s in staged]
        finished = max(arrivals)
        cpu = _cpu_s(app.proc.pid) - cpu0
        for t in threads:
            t.join(10)
        stream.cancel()
    lat = np.array([(arrived - last_file[s.uid]) * 1000 for s, arrived in zip(staged, arrivals, strict=True)])
    return BurstCase(scanners, len(staged), len(staged) / (finished - started), float(np.percentile(lat, 95)),
                     float(np.median(lat)), 1000 * cpu / len(staged))


@dataclass(frozen=True)
class LowerBound:
    reads_ms: float
    inference_ms: float
    commit_ms: float

    @property
    def total_ms(self) -> float:
        return self.reads_ms + self.inference_ms + self.commit_ms


def lower_bound(work: Path, series: _Series, rounds: int = 7) -> LowerBound:
    """What one study cannot cost less than here: its 300 files read raw, one inference, one SQLite commit;
    the median of `rounds` each, page cache warm, engine warmed up."""
    from appliance.bundle import load_bundle
    from appliance.config import DEFAULT_BUNDLE
    from appliance.inference import create_backend
    from appliance.ingest.reader import read_instance
    from appliance.preprocess import series_to_tensor
    from appliance.store.database import Database

    def read_all() -> None:
        for path in series.files:
            fd = os.open(path, os.O_RDONLY)
            try:
                while os.read(fd, 1 << 20):
                    pass
            finally:
                os.close(fd)

    def median_ms(step: Callable[[], object]) -> float:
        step()  # warm
        took = []
        for _ in range(rounds):
            began = time.perf_counter()
            step()
            took.append(time.perf_counter() - began)
        return 1000 * float(np.median(took))

    bundle = load_bundle(DEFAULT_BUNDLE)
    backend = create_backend("onnxruntime", bundle, max_batch=1)
    try:
        backend.warm_up()
        frames = [f for p in series.files for f in read_instance(str(p), settled=True).frames]
        tensor = series_to_tensor(frames, bundle.preprocess)[None]
        inference = median_ms(lambda: backend.infer(tensor))
    finally:
        backend.close()
    db = Database(work / "bound.db")
    n = iter(range(1 << 30))

    def commit() -> None:
        with db.transaction() as conn:
            conn.execute("INSERT INTO meta VALUES (?, ?)", (f"bench:{next(n)}", "x" * 2048))

    try:
        commit_ms = median_ms(commit)
    finally:
        db.close()
    return LowerBound(median_ms(read_all), inference, commit_ms)


def single_study_p95(work: Path, repeats: int) -> tuple[float, float]:
    """(median, p95) ms of scan-to-score for one study at a time, as bench_scan_to_score takes it."""
    from appliance.dev.bench import _collect, _scan_to_score, _stage  # bench imports this module

    staged = []
    for i in range(repeats):
        plan = plan_study(seed=8500 + i, vendor="A", n_slices=12, n_phases=25)
        staged.append((plan, *_stage(plan, work / "single-staged" / f"study{i}")))
    with ServedAppliance(work / "single") as app:
        stream = app.client.stream(after_event_id=-1)
        latencies, _ = _scan_to_score(app, _collect(stream), staged, "study")
        stream.cancel()
    return float(np.median(latencies)), float(np.percentile(latencies, 95))


def bench_burst(work: Path, add: Add, series: int = 16, scanner_counts: Sequence[int] = SCANNER_COUNTS,
                single_repeats: int = 20) -> list[BurstCase]:
    print(f"  (load average at the start: {_load()})", flush=True)
    staged = _stage_cine(work, series)
    bound = lower_bound(work, staged[0])
    cases = []
    for n in scanner_counts:
        case = run_case(work, staged, n)
        cases.append(case)
        print(f"    {n} scanner(s): {case.series_per_s:.2f} series/s, p95 {case.p95_ms:.0f} ms "
              f"(load {_load()})", flush=True)
    single_median, single_p95 = single_study_p95(work, single_repeats)
    base = cases[0].series_per_s
    for case in cases:
        target = {8: ">= 1x one scanner; p95 <= 500", 16: ">= 0.9x one scanner"}.get(case.scanners, "-")
        add(f"burst, {case.scanners} scanner(s) x {case.series // case.scanners} series: series/s (ratio); "
            f"scan-to-score median / p95 (ms)",
            f"{case.series_per_s:.2f} ({case.series_per_s / base:.2f}x); {case.median_ms:.0f} / {case.p95_ms:.0f}",
            target)
        add(f"  appliance CPU per series, {case.scanners} scanner(s) (ms)", f"{case.cpu_ms_per_series:.0f}", "-")
    add("lower bound for one study: 300 raw reads + inference + commit (ms)",
        f"{bound.total_ms:.1f} ({bound.reads_ms:.1f} + {bound.inference_ms:.1f} + {bound.commit_ms:.2f})", "-")
    add(f"single-study scan-to-score, median / p95 of {single_repeats} (ms)",
        f"{single_median:.0f} / {single_p95:.0f} ({single_p95 / bound.total_ms:.1f}x the bound)", "p95 <= 2x bound")
    print(f"  (load average at the end: {_load()})", flush=True)
    return cases
