"""The evidence monitor end to end: results saved in a real store, its ledger and a truth mapping as the sources,
the gauges read back over a real prometheus_client HTTP endpoint; closed label sets; the [evidence] settings."""

from __future__ import annotations

import dataclasses
import math
import time
import urllib.request

import numpy as np
import pytest
from conftest import wait_for
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from appliance.bundle import LabelBank
from appliance.bundle.label_bank import Finding, ReferenceStats
from appliance.config import ConfigError, Settings
from appliance.evidence import ALL, OTHER, UNKNOWN, EvidenceMonitor, LabelSets
from appliance.handovers import FindingScore, Scores, SeriesInfo, SeriesRole, StudyResult
from appliance.store import Store

FINDINGS = ("hcm", "lv_dilation")
VENDORS = ("SIEMENS", "Siemens Healthineers", "GE MEDICAL SYSTEMS", "Cobalt Imaging")  # the last is not configured


def bank() -> LabelBank:
    def finding(fid: str, prevalence: float) -> Finding:
        return Finding(fid, fid, ("p",), np.eye(4)[:1], 0.5, 10.0, -5.0, prevalence, False)

    ref = ReferenceStats(np.zeros(4), np.eye(4)[:2], np.ones(2), 1.0, threshold=30.0)
    return LabelBank((finding("hcm", 0.1), finding("lv_dilation", 0.2)), ref)


def a_result(n: int, rng: np.random.Generator) -> tuple[StudyResult, dict[str, bool]]:
    truth = {f: bool(rng.random() < 0.4) for f in FINDINGS}
    findings = []
    for f in FINDINGS:
        score = float(np.clip(rng.normal(0.6 if truth[f] else 0.4, 0.1), 0, 1))
        p = 1 / (1 + math.exp(-10 * (score - 0.5)))
        findings.append(FindingScore(f, f, score, 0.5, p, p >= 0.5, False, ()))
    info = SeriesInfo(f"k{n}", f"1.2.{n}", f"1.2.{n}.1", SeriesRole.CINE_SAX, VENDORS[n % 4], "cine", 1, 1, "tags",
                      time.time())
    distance = 90.0 if n % 4 == 3 else 10.0  # the unconfigured vendor lies out of distribution
    return StudyResult(info, Scores(tuple(findings), distance, ()), "reference", "1", "onnxruntime", "fp32", {},
                       time.time(), bank_version="b1"), truth


@pytest.fixture
def filled(tmp_path):
    store = Store(tmp_path / "scanside.db", mode="shadow")
    rng = np.random.default_rng(5)
    truth = {}
    for n in range(240):
        r, t = a_result(n, rng)
        store.results.save(r)
        if n % 3:  # a third of the reports have not arrived
            truth[r.info.series_uid] = t
    yield store, truth
    store.close()


def _scrape(port: int) -> dict[str, list]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert "1.2." not in text  # no UID anywhere
    return {f.name: f.samples for f in text_string_to_metric_families(text) if f.name.startswith("scanside_evidence")}


def test_gauges_over_http_with_closed_label_sets(filled):
    store, truth = filled
    registry = CollectorRegistry()
    config = dataclasses.replace(Settings().evidence, stations=("MR1",), window_studies=60, baseline_studies=60,
                                 min_auroc_cases=10)
    monitor = EvidenceMonitor(config, bank(), store.ledger.entries, lambda: truth, registry,
                              bundle=("reference", "1"), clock=lambda: 1234.0)
    server, _ = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        port = server.server_port
        before = _scrape(port)  # pre-set from the start: counts 0, statistics NaN
        zero = [s for s in before["scanside_evidence_cases"]]
        assert zero and all(s.value == 0 for s in zero)
        assert all(math.isnan(s.value) for s in before["scanside_evidence_sensitivity"])
        evidence = monitor.refresh()
        assert evidence is not None and evidence.scored == 240 and evidence.matched == 160
        after = _scrape(port)
    finally:
        server.shutdown()
    labels = LabelSets.from_config(config)
    assert set(after) == set(before)
    for name, samples in after.items():
        for s in samples:
            assert s.labels.get("finding", "hcm") in FINDINGS, (name, s.labels)
            assert s.labels.get("manufacturer", ALL) in (ALL, *labels.manufacturer_labels), (name, s.labels)
            assert s.labels.get("station", ALL) in (ALL, "MR1", OTHER, UNKNOWN), (name, s.labels)
        assert len(samples) == len(before[name]), name  # refreshing added no series
    by = {(n, tuple(sorted(s.labels.items()))): s.value for n, samples in after.items() for s in samples}

    def value(name, **kw):
        return by[(name, tuple(sorted(kw.items())))]

    perf = evidence.performance[("hcm", "siemens", ALL)]
    assert value("scanside_evidence_sensitivity", finding="hcm", manufacturer="siemens", station=ALL,
                 bound="lower") == pytest.approx(perf.sensitivity.lower)
    # "SIEMENS" and "Siemens Healthineers" both land in siemens; "Cobalt Imaging" in other; no station: unknown.
    cases = {m: value("scanside_evidence_cases", finding="hcm", manufacturer=m, station=ALL, truth="positive")
             + value("scanside_evidence_cases", finding="hcm", manufacturer=m, station=ALL, truth="negative")
             for m in ("siemens", "ge", OTHER, "philips")}
    assert cases == {"siemens": 80, "ge": 40, OTHER: 40, "philips": 0}
    assert value("scanside_evidence_cases", finding="hcm", manufacturer=ALL, station=UNKNOWN, truth="positive") \
        == evidence.performance[("hcm", ALL, ALL)].positives
    assert 0.5 < value("scanside_evidence_auroc", finding="hcm", manufacturer=ALL, station=ALL, bound="estimate") <= 1
    assert math.isnan(value("scanside_evidence_auroc", finding="hcm", manufacturer="philips", station=ALL,
                            bound="estimate"))
    assert value("scanside_evidence_ood_rate", manufacturer=OTHER) == 1.0
    assert value("scanside_evidence_drifting", signal="ood_rate", manufacturer=OTHER) == 1
    assert value("scanside_evidence_drifting", signal="ood_rate", manufacturer="siemens") == 0
    assert value("scanside_evidence_studies", state="matched") == 160
    assert value("scanside_evidence_refreshed_timestamp_seconds") == 1234.0


def test_the_thread_refreshes_survives_a_failing_source_and_stops(filled):
    store, truth = filled
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) == 1:
            raise OSError("truth store not reachable")
        return truth

    monitor = EvidenceMonitor(Settings().evidence, bank(), store.ledger.entries, flaky, CollectorRegistry())
    monitor.start(interval_s=0.05)
    try:
        wait_for(lambda: monitor.last is not None, timeout=10)
    finally:
        monitor.stop()
    assert len(calls) >= 2 and monitor.last.matched == 160
    n = len(calls)
    time.sleep(0.2)
    assert len(calls) == n  # stopped


@pytest.mark.parametrize(("section", "message"), [
    ({"manufacturers": ["Siemens"]}, "evidence.manufacturers"),
    ({"manufacturers": ["other"]}, "evidence.manufacturers"),
    ({"manufacturer_aliases": ["hitachi=HITACHI"]}, "evidence.manufacturer_aliases"),
    ({"stations": ["MR 1"]}, "evidence.stations"),
    ({"stations": ["unknown"]}, "evidence.stations"),
    ({"min_window_studies": 500}, "evidence.min_window_studies"),
    ({"drift_alpha": 0.5}, "evidence.drift_alpha"),
    ({"refresh_interval_s": 0}, "evidence.refresh_interval_s"),
])
def test_evidence_settings_are_checked(section, message):
    with pytest.raises(ConfigError, match=message):
        Settings().replace(evidence=section)


def test_label_sets_normalise_into_the_configured_set():
    labels = LabelSets.from_config(Settings().evidence)
    assert [labels.manufacturer(m) for m in ("SIEMENS", "Siemens Healthineers", "siemens healthcare gmbh",
                                             "GE MEDICAL SYSTEMS", "GE Healthcare", "General Electric",
                                             "Philips Medical Systems", "CANON_MEC", "TOSHIBA_MEC", "UIH",
                                             "United Imaging Healthcare", "Generic", "Siemensstadt", "", None)] == \
        ["siemens", "siemens", "siemens", "ge", "ge", "ge", "philips", "canon", "canon", "united_imaging",
         "united_imaging", OTHER, OTHER, OTHER, OTHER]
    stations = LabelSets.build(("siemens",), stations=("MR1", "MR-2"))
    assert [stations.station(s) for s in ("mr1", " MR-2 ", "MR3", "", None)] == ["MR1", "MR-2", OTHER, UNKNOWN,
                                                                                 UNKNOWN]
