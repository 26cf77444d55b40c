"""Input drift (appliance/evidence/drift.py): the exact binomial tail, the signals on ledger-shaped entries, and how
many studies a simulated change takes to raise the flag (the number docs/evidence.md states)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from appliance.evidence.cases import ALL, OTHER, LabelSets
from appliance.evidence.drift import (
    DriftPolicy,
    DriftReference,
    Regime,
    binomial_upper_tail,
    drift,
    observations_from_ledger,
    signal_names,
    simulate_detection,
    simulated_stream,
)

# Like the reference bundle: OOD threshold 30.1; a common, a mid and a rare finding.
REFERENCE = DriftReference(("lvsd", "hcm", "amyloidosis"), (0.39, 0.10, 0.028), 30.1)
# In distribution as the reference bundle measured on its internal test split: 1.6 % beyond the OOD threshold
# (docs/reference-model.md); positive rates above prevalence, as a balanced threshold gives.
IN_DISTRIBUTION = Regime(0.016, {"lvsd": 0.40, "hcm": 0.15, "amyloidosis": 0.09})
VENDOR_C = Regime(0.63, IN_DISTRIBUTION.positive_rates)  # the held-out vendor: 63.0 % flagged
DETECTION_BOUND = 25  # studies after a vendor change; docs/evidence.md


def test_binomial_upper_tail_is_exact():
    n, p = 30, 0.1
    pmf = [math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(n + 1)]
    for k in (0, 1, 3, 7, 30):
        assert binomial_upper_tail(k, n, p) == pytest.approx(sum(pmf[k:]), rel=1e-10)
    assert binomial_upper_tail(31, n, p) == 0.0
    big = 1 - sum(math.comb(200, i) * 0.02**i * 0.98 ** (200 - i) for i in range(9))
    assert binomial_upper_tail(9, 200, 0.02) == pytest.approx(big, rel=1e-9)


def test_simulated_stream_has_the_regime_rates():
    s = simulated_stream(VENDOR_C, 4000, REFERENCE, np.random.default_rng(0))
    assert np.mean([o.ood for o in s]) == pytest.approx(0.63, abs=0.03)
    assert np.mean(["hcm" in o.positives for o in s]) == pytest.approx(0.15, abs=0.02)


def test_a_vendor_change_raises_the_flag_within_the_stated_number_of_studies():
    delays = []
    for seed in range(8):
        d = simulate_detection(IN_DISTRIBUTION, VENDOR_C, REFERENCE, DriftPolicy(), studies_before=300,
                               studies_after=60, seed=seed, check_before=seed < 2)
        assert d.false_alarm_at is None, f"seed {seed}: drift flagged before the change, at study {d.false_alarm_at}"
        assert d.delay is not None and "ood_rate" in d.signals
        delays.append(d.delay)
    assert max(delays) <= DETECTION_BOUND, delays
    assert min(delays) >= 5  # not before the evidence exists: at 63 %, 9 of 200 needs a handful of studies


def test_no_change_no_flag_and_a_positive_rate_shift_is_caught():
    quiet = simulate_detection(IN_DISTRIBUTION, IN_DISTRIBUTION, REFERENCE, studies_before=250, studies_after=250,
                               seed=3, check_before=False)
    assert quiet.delay is None
    shifted = Regime(0.016, {**IN_DISTRIBUTION.positive_rates, "lvsd": 0.65})
    d = simulate_detection(IN_DISTRIBUTION, shifted, REFERENCE, studies_before=250, studies_after=250, seed=3,
                           signals=["positive_rate:lvsd"], check_before=False)
    assert d.delay is not None and d.delay <= 200 and d.signals == ("positive_rate:lvsd",)


def _entry(seq, manufacturer, distance, positives=()):
    findings = [{"id": f, "score": 0.5, "threshold": 0.4, "probability": 0.7 if f in positives else 0.3,
                 "positive": f in positives, "rare": False, "review_reasons": []} for f in REFERENCE.findings]
    return {"seq": seq, "kind": "scored", "series_uid": f"1.2.{seq}", "study_uid": "1.2", "bundle_name": "reference",
            "bundle_version": "1", "bank_version": "x", "mode": "shadow", "recorded_at": seq,
            "payload": {"findings": findings, "assessable": True, "ood_distance": distance, "review_reasons": [],
                        "manufacturer": manufacturer, "scored_at": seq}}


def test_drift_per_manufacturer_from_ledger_entries():
    labels = LabelSets.build(("siemens", "ge"))
    entries = [_entry(i, "SIEMENS", 10.0, ("hcm",) if i % 10 == 0 else ()) for i in range(1, 101)]
    entries += [_entry(100 + i, "Cobalt Imaging", 80.0) for i in range(1, 21)]  # a vendor nobody configured
    entries.append({"seq": 200, "kind": "failed", "series_uid": "x", "payload": {"stage": "parse"}})
    entries.append({**_entry(201, "GE MEDICAL SYSTEMS", 10.0), "payload": {**_entry(201, "GE", 10.0)["payload"],
                                                                           "assessable": False}})
    obs = observations_from_ledger(entries, labels, REFERENCE)
    assert len(obs) == 120 and {o.manufacturer for o in obs} == {"siemens", OTHER}
    report = drift(obs, REFERENCE, labels, DriftPolicy(window=50, baseline=50, min_window=10))
    assert set(report) == {ALL, "siemens", "ge", OTHER}
    assert report["ge"].window_studies == 0 and not report["ge"].drifting and math.isnan(report["ge"].ood_rate)
    assert report[OTHER].ood_rate == 1.0 and report[OTHER].signal("ood_rate").drifting
    assert report["siemens"].ood_rate == 0.0 and not report["siemens"].drifting
    assert report["siemens"].positive_rate["hcm"] == pytest.approx(0.1)
    assert report["siemens"].positive_rate_ratio["hcm"] == pytest.approx(0.1 / 0.10)
    pooled = report[ALL]
    assert pooled.window_studies == 50 and pooled.ood_rate == pytest.approx(20 / 50)
    assert pooled.signal("ood_rate").drifting and pooled.signal("ood_distance").drifting
    assert [s.name for s in pooled.signals] == list(signal_names(REFERENCE.findings))
