"""The truth store on a real SQLite file: matching by Study Instance UID and by accession number, at both moments
(a report before its study, a report days after), resends, corrections replacing the truth with history kept,
cancellations withdrawing it, assessments against reports (the latest wins), and the upgrade of a version-4 file."""

from __future__ import annotations

import dataclasses
import json
import sqlite3

from test_store import info, result

from appliance.cli import main
from appliance.handovers import ReceivedReport, SeriesState, TruthStatus
from appliance.store import Store
from appliance.store.ledger import entry_hash
from appliance.store.schema import SCHEMA_VERSION


def exam(n: int, accession: str = "", station: str = "MR1"):
    return dataclasses.replace(info(n), accession_number=accession, station_name=station)


def report(control_id: str, labels: dict[str, bool], study_uid: str | None = None, accession: str = "",
           status: TruthStatus = TruthStatus.FINAL, sender: str = "RIS") -> ReceivedReport:
    return ReceivedReport(control_id=control_id, sending_application=sender, status=status,
                          accession_number=accession, study_uid=study_uid, observed_at=None, labels=labels,
                          mentioned=tuple(labels))


def test_a_report_before_its_study_is_kept_and_matched_when_the_result_is_stored(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    i = exam(1, "ACC1")
    first = store.truth.receive(report("M1", {"lv_dilation": True, "hcm": False}, study_uid=i.study_uid))
    assert not first.matched and first.changed == 2
    assert store.truth.by_series() == {}  # no scored series yet
    assert store.truth.counts()["pending"] == 1
    store.series.seen(i)
    store.results.save(result(i))
    assert store.truth.by_series() == {i.series_uid: {"lv_dilation": True, "hcm": False}}
    assert store.truth.counts() == {"pending": 0, "matched": 1, "corrected": 0, "withdrawn": 0, "assessed": 0}
    # a report that comes days after its study matches at once
    j = exam(2, "ACC2")
    store.results.save(result(j))
    late = store.truth.receive(report("M2", {"lv_dilation": False}, study_uid=j.study_uid))
    assert late.matched and store.truth.by_series()[j.series_uid] == {"lv_dilation": False}


def test_by_accession_number_before_and_after_the_images(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    early, late = exam(1, "ACC1"), exam(2, "ACC2")
    assert not store.truth.receive(report("M1", {"lv_dilation": True}, accession="ACC1")).matched
    (record,) = store.truth.records()
    assert record["study_uid"] is None  # pending: no series carries the accession number yet
    store.series.seen(early)  # its first image: the accession number is known, the study not scored
    store.results.save(result(early))
    assert store.truth.by_series() == {early.series_uid: {"lv_dilation": True}}
    assert store.truth.records()[0]["study_uid"] == early.study_uid and store.truth.records()[0]["matched_at"]
    store.series.seen(late)
    store.results.save(result(late))
    assert store.truth.receive(report("M2", {"lv_dilation": False}, accession="ACC2")).matched
    assert store.truth.by_series()[late.series_uid] == {"lv_dilation": False}
    # the study's UID wins over the accession number when a report carries both
    store.truth.receive(report("M3", {"hcm": True}, study_uid=early.study_uid, accession="ACC2"))
    assert store.truth.by_series()[early.series_uid] == {"lv_dilation": True, "hcm": True}
    assert "hcm" not in store.truth.by_series()[late.series_uid]


def test_an_accession_number_on_two_studies_is_never_guessed(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    a, b = exam(1, "SHARED"), exam(2, "SHARED")
    for i in (a, b):
        store.series.seen(i)
        store.results.save(result(i))
    assert not store.truth.receive(report("M1", {"lv_dilation": True}, accession="SHARED")).matched
    assert store.truth.by_series() == {} and store.truth.counts()["pending"] == 1


def test_a_resent_message_is_stored_once(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    i = exam(1)
    store.results.save(result(i))
    first = store.truth.receive(report("M1", {"lv_dilation": True}, study_uid=i.study_uid))
    again = store.truth.receive(report("M1", {"lv_dilation": False}, study_uid=i.study_uid))  # the ACK was lost
    assert again.duplicate and again.record_id == first.record_id and again.changed == 0
    assert store.truth.by_series()[i.series_uid] == {"lv_dilation": True}
    # the same control id from another sender is another message
    assert not store.truth.receive(report("M1", {"hcm": True}, study_uid=i.study_uid, sender="OTHER")).duplicate


def test_a_correction_replaces_and_a_cancellation_withdraws_with_history_kept(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    i = exam(1)
    store.results.save(result(i))
    store.truth.receive(report("M1", {"lv_dilation": True, "hcm": False}, study_uid=i.study_uid))
    c = store.truth.receive(report("M2", {"lv_dilation": False, "hcm": False}, study_uid=i.study_uid,
                                   status=TruthStatus.CORRECTED))
    assert c.changed == 2  # both replaced (hcm by the same value: the correction is what stands now)
    assert store.truth.by_series()[i.series_uid] == {"lv_dilation": False, "hcm": False}
    x = store.truth.receive(report("M3", {}, study_uid=i.study_uid, status=TruthStatus.CANCELLED))
    assert x.changed == 2 and store.truth.by_series() == {}
    assert store.truth.for_study(i.study_uid) == {"lv_dilation": (None, "report"), "hcm": (None, "report")}
    history = [(h["finding_id"], h["change"], h["old_value"], h["new_value"], h["status"])
               for h in store.truth.history(i.study_uid)]
    assert history == [("hcm", "set", None, 0, "F"), ("lv_dilation", "set", None, 1, "F"),
                       ("hcm", "replaced", 0, 0, "C"), ("lv_dilation", "replaced", 1, 0, "C"),
                       ("hcm", "withdrawn", 0, None, "X"), ("lv_dilation", "withdrawn", 0, None, "X")]
    assert [r["status"] for r in store.truth.records()] == ["F", "C", "X"]  # every report kept
    assert store.truth.counts() == {"pending": 0, "matched": 2, "corrected": 1, "withdrawn": 1, "assessed": 0}
    store.truth.receive(report("M4", {"lv_dilation": True}, study_uid=i.study_uid))  # a new final report
    assert store.truth.by_series()[i.series_uid] == {"lv_dilation": True}


def test_receipt_order_wins_whichever_record_matches_first(tmp_path):
    """A final report known only by accession number, then its correction naming the study: when the images come
    the correction stands, although the final report matched last."""
    store = Store(tmp_path / "db.sqlite")
    i = exam(1, "ACC1")
    store.truth.receive(report("M1", {"lv_dilation": True}, accession="ACC1"))
    store.truth.receive(report("M2", {"lv_dilation": False}, study_uid=i.study_uid, status=TruthStatus.CORRECTED))
    store.series.seen(i)
    store.results.save(result(i))
    assert store.truth.by_series()[i.series_uid] == {"lv_dilation": False}


def test_assessments_and_reports_the_latest_wins(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    i = exam(1)
    store.results.save(result(i))  # lv_dilation called positive
    store.truth.receive(report("M1", {"lv_dilation": True, "hcm": False}, study_uid=i.study_uid))
    reject = store.truth.assess(i.series_uid, {"lv_dilation": ("reject", False)}, "dr a", "septum measured again")
    assert reject.changed == 1 and store.truth.by_series()[i.series_uid] == {"lv_dilation": False, "hcm": False}
    store.truth.assess(i.series_uid, {"lv_dilation": ("accept", False)}, "dr b")
    assert store.truth.for_study(i.study_uid)["lv_dilation"] == (True, "assessment")
    store.truth.assess(i.series_uid, {"lv_dilation": ("correct", False)}, "dr c")
    assert store.truth.by_series()[i.series_uid]["lv_dilation"] is False
    # a cancelled report withdraws what reports said, not what a radiologist assessed
    store.truth.receive(report("M2", {}, study_uid=i.study_uid, status=TruthStatus.CANCELLED))
    assert store.truth.by_series()[i.series_uid] == {"lv_dilation": False}
    # a later report is the latest record: it wins
    store.truth.receive(report("M3", {"lv_dilation": True}, study_uid=i.study_uid, status=TruthStatus.CORRECTED))
    assert store.truth.for_study(i.study_uid)["lv_dilation"] == (True, "report")
    records = store.truth.records()
    assert [(r["source"], r["status"]) for r in records] == [("report", "F"), ("assessment", "A"),
                                                             ("assessment", "A"), ("assessment", "A"),
                                                             ("report", "X"), ("report", "C")]
    assert records[1]["verdicts"] == {"lv_dilation": "reject"} and records[1]["comment"] == "septum measured again"
    assert store.truth.counts()["assessed"] == 3


def test_an_assessment_of_no_result_or_an_unknown_finding_is_refused(tmp_path):
    import pytest

    from appliance.store.truth import AssessmentError

    store = Store(tmp_path / "db.sqlite")
    i = exam(1)
    with pytest.raises(AssessmentError) as missing:
        store.truth.assess(i.series_uid, {"lv_dilation": ("accept", False)}, "dr a")
    assert missing.value.not_found
    store.results.save(result(i))
    with pytest.raises(AssessmentError, match="not in this result"):
        store.truth.assess(i.series_uid, {"amyloid": ("accept", False)}, "dr a")
    assert store.truth.records() == []


def test_exam_identity_is_stored_and_the_station_sealed(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    i = exam(1, "ACC1", "MR_EAST")
    store.series.seen(i)
    store.results.save(result(i))
    row = store.series.get(i.series_uid)
    assert row.accession_number == "ACC1" and row.station_name == "MR_EAST"
    assert "ACC1" not in repr(row) and "ACC1" not in repr(i)  # never in a log line by way of repr()
    (stored,) = store.results.for_study(i.study_uid)
    assert stored.info.accession_number == "ACC1"
    (entry,) = store.ledger.entries()
    assert entry["payload"]["station"] == "MR_EAST" and "ACC1" not in str(entry)
    store.series.set_state(exam(2, "", "MR2"), SeriesState.FAILED, "preprocess: x", stage="preprocess")
    assert list(store.ledger.entries())[1]["payload"]["station"] == "MR2"


def _make_version_4_file(path) -> None:
    """What a version-4 appliance left: no truth tables, series without accession number and station; a result
    sealed under version 4 (no station in its payload)."""
    store = Store(path)
    store.results.save(result(info(1)))
    (entry,) = store.ledger.entries()
    store.close()
    del entry["payload"]["station"]  # sealed before the ledger carried the station: its hash covers no station
    with sqlite3.connect(path) as db:
        db.execute("DROP TRIGGER ledger_no_update")
        db.execute("UPDATE ledger SET payload=?, hash=? WHERE seq=1",
                   (json.dumps(entry["payload"], sort_keys=True), entry_hash(entry)))
        db.executescript("""
            DROP TABLE truth_history; DROP TABLE truth; DROP TABLE truth_records;
            DROP INDEX series_accession;
            ALTER TABLE series DROP COLUMN accession_number; ALTER TABLE series DROP COLUMN station_name;
            UPDATE meta SET value='4' WHERE key='schema_version';""")


def test_a_version_4_file_is_upgraded_and_its_ledger_still_verifies(tmp_path, capsys):
    data = tmp_path / "data"
    path = data / "scanside.db"
    data.mkdir()
    _make_version_4_file(path)
    store = Store(path)  # upgraded here (the ledger's triggers come back with the schema)
    assert store.series.get(info(1).series_uid).accession_number == ""
    # an old series (no accession number) still matches by Study Instance UID
    assert store.truth.receive(report("M1", {"lv_dilation": True}, study_uid=info(1).study_uid)).matched
    store.results.save(result(exam(2, "ACC2", "MR1")))
    entries = list(store.ledger.entries())
    assert "station" not in entries[0]["payload"] and entries[1]["payload"]["station"] == "MR1"
    assert store.ledger.verify().ok
    store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
        assert "series_accession" in {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    cfg = tmp_path / "scanside.toml"
    cfg.write_text(f'[paths]\ndata_dir = "{data}"\nwatch_dir = "{tmp_path / "incoming"}"\n')
    assert main(["ledger", "verify", "--config", str(cfg)]) == 0
    capsys.readouterr()
