"""The C-STORE receiver with real DICOM peers: dcmtk's echoscu and storescu (Debian package dcmtk) over loopback,
in front of the whole appliance."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import wait_for
from dicom_factory import mr_dataset, write
from tls_factory import OPENSSL, self_signed

from appliance.dev.served import free_port
from appliance.dev.synth import plan_study, write_study
from appliance.serve.client import ApplianceClient

pytestmark = pytest.mark.slow

DCMTK = Path("/usr/bin")  # dcmtk's tools; pynetdicom installs apps of the same names into the venv
STORESCU, ECHOSCU = DCMTK / "storescu", DCMTK / "echoscu"
needs_dcmtk = pytest.mark.skipif(not (STORESCU.exists() and ECHOSCU.exists()),
                                 reason="dcmtk (Debian package) is not installed; .ci/run installs it")


def receiver_app(appliance, **dicom):
    port = free_port()
    app = appliance(dicom={"enabled": True, "port": port, "ae_title": "SCANSIDE", **dicom})
    return app, port


def run(tool: Path, *args: str) -> subprocess.CompletedProcess:
    # TCP_NODELAY: dcmtk then turns Nagle's algorithm off; with it on, each image waits ~40 ms for a delayed ACK.
    return subprocess.run([str(tool), *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "TCP_NODELAY": "1"})


@needs_dcmtk
def test_echo_and_a_study_sent_with_storescu_is_scored(appliance, tmp_path):
    app, port = receiver_app(appliance)
    assert run(ECHOSCU, "-aec", "SCANSIDE", "127.0.0.1", str(port)).returncode == 0
    plan = plan_study(seed=77, vendor="A", n_slices=8, n_phases=20, matrix=(160, 160))
    files = write_study(plan, tmp_path / "study")
    sent = run(STORESCU, "-aet", "MRI1", "-aec", "SCANSIDE", "+sd", "+r", "127.0.0.1", str(port),
               str(tmp_path / "study"))
    assert sent.returncode == 0, sent.stderr
    cine = next(s.series_uid for s in plan.series if s.role == "cine_sax")
    with ApplianceClient(app.grpc_address) as client:
        wait_for(lambda: cine in {r.series_instance_uid for r in client.list_all()}, what="the study to be scored")
    reg = app.registry
    assert reg.get_sample_value("scanside_dicom_instances_received_total") == len(files)
    assert reg.get_sample_value("scanside_dicom_associations_total") >= 2  # the echo and the store
    assert reg.get_sample_value("scanside_dicom_received_bytes_total") > 0
    tmp_dir = Path(app.settings.paths.incoming) / ".receiver-tmp"
    assert not any(tmp_dir.iterdir())  # every instance was renamed into place


@needs_dcmtk
def test_a_calling_ae_that_is_not_allowed_is_rejected(appliance, tmp_path):
    app, port = receiver_app(appliance, allowed_calling_aets=["MRI1"])
    assert run(ECHOSCU, "-aet", "MRI1", "-aec", "SCANSIDE", "127.0.0.1", str(port)).returncode == 0
    refused = run(ECHOSCU, "-aet", "INTRUDER", "-aec", "SCANSIDE", "127.0.0.1", str(port))
    assert refused.returncode != 0
    assert app.registry.get_sample_value("scanside_dicom_rejections_total", {"reason": "calling_ae"}) == 1


@needs_dcmtk
def test_an_sop_class_the_appliance_does_not_take_is_refused(appliance, tmp_path):
    app, port = receiver_app(appliance)
    ct = mr_dataset(16, 16, Modality="CT")
    ct.SOPClassUID = ct.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"  # CT Image Storage
    path = write(ct, tmp_path / "ct.dcm")
    run(STORESCU, "-aec", "SCANSIDE", "127.0.0.1", str(port), str(path))
    assert app.registry.get_sample_value("scanside_dicom_rejections_total", {"reason": "sop_class"}) == 1
    assert not any((Path(app.settings.paths.incoming) / "received").iterdir())


@needs_dcmtk
def test_an_unwritable_spool_answers_out_of_resources(appliance, tmp_path):
    app, port = receiver_app(appliance)
    tmp_dir = Path(app.settings.paths.incoming) / ".receiver-tmp"
    shutil.rmtree(tmp_dir)
    tmp_dir.write_text("not a folder")  # unwritable even for root, unlike a permission bit
    path = write(mr_dataset(16, 16), tmp_path / "mr.dcm")
    run(STORESCU, "-aec", "SCANSIDE", "127.0.0.1", str(port), str(path))
    assert app.registry.get_sample_value("scanside_dicom_rejections_total", {"reason": "out_of_resources"}) == 1


@needs_dcmtk
def test_dicom_tls_echo_with_a_verified_server_certificate(appliance, tmp_path):
    if OPENSSL is None:
        pytest.skip("openssl is needed to make a test certificate")
    key, cert = self_signed(tmp_path / "tls", "127.0.0.1")
    _app, port = receiver_app(appliance, tls_cert=str(cert), tls_key=str(key))
    # echoscu verifies the server against the certificate it is given (+cf), over TLS (+tla: no client cert).
    ok = run(ECHOSCU, "+tla", "+cf", str(cert), "-aec", "SCANSIDE", "127.0.0.1", str(port))
    assert ok.returncode == 0, ok.stderr
    plain = run(ECHOSCU, "-aec", "SCANSIDE", "127.0.0.1", str(port))  # no TLS: the server does not answer it
    assert plain.returncode != 0


@needs_dcmtk
def test_over_dicom_tls_a_calling_ae_that_is_not_allowed_is_rejected(appliance, tmp_path):
    """Over TLS the admission loop cannot read the request; pynetdicom's own check refuses it, counted alike."""
    if OPENSSL is None:
        pytest.skip("openssl is needed to make a test certificate")
    key, cert = self_signed(tmp_path / "tls", "127.0.0.1")
    app, port = receiver_app(appliance, tls_cert=str(cert), tls_key=str(key), allowed_calling_aets=["MRI1"])
    assert run(ECHOSCU, "+tla", "+cf", str(cert), "-aet", "MRI1", "-aec", "SCANSIDE", "127.0.0.1",
               str(port)).returncode == 0
    refused = run(ECHOSCU, "+tla", "+cf", str(cert), "-aet", "INTRUDER", "-aec", "SCANSIDE", "127.0.0.1", str(port))
    assert refused.returncode != 0
    wait_for(lambda: app.registry.get_sample_value("scanside_dicom_rejections_total", {"reason": "calling_ae"}) == 1,
             timeout=5, what="the rejection counted")
