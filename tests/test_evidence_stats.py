"""The statistics of appliance/evidence/performance.py against known values: Wilson intervals from Newcombe (1998),
a DeLong variance worked by hand, DeLong against a bootstrap, calibration on constructed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from appliance.evidence.cases import ALL, Case, LabelSets
from appliance.evidence.performance import calibration, delong, performance, slices, wilson


@pytest.mark.parametrize(("k", "n", "lower", "upper"), [
    (81, 263, 0.2553, 0.3662),  # Newcombe 1998, Statistics in Medicine 17:857, table II, method 3
    (15, 148, 0.0624, 0.1605),  # ibid.
    (0, 20, 0.0, 0.1611),  # ibid.
    (1, 29, 0.0061, 0.1718),  # ibid.
    (5, 10, 0.2366, 0.7634),
])
def test_wilson_matches_published_intervals(k, n, lower, upper):
    p = wilson(k, n)
    assert p.estimate == k / n
    assert (round(p.lower, 4), round(p.upper, 4)) == (lower, upper)


def test_wilson_without_cases_is_nan_and_refuses_impossible_counts():
    assert all(math.isnan(v) for v in (wilson(0, 0).estimate, wilson(0, 0).lower, wilson(0, 0).upper))
    with pytest.raises(ValueError):
        wilson(3, 2)


def test_delong_matches_a_case_worked_by_hand():
    # Positives 0.9, 0.8, 0.4; negatives 0.7, 0.3, 0.2, 0.1, 0.8 (one tie, counted half).
    # V10 (share of negatives each positive outscores) = 1, 4.5/5, 3/5 -> AUC 2.5/3;
    # V01 (share of positives outscoring each negative) = 2/3, 1, 1, 1, 1.5/3;
    # var = s2(V10)/3 + s2(V01)/5 = 0.043333/3 + 0.055556/5 = 0.0255556.
    roc = delong([0.9, 0.8, 0.4, 0.7, 0.3, 0.2, 0.1, 0.8], [1, 1, 1, 0, 0, 0, 0, 0])
    assert roc.estimate == pytest.approx(2.5 / 3)
    assert roc.variance == pytest.approx(0.043333333 / 3 + 0.055555556 / 5, rel=1e-6)
    assert roc.lower == pytest.approx(2.5 / 3 - 1.959964 * math.sqrt(roc.variance), rel=1e-6)
    assert roc.upper == 1.0  # clipped
    assert (roc.positives, roc.negatives) == (3, 5)


def test_delong_auc_is_the_pairwise_share_and_its_variance_agrees_with_a_bootstrap():
    rng = np.random.default_rng(7)
    y = rng.random(300) < 0.3
    x = np.round(rng.normal(y * 1.0, 1.0), 1)  # rounded: ties
    roc = delong(x, y)
    pairs = (x[y][:, None] > x[~y][None, :]) + 0.5 * (x[y][:, None] == x[~y][None, :])
    assert roc.estimate == pytest.approx(pairs.mean())
    boot = []
    for _ in range(400):
        i = rng.integers(0, len(x), len(x))
        boot.append(delong(x[i], y[i]).estimate)
    assert math.sqrt(roc.variance) == pytest.approx(np.std(boot), rel=0.15)


def test_delong_with_one_class_absent_is_nan():
    assert math.isnan(delong([0.1, 0.2], [True, True]).estimate)


def test_calibration_on_constructed_cases():
    # Bin [0.2, 0.3): 10 cases at 0.25, 5 positive (|0.25 - 0.5| = 0.25); bin [0.9, 1]: 10 at 0.95, all positive.
    p = [0.25] * 10 + [0.95] * 10
    y = [True] * 5 + [False] * 5 + [True] * 10
    c = calibration(p, y, bins=10)
    assert c.ece == pytest.approx(0.5 * 0.25 + 0.5 * 0.05)
    assert c.brier == pytest.approx((5 * 0.75**2 + 5 * 0.25**2 + 10 * 0.05**2) / 20)
    assert [b.count for b in c.bins] == [0, 0, 10, 0, 0, 0, 0, 0, 0, 10]
    assert c.bins[2].observed_rate == 0.5 and math.isnan(c.bins[0].mean_probability)
    assert calibration([1.0], [True], bins=10).bins[-1].count == 1  # the last bin is closed at 1


def _case(finding, manufacturer, station, score, truth, threshold=0.5):
    return Case(finding, manufacturer, station, score, threshold, score, score >= threshold, truth, 0.0, 1, "1", "b",
                "shadow")


def test_performance_reports_every_slice_and_auroc_only_with_enough_cases():
    labels = LabelSets.build(("siemens", "ge"), stations=("MR1",))
    rng = np.random.default_rng(1)
    cases = [_case("hcm", "siemens", "MR1", float(s), bool(t))
             for t, s in zip(rng.random(80) < 0.5, rng.random(80), strict=True)]
    cases += [_case("hcm", "ge", "unknown", 0.9, True), _case("hcm", "ge", "unknown", 0.1, False)]
    report = performance(cases, ("hcm", "lvh"), labels, min_auroc_cases=20)
    assert set(report) == set(slices(("hcm", "lvh"), labels))
    assert len(report) == 2 * (1 + 3 + 3)  # all; siemens, ge, other; MR1, other, unknown
    pooled = report[("hcm", ALL, ALL)]
    assert pooled.positives + pooled.negatives == 82 and pooled.auroc is not None
    ge = report[("hcm", "ge", ALL)]
    assert ge.auroc is None and ge.sensitivity.estimate == 1.0 and ge.specificity.estimate == 1.0
    assert report[("hcm", ALL, "unknown")].positives == 1
    assert report[("lvh", ALL, ALL)].positives == 0 and math.isnan(report[("lvh", ALL, ALL)].sensitivity.estimate)
    truth = np.array([c.truth for c in cases[:80]])
    called = np.array([c.positive for c in cases[:80]])
    siemens = report[("hcm", "siemens", ALL)]
    assert siemens.sensitivity.k == int((truth & called).sum()) and siemens.sensitivity.n == int(truth.sum())
