"""Input drift from the ledger alone (no truth needed): over the last N studies, pooled and per manufacturer, the
out-of-distribution flag rate and mean distance, and each finding's positive rate, each with a test and a boolean
"drifting". Pure functions; `simulate_detection` measures how many studies after a change the flag takes.

    reference = DriftReference.from_bank(bundle.label_bank)
    report = drift(observations_from_ledger(entries, labels, reference), reference, labels, DriftPolicy())
    report["all"].signals  # ood_rate, ood_distance, positive_rate:<finding>

Statistics (why these: docs/evidence.md):
- ood_rate: the share of studies beyond the bundle's OOD threshold in the last `window` studies against the rate
  the bundle expects (`ood_expected_rate`), by a one-sided exact binomial test. Needs no baseline: it can fire on a
  site's first studies.
- ood_distance: the log distance of the last `window` studies against the group's own baseline (its first
  `baseline` studies under this bundle) by a one-sided Welch z-test: distances are skewed and unbounded, their log is
  close to normal and one huge distance cannot move it much.
- positive_rate:<finding>: the window's positive rate against the baseline's by a two-sided two-proportion z-test,
  Bonferroni-corrected over the findings. The bank's prevalence is reported beside it (positive_rate_ratio) but is
  not the null: at a threshold where sensitivity equals specificity the expected positive rate is
  sens * prevalence + (1 - spec) * (1 - prevalence), several times the prevalence of a rare finding.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from appliance.evidence.cases import ALL, LabelSets, scored_assessable

if TYPE_CHECKING:
    from appliance.bundle import LabelBank

NAN = float("nan")
OOD_RATE = "ood_rate"
OOD_DISTANCE = "ood_distance"
POSITIVE_RATE = "positive_rate"


def signal_names(findings: Iterable[str]) -> tuple[str, ...]:
    """The closed set of drift signals: the two OOD ones and one positive rate per finding."""
    return (OOD_RATE, OOD_DISTANCE, *(f"{POSITIVE_RATE}:{f}" for f in findings))


@dataclass(frozen=True)
class DriftReference:
    """What the bundle says to expect: its findings with their prevalence, and its OOD threshold."""

    findings: tuple[str, ...]
    prevalence: tuple[float, ...]
    ood_threshold: float

    @classmethod
    def from_bank(cls, bank: LabelBank) -> DriftReference:
        threshold = bank.reference.threshold if bank.reference is not None else math.inf
        return cls(tuple(f.id for f in bank.findings), tuple(f.prevalence for f in bank.findings), threshold)


@dataclass(frozen=True)
class DriftPolicy:
    window: int = 200  # the last N studies (of a group) each signal is computed over
    baseline: int = 200  # a group's first N studies: what ood_distance and positive rates are compared with
    min_window: int = 30  # studies after the baseline before those two are tested
    ood_expected_rate: float = 0.02  # the share of in-distribution studies beyond the bundle's OOD threshold
    alpha: float = 0.001  # per test (positive rates: divided by the number of findings)


@dataclass(frozen=True)
class Observation:
    """One scored, assessable study as the drift tests see it."""

    seq: int
    manufacturer: str
    ood_distance: float | None
    ood: bool
    positives: frozenset[str] = field(default_factory=frozenset)


def observations_from_ledger(entries: Iterable[Mapping[str, Any]], labels: LabelSets, reference: DriftReference,
                             bundle: tuple[str, str] | None = None) -> list[Observation]:
    """In ledger order. A study is out of distribution when its distance passes the bundle's threshold (so the
    signal does not depend on scoring.ood_check), or, without a distance, when the scorer said so."""
    out = []
    for entry in scored_assessable(entries):
        if bundle is not None and (entry.get("bundle_name"), entry.get("bundle_version")) != bundle:
            continue
        p = entry["payload"]
        distance = p.get("ood_distance")
        ood = distance > reference.ood_threshold if distance is not None else \
            "out_of_distribution" in p.get("review_reasons", ())
        out.append(Observation(int(entry["seq"]), labels.manufacturer(p.get("manufacturer")),
                               None if distance is None else float(distance), bool(ood),
                               frozenset(f["id"] for f in p["findings"] if f.get("positive"))))
    return out


# --- tests ---------------------------------------------------------------------------------------------------------

_LOG_FACTORIAL = np.zeros(1)


def _log_factorial(n: int) -> np.ndarray:
    global _LOG_FACTORIAL
    if len(_LOG_FACTORIAL) <= n:
        _LOG_FACTORIAL = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, 2 * n + 2)))])
    return _LOG_FACTORIAL


def binomial_upper_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), exactly (log-space sum)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    lf = _log_factorial(n)
    i = np.arange(k, n + 1)
    log_pmf = lf[n] - lf[i] - lf[n - i] + i * math.log(p) + (n - i) * math.log1p(-p)
    top = log_pmf.max()
    return float(min(1.0, math.exp(top) * np.exp(log_pmf - top).sum()))


def normal_upper_tail(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2))


def welch_greater(current: np.ndarray, baseline: np.ndarray) -> float:
    """One-sided p-value that the current mean exceeds the baseline's (normal approximation)."""
    se = math.sqrt(current.var(ddof=1) / len(current) + baseline.var(ddof=1) / len(baseline))
    diff = float(current.mean() - baseline.mean())
    if se == 0.0:
        return 0.0 if diff > 0 else 1.0
    return normal_upper_tail(diff / se)


def two_proportions(k1: int, n1: int, k0: int, n0: int) -> float:
    """Two-sided p-value of the pooled two-proportion z-test; 1 when both rates are 0 or both 1."""
    pooled = (k1 + k0) / (n1 + n0)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n0))
    if se == 0.0:
        return 1.0
    return 2 * normal_upper_tail(abs(k1 / n1 - k0 / n0) / se)


# --- the report ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Signal:
    name: str  # a signal_names() member
    value: float  # the window's rate or mean (ood_distance: of the distance itself)
    reference: float  # what it is compared with: the expected rate, the baseline's mean or rate
    p_value: float  # NaN when not tested (too few studies)
    drifting: bool


@dataclass(frozen=True)
class GroupDrift:
    manufacturer: str  # a manufacturer label, or "all"
    studies: int  # in the group, baseline included
    window_studies: int
    ood_rate: float
    ood_distance_mean: float
    positive_rate: Mapping[str, float]
    positive_rate_ratio: Mapping[str, float]  # the window's positive rate / the bank's prevalence
    signals: tuple[Signal, ...]

    @property
    def drifting(self) -> bool:
        return any(s.drifting for s in self.signals)

    def signal(self, name: str) -> Signal:
        return next(s for s in self.signals if s.name == name)


def group_drift(observations: Sequence[Observation], reference: DriftReference, policy: DriftPolicy,
                manufacturer: str = ALL) -> GroupDrift:
    obs = list(observations)
    window = obs[-policy.window:]
    after_baseline = obs[policy.baseline:][-policy.window:]
    baseline = obs[:policy.baseline]
    tested = len(after_baseline) >= policy.min_window
    signals = [_ood_rate(window, reference, policy)]
    signals.append(_ood_distance(after_baseline, baseline, policy) if tested else _untested(OOD_DISTANCE, window))
    rates, ratios = {}, {}
    for finding, prevalence in zip(reference.findings, reference.prevalence, strict=True):
        rate = sum(finding in o.positives for o in window) / len(window) if window else NAN
        rates[finding], ratios[finding] = rate, rate / prevalence if prevalence > 0 else NAN
        name = f"{POSITIVE_RATE}:{finding}"
        if not tested:
            signals.append(Signal(name, rate, NAN, NAN, False))
            continue
        k1, k0 = (sum(finding in o.positives for o in group) for group in (after_baseline, baseline))
        p = two_proportions(k1, len(after_baseline), k0, len(baseline))
        signals.append(Signal(name, k1 / len(after_baseline), k0 / len(baseline), p,
                              p < policy.alpha / max(1, len(reference.findings))))
    distances = [o.ood_distance for o in window if o.ood_distance is not None]
    return GroupDrift(manufacturer, len(obs), len(window), signals[0].value,
                      float(np.mean(distances)) if distances else NAN, rates, ratios, tuple(signals))


def _ood_rate(window: Sequence[Observation], reference: DriftReference, policy: DriftPolicy) -> Signal:
    if not window:
        return Signal(OOD_RATE, NAN, policy.ood_expected_rate, NAN, False)
    k = sum(o.ood for o in window)
    p = binomial_upper_tail(k, len(window), policy.ood_expected_rate)
    return Signal(OOD_RATE, k / len(window), policy.ood_expected_rate, p, p < policy.alpha)


def _ood_distance(current: Sequence[Observation], baseline: Sequence[Observation], policy: DriftPolicy) -> Signal:
    now = np.array([o.ood_distance for o in current if o.ood_distance is not None], dtype=np.float64)
    then = np.array([o.ood_distance for o in baseline if o.ood_distance is not None], dtype=np.float64)
    if len(now) < 2 or len(then) < 2:
        return _untested(OOD_DISTANCE, current)
    tiny = 1e-12  # distances are >= 0; the log needs > 0
    p = welch_greater(np.log(now + tiny), np.log(then + tiny))
    return Signal(OOD_DISTANCE, float(now.mean()), float(then.mean()), p, p < policy.alpha)


def _untested(name: str, window: Sequence[Observation]) -> Signal:
    distances = [o.ood_distance for o in window if o.ood_distance is not None]
    return Signal(name, float(np.mean(distances)) if distances else NAN, NAN, NAN, False)


def drift(observations: Iterable[Observation], reference: DriftReference, labels: LabelSets,
          policy: DriftPolicy = DriftPolicy()) -> dict[str, GroupDrift]:
    """The pooled group ("all") and one per manufacturer label (each with its own window and baseline)."""
    obs = sorted(observations, key=lambda o: o.seq)
    groups = {ALL: obs, **{m: [o for o in obs if o.manufacturer == m] for m in labels.manufacturer_labels}}
    return {m: group_drift(group, reference, policy, m) for m, group in groups.items()}


# --- detection delay -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Regime:
    """A stream's behaviour: the share of studies beyond the OOD threshold (distances log-normal with this spread)
    and each finding's positive rate."""

    ood_rate: float
    positive_rates: Mapping[str, float] = field(default_factory=dict)
    log_sd: float = 0.35


def _median_for(rate: float, threshold: float, log_sd: float) -> float:
    """The median of log-normal distances that puts `rate` of them beyond `threshold` (bisection on the tail)."""
    lo, hi = -50.0, 50.0  # log(median / threshold)
    for _ in range(200):
        mid = (lo + hi) / 2
        if normal_upper_tail(-mid / log_sd) < rate:
            lo = mid
        else:
            hi = mid
    return threshold * math.exp((lo + hi) / 2)


def simulated_stream(regime: Regime, n: int, reference: DriftReference, rng: np.random.Generator,
                     start_seq: int = 1, manufacturer: str = ALL) -> list[Observation]:
    median = _median_for(regime.ood_rate, reference.ood_threshold, regime.log_sd)
    distances = median * np.exp(rng.normal(0.0, regime.log_sd, n))
    draws = {f: rng.random(n) < regime.positive_rates.get(f, p) for f, p in
             zip(reference.findings, reference.prevalence, strict=True)}
    return [Observation(start_seq + i, manufacturer, float(distances[i]), bool(distances[i] > reference.ood_threshold),
                        frozenset(f for f, d in draws.items() if d[i])) for i in range(n)]


@dataclass(frozen=True)
class Detection:
    delay: int | None  # studies after the change until a signal drifted (1 = the first shifted study); None: never
    signals: tuple[str, ...]  # the signals drifting then
    false_alarm_at: int | None  # the first study before the change at which a signal drifted; None: none did


def simulate_detection(before: Regime, after: Regime, reference: DriftReference, policy: DriftPolicy = DriftPolicy(),
                       studies_before: int = 400, studies_after: int = 400, seed: int = 0,
                       signals: Sequence[str] | None = None, check_before: bool = True) -> Detection:
    """A stream of `studies_before` studies in `before`, then `after`, tested after every study as a monitor
    refreshing that often would: how many shifted studies until one of `signals` (default: any) drifts."""
    rng = np.random.default_rng(seed)
    stream = simulated_stream(before, studies_before, reference, rng)
    stream += simulated_stream(after, studies_after, reference, rng, start_seq=studies_before + 1)
    watched = set(signals) if signals is not None else None

    def firing(upto: int) -> tuple[str, ...]:
        report = group_drift(stream[:upto], reference, policy)
        return tuple(s.name for s in report.signals if s.drifting and (watched is None or s.name in watched))

    false_alarm = next((i for i in range(1, studies_before + 1) if firing(i)), None) if check_before else None
    for i in range(1, studies_after + 1):
        names = firing(studies_before + i)
        if names:
            return Detection(i, names, false_alarm)
    return Detection(None, (), false_alarm)
