"""A small simulated site through a real appliance (watch folder, SQLite, ONNX Runtime on the test-only bundle, the
MLLP listener on loopback): 15 studies on three stations with a vendor change, final reports over MLLP (some
corrected with a finding changed, some never sent). The truth is matched, corrections change it, the ledger
verifies and the evidence monitor counts the cases per manufacturer."""

from __future__ import annotations

import pytest
from conftest import e2e_settings

from appliance.dev.month import run_month, summary_lines
from appliance.dev.site import CHANGE_STATION, NEW_VENDOR, manufacturer_label, plan_month
from appliance.evidence import ALL

pytestmark = pytest.mark.slow

TINY = {"n_slices": 6, "n_phases": 12, "matrix": (96, 96)}


def small_month():
    return plan_month(15, seed=1, p_missing=0.15, p_corrected=0.2, tail_days=20, sizes=TINY)


def test_the_site_is_decided_by_its_seed_and_changes_vendor_mid_run():
    month, again = small_month(), small_month()
    assert [(s.plan.study_uid, s.station, s.fate, [r.control_id for r in s.reports]) for s in month.studies] == \
        [(s.plan.study_uid, s.station, s.fate, [r.control_id for r in s.reports]) for s in again.studies]
    assert [s.scanned_h for s in month.studies] == sorted(s.scanned_h for s in month.studies)
    changed = [s for s in month.studies if s.station == CHANGE_STATION]
    assert {s.vendor for s in changed if s.index < month.change_index} == {"A"}
    assert {s.vendor for s in changed if s.index >= month.change_index} == {NEW_VENDOR}
    for s in month.studies:
        if s.fate == "corrected":  # the first report is wrong on exactly one finding, the correction is right
            first, second = s.reports
            assert [f for f in s.labels if first.labels[f] != s.labels[f]] == [s.flipped]
            assert second.labels == s.labels and second.at_h > first.at_h and second.status == "C"
        assert all(r.at_h > s.scanned_h for r in s.reports)


def test_a_small_month_through_a_real_appliance(tmp_path, tiny_bundle):
    month = small_month()
    fates = [s.fate for s in month.studies]
    assert {"final", "corrected", "missing"} <= set(fates)
    assert any(s.vendor == NEW_VENDOR for s in month.studies)
    settings = e2e_settings(tmp_path / "unused", tiny_bundle)
    result = run_month(settings, month, tmp_path / "site", min_auroc_cases=3, timeout_s=120)

    assert result.verdict.ok, result.verdict.problem
    assert result.scored + result.failed == len(month.studies) and result.failed == 0
    reported = [s for s in month.studies if s.reports]
    sent = sum(len(s.reports) for s in reported)
    assert result.acks == {"AA": sent}
    assert result.truth_counts["pending"] == 0 and result.truth_counts["matched"] == sent
    assert result.truth_counts["corrected"] == fates.count("corrected")
    assert result.with_truth == len(reported)  # every reported study has truth, the missing ones none
    assert result.corrections == (fates.count("corrected"), fates.count("corrected"))  # each changed the truth
    assert all(read == n == sent for read, n in result.extractor.values())

    # the evidence monitor's cases per manufacturer: one per assessable scored study with truth, per finding
    finding = result.comparisons[0].finding
    for vendor in "ABC":
        label = manufacturer_label(vendor)
        perf = result.evidence.performance[(finding, label, ALL)]
        assert perf.positives + perf.negatives == sum(1 for s in reported if s.vendor == vendor), label
    pooled = result.evidence.performance[(finding, ALL, ALL)]
    assert pooled.positives + pooled.negatives == result.evidence.matched == len(reported)
    # the live truth is the generator's once every correction arrived: live and offline see the same labels
    for c in result.comparisons:
        if c.live is not None:
            assert c.live.estimate == pytest.approx(c.offline_matched.estimate)
    lines = "\n".join(summary_lines(result))
    assert "ledger: verified" in lines and f"corrections that changed the truth: {fates.count('corrected')}" in lines
