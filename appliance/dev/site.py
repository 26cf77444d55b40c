"""A simulated hospital site, decided up front from a seed: stations, a daily schedule, studies, and the fate of each
study's final report. SYNTHETIC DATA, NOT FOR CLINICAL USE.

    month = plan_month(studies=2000, seed=7)
    for event in month.events():        # scans and report arrivals in simulated-time order
        ...

**Stations.** Three magnets: MR1 (vendor A, "Aurora Medical Systems"), MR2 (vendor B, "Borealis Healthcare") and
MR3, vendor A until the change, then vendor C ("Cobalt Imaging"), which the reference model never saw in training:
a station re-equipped mid-run. Each scans on weekdays from 08:00, one study per slot of about 45 minutes.

**Reports.** Each study's final report (ORU^R01, status F) arrives hours to days after the scan (log-normal, median
18 h, from 1 h to 14 days); `p_missing` of the studies are never reported, and `p_corrected` get a first report with
one finding wrong (a missed or over-called pericardial effusion or RV dilatation, written by the report generator
from the study's own parameters with that one changed) and a corrected report (status C, another reader's wording
of the true findings) one to five days later. Half the reports name the study by its Study Instance UID (ZDS or an
OBX), half by accession number only, as many RIS do. A report due after the month closed (`tail_days` after the
last scan) is still being written and is not sent.

Every random choice comes from a stream of its own: the same seed gives the same site, whatever is asked of it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np

from appliance.dev.oru import report_text
from appliance.dev.synth import VENDORS, plan_study
from appliance.dev.synth.plan import StudyPlan
from appliance.dev.synth.reports import impression, study_labels

STATIONS: tuple[tuple[str, str], ...] = (("MR1", "A"), ("MR2", "B"), ("MR3", "A"))
CHANGE_STATION, NEW_VENDOR = "MR3", "C"
# The study size the site scans: smaller than the vendors' defaults so that a few thousand studies render in hours
# on two cores (the model input is 3 slices x 16 frames of 64 x 64, whatever the matrix).
SMALL = {"n_slices": 8, "n_phases": 16, "matrix": (128, 128)}
SLOT_MINUTES = 45.0
FIRST_SLOT_HOUR = 8.0


def manufacturer_label(vendor: str) -> str:
    """The [evidence] manufacturer label of a synthetic vendor: the first word of its Manufacturer, lowercased
    ("Aurora Medical Systems" -> "aurora"), which the evidence monitor matches in whole words."""
    return VENDORS[vendor].manufacturer.split()[0].lower()


@dataclass(frozen=True)
class Report:
    """One ORU^R01 the RIS will send."""

    control_id: str
    status: str  # F or C
    at_h: float  # simulated hours since the month began
    text: str
    labels: Mapping[str, bool]  # what the text was written from (a wrong first report: one finding flipped)
    study_uid_in: str  # zds | obx | none (accession number only)


@dataclass(frozen=True)
class SiteStudy:
    index: int  # in scan order
    station: str
    plan: StudyPlan
    scanned_h: float
    fate: str  # final | corrected | missing
    reports: tuple[Report, ...] = ()
    flipped: str = ""  # the finding the wrong first report got wrong (corrected studies)

    @property
    def vendor(self) -> str:
        return self.plan.vendor

    @property
    def cine_uid(self) -> str:
        return next(s.series_uid for s in self.plan.series if s.role == "cine_sax")

    @property
    def labels(self) -> dict[str, bool]:
        """The generator's truth: what the offline evaluation scores against."""
        return study_labels(self.plan.params)


@dataclass(frozen=True)
class Event:
    at_h: float
    kind: str  # scan | report
    study: SiteStudy
    report: Report | None = None


@dataclass(frozen=True)
class Month:
    seed: int
    studies: tuple[SiteStudy, ...]
    change_index: int  # the first study index at which CHANGE_STATION scans with NEW_VENDOR
    end_h: float  # when the month closes: reports due later are not sent
    sizes: Mapping[str, object] = field(default_factory=dict)

    @property
    def days(self) -> float:
        return self.end_h / 24.0

    def events(self) -> Iterator[Event]:
        """Scans and report arrivals in simulated-time order (a scan before a report at the same time)."""
        events = [Event(s.scanned_h, "scan", s) for s in self.studies]
        events += [Event(r.at_h, "report", s, r) for s in self.studies for r in s.reports if r.at_h <= self.end_h]
        yield from sorted(events, key=lambda e: (e.at_h, e.kind != "scan", e.study.index))

    def sent(self) -> list[Report]:
        return [r for s in self.studies for r in s.reports if r.at_h <= self.end_h]


def _slots(rng: np.random.Generator, n: int) -> list[tuple[float, str]]:
    """(simulated hour, station) of the first `n` studies: weekdays, each station from 08:00, a slot of about 45
    minutes each (a no-show now and then leaves one empty), 12 slots a day."""
    out: list[tuple[float, str]] = []
    day = 0
    while len(out) < n:
        if day % 7 < 5:
            for station, _ in STATIONS:
                for slot in range(12):
                    if rng.random() < 0.08:
                        continue  # a no-show
                    start = FIRST_SLOT_HOUR + slot * SLOT_MINUTES / 60.0 + float(rng.uniform(0.0, 0.25))
                    out.append((day * 24.0 + start, station))
        day += 1
    return sorted(out)[:n]


def _delay_h(rng: np.random.Generator, median_h: float, sigma: float, lo: float, hi: float) -> float:
    return float(np.clip(median_h * math.exp(sigma * rng.standard_normal()), lo, hi))


def _wrong(plan: StudyPlan, rng: np.random.Generator) -> tuple[str, dict[str, bool], str]:
    """A first report with one finding wrong: (finding, the labels it says, its text)."""
    p = plan.params
    if rng.random() < 0.5:
        finding, wrong = "pericardial_effusion", dataclasses.replace(p, effusion_mm=0.0 if p.effusion_mm >= 3 else 6.0)
    else:
        finding, wrong = "rv_dilation", dataclasses.replace(p, rv_scale=1.0 if p.rv_scale >= 1.15 else 1.35)
    return finding, study_labels(wrong), impression(wrong, np.random.default_rng(plan.seed + 7))


def plan_month(studies: int, seed: int = 7, change_at: float = 0.5, p_missing: float = 0.06,
               p_corrected: float = 0.06, tail_days: float = 7.0, sizes: Mapping[str, object] | None = None) -> Month:
    """The site's `studies` studies and their reports; MR3 switches to vendor C at study `change_at * studies`."""
    if studies < 1:
        raise ValueError("studies must be >= 1")
    if not 0.0 <= change_at <= 1.0:
        raise ValueError("change_at must be in [0, 1]")
    sizes = dict(SMALL if sizes is None else sizes)
    schedule = np.random.default_rng([seed, 1])
    cases = np.random.default_rng([seed, 2])
    fates = np.random.default_rng([seed, 3])
    change_index = round(change_at * studies)
    vendors = dict(STATIONS)
    out = []
    for index, (at_h, station) in enumerate(_slots(schedule, studies)):
        vendor = NEW_VENDOR if station == CHANGE_STATION and index >= change_index else vendors[station]
        plan = plan_study(int(cases.integers(0, 2**31 - 1)), vendor=vendor, **sizes)  # type: ignore[arg-type]
        plan = dataclasses.replace(plan, series=tuple(s for s in plan.series if s.role == "cine_sax"))
        u = fates.random()
        fate = "missing" if u < p_missing else "corrected" if u < p_missing + p_corrected else "final"
        where = str(fates.choice(["zds", "obx", "none"], p=[0.4, 0.1, 0.5]))
        first_h = at_h + _delay_h(fates, 18.0, 0.9, 1.0, 14 * 24.0)
        reports: tuple[Report, ...] = ()
        flipped = ""
        truth = study_labels(plan.params)
        if fate == "final":
            reports = (Report(f"M{index:06d}F", "F", first_h, report_text(plan), truth, where),)
        elif fate == "corrected":
            flipped, said, text = _wrong(plan, fates)
            second_h = first_h + _delay_h(fates, 48.0, 0.5, 24.0, 5 * 24.0)
            reports = (Report(f"M{index:06d}F", "F", first_h, text, said, where),
                       Report(f"M{index:06d}C", "C", second_h, report_text(plan, variant=1), truth, where))
        out.append(SiteStudy(index, station, plan, at_h, fate, reports, flipped))
    end_h = out[-1].scanned_h + tail_days * 24.0
    return Month(seed, tuple(out), change_index, end_h, sizes)
