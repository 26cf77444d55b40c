"""The whole appliance: a real watchdog observer on a real folder, real SQLite, ONNX Runtime, a real gRPC server and
client on a free loopback port, Prometheus over HTTP. The engine bundle is the test-only tiny placeholder."""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from pathlib import Path

import pydicom
import pytest
from conftest import wait_for
from dicom_factory import cine_series, mr_dataset, write
from grpc_health.v1 import health_pb2

from appliance.dev.synth import SyntheticScanner, plan_study
from appliance.serve.client import ApplianceClient

pytestmark = pytest.mark.slow


def small_plan(seed: int, vendor: str = "A"):
    return plan_study(seed=seed, vendor=vendor, n_slices=8, n_phases=20, matrix=(160, 160))


def cine_uid(plan) -> str:
    (series,) = [s for s in plan.series if s.role == "cine_sax"]
    return series.series_uid


def scored_uids(client: ApplianceClient) -> set[str]:
    return {r.series_instance_uid for r in client.list_all()}


def test_studies_written_file_by_file_are_scored_and_streamed(appliance):
    app = appliance()
    plans = [small_plan(1, "A"), small_plan(2, "B"), small_plan(3, "C")]
    # Vendor B writes in place, in chunks; A and C write a temporary name and rename it.
    scanner = SyntheticScanner(Path(app.settings.paths.incoming) / "magnet1", plans, pace_s=0.001,
                               chunk_delay_s=0.001)
    with ApplianceClient(app.grpc_address) as client:
        client.wait_until_serving()
        stream = client.stream(after_event_id=0)
        scanner.start()
        events = [next(stream) for _ in plans]
        stream.cancel()
        assert scanner.join(30) and scanner.error is None
        assert {e.result.series_instance_uid for e in events} == {cine_uid(p) for p in plans}
        assert [e.event_id for e in events] == [1, 2, 3]
        for event, plan in zip(sorted(events, key=lambda e: e.result.study_instance_uid),
                               sorted(plans, key=lambda p: p.study_uid), strict=True):
            r = event.result
            assert r.study_instance_uid == plan.study_uid
            assert r.bundle_name == "placeholder" and r.backend == "onnxruntime"
            assert len(r.findings) == len(app.bundle.label_bank.findings)
            status = client.series_status(r.series_instance_uid)
            assert status.state == "scored" and status.role == "cine_sax"
            assert status.images_received == plan.n_slices * plan.n_phases
            (again,) = client.study(plan.study_uid)
            assert again.series_instance_uid == r.series_instance_uid
        others = [s.series_uid for p in plans for s in p.series if s.role != "cine_sax"]
        wait_for(lambda: all(client.series_status(uid).state == "skipped" for uid in others), what="other series")
        info = client.model_info()
        assert info.research_only and info.bundle_name == "placeholder"
    written = len(scanner.files_written)
    reg = app.registry
    assert reg.get_sample_value("scanside_files_ingested_total") == written
    assert not list(Path(app.settings.paths.quarantine).rglob("*.reason.json"))
    # Scored and skipped series leave nothing behind, once the spool cleaner (its own thread) has caught up.
    wait_for(lambda: not any(Path(app.settings.paths.spool).iterdir()), what="the spool emptied")


def test_a_file_growing_in_place_is_waited_for_not_rejected(appliance, tmp_path):
    app = appliance()
    staged = cine_series(tmp_path / "staged", slices=4, phases=5)
    target = Path(app.settings.paths.incoming) / "slow"
    target.mkdir()
    for p in staged[:-1]:
        # copyfile, not copy: copy's chmod after the write races the appliance taking the finished file away
        shutil.copyfile(p, target / p.name)
    data = staged[-1].read_bytes()
    with open(target / staged[-1].name, "wb") as fh:  # a writer that streams the last image in three pieces
        for k in range(3):
            fh.write(data[k * len(data) // 3 : (k + 1) * len(data) // 3])
            fh.flush()
            time.sleep(0.3)
    series_uid = pydicom.dcmread(staged[0], stop_before_pixels=True).SeriesInstanceUID
    with ApplianceClient(app.grpc_address) as client:
        wait_for(lambda: series_uid in scored_uids(client), what="the series with the slow file")
        assert client.series_status(series_uid).images_received == 20
    assert app.registry.get_sample_value("scanside_file_parse_retries_total") > 0
    assert not list(Path(app.settings.paths.quarantine).rglob("*.reason.json"))


def test_every_kind_of_bad_file_is_set_aside_while_good_series_are_scored(appliance, tmp_path):
    app = appliance()
    incoming = Path(app.settings.paths.incoming)
    plan = small_plan(11, "A")
    scanner = SyntheticScanner(incoming / "magnet", [plan], pace_s=0.001)
    bad = incoming / "junk"
    bad.mkdir()
    (bad / "README.txt").write_text("not an image\n" * 30)
    write(mr_dataset(Modality="CT"), bad / "ct.dcm")
    ds = mr_dataset()
    del ds.PixelSpacing
    write(ds, bad / "nogeometry.dcm")
    ds = mr_dataset(16, 16)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG-2 video: pydicom has no decoder for it
    import pydicom.encaps

    ds.PixelData = pydicom.encaps.encapsulate([b"\x00" * 64])
    write(ds, bad / "mpeg2.dcm")
    whole = write(mr_dataset(64, 64), tmp_path / "whole.dcm").read_bytes()
    (bad / "truncated.dcm").write_bytes(whole[: len(whole) // 2])  # a writer that died half way
    broken = bytearray(whole)
    at = broken.index(b"\x08\x00\x60\x00")
    broken[at + 4 : at + 6] = b"\x00\x01"
    (bad / "corrupt.dcm").write_bytes(bytes(broken))
    scanner.start()
    with ApplianceClient(app.grpc_address) as client:
        wait_for(lambda: cine_uid(plan) in scored_uids(client), what="the good series to be scored")
        reasons = {"not_dicom", "not_mr", "missing_geometry", "unsupported_transfer_syntax", "truncated", "corrupt"}
        q = Path(app.settings.paths.quarantine)
        wait_for(lambda: {p.parent.name for p in q.rglob("*.reason.json")} >= reasons, what="quarantine")
        for reason in reasons:
            assert app.registry.get_sample_value("scanside_files_quarantined_total", {"reason": reason}) == 1
            (note,) = (q / reason).glob("*.reason.json")
            assert json.loads(note.read_text())["reason"] == reason
        assert client.health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == \
            health_pb2.HealthCheckResponse.SERVING


def test_stream_resumes_from_the_last_event_without_gaps_or_repeats(appliance):
    app = appliance()
    plans = [small_plan(21 + i, "A") for i in range(3)]
    with ApplianceClient(app.grpc_address) as client:
        SyntheticScanner(Path(app.settings.paths.incoming) / "m", plans[:1], pace_s=0).start()
        stream = client.stream(after_event_id=0)
        first = next(stream)
        stream.cancel()  # the display goes away...
        SyntheticScanner(Path(app.settings.paths.incoming) / "m2", plans[1:], pace_s=0).start()
        wait_for(lambda: len(scored_uids(client)) == 3, what="all three scored")
        resumed = client.stream(after_event_id=first.event_id)  # ...and comes back
        rest = [next(resumed), next(resumed)]
        resumed.cancel()
    ids = [first.event_id] + [e.event_id for e in rest]
    assert ids == sorted(set(ids)) and ids == list(range(ids[0], ids[0] + 3))
    assert {e.result.series_instance_uid for e in [first, *rest]} == {cine_uid(p) for p in plans}


def test_metrics_and_logs_carry_no_identifiers(appliance, caplog):
    caplog.set_level("DEBUG", logger="appliance")
    app = appliance()
    plan = small_plan(31, "B")
    SyntheticScanner(Path(app.settings.paths.incoming), [plan], pace_s=0).start()
    with ApplianceClient(app.grpc_address) as client:
        wait_for(lambda: cine_uid(plan) in scored_uids(client), what="scored")
    text = urllib.request.urlopen(f"http://127.0.0.1:{app.metrics_port}/metrics", timeout=5).read().decode()
    for name in ("scanside_files_ingested_total", "scanside_scan_to_score_seconds_bucket",
                 'scanside_stage_duration_seconds_count{stage="inference"}', 'scanside_series{state="scored"} 1.0',
                 "scanside_inference_batch_size_bucket", "scanside_model_info{", "scanside_ready 1.0"):
        assert name in text
    identifiers = {plan.study_uid, plan.patient_id, plan.patient_name, *(s.series_uid for s in plan.series)}
    assert not any(i in text for i in identifiers)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "scored" in logged  # the log did say what happened...
    assert not any(i in logged for i in identifiers)  # ...without saying to whom


def test_tensorrt_without_a_gpu_falls_back_visibly_or_refuses(appliance, tmp_path, tiny_bundle):
    """This machine has no GPU and no TensorRT: the fallback path is real here, not simulated."""
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed: the fallback path is not what runs")
    app = appliance(engine={"backend": "tensorrt", "fallback_to_onnxruntime": True})
    with ApplianceClient(app.grpc_address) as client:
        info = client.model_info()
    assert info.backend == "onnxruntime" and "TensorRT" in info.backend_note
    assert app.registry.get_sample_value("scanside_backend_fallback") == 1

    from conftest import e2e_settings
    from prometheus_client import CollectorRegistry

    from appliance.inference import BackendError
    from appliance.service import Appliance

    with pytest.raises(BackendError, match="TensorRT"):  # at build time: nothing was started, nothing is left open
        Appliance(e2e_settings(tmp_path / "strict", tiny_bundle,
                               engine={"backend": "tensorrt", "fallback_to_onnxruntime": False}),
                  registry=CollectorRegistry())
