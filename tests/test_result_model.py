"""Whether a series is assessable, why not, and the label-bank version that scored it: stored, upgraded into older
database files, served over gRPC, shown in the results table and stated in the SR."""

from __future__ import annotations

import dataclasses
import io
import sqlite3
import subprocess
import threading

import pydicom
import pytest
from test_sr_export import DSRDUMP, cine_files, scored  # noqa: F401  (cine_files is a fixture)
from test_store import info, result

from appliance.api import pb
from appliance.cli.table import ResultsTable, findings_text
from appliance.export.source import capture_source
from appliance.export.sr import SrSettings, build_sr
from appliance.serve.client import ApplianceClient
from appliance.serve.server import ApplianceServicer, GrpcServer
from appliance.store import Store
from appliance.store.schema import SCHEMA_VERSION


def not_assessable(r):
    scores = dataclasses.replace(r.scores, assessable=False, quality_reasons=("not a short-axis stack", "3 slices"))
    return dataclasses.replace(r, scores=scores, bank_version="0123456789ab.2")


def test_assessable_reasons_and_bank_version_round_trip(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    store.results.save(not_assessable(result(info(1))))
    store.results.save(result(info(2)))
    bad, good = store.results.for_series("1.2.1.1"), store.results.for_series("1.2.2.1")
    assert (bad.scores.assessable, bad.scores.quality_reasons, bad.bank_version) == \
        (False, ("not a short-axis stack", "3 slices"), "0123456789ab.2")
    assert (good.scores.assessable, good.scores.quality_reasons, good.bank_version) == (True, (), "")
    store.close()


def _make_version_2_file(path):
    """What a version-2 appliance left: a results table without the three columns, one result in it."""
    Store(path).close()
    with sqlite3.connect(path) as db:
        db.executescript("""
            DROP TABLE results;
            CREATE TABLE results (
                id INTEGER PRIMARY KEY, series_uid TEXT NOT NULL UNIQUE REFERENCES series(series_uid),
                study_uid TEXT NOT NULL, scored_at REAL NOT NULL, bundle_name TEXT NOT NULL,
                bundle_version TEXT NOT NULL, backend TEXT NOT NULL, precision TEXT NOT NULL,
                needs_review INTEGER NOT NULL, review_reasons TEXT NOT NULL, ood_distance REAL,
                findings TEXT NOT NULL, timings TEXT NOT NULL);
            INSERT INTO series (series_uid, study_uid, key, role, state, first_seen, updated_at)
                VALUES ('1.2.5.1', '1.2.5', 's000000000005', 'cine_sax', 'scored', 1.0, 1.0);
            INSERT INTO results (series_uid, study_uid, scored_at, bundle_name, bundle_version, backend, precision,
                                 needs_review, review_reasons, ood_distance, findings, timings)
                VALUES ('1.2.5.1', '1.2.5', 1.0, 'b', '1', 'onnxruntime', 'fp32', 0, '[]', NULL, '[]', '{}');
            UPDATE meta SET value='2' WHERE key='schema_version';""")


def test_a_version_2_database_is_upgraded_in_place_and_its_results_read_as_before(tmp_path):
    path = tmp_path / "old.db"
    _make_version_2_file(path)
    store = Store(path)
    old = store.results.for_series("1.2.5.1")
    assert (old.scores.assessable, old.scores.quality_reasons, old.bank_version) == (True, (), "")
    store.results.save(not_assessable(result(info(6))))
    assert store.results.for_series("1.2.6.1").scores.assessable is False
    store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
        columns = {r[1] for r in db.execute("PRAGMA table_info(results)")}
    assert {"assessable", "quality_reasons", "bank_version"} <= columns
    Store(path).close()  # opening an upgraded file again changes nothing and does not fail


def test_grpc_serves_assessable_reasons_and_bank_version(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    store.results.save(not_assessable(result(info(1))))
    store.results.save(result(info(2)))
    server = GrpcServer(ApplianceServicer(store, lambda: pb.ModelInfo(bank_version="abc"), lambda _: None,
                                          threading.Event()), "127.0.0.1", 0)
    server.start()
    try:
        with ApplianceClient(server.address, timeout_s=5) as client:
            (bad,) = client.study("1.2.1")
            (good,) = client.study("1.2.2")
            assert client.model_info().bank_version == "abc"
    finally:
        server.stop(0.5)
        store.close()
    assert (bad.not_assessable, list(bad.quality_reasons), bad.bank_version) == \
        (True, ["not a short-axis stack", "3 slices"], "0123456789ab.2")
    assert (good.not_assessable, list(good.quality_reasons)) == (False, [])


def test_the_results_table_says_not_assessable_and_why_instead_of_findings():
    out = io.StringIO()
    table = ResultsTable(out, width=160)
    finding = pb.FindingResult(name="LV dilation", probability=0.8, positive=True)
    table.add(pb.ResultEvent(kind=pb.ResultEvent.SCORED, result=pb.SeriesResult(
        series_key="sA", not_assessable=True, quality_reasons=["not a short-axis stack"], findings=[finding])))
    table.add(pb.ResultEvent(kind=pb.ResultEvent.SCORED, result=pb.SeriesResult(
        series_key="sB", findings=[finding])))
    first, second = out.getvalue().splitlines()
    assert "not assessable: not a short-axis stack" in first and "LV dilation" not in first
    assert "LV dilation 0.80" in second and "not assessable" not in second


def _content(doc: bytes) -> dict[str, list]:
    sr = pydicom.dcmread(io.BytesIO(doc))
    found: dict[str, list] = {}
    for item in sr.ContentSequence:
        name = item.ConceptNameCodeSequence[0]
        code = name.get("CodeValue") or name.get("LongCodeValue")
        value = item.get("TextValue") or (item.ConceptCodeSequence[0].CodeValue if "ConceptCodeSequence" in item
                                          else None)
        found.setdefault(code, []).append(value)
    return found


def test_the_sr_states_assessability_its_reasons_and_the_bank_version(cine_files):  # noqa: F811
    plan, cine, files, refs = cine_files
    source = capture_source(files[0], refs)
    comprehensive = SrSettings(template="comprehensive")  # the TID 1500 form: tests/test_sr_tid1500.py
    bad = _content(build_sr(not_assessable(scored(cine.series_uid, plan.study_uid)), source, comprehensive).data)
    good = _content(build_sr(scored(cine.series_uid, plan.study_uid), source, comprehensive).data)
    yes, no = "373066001", "373067005"  # SCT Yes / No
    assert bad["assessable"] == [no] and bad["quality-reason"] == ["not a short-axis stack", "3 slices"]
    assert bad["label-bank-version"] == ["0123456789ab.2"]
    assert good["assessable"] == [yes] and "quality-reason" not in good


@pytest.mark.skipif(not DSRDUMP.exists(), reason="dcmtk (Debian package) is not installed; .ci/run installs it")
def test_dcmtk_reads_a_not_assessable_sr_without_complaint(cine_files, tmp_path):  # noqa: F811
    plan, cine, files, refs = cine_files
    path = tmp_path / "sr.dcm"
    path.write_bytes(build_sr(not_assessable(scored(cine.series_uid, plan.study_uid)),
                              capture_source(files[0], refs), SrSettings(template="comprehensive")).data)
    dump = subprocess.run([str(DSRDUMP), str(path)], capture_output=True, text=True, timeout=60)
    assert dump.returncode == 0 and dump.stderr.strip() == "", dump.stderr
    assert 'Why not assessable")="not a short-axis stack"' in dump.stdout
    assert 'Label bank version")="0123456789ab.2"' in dump.stdout


def test_a_result_from_a_server_without_the_quality_gate_reads_as_assessable():
    """Old servers never set the field; proto3's default must then mean 'assessable', not 'junk'."""
    old_wire = pb.SeriesResult(series_key="k", findings=[pb.FindingResult(finding_id="lv_dilation", positive=True)])
    r = pb.SeriesResult.FromString(old_wire.SerializeToString())
    assert r.not_assessable is False
    assert "not assessable" not in findings_text(r)
