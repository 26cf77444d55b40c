"""Live performance from matched cases: sensitivity and specificity at the threshold (Wilson 95 % intervals), AUROC
(DeLong 95 % interval) once enough positives and negatives exist, and calibration (Brier score, expected
calibration error, reliability bins). numpy only; pure functions of their inputs (docs/evidence.md says why these).

    report = performance(cases, findings, labels, min_auroc_cases=20, bins=10)
    report[("hcm", "siemens", "all")].sensitivity   # Proportion(k, n, estimate, lower, upper)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from appliance.evidence.cases import ALL, Case, LabelSets

Z95 = 1.959963984540054  # the standard normal's 97.5th percentile
NAN = float("nan")


@dataclass(frozen=True)
class Proportion:
    """k of n, with its Wilson score interval; NaN everywhere when n is 0."""

    k: int
    n: int
    estimate: float
    lower: float
    upper: float


def wilson(k: int, n: int, z: float = Z95) -> Proportion:
    """The Wilson score interval (Wilson 1927; Newcombe 1998, method 3): unlike the Wald interval it stays inside
    [0, 1] and keeps close to its nominal coverage at the small counts and extreme rates that sensitivities of
    rare findings are."""
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return Proportion(0, 0, NAN, NAN, NAN)
    p = k / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return Proportion(k, n, p, max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class Auroc:
    estimate: float
    lower: float
    upper: float
    variance: float
    positives: int
    negatives: int


def _midranks(values: np.ndarray, within: np.ndarray) -> np.ndarray:
    """1-based midranks of `values` among the sorted array `within` (ties share the mean of their ranks)."""
    return (np.searchsorted(within, values, "left") + np.searchsorted(within, values, "right") + 1) / 2


def delong(scores: Sequence[float] | np.ndarray, truth: Sequence[bool] | np.ndarray, z: float = Z95) -> Auroc:
    """AUROC (Mann-Whitney, ties counting one half) with DeLong, DeLong & Clarke-Pearson's (1988) variance from
    the structural components (placements): V10_i, the share of negatives a positive outscores, and V01_j, the
    share of positives that outscore a negative; var = s2(V10)/m + s2(V01)/n. Computed from midranks in
    O(N log N) (Sun & Xu 2014). The interval is the normal one, clipped to [0, 1]. NaN with a class absent."""
    x = np.asarray(scores, dtype=np.float64)
    y = np.asarray(truth, dtype=bool)
    pos, neg = x[y], x[~y]
    m, n = len(pos), len(neg)
    if m == 0 or n == 0:
        return Auroc(NAN, NAN, NAN, NAN, m, n)
    everything = np.sort(x)
    v10 = (_midranks(pos, everything) - _midranks(pos, np.sort(pos))) / n
    v01 = 1 - (_midranks(neg, everything) - _midranks(neg, np.sort(neg))) / m
    auc = float(v10.mean())
    variance = (float(v10.var(ddof=1)) / m if m > 1 else 0.0) + (float(v01.var(ddof=1)) / n if n > 1 else 0.0)
    half = z * math.sqrt(variance)
    return Auroc(auc, max(0.0, auc - half), min(1.0, auc + half), variance, m, n)


@dataclass(frozen=True)
class ReliabilityBin:
    lower: float
    upper: float
    count: int
    mean_probability: float  # NaN when empty
    observed_rate: float


@dataclass(frozen=True)
class Calibration:
    brier: float
    ece: float  # expected calibration error: sum over bins of (count / N) * |mean probability - observed rate|
    bins: tuple[ReliabilityBin, ...]


def calibration(probabilities: Sequence[float] | np.ndarray, truth: Sequence[bool] | np.ndarray,
                bins: int = 10) -> Calibration:
    """Brier score and the expected calibration error over `bins` equal-width probability bins (the last one
    closed at 1). NaN with no case."""
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(truth, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, p, "right") - 1, 0, bins - 1)
    out = []
    ece = 0.0
    for b in range(bins):
        inside = which == b
        count = int(inside.sum())
        mean_p = float(p[inside].mean()) if count else NAN
        rate = float(y[inside].mean()) if count else NAN
        if count:
            ece += count / len(p) * abs(mean_p - rate)
        out.append(ReliabilityBin(float(edges[b]), float(edges[b + 1]), count, mean_p, rate))
    if len(p) == 0:
        return Calibration(NAN, NAN, tuple(out))
    return Calibration(float(((p - y) ** 2).mean()), ece, tuple(out))


@dataclass(frozen=True)
class SlicePerformance:
    """One finding in one slice (a manufacturer, a station, or all cases)."""

    finding_id: str
    manufacturer: str  # a manufacturer label or "all"
    station: str  # a station label or "all"
    positives: int
    negatives: int
    sensitivity: Proportion
    specificity: Proportion
    auroc: Auroc | None  # None until min_auroc_cases positives and as many negatives
    calibration: Calibration


def slice_performance(cases: Sequence[Case], finding_id: str, manufacturer: str = ALL, station: str = ALL,
                      min_auroc_cases: int = 20, bins: int = 10) -> SlicePerformance:
    truth = np.array([c.truth for c in cases], dtype=bool)
    called = np.array([c.positive for c in cases], dtype=bool)
    m, n = int(truth.sum()), int((~truth).sum())
    roc = None
    if m >= min_auroc_cases and n >= min_auroc_cases:
        roc = delong([c.score for c in cases], truth)
    return SlicePerformance(finding_id, manufacturer, station, m, n,
                            wilson(int((called & truth).sum()), m), wilson(int((~called & ~truth).sum()), n), roc,
                            calibration([c.probability for c in cases], truth, bins))


def slices(findings: Iterable[str], labels: LabelSets) -> list[tuple[str, str, str]]:
    """The (finding, manufacturer, station) slices reported: all cases, each manufacturer, each station (not their
    cross product, whose cells would stay too small to mean anything). Closed: the metrics pre-set exactly these."""
    return [(f, ALL, ALL) for f in findings] + [(f, m, ALL) for f in findings for m in labels.manufacturer_labels] \
        + [(f, ALL, s) for f in findings for s in labels.station_labels]


def performance(cases: Iterable[Case], findings: Sequence[str], labels: LabelSets, min_auroc_cases: int = 20,
                bins: int = 10) -> dict[tuple[str, str, str], SlicePerformance]:
    """Every slice of `slices(findings, labels)`, cases of other findings ignored."""
    by_key: dict[tuple[str, str, str], list[Case]] = {key: [] for key in slices(findings, labels)}
    for c in cases:
        for key in ((c.finding_id, ALL, ALL), (c.finding_id, c.manufacturer, ALL), (c.finding_id, ALL, c.station)):
            if key in by_key:
                by_key[key].append(c)
    return {key: slice_performance(group, *key, min_auroc_cases=min_auroc_cases, bins=bins)
            for key, group in by_key.items()}
