"""The SR document and the export queue without a network: real synthetic images, a real SQLite store, a real folder.
(The PACS side, with a real Orthanc, is in test_pacs_export.py.)"""

from __future__ import annotations

import io
import logging
import subprocess
import time
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from dicom_factory import mr_dataset, write
from prometheus_client import CollectorRegistry

from appliance.cli import main as cli
from appliance.dev.synth import plan_study, write_study
from appliance.export.destinations.folder import FolderDestination
from appliance.export.outbox import Exporter, RetryPolicy
from appliance.export.source import SourceError, capture_source
from appliance.export.sr import SrSettings, build_sr
from appliance.handovers import ExportState, FindingScore, Scores, SeriesInfo, SeriesRole, SeriesState, StudyResult
from appliance.metrics import Metrics
from appliance.store import Store
from appliance.store.schema import SCHEMA_VERSION

DSRDUMP = Path("/usr/bin/dsrdump")


@pytest.fixture(scope="module")
def cine_files(tmp_path_factory):
    plan = plan_study(seed=9, vendor="B", n_slices=4, n_phases=6, matrix=(64, 64))
    files = write_study(plan, tmp_path_factory.mktemp("study"))
    (cine,) = [s for s in plan.series if s.role == "cine_sax"]
    headers = [(f, pydicom.dcmread(f, stop_before_pixels=True)) for f in files]
    mine = [(f, h) for f, h in headers if h.SeriesInstanceUID == cine.series_uid]
    refs = tuple((str(h.SOPClassUID), str(h.SOPInstanceUID)) for _, h in mine)
    return plan, cine, [f for f, _ in mine], refs


def scored(series_uid: str, study_uid: str, review: tuple[str, ...] = ("ood",)) -> StudyResult:
    info = SeriesInfo(key="s000000000042", study_uid=study_uid, series_uid=series_uid, role=SeriesRole.CINE_SAX,
                      manufacturer="B", description="cine", received=24, expected=24, completed_by="tags",
                      last_file_at=time.time())
    findings = (FindingScore("lv_dilation", "LV dilation", 0.31, 0.25, 0.8, True, False, ("near_threshold",)),
                FindingScore("amyloidosis", "Cardiac amyloidosis", 0.05, 0.2, 0.02, False, True, ()))
    return StudyResult(info, Scores(findings, 3.5, review), "reference", "1", "onnxruntime", "fp32", {}, time.time())


def test_the_sr_copies_identity_from_the_images_and_lists_every_image_as_evidence(cine_files):
    plan, cine, files, refs = cine_files
    source = capture_source(files[0], refs)
    header = source.dataset()
    assert "PixelData" not in header and not any(e.tag.is_private for e in header)
    doc = build_sr(scored(cine.series_uid, plan.study_uid), source, SrSettings(series_number=77))
    sr = hd.sr.ComprehensiveSR.from_dataset(pydicom.dcmread(io.BytesIO(doc.data)))
    assert sr.SOPInstanceUID == doc.sop_instance_uid and sr.SeriesNumber == 77
    assert (str(sr.PatientName), sr.PatientID, sr.PatientSex, sr.AccessionNumber, sr.StudyInstanceUID) == \
        (plan.patient_name, plan.patient_id, plan.patient_sex, plan.accession_number, plan.study_uid)
    evidence = sr.get_evidence()
    assert {(e[1], e[2]) for e in evidence} == {(cine.series_uid, uid) for _, uid in refs}
    assert len(evidence) == len(refs) == cine.n_images
    assert sr.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == "99SCANSIDE"


def test_a_source_without_type2_attributes_gives_them_empty_never_invented(tmp_path):
    path = write(mr_dataset(), tmp_path / "bare.dcm")  # no AccessionNumber, dates, sex, birth date
    ds = pydicom.dcmread(path)
    source = capture_source(path, ((str(ds.SOPClassUID), str(ds.SOPInstanceUID)),))
    sr = pydicom.dcmread(io.BytesIO(build_sr(scored(ds.SeriesInstanceUID, ds.StudyInstanceUID), source).data))
    assert sr.PatientID == "UNIT0001"
    for keyword in ("AccessionNumber", "PatientBirthDate", "PatientSex", "StudyDate"):
        assert keyword in sr and not sr[keyword].value


def test_a_file_that_is_not_dicom_gives_a_source_error(tmp_path):
    (tmp_path / "x.dcm").write_bytes(b"not dicom at all")
    with pytest.raises(SourceError):
        capture_source(tmp_path / "x.dcm", ())


@pytest.mark.skipif(not DSRDUMP.exists(), reason="dcmtk (Debian package) is not installed; .ci/run installs it")
@pytest.mark.parametrize("template", ["tid1500", "comprehensive"])
def test_dcmtk_parses_the_document_without_complaint(cine_files, tmp_path, template):
    plan, cine, files, refs = cine_files
    path = tmp_path / "sr.dcm"
    path.write_bytes(build_sr(scored(cine.series_uid, plan.study_uid), capture_source(files[0], refs),
                              SrSettings(template=template)).data)
    dump = subprocess.run([str(DSRDUMP), str(path)], capture_output=True, text=True, timeout=60)
    assert dump.returncode == 0 and dump.stderr.strip() == "", dump.stderr
    assert 'Finding")=(lv_dilation,99SCANSIDE,"LV dilation")' in dump.stdout
    assert 'Review reason")="near_threshold"' in dump.stdout


def test_building_an_sr_logs_and_prints_no_patient_identity(tmp_path, caplog, capsys, recwarn):
    caplog.set_level(logging.DEBUG)
    name = "MUELLER"  # no component separator: highdicom warns about such names, quoting them
    path = write(mr_dataset(PatientName=name), tmp_path / "odd.dcm")
    ds = pydicom.dcmread(path)
    build_sr(scored(ds.SeriesInstanceUID, ds.StudyInstanceUID),
             capture_source(path, ((str(ds.SOPClassUID), str(ds.SOPInstanceUID)),)))
    printed = capsys.readouterr()
    for text in (caplog.text, printed.out, printed.err, " ".join(str(w.message) for w in recwarn)):
        assert name not in text and "UNIT0001" not in text and ds.SOPInstanceUID not in text


@pytest.mark.filterwarnings("ignore:Invalid value for VR")  # the source's own oddities, as a scanner writes them
def test_odd_source_values_and_character_sets_are_copied_as_they_are(tmp_path):
    name = "Yamada^Tarou=山田^太郎=やまだ^たろう"
    path = write(mr_dataset(SpecificCharacterSet=["", "ISO 2022 IR 87"], PatientName=name, PatientSex="X",
                            PatientBirthDate="1980-01-01", StudyDate="20261130"), tmp_path / "jp.dcm")
    ds = pydicom.dcmread(path)
    result = scored(ds.SeriesInstanceUID, ds.StudyInstanceUID)
    sr = pydicom.dcmread(io.BytesIO(build_sr(result, capture_source(
        path, ((str(ds.SOPClassUID), str(ds.SOPInstanceUID)),))).data))
    assert sr.SpecificCharacterSet == "ISO_IR 192"  # a multi-byte ISO 2022 source: the SR is written in UTF-8
    assert str(sr.PatientName) == name
    assert (sr.PatientSex, sr.PatientBirthDate, sr.StudyDate) == ("X", "1980-01-01", "20261130")


def test_a_source_in_the_default_repertoire_by_its_pydicom_name_builds(tmp_path):
    path = write(mr_dataset(SpecificCharacterSet="ISO_IR 6"), tmp_path / "ir6.dcm")
    ds = pydicom.dcmread(path)
    sr = pydicom.dcmread(io.BytesIO(build_sr(scored(ds.SeriesInstanceUID, ds.StudyInstanceUID), capture_source(
        path, ((str(ds.SOPClassUID), str(ds.SOPInstanceUID)),))).data))
    assert not sr.get("SpecificCharacterSet") and str(sr.PatientName) == "SYNTH^UNIT"


def test_pynetdicom_never_logs_at_debug_in_the_appliance():
    from appliance.logsafe import silence_value_echoes

    logging.getLogger("pynetdicom").setLevel(logging.DEBUG)
    silence_value_echoes()  # what the appliance does when it starts
    assert logging.getLogger("pynetdicom").getEffectiveLevel() >= logging.INFO


@pytest.mark.parametrize("template", ["tid1500", "comprehensive"])
def test_bundle_text_that_does_not_fit_a_code_meaning_is_cleaned_not_fatal(cine_files, tmp_path, template):
    plan, cine, files, refs = cine_files
    result = scored(cine.series_uid, plan.study_uid)
    long_name = "Left\\right ventricular " + "non-compaction " * 6 + "≥ grade 2"
    odd = FindingScore("lvnc", long_name, 0.1, 0.2, 0.1, False, False, ())
    result = StudyResult(result.info, Scores((*result.scores.findings, odd), 1.0, ()), "reference", "1",
                         "onnxruntime", "fp32", {}, time.time())
    settings = SrSettings(template=template)
    data = build_sr(result, capture_source(files[0], refs), settings).data
    sr = pydicom.dcmread(io.BytesIO(data))
    assert sr.SpecificCharacterSet == "ISO_IR 192"  # "≥" does not fit the source's ISO_IR 100
    if template == "comprehensive":
        meanings = [item.ContentSequence[0].ConceptCodeSequence[0].CodeMeaning for item in sr.ContentSequence
                    if item.ValueType == "CONTAINER"]
    else:
        groups = hd.sr.srread(io.BytesIO(data)).content.get_image_measurement_groups()
        meanings = [g.finding_type.meaning for g in groups]
    assert meanings[-1] == long_name.replace("\\", "/")[:64] and len(meanings[-1]) == 64
    if DSRDUMP.exists():
        path = tmp_path / "sr.dcm"
        path.write_bytes(data)
        dump = subprocess.run([str(DSRDUMP), str(path)], capture_output=True, text=True, timeout=60)
        assert dump.returncode == 0, dump.stderr


# --- the queue ------------------------------------------------------------------------------------------------------

@pytest.fixture
def queued(tmp_path, cine_files):
    """A store holding one scored series with its source, queued for the folder destination."""
    plan, cine, files, refs = cine_files
    store = Store(tmp_path / "scanside.db", export_destinations=("folder",))  # where paths.data_dir=tmp_path has it
    result = scored(cine.series_uid, plan.study_uid)
    store.series.set_state(result.info, SeriesState.COMPLETE)
    source = capture_source(files[0], refs)
    store.exports.save_source(cine.series_uid, source.header, source.instances_json())
    store.results.save(result)
    yield store, cine.series_uid
    store.close()


def exporter(store: Store, folder: Path, attempts: int = 3) -> tuple[Exporter, CollectorRegistry]:
    registry = CollectorRegistry()
    exp = Exporter(store, Metrics(registry), RetryPolicy(attempts, 10.0, 25.0), SrSettings(),
                   {"folder": FolderDestination(folder)})
    exp.metrics.watch_exports(store.exports.counts)
    return exp, registry


def write_config(data_dir: Path) -> Path:
    config = data_dir / "scanside.toml"
    config.write_text(f"[paths]\ndata_dir = '{data_dir}'\n")
    return config


def test_retry_policy_doubles_up_to_its_ceiling_then_stops():
    policy = RetryPolicy(max_attempts=5, initial_s=10, max_s=25)
    assert [policy.next_attempt_at(n, 0.0) for n in range(1, 6)] == [10, 20, 25, 25, None]


def test_the_sr_lands_in_the_folder_once(queued, tmp_path):
    store, series_uid = queued
    exp, registry = exporter(store, tmp_path / "out")
    (tmp_path / "out").mkdir()
    assert exp.run_once() is True
    assert exp.run_once() is False  # nothing left to do
    (item,) = store.exports.items(series_uid=series_uid)
    assert item.state is ExportState.DELIVERED and item.attempts == 1
    (written,) = (tmp_path / "out").iterdir()
    assert written.name == f"{store.exports.sr_uid(series_uid)}.dcm"
    assert written.stat().st_mode & 0o777 == 0o640  # it carries patient identity
    assert pydicom.dcmread(written).Modality == "SR"
    # Delivered everywhere: the patient data kept for the SR goes, the SR's UID stays.
    assert store.exports.source(series_uid) is None and store.exports.report(series_uid) is None
    assert registry.get_sample_value("scanside_sr_exports", {"destination": "folder", "state": "delivered"}) == 1


def test_failed_tries_back_off_keep_the_same_document_and_end_failed(queued, tmp_path):
    store, series_uid = queued
    blocker = tmp_path / "out"
    blocker.write_text("a file where the folder should be")  # every write fails
    exp, registry = exporter(store, blocker, attempts=3)
    t0 = time.time()
    exp.run_once()
    (item,) = store.exports.items(series_uid=series_uid)
    assert item.state is ExportState.PENDING and item.attempts == 1 and "could not write" in item.last_error
    assert item.next_attempt_at == pytest.approx(t0 + 10, abs=2)
    assert exp.run_once(now=t0) is False  # not due yet
    first_uid = store.exports.report(series_uid).sop_instance_uid
    exp.run_once(now=t0 + 11)
    (item,) = store.exports.items(series_uid=series_uid)
    assert item.attempts == 2 and item.next_attempt_at == pytest.approx(t0 + 20, abs=3)
    exp.run_once(now=t0 + 100)
    (item,) = store.exports.items(series_uid=series_uid)
    assert item.state is ExportState.FAILED and item.attempts == 3
    assert exp.run_once(now=t0 + 10_000) is False  # failed items are never tried again on their own
    assert store.exports.report(series_uid).sop_instance_uid == first_uid  # one document for every try
    assert registry.get_sample_value("scanside_sr_export_tries_total",
                                     {"destination": "folder", "outcome": "failed"}) == 1

    # The operator mends the folder and queues it again from the command line.
    blocker.unlink()
    blocker.mkdir()
    assert cli(["exports", "--config", str(write_config(tmp_path)), "retry", "--all-failed"]) == 0
    exp.run_once()
    (item,) = store.exports.items(series_uid=series_uid)
    assert item.state is ExportState.DELIVERED and item.attempts == 1
    assert (blocker / f"{first_uid}.dcm").exists()


def test_a_series_without_a_captured_source_fails_at_once_saying_why(tmp_path):
    store = Store(tmp_path / "db.sqlite", export_destinations=("folder",))
    result = scored("1.2.3.4", "1.2.3")
    store.series.set_state(result.info, SeriesState.COMPLETE)
    store.results.save(result)
    exp, _ = exporter(store, tmp_path / "out")
    exp.run_once()
    (item,) = store.exports.items()
    assert item.state is ExportState.FAILED and item.attempts == 1
    assert "no source header is held" in item.last_error
    store.close()


def test_exports_are_listed_on_the_command_line(queued, tmp_path, capsys):
    config = write_config(tmp_path)
    assert cli(["exports", "--config", str(config), "list"]) == 0
    out = capsys.readouterr().out
    assert "s000000000042" in out and "pending" in out and "total: folder pending 1" in out
    assert cli(["exports", "--config", str(config), "retry"]) == 2  # neither ids nor --all-failed


def test_a_source_highdicom_cannot_use_fails_its_export_once_and_the_queue_goes_on(tmp_path, cine_files):
    plan, cine, files, refs = cine_files
    store = Store(tmp_path / "scanside.db", export_destinations=("folder",))
    private = write(mr_dataset(SOPClassUID="1.3.46.670589.11.0.0.12.4"), tmp_path / "private.dcm")
    ds = pydicom.dcmread(private)
    for series_uid, study_uid, path, instance_refs in (
            (ds.SeriesInstanceUID, ds.StudyInstanceUID, private, ((str(ds.SOPClassUID), str(ds.SOPInstanceUID)),)),
            (cine.series_uid, plan.study_uid, files[0], refs)):
        result = scored(series_uid, study_uid)
        store.series.set_state(result.info, SeriesState.COMPLETE)
        source = capture_source(path, instance_refs)
        store.exports.save_source(series_uid, source.header, source.instances_json())
        store.results.save(result)
    exp, _ = exporter(store, tmp_path / "out")
    assert exp.run_once() is True and exp.run_once() is False  # no endless retry of the one that cannot be built
    bad, good = (store.exports.items(series_uid=uid)[0] for uid in (ds.SeriesInstanceUID, cine.series_uid))
    assert bad.state is ExportState.FAILED and bad.attempts == 1 and "could not be built" in bad.last_error
    assert good.state is ExportState.DELIVERED
    store.close()


def test_a_failed_sr_is_dropped_after_its_retention_and_says_so(queued, tmp_path):
    store, series_uid = queued
    blocker = tmp_path / "out"
    blocker.write_text("a file where the folder should be")
    exp, _ = exporter(store, blocker, attempts=1)
    exp.run_once()
    (item,) = store.exports.items(series_uid=series_uid)
    assert item.state is ExportState.FAILED and store.exports.report(series_uid) is not None
    assert store.exports.expire_failed(failed_before=item.updated_at - 1) == 0  # not old enough yet
    assert store.exports.expire_failed(failed_before=item.updated_at + 1) == 1
    (item,) = store.exports.items(series_uid=series_uid)
    assert store.exports.report(series_uid) is None and store.exports.source(series_uid) is None
    assert item.state is ExportState.FAILED and "kept past export.keep_failed_days" in item.last_error
    assert store.exports.retry() == 1  # an operator retries anyway: it fails at once, saying why
    exp.run_once()
    (item,) = store.exports.items(series_uid=series_uid)
    assert item.state is ExportState.FAILED and "was dropped" in item.last_error


def test_retention_waits_for_every_destination_and_also_drops_a_lone_source(tmp_path):
    store = Store(tmp_path / "scanside.db", export_destinations=("pacs", "folder"))
    now = time.time()
    cases = {}
    for n, states in enumerate((("failed", "pending"), ("failed", "failed"), ("failed", "delivered"))):
        result = scored(f"1.2.{n}.1", f"1.2.{n}")
        store.series.set_state(result.info, SeriesState.COMPLETE)
        store.results.save(result)
        store.exports.save_report(result.info.series_uid, f"1.9.{n}", b"document")
        cases[states] = result.info.series_uid
        # states are (folder, pacs), in destination order
        items = sorted(store.exports.items(series_uid=result.info.series_uid), key=lambda e: e.destination)
        for item, state in zip(items, states, strict=True):
            if state != "pending":
                store.exports.record_try(item.id, state == "delivered", "x", None)
    source_only = scored("1.2.9.1", "1.2.9")  # failed before its SR was built: only the source is held
    store.series.set_state(source_only.info, SeriesState.COMPLETE)
    store.exports.save_source("1.2.9.1", b"header", "[]")
    store.results.save(source_only)
    for item in store.exports.items(series_uid="1.2.9.1"):
        store.exports.record_try(item.id, False, "no PACS", None)
    with store.db.transaction() as db:  # every PACS outcome is old now; every folder failure is recent
        db.execute("UPDATE exports SET updated_at=? WHERE destination='pacs'", (now - 100,))
    # Each series still has a recent folder failure (or a pending PACS export): none is due, although the
    # two-failures case has an old PACS failure.
    assert store.exports.expire_failed(failed_before=now - 50) == 0
    assert store.exports.report(cases[("failed", "failed")]) is not None
    with store.db.transaction() as db:  # now every failure is old
        db.execute("UPDATE exports SET updated_at=? WHERE state='failed'", (now - 100,))
    assert store.exports.expire_failed(failed_before=now - 50) == 3
    assert store.exports.report(cases[("failed", "pending")]) is not None  # something still on its way: kept
    assert store.exports.report(cases[("failed", "failed")]) is None
    assert store.exports.report(cases[("failed", "delivered")]) is None
    assert store.exports.source("1.2.9.1") is None
    assert all("keep_failed_days" in e.last_error for e in store.exports.items(series_uid="1.2.9.1"))
    store.close()


def test_a_final_export_outcome_wakes_stream_waiters(queued):
    import threading

    store, series_uid = queued
    (item,) = store.exports.items(series_uid=series_uid)
    last = store.events.last_id()
    threading.Timer(0.2, store.exports.record_try, (item.id, True, None, None)).start()
    started = time.monotonic()
    assert store.events.wait(last, timeout=10) is True
    assert time.monotonic() - started < 5  # woken by the commit, not by the timeout


def test_a_late_answer_does_not_undo_a_recorded_outcome(queued, tmp_path):
    store, series_uid = queued
    (item,) = store.exports.items(series_uid=series_uid)
    assert store.exports.record_try(item.id, True, None, None) is ExportState.DELIVERED
    # e.g. the thread of an appliance that was stopped while it waited for the PACS, answering late
    assert store.exports.record_try(item.id, False, "no C-STORE response", time.time() + 10) is ExportState.DELIVERED
    (item,) = store.exports.items(series_uid=series_uid)
    assert item.state is ExportState.DELIVERED and item.attempts == 1


def test_a_source_is_dropped_when_its_series_fails(tmp_path):
    store = Store(tmp_path / "scanside.db", export_destinations=("pacs",))
    result = scored("1.2.3.4", "1.2.3")
    store.series.set_state(result.info, SeriesState.COMPLETE)
    store.exports.save_source("1.2.3.4", b"header", "[]")
    store.series.set_state(result.info, SeriesState.FAILED, "preprocess: no slices")
    assert store.exports.source("1.2.3.4") is None
    store.close()


def test_a_version_1_database_is_upgraded_in_place(tmp_path):
    path = tmp_path / "old.db"
    Store(path).close()
    import sqlite3

    with sqlite3.connect(path) as db:  # what a version-1 appliance left: no export tables
        db.executescript("DROP TABLE exports; DROP TABLE reports; DROP TABLE sources;"
                         "UPDATE meta SET value='1' WHERE key='schema_version';")
    store = Store(path, export_destinations=("pacs",))
    assert store.exports.counts() == {}
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    store.close()


# --- the PACS sender against local peers (a silent TCP listener; a pynetdicom SCP that takes no SR) --------------

def test_a_try_cut_short_by_shutdown_costs_no_try_and_stays_queued(queued, tmp_path):
    import socket
    import threading

    from appliance.export.destinations.pacs import PacsPeer, PacsSender

    store, series_uid = queued
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # accepts the connection, never answers the association request
    sender = PacsSender(PacsPeer("PACS", "127.0.0.1", silent.getsockname()[1], timeout_s=2))
    registry = CollectorRegistry()
    exp = Exporter(store, Metrics(registry), RetryPolicy(3, 10.0, 25.0), SrSettings(), {"pacs": sender})
    store.results.export_destinations = ("pacs",)
    with store.db.transaction() as db:  # queue a PACS export beside the folder one the fixture made
        db.execute("UPDATE exports SET destination='pacs'")
    worker = threading.Thread(target=exp.run_once)
    worker.start()
    time.sleep(0.5)  # connected, waiting for the association answer
    sender.abort()
    worker.join(10)
    silent.close()
    (item,) = store.exports.items(series_uid=series_uid)
    assert not worker.is_alive()
    assert item.state is ExportState.PENDING and item.attempts == 0  # made again at the next start
    assert registry.get_sample_value("scanside_sr_export_tries_total",
                                     {"destination": "pacs", "outcome": "retry"}) in (None, 0.0)


def test_a_pacs_that_takes_no_sr_is_named_as_such():
    from pynetdicom import AE
    from pynetdicom.sop_class import MRImageStorage

    from appliance.dev.served import free_port
    from appliance.export.destinations.pacs import PacsPeer, PacsSender

    scp = AE(ae_title="IMAGESONLY")
    scp.add_supported_context(MRImageStorage)
    port = free_port()
    server = scp.start_server(("127.0.0.1", port), block=False)
    try:
        (outcome,) = PacsSender(PacsPeer("IMAGESONLY", "127.0.0.1", port, timeout_s=5)).send([b"unused"])
    finally:
        server.shutdown()
    assert not outcome.delivered and outcome.tried
    assert "does not accept Comprehensive SR Storage" in outcome.detail


def test_a_pacs_host_that_does_not_exist_is_a_failed_try_not_a_crash():
    from appliance.export.destinations.pacs import PacsPeer, PacsSender

    # .invalid never resolves (RFC 6761); pynetdicom lets the resolver's error out of associate().
    (outcome,) = PacsSender(PacsPeer("PACS", "pacs.invalid", 104, timeout_s=2)).send([b"unused"])
    assert not outcome.delivered and outcome.tried and outcome.detail.startswith("not sent: gaierror")
