"""A small site's store, written through the store's own APIs, for the validation report's tests (and its
screenshots): studies from three manufacturers over some weeks, scores drawn around the reference bundle's
thresholds (a third vendor arriving later, further from the training images and scored worse), final reports for
most studies, a few corrected, cancelled and assessed, a few not assessable and failed series.

    site = build_site(tmp_path / "scanside.db", studies=120)
    site.stored[("lv_dilation", True, True)]   # what the agreement table must show

Each result's ledger time is set by swapping the store modules' `time` for a clock of the builder's (the store
reads `time.time()` at save), so the weeks are real ledger times, not just payload fields.
"""

from __future__ import annotations

import math
import types
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from appliance.bundle import LabelBank, load_bundle
from appliance.config import PROJECT_ROOT
from appliance.handovers import (
    FindingScore,
    ReceivedReport,
    Scores,
    SeriesInfo,
    SeriesRole,
    SeriesState,
    StudyResult,
    TruthStatus,
)
from appliance.store import Store, results, series

REFERENCE = PROJECT_ROOT / "engines" / "reference-v1"
START = 1_772_409_600.0  # 2026-03-02 00:00 UTC, a Monday
DAY = 86400.0
VENDORS = (("Aurora Medical Systems", "MR1"), ("Borealis Healthcare", "MR2"), ("Cobalt Imaging", "MR3"))
LABELS = ("aurora", "borealis", "cobalt")
PATIENT = "DOE^JANE"  # a patient-like name in every free-text field the builder can reach
ASSESSOR = "Dr Eve Example"


def bank() -> LabelBank:
    return load_bundle(REFERENCE).label_bank


@dataclass
class Site:
    path: Path
    bank: LabelBank
    accessions: list[str] = field(default_factory=list)
    # (finding, called positive, truth) -> cases, over assessable series with current truth
    stored: Counter[tuple[str, bool, bool]] = field(default_factory=Counter)
    assessed: Counter[tuple[str, str]] = field(default_factory=Counter)
    first_at: float = START
    last_at: float = START


@contextmanager
def clock(now: list[float]) -> Iterator[None]:
    fake = types.SimpleNamespace(time=lambda: now[0])
    saved = results.time, series.time
    results.time = series.time = fake  # type: ignore[assignment]
    try:
        yield
    finally:
        results.time, series.time = saved


def _info(n: int, vendor: int, accession: str) -> SeriesInfo:
    manufacturer, station = VENDORS[vendor]
    return SeriesInfo(key=f"s{n:012d}", study_uid=f"1.2.826.0.1.{n}", series_uid=f"1.2.826.0.1.{n}.1",
                      role=SeriesRole.CINE_SAX, manufacturer=manufacturer, description=f"cine sax {PATIENT}",
                      received=300, expected=300, completed_by="tags", last_file_at=START,
                      accession_number=accession, station_name=station)


def _scores(bank_: LabelBank, truth: dict[str, bool], rng: np.random.Generator, shift: float, ood: bool,
            assessable: bool) -> Scores:
    findings = []
    for f in bank_.findings:
        spread = 1.6 / f.slope  # about one logit either side of the threshold
        centre = f.threshold + (1 if truth[f.id] else -1) * spread * (1.4 - shift)
        score = float(centre + rng.normal(0, spread))
        probability = 1 / (1 + math.exp(-f.slope * (score - f.threshold)))
        positive = assessable and probability >= 0.5
        findings.append(FindingScore(f.id, f.name, score, f.threshold, probability if assessable else 0.0, positive,
                                     f.rare, ("rare_finding",) if f.rare and positive else ()))
    reasons = ("out_of_distribution",) if ood else ()
    return Scores(tuple(findings), float(rng.lognormal(math.log(bank_.reference.threshold * (1.35 if ood else 0.6)),
                                                       0.2)),
                  reasons + tuple(r for f in findings for r in f.review_reasons), assessable,
                  () if assessable else ("too_few_slices",))


def build_site(path: Path, studies: int = 120, weeks: int = 5, seed: int = 3, change_at: float = 0.5) -> Site:
    """`studies` over `weeks`; vendor C ("Cobalt") joins after `change_at` of them, mostly out of distribution.
    Reports for about 85 % of assessable studies (by Study Instance UID or accession number, some before their
    study), 3 % corrected, 1 % cancelled, a few assessments."""
    rng = np.random.default_rng(seed)
    bank_ = bank()
    site = Site(path, bank_)
    store = Store(path)
    now = [START]
    truths: dict[int, dict[str, bool]] = {}
    calls: dict[int, dict[str, bool]] = {}
    assessable_of: dict[int, bool] = {}
    with clock(now):
        for n in range(1, studies + 1):
            now[0] = START + (n - 0.5) / studies * weeks * 7 * DAY
            late = n > studies * change_at
            vendor = int(rng.integers(0, 3 if late else 2))
            accession = f"ACC{seed:02d}{n:05d}"
            site.accessions.append(accession)
            info = _info(n, vendor, accession)
            truth = {f.id: bool(rng.random() < f.prevalence) for f in bank_.findings}
            if n % 41 == 0:
                store.series.set_state(info, SeriesState.FAILED, f"preprocess: no slices for {PATIENT}",
                                       stage="preprocess")
                continue
            assessable = n % 23 != 0
            ood = bool(rng.random() < (0.7 if vendor == 2 else 0.01))
            scores = _scores(bank_, truth, rng, 0.5 if vendor == 2 else 0.0, ood, assessable)
            early = n % 5 == 0  # this study's report arrives before its images
            if early:
                store.truth.receive(_report(f"M{n}", truth, accession=accession))
            store.series.seen(info)
            store.results.save(StudyResult(info, scores, "reference", "1", "onnxruntime", "fp32", {}, now[0],
                                           bank_version="bank-1", input_sha256="ab" * 32))
            truths[n], assessable_of[n] = truth, assessable
            calls[n] = {f.finding_id: f.positive for f in scores.findings}
            if not early and rng.random() < 0.85:
                by_uid = n % 2 == 0
                store.truth.receive(_report(f"M{n}", truth, study_uid=info.study_uid if by_uid else None,
                                            accession="" if by_uid else accession))
            elif not early:
                truths.pop(n)  # never reported
            if n in truths and n % 29 == 0:  # a corrected report flips one finding
                truths[n] = {**truths[n], "lv_dilation": not truths[n]["lv_dilation"]}
                store.truth.receive(_report(f"C{n}", truths[n], study_uid=info.study_uid,
                                            status=TruthStatus.CORRECTED))
            if n in truths and n % 61 == 0:  # cancelled: the truth is withdrawn
                store.truth.receive(_report(f"X{n}", {}, study_uid=info.study_uid, status=TruthStatus.CANCELLED))
                truths.pop(n)
            if n in truths and assessable and n % 13 == 0:  # a radiologist assesses three findings
                verdicts = {"lv_dilation": ("reject", False), "hcm": ("accept", False),
                            "pericardial_effusion": ("correct", True)}
                store.truth.assess(info.series_uid, verdicts, ASSESSOR, comment=f"re-read for {PATIENT}")
                truths[n] = {**truths[n], "lv_dilation": not calls[n]["lv_dilation"], "hcm": calls[n]["hcm"],
                             "pericardial_effusion": True}
                for finding, (verdict, _) in verdicts.items():
                    site.assessed[(finding, verdict)] += 1
            site.last_at = now[0]
    for n, truth in truths.items():
        if assessable_of[n]:
            for finding, value in truth.items():
                site.stored[(finding, calls[n][finding], value)] += 1
    store.close()
    return site


def _report(control_id: str, labels: dict[str, bool], study_uid: str | None = None, accession: str = "",
            status: TruthStatus = TruthStatus.FINAL) -> ReceivedReport:
    return ReceivedReport(control_id=control_id, sending_application="RIS", status=status,
                          accession_number=accession, study_uid=study_uid, observed_at=None, labels=labels,
                          mentioned=tuple(labels))


def config_text(data_dir: Path) -> str:
    return (f'[paths]\ndata_dir = "{data_dir}"\nwatch_dir = "{data_dir / "incoming"}"\n'
            f'[engine]\nbundle = "{REFERENCE}"\n'
            f"[evidence]\nmanufacturers = {list(LABELS)!r}\nmanufacturer_aliases = []\n"
            'stations = ["MR1", "MR2", "MR3"]\nmin_auroc_cases = 10\nwindow_studies = 40\nbaseline_studies = 40\n'
            "min_window_studies = 15\n").replace("'", '"')

