"""What a validation report shows, read from the store for one period into typed records.

    data = gather(store, bank, settings.evidence, Period(since, until))

Everything comes from the sealed ledger (what the appliance said, when, with which model and mode), the store's
current truth per study (what the final reports, or a radiologist's later assessment, said) and the ledger's own
verification. The statistics are `appliance.evidence`'s, unchanged: the cases, the slices, Wilson, DeLong and the
calibration bins; this module only selects and counts. No identifier leaves it: series and studies are counted,
never named (the ledger's UIDs, the reports' accession numbers and an assessor's name stay in the store).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from appliance import __version__
from appliance.evidence.cases import ALL, Case, LabelSets, cases_from_ledger, scored_assessable
from appliance.evidence.drift import DriftPolicy, DriftReference, GroupDrift, drift, observations_from_ledger
from appliance.evidence.monitor import drift_policy
from appliance.evidence.performance import SlicePerformance, performance
from appliance.store.ledger import Verdict
from appliance.validation.timeline import Timeline, timeline

if TYPE_CHECKING:
    from appliance.bundle import LabelBank
    from appliance.config import EvidenceConfig
    from appliance.store import Store


# Below this many confirmed cases of a finding, the report says plainly that nothing can be concluded about its
# sensitivity: at 30 cases and 90 % the Wilson interval is still about 74-97 %.
ENOUGH_CASES = 30


@dataclass(frozen=True)
class Period:
    """[since, until): Unix seconds; `until` None is open (up to the newest entry)."""

    since: float
    until: float | None = None

    def __post_init__(self) -> None:
        if self.until is not None and self.until <= self.since:
            raise ValueError("the period's end must be after its start")

    def contains(self, t: float) -> bool:
        return t >= self.since and (self.until is None or t < self.until)


@dataclass(frozen=True)
class Seen:
    """One value of a version or mode in the period's entries, and when it was in force."""

    what: str  # "bundle", "label bank", "mode", "backend"
    value: str
    entries: int
    first_at: float
    last_at: float


@dataclass(frozen=True)
class Counts:
    entries: int  # ledger entries in the period, of every kind
    scored: int  # series scored (assessable or not)
    assessable: int
    not_assessable: int  # the quality gate refused them: no call to judge
    failed: int  # series that failed before a score
    studies: int  # distinct studies among the scored series
    with_truth: int  # assessable scored series whose study has current truth for at least one finding
    pending_truth: int  # assessable scored series without any truth yet
    needs_review: int  # assessable scored series flagged for review
    truth_records: Mapping[str, int]  # store.truth.counts(), all time (pending, matched, corrected, ...)


@dataclass(frozen=True)
class FindingInfo:
    id: str
    name: str
    rare: bool  # marked rare in the bank that scored it (sealed per finding in each entry)
    prevalence: float  # the bank's; NaN when the finding is not in the shipped bank


@dataclass(frozen=True)
class Agreement:
    """One finding's 2x2: the appliance's call against the current truth (assessable series with truth only)."""

    finding_id: str
    both_positive: int  # called positive, truth present
    model_only: int  # called positive, truth absent
    truth_only: int  # called negative, truth present
    both_negative: int
    from_report: int  # of these cases, truth set by a final or corrected report
    from_assessment: int  # by a radiologist's assessment (AssessResult), which came later than the report

    @property
    def total(self) -> int:
        return self.both_positive + self.model_only + self.truth_only + self.both_negative


@dataclass(frozen=True)
class Assessed:
    """Radiologists' assessments of the period's results, per finding: counted, never named."""

    finding_id: str
    accepted: int
    rejected: int
    corrected: int


@dataclass(frozen=True)
class ManufacturerSeen:
    """A DICOM Manufacturer as written, the configured label it counts under, and how many scored series."""

    written: str
    label: str
    series: int


@dataclass(frozen=True)
class ValidationData:
    generated_at: float
    appliance_version: str
    period: Period
    first_seq: int | None  # the period's first and last ledger entries (None when it has none)
    last_seq: int | None
    last_hash: str  # the hash of the period's last entry: anchor it as docs/ledger.md says
    verdict: Verdict  # the whole ledger's verification, read when the report was made
    bundle: tuple[str, str] | None  # (name, version) evaluated: the one of the period's newest scored entry
    other_bundles: tuple[tuple[str, str], ...]  # also seen in the period, not pooled with it
    seen: tuple[Seen, ...]
    counts: Counts
    findings: tuple[FindingInfo, ...]
    manufacturers: tuple[str, ...]  # labels with at least one assessable scored series, in configured order
    written: tuple[ManufacturerSeen, ...]
    stations: tuple[tuple[str, int], ...]  # station label -> assessable scored series
    cases: tuple[Case, ...]
    performance: Mapping[tuple[str, str, str], SlicePerformance]
    agreement: tuple[Agreement, ...]
    assessed: tuple[Assessed, ...]
    drift_now: Mapping[str, GroupDrift]  # what the monitor would show at the period's end
    timeline: Timeline
    policy: DriftPolicy
    ood_threshold: float
    last_at: float | None  # when the period's newest entry was recorded
    min_auroc_cases: int
    calibration_bins: int

    @property
    def finding_ids(self) -> tuple[str, ...]:
        return tuple(f.id for f in self.findings)

    def slice(self, finding: str, manufacturer: str = ALL) -> SlicePerformance:
        return self.performance[(finding, manufacturer, ALL)]

    def cases_of(self, finding: str, manufacturer: str = ALL) -> list[Case]:
        return [c for c in self.cases if c.finding_id == finding and manufacturer in (ALL, c.manufacturer)]


def gather(store: Store, bank: LabelBank, config: EvidenceConfig, period: Period,
           now: float | None = None) -> ValidationData:
    """Read the store once for `period` (ledger entries recorded in it) and compute what the report shows."""
    now = time.time() if now is None else now
    verdict = store.ledger.verify()
    upto = [e for e in store.ledger.entries() if period.until is None or e["recorded_at"] < period.until]
    entries = [e for e in upto if e["recorded_at"] >= period.since]
    labels = LabelSets.from_config(config)
    scored = [e for e in entries if e["kind"] == "scored"]
    bundle = (scored[-1]["bundle_name"], scored[-1]["bundle_version"]) if scored else None
    mine = [e for e in scored_assessable(entries) if (e["bundle_name"], e["bundle_version"]) == bundle]
    truth = store.truth.by_series()
    cases = cases_from_ledger(mine, truth, labels)
    findings = _findings(mine or scored, bank)
    policy = drift_policy(config)
    reference = DriftReference(tuple(f.id for f in findings), tuple(f.prevalence if f.prevalence == f.prevalence
                                                                     else 0.0 for f in findings),
                               bank.reference.threshold if bank.reference is not None else float("inf"))
    # The monitor's windows and baselines run over the whole ledger up to the period's end, as it saw them then.
    history = [e for e in scored_assessable(upto) if (e["bundle_name"], e["bundle_version"]) == bundle]
    observations = observations_from_ledger(history, labels, reference)
    in_period = {int(e["seq"]) for e in mine}
    times = {int(e["seq"]): float(e["recorded_at"]) for e in history}
    manufacturers = tuple(m for m in labels.manufacturer_labels
                          if any(labels.manufacturer(e["payload"].get("manufacturer")) == m for e in mine))
    return ValidationData(
        generated_at=now, appliance_version=__version__, period=period,
        first_seq=int(entries[0]["seq"]) if entries else None, last_seq=int(entries[-1]["seq"]) if entries else None,
        last_hash=str(entries[-1]["hash"]) if entries else "", verdict=verdict, bundle=bundle,
        other_bundles=tuple(sorted({(e["bundle_name"], e["bundle_version"]) for e in scored} - {bundle})),
        seen=_seen(entries), counts=_counts(store, entries, mine, truth), findings=findings,
        manufacturers=manufacturers, written=_written(scored, labels),
        stations=tuple(sorted(Counter(labels.station(e["payload"].get("station")) for e in mine).items())),
        cases=tuple(cases),
        performance=performance(cases, reference.findings, labels, config.min_auroc_cases, config.calibration_bins),
        agreement=_agreement(store, mine, cases, reference.findings),
        assessed=_assessed(store, {e["series_uid"] for e in scored}, reference.findings),
        drift_now=drift(observations, reference, labels, policy),
        timeline=timeline(observations, times, in_period, reference, labels, policy, period.since,
                          period.until if period.until is not None else max(times.values(), default=now)),
        policy=policy, ood_threshold=reference.ood_threshold,
        last_at=float(entries[-1]["recorded_at"]) if entries else None, min_auroc_cases=config.min_auroc_cases,
        calibration_bins=config.calibration_bins)


def _findings(entries: Sequence[Mapping[str, Any]], bank: LabelBank) -> tuple[FindingInfo, ...]:
    """The findings the period's results carry, in the bank's order (site-added ones after), rare as sealed."""
    order: dict[str, bool] = {}
    for e in entries:
        for f in e["payload"].get("findings", []):
            order[f["id"]] = order.get(f["id"], False) or bool(f.get("rare"))
    shipped = {f.id: f for f in bank.findings}
    ids = [f.id for f in bank.findings if f.id in order] + [f for f in order if f not in shipped]
    return tuple(FindingInfo(i, shipped[i].name if i in shipped else i.replace("_", " "), order[i],
                             shipped[i].prevalence if i in shipped else float("nan")) for i in ids)


def _seen(entries: Sequence[Mapping[str, Any]]) -> tuple[Seen, ...]:
    out = []
    scored = [e for e in entries if e["kind"] == "scored"]  # a failed series names no model
    for what, key in (("bundle", lambda e: f"{e['bundle_name']} {e['bundle_version']}".strip()),
                      ("label bank", lambda e: e["bank_version"]), ("mode", lambda e: e["mode"]),
                      ("backend", lambda e: f"{e['payload'].get('backend', '')} {e['payload'].get('precision', '')}"
                       .strip())):
        groups: dict[str, list[float]] = {}
        for e in entries if what == "mode" else scored:
            groups.setdefault(str(key(e)) or "(none)", []).append(float(e["recorded_at"]))
        out += [Seen(what, value, len(ts), min(ts), max(ts)) for value, ts in sorted(groups.items(),
                                                                                      key=lambda kv: kv[1][0])]
    return tuple(out)


def _counts(store: Store, entries: Sequence[Mapping[str, Any]], mine: Sequence[Mapping[str, Any]],
            truth: Mapping[str, Mapping[str, bool]]) -> Counts:
    scored = [e for e in entries if e["kind"] == "scored"]
    assessable = [e for e in scored if e["payload"].get("assessable", True)]
    with_truth = sum(1 for e in mine if truth.get(e["series_uid"]))
    return Counts(len(entries), len(scored), len(assessable), len(scored) - len(assessable),
                  sum(1 for e in entries if e["kind"] == "failed"), len({e["study_uid"] for e in scored}),
                  with_truth, len(mine) - with_truth, sum(1 for e in mine if e["payload"].get("needs_review")),
                  store.truth.counts())


def _written(scored: Sequence[Mapping[str, Any]], labels: LabelSets) -> tuple[ManufacturerSeen, ...]:
    counts = Counter(str(e["payload"].get("manufacturer") or "") for e in scored)
    return tuple(ManufacturerSeen(w or "(none)", labels.manufacturer(w), n) for w, n in counts.most_common())


def _agreement(store: Store, mine: Sequence[Mapping[str, Any]], cases: Sequence[Case],
               findings: Sequence[str]) -> tuple[Agreement, ...]:
    """The 2x2 per finding from the cases (the calls sealed, the truth in force), and where each truth came from."""
    study_of = {int(e["seq"]): e["study_uid"] for e in mine}
    sources: dict[str, Mapping[str, tuple[bool | None, str]]] = {}
    out = []
    for finding in findings:
        cells = Counter((c.positive, c.truth) for c in cases if c.finding_id == finding)
        by: Counter[str] = Counter()
        for c in cases:
            if c.finding_id == finding:
                study = study_of[c.seq]
                if study not in sources:
                    sources[study] = store.truth.for_study(study)
                by[sources[study].get(finding, (None, "report"))[1]] += 1
        out.append(Agreement(finding, cells[(True, True)], cells[(True, False)], cells[(False, True)],
                             cells[(False, False)], by["report"], by["assessment"]))
    return tuple(out)


def _assessed(store: Store, series: set[str], findings: Sequence[str]) -> tuple[Assessed, ...]:
    """Assessments of the period's results, per finding and verdict. Only the verdicts are read: the assessor's
    name and comment stay in the store."""
    counts: Counter[tuple[str, str]] = Counter()
    for record in store.truth.records():
        if record["source"] == "assessment" and record["series_uid"] in series:
            verdicts = record["verdicts"]
            assert isinstance(verdicts, dict)
            for finding, verdict in verdicts.items():
                counts[(str(finding), str(verdict))] += 1
    if not counts:
        return ()
    ids = list(findings) + sorted({f for f, _ in counts} - set(findings))
    return tuple(Assessed(f, counts[(f, "accept")], counts[(f, "reject")], counts[(f, "correct")]) for f in ids
                 if any(counts[(f, v)] for v in ("accept", "reject", "correct")))
