"""Storage commitment of the SRs sent to PACS (export.pacs_commitment), with the whole appliance on loopback: a real
Orthanc (which reports on a new association to the receiver) commits the SR; pynetdicom PACS peers that report on
the asking association (first failing, then committing), never report, do not offer the SOP class, or report only
after the appliance restarted."""

from __future__ import annotations

import threading
import time

import pytest
from conftest import send_study, wait_for
from orthanc_peer import OrthancPeer, free_port, orthanc_binary
from pydicom.dataset import Dataset
from pydicom.uid import ComprehensiveSRStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import StorageCommitmentPushModel

from appliance import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from appliance.commitment import (
    PROCESSING_FAILURE,
    SOP_INSTANCE_UID,
    event_information,
    new_transaction_uid,
    read_action_information,
    result_of,
)
from appliance.config import ConfigError, Settings
from appliance.handovers import CommitmentRequest, CommitmentResult, ExportState

pytestmark = pytest.mark.slow
needs_orthanc = pytest.mark.skipif(orthanc_binary() is None,
                                   reason="Orthanc (Debian package orthanc) is not installed; .ci/run installs it")
PACS_AET = "PACS"


class CommitmentPacs:
    """A pynetdicom PACS: stores SRs and takes N-ACTION requests. `mode`: "same" reports on the asking association
    (each result from `verdicts`, one per request: 0 commit, else that Failure Reason for every SR), "never" never
    reports, "hold" keeps the requests for `report_later`, which reports on a new association."""

    def __init__(self, mode: str, verdicts: tuple[int, ...] = (0,), offer_commitment: bool = True) -> None:
        self.mode = mode
        self.verdicts = list(verdicts)
        self.stored: list[str] = []
        self.callers: set[tuple[str, str]] = set()  # (implementation class UID, version name) of the senders
        self.requests: list[CommitmentRequest] = []
        self.port = free_port()
        ae = AE(ae_title=PACS_AET)
        ae.add_supported_context(ComprehensiveSRStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        if offer_commitment:
            ae.add_supported_context(StorageCommitmentPushModel)
        self._server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=[
            (evt.EVT_C_STORE, self._on_store), (evt.EVT_N_ACTION, self._on_action)])

    def stop(self) -> None:
        self._server.shutdown()

    def _on_store(self, event: evt.Event) -> int:
        self.stored.append(str(event.request.AffectedSOPInstanceUID))
        requestor = event.assoc.requestor
        self.callers.add((str(requestor.implementation_class_uid), str(requestor.implementation_version_name)))
        return 0x0000

    def _on_action(self, event: evt.Event) -> tuple[int, None]:
        request = read_action_information(event.action_information)
        self.requests.append(request)
        if self.mode == "same":
            verdict = self.verdicts.pop(0) if len(self.verdicts) > 1 else self.verdicts[0]
            result = result_of(request.transaction_uid, [(ref, verdict) for ref in request.references])

            def report() -> None:  # after the N-ACTION response has gone, on the same association
                time.sleep(0.2)
                event.assoc.send_n_event_report(event_information(result), result.event_type,
                                                StorageCommitmentPushModel, SOP_INSTANCE_UID)

            threading.Thread(target=report, daemon=True).start()
        return 0x0000, None

    def report_later(self, port: int, result: CommitmentResult) -> int:
        """Report on a new association to the appliance's receiver, proposing the SCP role; its answer status."""
        ae = AE(ae_title=PACS_AET)
        ae.add_requested_context(StorageCommitmentPushModel)
        assoc = ae.associate("127.0.0.1", port, ae_title="SCANSIDE",
                             ext_neg=[build_role(StorageCommitmentPushModel, scp_role=True)])
        assert assoc.is_established
        try:
            status, _ = assoc.send_n_event_report(event_information(result), result.event_type,
                                                  StorageCommitmentPushModel, SOP_INSTANCE_UID)
        finally:
            assoc.release()
        return int(status.Status)


@pytest.fixture
def pacs_peers():
    peers: list[CommitmentPacs] = []

    def make(*args, **kwargs) -> CommitmentPacs:
        peers.append(CommitmentPacs(*args, **kwargs))
        return peers[-1]

    yield make
    for peer in peers:
        peer.stop()


def export_to(port: int, **overrides) -> dict:
    return {"pacs_ae_title": PACS_AET, "pacs_host": "127.0.0.1", "pacs_port": port, "pacs_commitment": True,
            "retry_initial_s": 0.2, "retry_max_s": 0.5, "timeout_s": 5, **overrides}


def send_cine(app, seed: int) -> str:
    return send_study(app, seed, matrix=(96, 96))[1].series_uid


def final_item(app, series_uid: str, timeout: float = 90.0):
    items = wait_for(lambda: [e for e in app.store.exports.items(series_uid=series_uid)
                              if e.state is not ExportState.PENDING], timeout=timeout, what="the SR export decided")
    (item,) = items
    return item


def scu(app, metric: str, **labels) -> float | None:
    return app.registry.get_sample_value(f"scanside_commitment_{metric}_total", {"side": "scu", **labels})


@needs_orthanc
def test_an_sr_sent_to_orthanc_is_delivered_once_orthanc_commits_it_on_a_new_association(appliance, tmp_path):
    receiver_port = free_port()
    # Orthanc reports on an association it opens to the AE that asked, which it must know (DicomModalities).
    pacs = OrthancPeer(tmp_path / "orthanc", aet=PACS_AET, known_aets={"SCANSIDE": ("127.0.0.1", receiver_port)})
    pacs.start()
    try:
        app = appliance(dicom={"enabled": True, "port": receiver_port, "ae_title": "SCANSIDE"},
                        export=export_to(pacs.dicom_port))
        cine = send_cine(app, seed=51)
        item = final_item(app, cine)
        assert item.state is ExportState.DELIVERED and item.attempts == 1, item.last_error
        assert len(pacs.instances()) == 1
        assert scu(app, "requests", outcome="accepted") == 1
        assert scu(app, "reports", association="new", outcome="matched") == 1
        assert scu(app, "instances", result="committed") == 1
        assert app.store.commitment_requests.waiting() == 0  # settled and gone
    finally:
        pacs.kill()


def test_a_pacs_that_never_reports_leaves_the_sr_failed_after_the_configured_tries(appliance, pacs_peers):
    pacs = pacs_peers("never")
    app = appliance(dicom={"enabled": True, "port": free_port()},
                    export=export_to(pacs.port, max_attempts=3, pacs_commitment_wait_s=1))
    cine = send_cine(app, seed=52)
    item = final_item(app, cine)
    assert item.state is ExportState.FAILED and item.attempts == 3
    assert "no storage commitment report within 1 s" in item.last_error
    # Each try stored the SR again and asked again, under a new Transaction UID.
    assert len(pacs.stored) == 3 and len(set(pacs.stored)) == 1
    assert pacs.callers == {(IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME)}  # ScanSide's, not pynetdicom's
    assert len({r.transaction_uid for r in pacs.requests}) == 3
    reg = app.registry
    assert reg.get_sample_value("scanside_sr_export_tries_total", {"destination": "pacs", "outcome": "retry"}) == 2
    assert reg.get_sample_value("scanside_sr_export_tries_total", {"destination": "pacs", "outcome": "failed"}) == 1
    assert scu(app, "requests", outcome="accepted") == 3


def test_a_report_on_the_asking_association_that_fails_is_retried_and_the_next_commits(appliance, pacs_peers):
    pacs = pacs_peers("same", verdicts=(PROCESSING_FAILURE, 0))
    app = appliance(export=export_to(pacs.port, max_attempts=5))  # no receiver: the same association suffices
    cine = send_cine(app, seed=53)
    item = final_item(app, cine)
    assert item.state is ExportState.DELIVERED and item.attempts == 2, item.last_error
    assert len(pacs.requests) == 2
    assert scu(app, "reports", association="same", outcome="matched") == 2
    assert scu(app, "instances", result="processing_failure") == 1
    assert scu(app, "instances", result="committed") == 1


def test_a_pacs_without_the_sop_class_fails_the_try(appliance, pacs_peers):
    pacs = pacs_peers("never", offer_commitment=False)
    app = appliance(export=export_to(pacs.port, max_attempts=1))
    item = final_item(app, send_cine(app, seed=54))
    assert item.state is ExportState.FAILED and "does not accept Storage Commitment Push Model" in item.last_error
    assert len(pacs.stored) == 1  # stored, yet not delivered: it was not committed
    assert scu(app, "requests", outcome="not_offered") == 1


def test_a_commitment_pending_over_a_restart_is_matched_by_its_transaction_uid_after_it(appliance, pacs_peers):
    pacs = pacs_peers("hold")
    receiver_port = free_port()
    sections = {"dicom": {"enabled": True, "port": receiver_port, "ae_title": "SCANSIDE"},
                "export": export_to(pacs.port, pacs_commitment_wait_s=120)}
    app = appliance(**sections)
    cine = send_cine(app, seed=55)
    wait_for(lambda: [e for e in app.store.exports.items(series_uid=cine)
                      if "waiting for its storage commitment report" in (e.last_error or "")], timeout=90,
             what="the SR stored and waiting for its report")
    (request,) = pacs.requests
    app.stop()

    app2 = appliance(**sections)  # same data folder, same receiver port
    (item,) = app2.store.exports.items(series_uid=cine)
    assert item.state is ExportState.PENDING and item.attempts == 0
    # A report for a transaction nobody waits for is answered, counted and changes nothing.
    stranger = CommitmentResult(new_transaction_uid(), request.references)
    assert pacs.report_later(receiver_port, stranger) == 0x0000
    assert pacs.report_later(receiver_port, result_of(request.transaction_uid,
                                                      [(ref, 0) for ref in request.references])) == 0x0000
    item = final_item(app2, cine, timeout=15)
    assert item.state is ExportState.DELIVERED and item.attempts == 1
    assert len(pacs.stored) == 1  # not sent again: the report settled the first try
    assert scu(app2, "reports", association="new", outcome="unmatched") == 1
    assert scu(app2, "reports", association="new", outcome="matched") == 1


def test_settings_for_commitment_that_cannot_work_are_refused():
    with pytest.raises(ConfigError, match=r"pacs_commitment needs export\.pacs_ae_title"):
        Settings().replace(export={"pacs_commitment": True})
    with pytest.raises(ConfigError, match="allowed_calling_aets must list"):
        Settings().replace(export={"pacs_ae_title": "PACS", "pacs_commitment": True},
                           dicom={"enabled": True, "allowed_calling_aets": ["MRI1"]})
    ok = Settings().replace(export={"pacs_ae_title": "PACS", "pacs_commitment": True},
                            dicom={"enabled": True, "allowed_calling_aets": ["MRI1", "PACS"]})
    assert ok.export.pacs_commitment_wait_s == 300.0
    with pytest.raises(ConfigError, match="pacs_commitment_wait_s"):
        Settings().replace(export={"pacs_commitment_wait_s": 0})


def test_a_report_that_cannot_be_read_is_answered_0115(appliance, pacs_peers):
    pacs = pacs_peers("hold")
    port = free_port()
    app = appliance(dicom={"enabled": True, "port": port}, export=export_to(pacs.port))
    ae = AE(ae_title=PACS_AET)
    ae.add_requested_context(StorageCommitmentPushModel)
    assoc = ae.associate("127.0.0.1", port, ae_title="SCANSIDE",
                         ext_neg=[build_role(StorageCommitmentPushModel, scp_role=True)])
    no_transaction = Dataset()
    no_transaction.ReferencedSOPSequence = []  # and no Transaction UID (0008,1195): not a result
    no_transaction.RetrieveAETitle = "PACS"
    try:
        status, _ = assoc.send_n_event_report(no_transaction, 1, StorageCommitmentPushModel, SOP_INSTANCE_UID)
    finally:
        assoc.release()
    assert int(status.Status) == 0x0115
    assert scu(app, "reports", association="new", outcome="unreadable") == 1
