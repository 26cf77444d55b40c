"""A simulated hospital month through a real appliance: `python -m appliance.dev.month --studies 2000 --out FILE`.

The site of `appliance.dev.site` plays out against an in-process `Appliance` (watch folder, SQLite, ONNX Runtime,
gRPC and Prometheus on loopback, the MLLP listener on, shadow mode as a site validating before go-live): each
study is rendered and written into the watch folder under its station's folder (StationName set to the station),
and each report is sent as ORU^R01 over real MLLP when its simulated time comes. Simulated time runs as fast as the
synthetic scanner can write: the order of scans and report arrivals is the site's, the hours between them are not
waited for. Then it measures, from the appliance's own store and evidence monitor:

- the live performance per finding and manufacturer (the evidence monitor's refresh over the ledger and the truth
  the reports set), against the offline evaluation of the same studies: their sealed scores against the
  generator's true labels (`study_labels`), over the matched studies and over every scored study;
- when the drift flag rose after the vendor change, in studies (every ledger prefix tested, as a monitor
  refreshing after every study would), and any false alarm before it;
- the extractor's label accuracy: each stored report's labels against those its text was written from;
- reports matched, pending, corrected (and whether each correction changed the truth), the ledger's verification.

`scanside demo --prospective` runs a short version of the same (`run_prospective_demo`). SYNTHETIC DATA, NOT FOR
CLINICAL USE.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from prometheus_client import CollectorRegistry

from appliance import RESEARCH_NOTICE, __version__
from appliance.config import Settings
from appliance.dev.oru import MllpClient, oru_message
from appliance.dev.site import CHANGE_STATION, NEW_VENDOR, STATIONS, Month, SiteStudy, manufacturer_label, plan_month
from appliance.dev.synth import VENDORS, iter_instances, write_instance
from appliance.evidence import ALL, LabelSets, delong, drift, observations_from_ledger
from appliance.evidence.cases import scored_assessable
from appliance.evidence.drift import DriftReference
from appliance.evidence.monitor import Evidence, drift_policy
from appliance.evidence.performance import Auroc
from appliance.service import Appliance
from appliance.store.ledger import Verdict
from appliance.store.series import SeriesState


def site_settings(base: Settings, root: Path, min_auroc_cases: int = 20, refresh_s: float = 5.0) -> Settings:
    """The appliance as the site runs it: [hl7] on, shadow mode, the synthetic vendors' manufacturer labels and the
    stations configured for the evidence, loopback ports picked free, no PACS."""
    return base.replace(
        paths={"data_dir": str(root / "data"), "watch_dir": str(root / "incoming")},
        appliance={"mode": "shadow"},
        grpc={"port": 0}, metrics={"port": 0},
        hl7={"enabled": True, "port": 0},
        assembly={"quiet_period_s": 1.0},
        ingest={"settle_seconds": 0.5, "poll_interval_s": 0.05},
        export={"pacs_ae_title": ""},
        evidence={"manufacturers": [manufacturer_label(v) for v in sorted(VENDORS)], "manufacturer_aliases": [],
                  "stations": [name for name, _ in STATIONS], "refresh_interval_s": refresh_s,
                  "min_auroc_cases": min_auroc_cases})


def scan(study: SiteStudy, incoming: Path) -> None:
    """The station writes the study into its folder of the watch folder, StationName set to the station."""
    for inst in iter_instances(study.plan):
        inst.dataset.StationName = study.station
        write_instance(inst, incoming / study.station)


@dataclass(frozen=True)
class Onset:
    """When a drift group first read `drifting` after the change."""

    group: str
    studies: int  # studies scored from the first new-vendor study on, that one included
    new_vendor_studies: int
    signals: tuple[str, ...]
    before: bool  # the group was drifting already just before the first new-vendor study


@dataclass(frozen=True)
class FindingComparison:
    finding: str
    live: Auroc | None
    offline_matched: Auroc
    offline_all: Auroc

    @property
    def within(self) -> bool | None:
        """Is the offline AUROC of every scored study inside the live 95 % interval?"""
        if self.live is None or self.offline_all.estimate != self.offline_all.estimate:
            return None
        return self.live.lower <= self.offline_all.estimate <= self.live.upper


@dataclass(frozen=True)
class MonthResult:
    month: Month
    wall_s: float
    scored: int
    assessable: int
    failed: int
    skipped: int  # cine series closed as not scored: studies the month lost
    acks: Mapping[str, int]
    truth_counts: Mapping[str, int]
    with_truth: int
    not_arrived: int  # studies whose report was due after the month closed
    corrections: tuple[int, int]  # (changed the truth as expected, corrections sent)
    verdict: Verdict
    evidence: Evidence
    comparisons: tuple[FindingComparison, ...]
    extractor: Mapping[str, tuple[int, int]]  # finding -> (read as written, reports)
    onsets: tuple[Onset, ...]
    false_alarms: tuple[int, int]  # (ledger prefixes before the change with a group drifting, prefixes tested)
    manufacturers: tuple[str, ...]
    ood_expected: float


def run_month(settings: Settings, month: Month, root: Path, min_auroc_cases: int = 20, timeout_s: float = 600.0,
              progress: TextIO | None = None) -> MonthResult:
    started = time.monotonic()
    app = Appliance(site_settings(settings, root, min_auroc_cases), registry=CollectorRegistry())
    app.start()
    try:
        mllp = app.pipeline.mllp
        assert mllp is not None, "[hl7] is on in site_settings"
        acks: Counter[str] = Counter()
        incoming = Path(app.settings.paths.incoming)
        with _Sender("127.0.0.1", mllp.port) as ris:
            for event in month.events():
                if event.report is None:
                    scan(event.study, incoming)
                    if progress is not None and (event.study.index + 1) % 25 == 0:
                        progress.write(f"  {event.study.index + 1} of {len(month.studies)} studies scanned, "
                                       f"{app.store.ledger.count()} scored\n")
                        progress.flush()
                    continue
                r = event.report
                acks[ris.send(oru_message(event.study.plan, r.control_id, status=r.status, text=r.text,
                                          study_uid_in=r.study_uid_in))[0]] += 1
        # a cine series the appliance closed as not scored (skipped) ends the wait too, and is counted as lost below
        _await(lambda: app.store.ledger.count() + _skipped(app) >= len(month.studies), timeout_s,
               "every study scored, failed or skipped")
        evidence = app.pipeline.evidence.refresh()
        assert evidence is not None, "the evidence refresh failed (see the log)"
        entries = list(app.store.ledger.entries())
        return _measure(app, month, entries, evidence, dict(acks), time.monotonic() - started)
    finally:
        app.stop()


class _Sender:
    """The RIS side: one MLLP connection, opened again when the listener has closed it (it closes connections idle
    for [hl7] idle_timeout_s, and the hours between reports are seconds here only when scans are quick); a message
    whose ACK was lost is sent again under the same control id, which the appliance applies once."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.client: MllpClient | None = None

    def send(self, message: str) -> tuple[str, str]:
        for attempt in (1, 2):
            try:
                if self.client is None:
                    self.client = MllpClient(self.host, self.port)
                return self.client.send(message)
            except OSError:  # ConnectionError included: closed while idle
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def __enter__(self) -> _Sender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _skipped(app: Appliance) -> int:
    return app.store.series.counts().get(SeriesState.SKIPPED, 0)


def _await(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.1)


def _measure(app: Appliance, month: Month, entries: list[dict[str, Any]], evidence: Evidence, acks: dict[str, int],
             wall_s: float) -> MonthResult:
    store, labels = app.store, LabelSets.from_config(app.settings.evidence)
    by_uid = {s.cine_uid: s for s in month.studies}
    scored = [e for e in entries if e["kind"] == "scored"]
    assessable = list(scored_assessable(entries))
    truth = store.truth.by_series()
    findings = tuple(f.id for f in app.bundle.label_bank.findings)
    comparisons = tuple(_compare(f, evidence, assessable, truth, by_uid) for f in findings)
    sent = {r.control_id: r for r in month.sent()}
    extractor = {f: [0, 0] for f in findings}
    for record in store.truth.records():
        written = sent.get(str(record["control_id"]))
        if record["source"] != "report" or written is None:
            continue
        read: Mapping[str, bool] = record["labels"]  # type: ignore[assignment]
        for f in findings:
            extractor[f][0] += read.get(f) == written.labels[f]
            extractor[f][1] += 1
    corrected = [s for s in month.studies if s.fate == "corrected" and s.reports[1].at_h <= month.end_h]
    changed = sum(1 for s in corrected
                  if truth.get(s.cine_uid, {}).get(s.flipped) == s.labels[s.flipped]
                  and any(h["finding_id"] == s.flipped and h["change"] == "replaced"
                          for h in store.truth.history(s.plan.study_uid)))
    onsets, false_alarms = _drift_onsets(entries, labels, app, by_uid)
    return MonthResult(
        month=month, wall_s=wall_s, scored=len(scored), assessable=len(assessable),
        failed=sum(e["kind"] == "failed" for e in entries), skipped=_skipped(app), acks=acks,
        truth_counts=store.truth.counts(),
        with_truth=len(truth), not_arrived=sum(1 for s in month.studies if s.reports and s.reports[0].at_h >
                                               month.end_h),
        corrections=(changed, len(corrected)), verdict=store.ledger.verify(), evidence=evidence,
        comparisons=comparisons, extractor={f: (a, b) for f, (a, b) in extractor.items()}, onsets=onsets,
        false_alarms=false_alarms, manufacturers=labels.manufacturer_labels,
        ood_expected=app.settings.evidence.ood_expected_rate)


def _compare(finding: str, evidence: Evidence, assessable: Sequence[Mapping[str, Any]],
             truth: Mapping[str, Mapping[str, bool]], by_uid: Mapping[str, SiteStudy]) -> FindingComparison:
    def offline(uids: Sequence[str]) -> Auroc:
        return delong([score[u] for u in uids], [by_uid[u].labels[finding] for u in uids])

    score = {e["series_uid"]: next(float(f["score"]) for f in e["payload"]["findings"] if f["id"] == finding)
             for e in assessable if e["series_uid"] in by_uid}
    every = list(score)
    matched = [u for u in every if finding in truth.get(u, {})]
    return FindingComparison(finding, evidence.performance[(finding, ALL, ALL)].auroc, offline(matched),
                             offline(every))


def _drift_onsets(entries: list[dict[str, Any]], labels: LabelSets, app: Appliance,
                  by_uid: Mapping[str, SiteStudy]) -> tuple[tuple[Onset, ...], tuple[int, int]]:
    """Every ledger prefix tested: the first at which the pooled group and the new vendor's group read drifting
    after the first new-vendor study, and how many prefixes before it had any group drifting."""
    reference = DriftReference.from_bank(app.bundle.label_bank)
    policy = drift_policy(app.settings.evidence)
    obs = observations_from_ledger(entries, labels, reference)
    seq_new = {e["seq"] for e in entries if e["series_uid"] in by_uid and by_uid[e["series_uid"]].vendor ==
               NEW_VENDOR}
    first = next((i for i, o in enumerate(obs) if o.seq in seq_new), len(obs))
    false_alarms = sum(1 for i in range(first) if any(g.drifting for g in drift(obs[:i + 1], reference, labels,
                                                                                policy).values()))
    new_label = labels.manufacturer(VENDORS[NEW_VENDOR].manufacturer)
    before = drift(obs[:first], reference, labels, policy) if first else {}
    onsets: dict[str, Onset] = {}
    for i in range(first, len(obs)):
        report = drift(obs[:i + 1], reference, labels, policy)
        for group in (ALL, new_label):
            if group not in onsets and report[group].drifting:
                onsets[group] = Onset(group, i - first + 1, sum(o.seq in seq_new for o in obs[first:i + 1]),
                                      tuple(s.name for s in report[group].signals if s.drifting),
                                      group in before and before[group].drifting)
        if len(onsets) == 2:
            break
    return tuple(onsets[g] for g in (ALL, new_label) if g in onsets), (false_alarms, first)


# --- what is printed and written --------------------------------------------------------------------------------

def _pct(k: int, n: int) -> str:
    return f"{k}/{n} ({100 * k / n:.0f} %)" if n else "-"


def _roc(a: Auroc | None) -> str:
    if a is None or a.estimate != a.estimate:
        return "-"
    return f"{a.estimate:.3f} [{a.lower:.3f}, {a.upper:.3f}]"


def summary_lines(r: MonthResult) -> list[str]:
    """Plain lines for the terminal (the demo)."""
    m, tc = r.month, r.truth_counts
    fates = Counter(s.fate for s in m.studies)
    lines = [f"studies scanned: {len(m.studies)} over {m.days:.0f} simulated days on {len(STATIONS)} stations "
             f"({CHANGE_STATION} switched to vendor {NEW_VENDOR} at study {m.change_index}); run took {r.wall_s:.0f} s",
             f"studies scored: {r.scored} ({r.assessable} assessable), failed: {r.failed}, "
             f"not scored (skipped): {r.skipped}",
             f"reports sent: {sum(r.acks.values())} (ACK {', '.join(f'{k} {v}' for k, v in sorted(r.acks.items()))});"
             f" never reported: {fates['missing']}, still being written when the month closed: {r.not_arrived}",
             f"truth records: matched {tc['matched']}, pending {tc['pending']}, corrected {tc['corrected']}; "
             f"studies with truth: {r.with_truth}; corrections that changed the truth: "
             f"{r.corrections[0]} of {r.corrections[1]}",
             "ledger: " + (f"verified, {r.verdict.entries} entries, head {r.verdict.head_seq}" if r.verdict.ok
                           else f"FAILED at seq {r.verdict.bad_seq}: {r.verdict.problem}"), "",
             "live performance at the threshold, per manufacturer: sensitivity / specificity (cases), AUROC where "
             "enough cases"]
    for f in r.comparisons:
        lines.append(f"  {f.finding}")
        for man in (ALL, *r.manufacturers):
            p = r.evidence.performance[(f.finding, man, ALL)]
            if p.positives + p.negatives == 0:
                continue
            lines.append(f"    {man:10} sens {_pct(p.sensitivity.k, p.sensitivity.n):16} "
                         f"spec {_pct(p.specificity.k, p.specificity.n):16} AUROC {_roc(p.auroc)}")
    lines += ["", "drift after the vendor change:"]
    lines += [f"  {o.group}: flagged after {o.studies} studies ({o.new_vendor_studies} of them vendor {NEW_VENDOR}), "
              f"by {', '.join(o.signals)}" + (" (drifting already before the change)" if o.before else "")
              for o in r.onsets] or ["  not flagged"]
    lines.append(f"  false alarms before the change: {r.false_alarms[0]} of the {r.false_alarms[1]} ledger prefixes "
                 "before it")
    lines.append("  OOD flag rate over each group's last window (bundle threshold; expected "
                 f"{100 * r.ood_expected:.0f} %): " + ", ".join(
                     f"{g} {100 * d.ood_rate:.0f} % of {d.window_studies}" for g, d in r.evidence.drift.items()
                     if d.window_studies))
    return lines


def markdown(r: MonthResult, command: str) -> str:
    m = r.month
    out = ["# A simulated hospital month: live evidence against the offline evaluation", "",
           "Written by `python -m appliance.dev.month` (appliance/dev/month.py; the site: appliance/dev/site.py). "
           "Synthetic data, not for clinical use. Three stations (MR1 vendor A, MR2 vendor B, MR3 vendor A, then "
           f"vendor {NEW_VENDOR}, unseen in training), weekdays from 08:00 in 45-minute slots; each study written "
           "into the watch folder of an in-process appliance in shadow mode, each final report sent as ORU^R01 over "
           "MLLP at its simulated time (log-normal delay, median 18 h; some never sent, some corrected a few days "
           "later with one finding changed). Simulated time runs as fast as the synthetic scanner writes.", "",
           "## Run", "",
           f"Measured {time.strftime('%Y-%m-%d')} by `{command}` (ScanSide {__version__}) on {platform.machine()}, "
           f"{os.cpu_count()} CPU(s), Python {platform.python_version()}; seed {m.seed}, study size {dict(m.sizes)}, "
           f"cine series only; run took {r.wall_s:.0f} s.", "", "```", *summary_lines(r), "```", "",
           "## Live AUROC against the offline evaluation of the same studies", "",
           "Live: the evidence monitor's AUROC (DeLong 95 % interval) over the matched studies, truth from the "
           "reports. Offline: the same sealed scores against the generator's labels, over the same matched studies "
           "and over every scored assessable study.", "",
           "| finding | live cases (+/-) | live AUROC [95 % CI] | offline, matched | offline, every study | "
           "offline inside the live CI |", "|---|---:|---|---:|---:|---|"]
    for c in r.comparisons:
        p = r.evidence.performance[(c.finding, ALL, ALL)]
        within = {True: "yes", False: "**no**", None: "- (too few cases)"}[c.within]
        out.append(f"| {c.finding} | {p.positives}/{p.negatives} | {_roc(c.live)} | {_roc(c.offline_matched)} | "
                   f"{_roc(c.offline_all)} | {within} |")
    out += ["", "## Extractor label accuracy on the reports the appliance stored", "",
            "| finding | read as written | accuracy |", "|---|---:|---:|"]
    out += [f"| {f} | {a}/{n} | {100 * a / n:.2f} % |" if n else f"| {f} | 0/0 | - |"
            for f, (a, n) in r.extractor.items()]
    return "\n".join(out) + "\n"


# --- entry points -----------------------------------------------------------------------------------------------

def run_prospective_demo(settings: Settings, studies: int = 90, seed: int = 7, out: TextIO = sys.stdout,
                         keep: bool = False) -> int:
    """`scanside demo --prospective`: a short month on a temporary folder, summarised at the end."""
    out.write(f"ScanSide prospective demo: a simulated site. {RESEARCH_NOTICE}\n")
    month = plan_month(studies, seed)
    out.write(f"{studies} studies on {len(STATIONS)} stations, reports over MLLP, {CHANGE_STATION} switching to "
              f"vendor {NEW_VENDOR} at study {month.change_index}\n")
    tmp = tempfile.mkdtemp(prefix="scanside-month-")
    try:
        result = run_month(settings, month, Path(tmp), min_auroc_cases=10, progress=out)
    finally:
        if not keep:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
        else:
            out.write(f"data folder kept: {tmp}\n")
    out.write("\n" + "\n".join(summary_lines(result)) + "\n" + RESEARCH_NOTICE + "\n")
    return 0 if result.verdict.ok and result.scored else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--change-at", type=float, default=0.5, help="share of the studies before the vendor change")
    ap.add_argument("--min-auroc-cases", type=int, default=20)
    ap.add_argument("--bundle", type=Path, help="engine bundle (default: the configured one, engines/reference-v1)")
    ap.add_argument("--vendor-size", action="store_true",
                    help="each vendor's own matrix, slices and phases instead of the small site size (slower)")
    ap.add_argument("--out", type=Path, help="write the numbers as Markdown here")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for scoring after the last scan")
    args = ap.parse_args(argv)
    import logging

    logging.basicConfig(level="WARNING")
    month = plan_month(args.studies, args.seed, change_at=args.change_at, sizes={} if args.vendor_size else None)
    settings = Settings() if args.bundle is None else Settings().replace(engine={"bundle": str(args.bundle)})
    with tempfile.TemporaryDirectory(prefix="scanside-month-") as tmp:
        result = run_month(settings, month, Path(tmp), args.min_auroc_cases, args.timeout, progress=sys.stdout)
    print("\n".join(summary_lines(result)))
    if args.out:
        command = "python -m appliance.dev.month " + " ".join(argv if argv is not None else sys.argv[1:])
        args.out.write_text(markdown(result, command.strip()))
        print(f"written to {args.out}")
    return 0 if result.verdict.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
