"""The evidence monitor: recomputes live performance and drift from the ledger and the ground truth, and sets the
gauges of `appliance.metrics.EvidenceMetrics`.

    monitor = EvidenceMonitor(settings.evidence, bundle.label_bank, lambda: store.ledger.entries(),
                              truth_source, registry, bundle=(bundle.name, bundle.version))
    monitor.refresh()           # once, in the caller's thread (tests, a CLI)
    monitor.start(); monitor.stop()   # or every evidence.refresh_interval_s, in a thread of its own

Both sources are injected callables: `entries()` yields ledger entries (appliance.store.ledger.Ledger.entries),
`truth()` returns series_uid -> {finding_id: bool} (the ground truth room provides it). A source that raises is
logged and the gauges keep their last values; the next refresh tries again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from appliance.evidence.cases import ALL, LabelSets, cases_from_ledger, scored_assessable
from appliance.evidence.drift import (
    DriftPolicy,
    DriftReference,
    GroupDrift,
    drift,
    observations_from_ledger,
    signal_names,
)
from appliance.evidence.performance import SlicePerformance, performance, slices
from appliance.metrics import EvidenceMetrics

if TYPE_CHECKING:
    from appliance.bundle import LabelBank
    from appliance.config.sections import EvidenceConfig

log = logging.getLogger(__name__)

Entries = Callable[[], Iterable[Mapping[str, Any]]]
Truth = Callable[[], Mapping[str, Mapping[str, bool]]]


def drift_policy(config: EvidenceConfig) -> DriftPolicy:
    return DriftPolicy(window=config.window_studies, baseline=config.baseline_studies,
                       min_window=config.min_window_studies, ood_expected_rate=config.ood_expected_rate,
                       alpha=config.drift_alpha)


@dataclass(frozen=True)
class Evidence:
    """What one refresh computed."""

    computed_at: float
    scored: int
    matched: int
    performance: Mapping[tuple[str, str, str], SlicePerformance]
    drift: Mapping[str, GroupDrift]


class EvidenceMonitor:
    def __init__(self, config: EvidenceConfig, bank: LabelBank, entries: Entries, truth: Truth,
                 registry: CollectorRegistry, bundle: tuple[str, str] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.labels = LabelSets.from_config(config)
        self.reference = DriftReference.from_bank(bank)
        self.policy = drift_policy(config)
        self._entries, self._truth, self._bundle, self._clock = entries, truth, bundle, clock
        self.metrics = EvidenceMetrics(registry, slices(self.reference.findings, self.labels),
                                       signal_names(self.reference.findings),
                                       (ALL, *self.labels.manufacturer_labels), self.reference.findings)
        self.last: Evidence | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def compute(self) -> Evidence:
        """Read both sources once and compute everything; sets nothing."""
        entries = [e for e in scored_assessable(self._entries())
                   if self._bundle is None or (e.get("bundle_name"), e.get("bundle_version")) == self._bundle]
        truth = self._truth()
        cases = cases_from_ledger(entries, truth, self.labels)
        matched = sum(1 for e in entries if truth.get(e["series_uid"]))
        c = self.config
        return Evidence(self._clock(), len(entries), matched,
                        performance(cases, self.reference.findings, self.labels, c.min_auroc_cases,
                                    c.calibration_bins),
                        drift(observations_from_ledger(entries, self.labels, self.reference), self.reference,
                              self.labels, self.policy))

    def refresh(self) -> Evidence | None:
        """Recompute and publish; None (logged, gauges unchanged) when a source failed."""
        try:
            evidence = self.compute()
        except Exception:  # a failing source must not end the monitor: the next refresh tries again
            log.exception("evidence refresh failed; the evidence gauges keep their last values")
            return None
        self.publish(evidence)
        self.last = evidence
        return evidence

    def publish(self, evidence: Evidence) -> None:
        m = self.metrics
        for (finding, manufacturer, station), perf in evidence.performance.items():
            labels = {"finding": finding, "manufacturer": manufacturer, "station": station}
            for gauge, proportion in ((m.sensitivity, perf.sensitivity), (m.specificity, perf.specificity)):
                for bound in ("estimate", "lower", "upper"):
                    gauge.labels(**labels, bound=bound).set(getattr(proportion, bound))
            roc = perf.auroc
            for bound in ("estimate", "lower", "upper"):
                m.auroc.labels(**labels, bound=bound).set(getattr(roc, bound) if roc is not None else float("nan"))
            m.calibration_error.labels(**labels).set(perf.calibration.ece)
            m.brier.labels(**labels).set(perf.calibration.brier)
            m.cases.labels(**labels, truth="positive").set(perf.positives)
            m.cases.labels(**labels, truth="negative").set(perf.negatives)
        m.studies.labels(state="scored").set(evidence.scored)
        m.studies.labels(state="matched").set(evidence.matched)
        for manufacturer, group in evidence.drift.items():
            m.ood_rate.labels(manufacturer=manufacturer).set(group.ood_rate)
            m.ood_distance.labels(manufacturer=manufacturer).set(group.ood_distance_mean)
            m.window_studies.labels(manufacturer=manufacturer).set(group.window_studies)
            for finding, ratio in group.positive_rate_ratio.items():
                m.positive_rate_ratio.labels(finding=finding, manufacturer=manufacturer).set(ratio)
            for signal in group.signals:
                m.drifting.labels(signal=signal.name, manufacturer=manufacturer).set(1 if signal.drifting else 0)
        m.refreshed.set(evidence.computed_at)

    # --- the background thread -------------------------------------------------------------------------------------

    def start(self, interval_s: float | None = None) -> None:
        """Refresh now and then every `interval_s` (default evidence.refresh_interval_s) until `stop`."""
        if self._thread is not None:
            raise RuntimeError("the evidence monitor is already running")
        interval = self.config.refresh_interval_s if interval_s is None else interval_s
        self._stop.clear()

        def loop() -> None:
            while not self._stop.is_set():
                self.refresh()
                self._stop.wait(interval)

        self._thread = threading.Thread(target=loop, name="scanside-evidence", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Ends the thread after the refresh in progress, if any."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
