"""SRs over DICOMweb STOW-RS to a real Orthanc with its DICOMweb plugin (Debian packages orthanc, orthanc-dicomweb)
on loopback ports: the whole appliance scores a synthetic study, its Exporter sends the SR, and the SR is read back
over QIDO-RS and WADO-RS (dicomweb-client) and Orthanc's REST API. HTTPS is served by a TLS terminator in front of
Orthanc (tests/tls_front.py says why)."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pydicom
import pytest
import requests
from conftest import exports_of, send_study, sr_content_items, wait_for
from dicom_factory import mr_dataset
from dicomweb_client import DICOMwebClient
from orthanc_peer import DICOMWEB_PLUGIN, OrthancPeer, orthanc_binary
from tls_factory import TestCA, needs_openssl

from appliance.export.destinations.stowrs import StowPeer, StowSender
from appliance.handovers import ExportState, StoredReport

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(orthanc_binary() is None or not DICOMWEB_PLUGIN.exists(),
                                 reason="Orthanc and its DICOMweb plugin (Debian packages orthanc, orthanc-dicomweb) "
                                        "are not installed; .ci/run installs them")]

USER, PASSWORD, TOKEN = "scanside", "correct horse", "s3cr3t-t0ken"
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"


@pytest.fixture
def orthanc(tmp_path):
    peers: list[OrthancPeer] = []

    def make(**kwargs) -> OrthancPeer:
        peer = OrthancPeer(tmp_path / f"orthanc{len(peers)}", aet="PACS", dicomweb=True, **kwargs)
        peers.append(peer)
        return peer.start()

    yield make
    for peer in peers:
        peer.kill()


def secret(folder: Path, name: str, text: str) -> str:
    path = folder / name
    path.write_text(text + "\n")  # as an editor leaves it: the trailing newline is not part of the secret
    path.chmod(0o600)
    return str(path)


def export_to(peer: OrthancPeer, **overrides) -> dict:
    return {"dicomweb_url": peer.dicomweb_url, "retry_initial_s": 0.2, "retry_max_s": 0.5,
            "dicomweb_connect_timeout_s": 5, "dicomweb_read_timeout_s": 10, **overrides}


def web_client(peer: OrthancPeer, ca: Path | None = None) -> DICOMwebClient:
    """QIDO-RS and WADO-RS as a viewer would read them: the same credentials and CA the appliance was given."""
    session = requests.Session()
    session.trust_env = False
    session.headers.update(peer.http_headers())
    if ca is not None:
        session.verify = str(ca)
    client = DICOMwebClient(peer.dicomweb_url, session=session, timeout=(5, 10))
    client.set_http_retry_params(retry=False)
    return client


def test_an_sr_goes_over_stow_rs_and_reads_back_over_qido_rs_and_wado_rs(appliance, orthanc, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    pacs = orthanc(http_users={USER: PASSWORD})
    app = appliance(export=export_to(pacs, dicomweb_username=USER, folder=str(tmp_path / "sr-out"),
                                     dicomweb_password_file=secret(tmp_path, "password", PASSWORD)))
    plan, cine = send_study(app, seed=51)
    wait_for(lambda: [e.state for e in exports_of(app, cine.series_uid)] == [ExportState.DELIVERED] * 2,
             timeout=60, what="the SR delivered over STOW-RS and to the folder")
    logged = caplog.text  # the appliance's log; the reading back below is the test's own (its UIDs in URLs)
    sr_uid = app.store.exports.sr_uid(cine.series_uid)
    assert {e.destination: e.attempts for e in exports_of(app, cine.series_uid)} == {"dicomweb": 1, "folder": 1}
    assert "POST /dicom-web/studies HTTP/1.1\" 200" in logged  # one STOW-RS request, to the service's /studies

    web = web_client(pacs)
    # QIDO-RS: found by its SOP Instance UID, in the source study, as a Comprehensive SR; another UID finds nothing.
    (found,) = web.search_for_instances(search_filters={"SOPInstanceUID": sr_uid})
    assert found["00080018"]["Value"] == [sr_uid]
    assert found["00080016"]["Value"] == [COMPREHENSIVE_SR]
    assert found["0020000D"]["Value"] == [plan.study_uid]
    assert web.search_for_instances(search_filters={"SOPInstanceUID": sr_uid + ".9"}) == []
    # WADO-RS: the instance itself, with what the appliance wrote into it.
    sr = web.retrieve_instance(plan.study_uid, found["0020000E"]["Value"][0], sr_uid)
    assert sr.SOPInstanceUID == sr_uid and sr.SOPClassUID == COMPREHENSIVE_SR
    stored = app.store.results.for_series(cine.series_uid)
    items = sr_content_items(sr.ContentSequence)
    assert ("Algorithm Name", stored.bundle_name) in items
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
    assert [x.SeriesInstanceUID for x in evidence] == [cine.series_uid]  # the scored series, referenced
    assert [v for k, v in items if k == "Tracking Identifier"] == [f.name for f in stored.scores.findings]
    # What Orthanc keeps is the very document the folder got: dicomweb-client's re-encoding changes no byte.
    (instance,) = pacs.instances()
    assert pacs.instance_file(instance) == (tmp_path / "sr-out" / f"{sr_uid}.dcm").read_bytes()

    reg = app.registry
    assert reg.get_sample_value("scanside_sr_export_tries_total",
                                {"destination": "dicomweb", "outcome": "delivered"}) == 1
    assert reg.get_sample_value("scanside_sr_exports", {"destination": "dicomweb", "state": "delivered"}) == 1
    for identifier in (plan.patient_name, plan.patient_id, plan.accession_number, plan.study_uid, cine.series_uid,
                       sr_uid, PASSWORD):
        assert identifier not in logged


@pytest.mark.parametrize("auth, status", [("basic", "HTTP 401 Unauthorized"), ("bearer", "HTTP 403 Forbidden")])
def test_wrong_credentials_end_failed_after_the_configured_tries_with_the_status(appliance, orthanc, tmp_path, auth,
                                                                                 status):
    if auth == "basic":
        pacs = orthanc(http_users={USER: PASSWORD})
        credentials = {"dicomweb_username": USER,
                       "dicomweb_password_file": secret(tmp_path, "password", "wrong horse")}
    else:  # Orthanc admits only this bearer token (a Lua filter) and answers 403 to any other
        pacs = orthanc(http_bearer_token=TOKEN)
        credentials = {"dicomweb_token_file": secret(tmp_path, "token", "an-old-token")}
    app = appliance(export=export_to(pacs, max_attempts=3, **credentials))
    _, cine = send_study(app, seed=52)
    wait_for(lambda: [e.state for e in exports_of(app, cine.series_uid)] == [ExportState.FAILED], timeout=60,
             what="the export to end failed")
    (item,) = exports_of(app, cine.series_uid)
    assert item.attempts == 3, item  # 401 and 403 are retried: mended credentials are read at the next try
    assert item.last_error.startswith(status), item.last_error
    if auth == "basic":
        assert "dicomweb_password_file" in item.last_error
    assert pacs.instances() == []
    reg = app.registry
    assert reg.get_sample_value("scanside_sr_export_tries_total", {"destination": "dicomweb", "outcome": "retry"}) == 2
    assert reg.get_sample_value("scanside_sr_export_tries_total",
                                {"destination": "dicomweb", "outcome": "failed"}) == 1


@needs_openssl
def test_https_is_verified_against_the_configured_ca_and_another_ca_is_refused(appliance, orthanc, tmp_path):
    ca = TestCA(tmp_path / "pki")
    pacs = orthanc(http_bearer_token=TOKEN, https=ca.issue("pacs-web"))
    assert pacs.dicomweb_url.startswith("https://")
    token = secret(tmp_path, "token", TOKEN)
    app = appliance(export=export_to(pacs, dicomweb_ca=str(ca.cert), dicomweb_token_file=token))
    plan, cine = send_study(app, seed=53)
    wait_for(lambda: [e.state for e in exports_of(app, cine.series_uid)] == [ExportState.DELIVERED], timeout=60,
             what="the SR delivered over HTTPS")
    sr_uid = app.store.exports.sr_uid(cine.series_uid)
    (found,) = web_client(pacs, ca=ca.cert).search_for_instances(search_filters={"SOPInstanceUID": sr_uid})
    assert found["0020000D"]["Value"] == [plan.study_uid]
    app.stop()

    # The same server, but this appliance told to trust another CA: the handshake is refused, nothing is sent.
    stranger = TestCA(tmp_path / "other-pki", name="another-ca")
    app2 = appliance(export=export_to(pacs, dicomweb_ca=str(stranger.cert), dicomweb_token_file=token,
                                      max_attempts=2))
    _, second = send_study(app2, seed=54)
    wait_for(lambda: [e.state for e in exports_of(app2, second.series_uid)] == [ExportState.FAILED], timeout=60,
             what="the untrusted server refused")
    (item,) = exports_of(app2, second.series_uid)
    assert item.attempts == 2
    assert item.last_error.startswith("TLS refused: the server's certificate is not trusted by export.dicomweb_ca"), \
        item.last_error
    assert "certificate verify failed" in item.last_error
    assert len(pacs.instances()) == 1


def test_a_hung_server_costs_tries_by_read_timeout_and_gets_the_sr_once_when_it_recovers(appliance, orthanc):
    pacs = orthanc()
    pacs.pause()  # accepts connections (the kernel does), answers nothing
    try:
        app = appliance(export=export_to(pacs, max_attempts=1000, dicomweb_read_timeout_s=0.5))
        _, cine = send_study(app, seed=55)
        wait_for(lambda: [e for e in exports_of(app, cine.series_uid) if e.attempts >= 2], timeout=60,
                 what="tries timed out while the server hangs")
        (item,) = exports_of(app, cine.series_uid)
        assert item.state is ExportState.PENDING
        assert item.last_error.startswith("no answer within export.dicomweb_read_timeout_s (0.5 s)"), item.last_error
    finally:
        pacs.resume()
    wait_for(lambda: [e.state for e in exports_of(app, cine.series_uid)] == [ExportState.DELIVERED], timeout=60,
             what="the SR delivered once the server answers")
    # Every timed-out POST reaches Orthanc too once it runs again: the same SOP instance, stored once.
    assert len(pacs.instances()) == 1


def _document(ds) -> StoredReport:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return StoredReport(str(ds.SOPInstanceUID), out.getvalue())


def test_one_post_is_read_per_instance_a_part_the_server_cannot_read_fails_for_good_beside_one_stored(orthanc):
    pacs = orthanc()
    sender = StowSender(StowPeer(pacs.dicomweb_url, connect_timeout_s=5, read_timeout_s=10))
    sender.check()
    good, bad = mr_dataset(), mr_dataset()
    del bad.SeriesInstanceUID  # Orthanc refuses a part without its mandatory UIDs, and says so with 400
    stored, refused = sender.deliver([_document(good), _document(bad)])
    assert stored.delivered and stored.detail == ""
    assert not refused.delivered and refused.final
    assert refused.detail == ("refused by the DICOMweb server (HTTP 400 Bad Request): failure reason 0xC000 "
                              "(error: cannot understand)")
    assert pydicom.dcmread(io.BytesIO(pacs.instance_file(pacs.instances()[0]))).SOPInstanceUID == good.SOPInstanceUID
    assert len(pacs.instances()) == 1
    # A batch over dicomweb-client's 1 MB chunk size goes with chunked transfer encoding; Orthanc takes it too.
    big = [_document(mr_dataset(512, 512)) for _ in range(3)]
    assert sum(len(r.document) for r in big) > 10**6
    assert [o.delivered for o in sender.deliver(big)] == [True] * 3 and len(pacs.instances()) == 4
    sender.abort()  # shutdown: nothing more leaves, and it costs no try
    (untried,) = sender.deliver([_document(mr_dataset())])
    assert not untried.tried and len(pacs.instances()) == 4
