"""Storage Commitment Push Model SCP of the receiver, with a real pynetdicom SCU as the scanner (dcmtk's storescu
asks for no commitment) against the whole appliance on loopback: the report on the requester's own association
and on a new one to its listening port, failure reasons, refusals of malformed requests, and the record and the
owed reports surviving a restart."""

from __future__ import annotations

import threading
from pathlib import Path

import pydicom
import pytest
from conftest import wait_for
from dicom_factory import mr_dataset
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import StorageCommitmentPushModel

from appliance.commitment import (
    CLASS_INSTANCE_CONFLICT,
    FAILURE_REASONS,
    NO_SUCH_OBJECT_INSTANCE,
    OTHER_REASON,
    SOP_CLASS_NOT_SUPPORTED,
    SOP_INSTANCE_UID,
    CommitmentFormatError,
    action_information,
    event_information,
    new_transaction_uid,
    read_action_information,
    read_event_information,
)
from appliance.config import ConfigError, Settings
from appliance.dev.served import free_port
from appliance.dev.synth import plan_study, write_study
from appliance.handovers import CommitmentFailure, CommitmentRequest, CommitmentResult, SopReference
from appliance.metrics import COMMITMENT_RESULTS

pytestmark = pytest.mark.slow

SCANNER = "MRI1"


class Report:
    """What a scanner heard: one N-EVENT-REPORT, and on which association."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.event_type: int | None = None
        self.info: Dataset | None = None
        self.calling_ae = ""
        self.scp_role_proposed: bool | None = None

    def handler(self, event: evt.Event) -> tuple[int, None]:
        self.event_type = event.event_type
        self.info = event.event_information
        self.calling_ae = str(event.assoc.requestor.ae_title).strip()
        # On an association the appliance opened, it is the requestor in the SCP role: the scanner (acceptor) is SCU.
        cx = [c for c in event.assoc.accepted_contexts if c.abstract_syntax == StorageCommitmentPushModel]
        self.scp_role_proposed = bool(cx and cx[0].as_scu) if event.assoc.is_acceptor else None
        self.done.set()
        return 0x0000, None

    def committed(self) -> set[str]:
        assert self.info is not None
        return {i.ReferencedSOPInstanceUID for i in self.info.get("ReferencedSOPSequence", [])}

    def failed(self) -> dict[str, int]:
        assert self.info is not None
        return {i.ReferencedSOPInstanceUID: int(i.FailureReason) for i in self.info.get("FailedSOPSequence", [])}


def scanner(ae_title: str = SCANNER) -> AE:
    ae = AE(ae_title=ae_title)
    ae.add_requested_context(MRImageStorage, [ExplicitVRLittleEndian])
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    ae.add_requested_context(StorageCommitmentPushModel)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 15
    return ae


def listening_scanner(report: Report, port: int, ae_title: str = SCANNER):
    """The scanner's own SCP, where a report on a new association arrives."""
    ae = AE(ae_title=ae_title)
    ae.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
    return ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, report.handler)])


def receiver_app(appliance, **dicom):
    port = free_port()
    return appliance(dicom={"enabled": True, "port": port, "ae_title": "SCANSIDE", **dicom}), port


def request(refs: list[tuple[str, str]], transaction_uid: str | None = None) -> tuple[str, Dataset]:
    uid = transaction_uid or new_transaction_uid()
    return uid, action_information(CommitmentRequest(uid, tuple(SopReference(c, i) for c, i in refs)))


def store_all(assoc, datasets) -> None:
    for ds in datasets:
        assert assoc.send_c_store(ds).Status == 0x0000


def test_report_on_the_same_association_names_each_stored_instance_and_fails_the_unknown_one(appliance):
    app, port = receiver_app(appliance)
    images = [mr_dataset(16, 16, seed=i) for i in range(3)]
    unknown = generate_uid()
    report = Report()
    assoc = scanner().associate("127.0.0.1", port, ae_title="SCANSIDE",
                                evt_handlers=[(evt.EVT_N_EVENT_REPORT, report.handler)])
    assert assoc.is_established
    try:
        store_all(assoc, images)
        uid, info = request([(MRImageStorage, d.SOPInstanceUID) for d in images] + [(MRImageStorage, unknown)])
        status, _ = assoc.send_n_action(info, 1, StorageCommitmentPushModel, SOP_INSTANCE_UID)
        assert status.Status == 0x0000
        assert report.done.wait(10), "no report on the requester's association"
    finally:
        assoc.release()
    assert report.event_type == 2  # failures exist
    assert report.info.TransactionUID == uid
    assert report.committed() == {d.SOPInstanceUID for d in images}
    assert report.failed() == {unknown: NO_SUCH_OBJECT_INSTANCE}
    assert app.store.commitment_reports.get(SCANNER, uid)["association"] == "same"
    reg = app.registry
    assert reg.get_sample_value("scanside_commitment_requests_total", {"side": "scp", "outcome": "accepted"}) == 1
    assert reg.get_sample_value("scanside_commitment_instances_total", {"side": "scp", "result": "committed"}) == 3
    assert reg.get_sample_value("scanside_commitment_instances_total",
                                {"side": "scp", "result": "no_such_object_instance"}) == 1
    assert reg.get_sample_value("scanside_commitment_reports_total",
                                {"side": "scp", "association": "same", "outcome": "sent"}) == 1


def test_a_requester_that_releases_gets_its_report_on_a_new_association_to_its_configured_port(appliance):
    report = Report()
    scanner_port = free_port()
    server = listening_scanner(report, scanner_port)
    try:
        app, port = receiver_app(appliance, commitment_peers=[f"{SCANNER}=127.0.0.1:{scanner_port}"])
        images = [mr_dataset(16, 16, seed=10 + i) for i in range(4)]
        assoc = scanner().associate("127.0.0.1", port, ae_title="SCANSIDE")
        store_all(assoc, images)
        uid, info = request([(MRImageStorage, d.SOPInstanceUID) for d in images])
        status, _ = assoc.send_n_action(info, 1, StorageCommitmentPushModel, SOP_INSTANCE_UID)
        assoc.release()  # at once, as most scanners do
        assert status.Status == 0x0000
        assert report.done.wait(15), "no report on a new association"
    finally:
        server.shutdown()
    assert report.event_type == 1 and report.info.TransactionUID == uid
    assert report.committed() == {d.SOPInstanceUID for d in images} and report.failed() == {}
    assert report.calling_ae == "SCANSIDE" and report.scp_role_proposed is True
    assert app.store.commitment_reports.get(SCANNER, uid)["association"] == "new"


def test_reasons_refusals_and_a_sender_with_no_address(appliance):
    app, port = receiver_app(appliance)
    mr = mr_dataset(16, 16, seed=20)
    ct = mr_dataset(16, 16, seed=21, Modality="CT")
    ct.SOPClassUID = ct.file_meta.MediaStorageSOPClassUID = CTImageStorage
    assoc = scanner().associate("127.0.0.1", port, ae_title="SCANSIDE")
    try:
        store_all(assoc, [mr])
        assert assoc.send_c_store(ct).Status == 0x0122  # refused: a SOP class the appliance does not take
        never_seen_ct = generate_uid()
        uid, info = request([(MRImageStorage, mr.SOPInstanceUID), (CTImageStorage, mr.SOPInstanceUID),
                             (CTImageStorage, ct.SOPInstanceUID), (CTImageStorage, never_seen_ct)])
        assert assoc.send_n_action(info, 1, StorageCommitmentPushModel, SOP_INSTANCE_UID)[0].Status == 0
        # Malformed or not what this SOP class does: refused on the N-ACTION itself.
        empty = Dataset()
        empty.TransactionUID = new_transaction_uid()
        assert assoc.send_n_action(empty, 1, StorageCommitmentPushModel, SOP_INSTANCE_UID)[0].Status == 0x0115
        assert assoc.send_n_action(info, 2, StorageCommitmentPushModel, SOP_INSTANCE_UID)[0].Status == 0x0123
        assert assoc.send_n_action(info, 1, StorageCommitmentPushModel, generate_uid())[0].Status == 0x0112
    finally:
        assoc.release()
    owed = wait_for(lambda: (row := app.store.commitment_reports.get(SCANNER, uid)) and row["state"] != "pending"
                    and row, timeout=10, what="the report given up")
    # Released at once and no address configured: nowhere to send it, said so, not retried for ever.
    assert owed["state"] == "failed" and "commitment_peers" in owed["last_error"]
    reg = app.registry
    assert reg.get_sample_value("scanside_commitment_reports_total",
                                {"side": "scp", "association": "none", "outcome": "failed"}) == 1
    assert reg.get_sample_value("scanside_commitment_requests_total", {"side": "scp", "outcome": "refused"}) == 3
    for result, n in (("committed", 1), ("class_instance_conflict", 1), ("sop_class_not_supported", 2)):
        assert reg.get_sample_value("scanside_commitment_instances_total", {"side": "scp", "result": result}) == n
    assert app.store.commitment_reports.upcoming(float("inf")) == []  # nothing left pending


def test_the_record_outlives_the_spool_and_a_restart_and_an_owed_report_is_sent_after_it(appliance, tmp_path):
    """A study stored and scored (its files gone from the spool), the appliance restarted: a request for it is
    committed. And a report that could not be delivered before the restart goes out after it."""
    scanner_port = free_port()
    dicom = {"commitment_peers": [f"{SCANNER}=127.0.0.1:{scanner_port}"], "commitment_retry_s": 0.2,
             "commitment_attempts": 100}
    app, port = receiver_app(appliance, **dicom)
    plan = plan_study(seed=78, vendor="A", n_slices=8, n_phases=20, matrix=(96, 96))
    files = write_study(plan, tmp_path / "study")
    images = [pydicom.dcmread(f) for f in files]
    assoc = scanner().associate("127.0.0.1", port, ae_title="SCANSIDE")
    store_all(assoc, images)
    cine = next(s.series_uid for s in plan.series if s.role == "cine_sax")
    wait_for(lambda: app.store.results.for_series(cine), timeout=60, what="the study to be scored")
    spool = Path(app.settings.paths.spool)
    wait_for(lambda: not any(p.is_file() for p in spool.rglob("*.dcm")), timeout=30, what="the spool emptied")
    # Asked for before the restart, while the scanner's port is closed: owed, tried, not delivered.
    early, info = request([(d.SOPClassUID, d.SOPInstanceUID) for d in images[:5]])
    assert assoc.send_n_action(info, 1, StorageCommitmentPushModel, SOP_INSTANCE_UID)[0].Status == 0
    assoc.release()
    wait_for(lambda: (app.store.commitment_reports.get(SCANNER, early) or {}).get("attempts", 0) >= 1, timeout=10,
             what="a failed try of the early report")
    app.stop()

    late_report, early_report = Report(), Report()
    app2 = appliance(dicom={"enabled": True, "port": port, "ae_title": "SCANSIDE", **dicom})  # same data folder
    assert app2.store.commitment_reports.get(SCANNER, early)["state"] == "pending"
    server = listening_scanner(early_report, scanner_port)
    try:
        assert early_report.done.wait(15), "the report owed before the restart was not sent after it"
        assert early_report.committed() == {d.SOPInstanceUID for d in images[:5]}
        assert early_report.info.TransactionUID == early and early_report.scp_role_proposed is True
        assoc = scanner().associate("127.0.0.1", port, ae_title="SCANSIDE",
                                    evt_handlers=[(evt.EVT_N_EVENT_REPORT, late_report.handler)])
        uid, info = request([(d.SOPClassUID, d.SOPInstanceUID) for d in images])
        assert assoc.send_n_action(info, 1, StorageCommitmentPushModel, SOP_INSTANCE_UID)[0].Status == 0
        assert late_report.done.wait(10)
        assoc.release()
    finally:
        server.shutdown()
    assert late_report.event_type == 1 and late_report.failed() == {} and late_report.info.TransactionUID == uid
    assert late_report.committed() == {d.SOPInstanceUID for d in images}
    assert app2.store.received.count() == len(images)


# --- without the network: the datasets, the rules, the labels -------------------------------------------------------


def test_action_and_event_information_read_back_what_was_made():
    refs = (SopReference(MRImageStorage, "1.2.3.4"), SopReference(MRImageStorage, "1.2.3.5"))
    uid = new_transaction_uid()
    assert uid.startswith("2.25.") and len(uid) <= 64
    assert read_action_information(action_information(CommitmentRequest(uid, refs))) == CommitmentRequest(uid, refs)
    result = CommitmentResult(uid, refs[:1], (CommitmentFailure(refs[1], NO_SUCH_OBJECT_INSTANCE),))
    ds = event_information(result)
    assert "FailedSOPSequence" in ds and result.event_type == 2
    assert read_event_information(ds) == result
    none_committed = CommitmentResult(uid, (), (CommitmentFailure(refs[0], CLASS_INSTANCE_CONFLICT),))
    assert "ReferencedSOPSequence" not in event_information(none_committed)
    assert read_event_information(event_information(none_committed)) == none_committed


@pytest.mark.parametrize("bad", ["no transaction", "empty sequence", "no instance uid", "not a uid"])
def test_malformed_action_information_is_refused_naming_the_attribute(bad):
    ds = action_information(CommitmentRequest("1.2.3", (SopReference(MRImageStorage, "1.2.3.9"),)))
    if bad == "no transaction":
        del ds.TransactionUID
    elif bad == "empty sequence":
        ds.ReferencedSOPSequence = []
    elif bad == "no instance uid":
        del ds.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
    else:
        ds.ReferencedSOPSequence[0].ReferencedSOPInstanceUID = "SYNTH^PATIENT"
    with pytest.raises(CommitmentFormatError) as raised:
        read_action_information(ds)
    assert "SYNTH" not in str(raised.value) and "(0008," in str(raised.value)


def test_metric_results_are_the_failure_reasons_of_the_commitment_module():
    assert set(COMMITMENT_RESULTS) == {"committed", OTHER_REASON, *FAILURE_REASONS.values()}
    assert FAILURE_REASONS[SOP_CLASS_NOT_SUPPORTED] == "sop_class_not_supported"


def test_commitment_peers_must_be_ae_equals_host_port():
    ok = Settings().replace(dicom={"commitment_peers": ["MRI1=10.1.2.3:104", "CT 2 = scanner.local:11112"]})
    assert ok.dicom.commitment_peer_addresses == {"MRI1": ("10.1.2.3", 104), "CT 2": ("scanner.local", 11112)}
    for bad in (["MRI1"], ["MRI1=10.1.2.3"], ["=10.1.2.3:104"], ["MRI1=host:99999"], ["A=h:1", "A=h:2"]):
        with pytest.raises(ConfigError, match="commitment_peers"):
            Settings().replace(dicom={"commitment_peers": bad})
