"""Compressed MR over C-STORE (issue 14): a study compressed by dcmtk (JPEG lossless, 12-bit extended and baseline,
JPEG-LS, RLE) or by pydicom with openjpeg (JPEG 2000) and sent by dcmtk's storescu is scored like the same pixels
sent uncompressed; the receiver prefers Explicit VR Little Endian, then lossless, then lossy; Legacy Converted
Enhanced MR (made by highdicom from the classic images) is taken and scored."""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import wait_for
from pydicom import uid
from pydicom.uid import generate_uid
from pynetdicom import AE, build_context
from test_receiver import STORESCU, needs_dcmtk, receiver_app, run

from appliance import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from appliance.dev.bench_decode import DCMTK_ENCODERS, PYDICOM_ENCODED, encode
from appliance.dev.synth import iter_instances, plan_study
from appliance.ingest.transfer_syntaxes import LOSSY, PREFERRED, accepted, keyword
from appliance.metrics import DICOM_TRANSFER_SYNTAXES
from appliance.serve.client import ApplianceClient

pytestmark = pytest.mark.slow
MR = "1.2.840.10008.5.1.4.1.1.4"
VERIFICATION = "1.2.840.10008.1.1"
LEGACY_CONVERTED_ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.4"

# Each variant made from the uncompressed files as the decode bench makes it: dcmtk's tools, or pydicom's encoder.
DCMTK_CODECS, PYDICOM_CODECS = DCMTK_ENCODERS, PYDICOM_ENCODED
needs_codecs = pytest.mark.skipif(not all(shutil.which(c[0]) for c in DCMTK_CODECS.values()),
                                  reason="dcmtk's dcmcjpeg/dcmcjpls/dcmcrle are not installed; .ci/run installs dcmtk")


def cine_datasets(seed: int) -> list[pydicom.Dataset]:
    plan = plan_study(seed=seed, vendor="A", n_slices=6, n_phases=12, matrix=(128, 128))
    return [i.dataset for i in iter_instances(plan) if i.series_role == "cine_sax"]


def as_new_study(datasets: list[pydicom.Dataset], tag: str) -> list[pydicom.Dataset]:
    """The same pixels as another study: every UID remapped (deterministically, per `tag`), nothing else changed."""
    out = []
    for ds in datasets:
        ds = copy.deepcopy(ds)
        for name in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):
            if name in ds:
                setattr(ds, name, generate_uid(entropy_srcs=[tag, str(getattr(ds, name))]))
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        out.append(ds)
    return out


def write_variant(datasets: list[pydicom.Dataset], syntax: str, folder: Path) -> Path:
    folder.mkdir(parents=True)
    for n, ds in enumerate(datasets):
        plain = folder / f"plain-{n:04d}.dcm"
        ds.save_as(plain, enforce_file_format=True)
        if syntax == uid.ExplicitVRLittleEndian:
            continue
        target = folder / f"IM{n:04d}.dcm"
        try:
            encode(plain, syntax, target)
        except subprocess.CalledProcessError as exc:
            raise AssertionError(exc.stderr) from None
        plain.unlink()
        assert pydicom.dcmread(target, stop_before_pixels=True).file_meta.TransferSyntaxUID == syntax
    return folder


def router_profile(path: Path, syntaxes: list[str]) -> Path:
    """A storescu association profile as a router forwarding MR as stored: one presentation context per transfer
    syntax (the file's own, never converted), each alone, as dcmtk's -xf configuration files let a site write."""
    lines = ["[[TransferSyntaxes]]"]
    for n, syntax in enumerate(syntaxes):
        lines += [f"[TS{n}]", f"TransferSyntax1 = {syntax}"]
    lines += ["[[PresentationContexts]]", "[MR]"]
    lines += [f"PresentationContext{n + 1} = {MR}\\TS{n}" for n in range(len(syntaxes))]
    lines += ["[[Profiles]]", "[Router]", "PresentationContexts = MR"]
    path.write_text("\n".join(lines) + "\n")
    return path


def scores_by_series(client: ApplianceClient) -> dict[str, tuple[bool, np.ndarray]]:
    return {r.series_instance_uid: (r.not_assessable, np.array([f.score for f in r.findings]))
            for r in client.list_all()}


def when_scored(client: ApplianceClient, series_uids: set[str], timeout: float = 120):
    def scored():
        got = scores_by_series(client)
        return got if series_uids <= set(got) else None
    return wait_for(scored, timeout=timeout, what=f"{len(series_uids)} series scored")


@needs_dcmtk
@needs_codecs
def test_a_study_sent_compressed_is_scored_as_the_same_pixels_uncompressed(appliance, tmp_path):
    app, port = receiver_app(appliance)
    cine = cine_datasets(seed=31)
    syntaxes = [uid.ExplicitVRLittleEndian, *DCMTK_CODECS, *PYDICOM_CODECS]
    profile = router_profile(tmp_path / "router.cfg", syntaxes)
    series = {}
    for syntax in syntaxes:
        variant = as_new_study(cine, tag=syntax)
        folder = write_variant(variant, syntax, tmp_path / uid.UID(syntax).keyword)
        sent = run(STORESCU, "-xf", str(profile), "Router", "-aet", "MRI1", "-aec", "SCANSIDE", "+sd", "+r",
                   "127.0.0.1", str(port), str(folder))
        assert sent.returncode == 0, f"{uid.UID(syntax).name}: {sent.stderr}"
        series[syntax] = variant[0].SeriesInstanceUID
    with ApplianceClient(app.grpc_address) as client:
        got = when_scored(client, set(series.values()))
    not_assessable, reference = got[series[uid.ExplicitVRLittleEndian]]
    assert reference.size > 0
    for syntax, series_uid in series.items():
        flagged, scores = got[series_uid]
        name = uid.UID(syntax).name
        assert flagged == not_assessable, name
        if syntax in LOSSY:
            # Lossy codecs change pixel values (baseline JPEG even to 8 bits); the tensor is normalised by
            # percentiles, so the study still scores close to the original.
            assert np.abs(scores - reference).max() < 0.02, (name, scores - reference)
            print(f"{name}: max |score difference| {np.abs(scores - reference).max():.5f}")
        else:
            np.testing.assert_allclose(scores, reference, atol=1e-5, err_msg=name)  # the same pixels, decoded
    by_syntax = {s: app.registry.get_sample_value("scanside_dicom_instances_by_transfer_syntax_total",
                                                  {"transfer_syntax": uid.UID(s).keyword}) for s in syntaxes}
    assert by_syntax == {s: float(len(cine)) for s in syntaxes}  # each arrived as sent, none converted on the way


def negotiated(port: int, proposed: list[str]) -> str | None:
    """The transfer syntax the receiver accepts for MR Image Storage out of `proposed`, None if it refuses all."""
    ae = AE(ae_title="MRI1")
    ae.requested_contexts = [build_context(MR, proposed), build_context(VERIFICATION)]  # so the association holds
    assoc = ae.associate("127.0.0.1", port, ae_title="SCANSIDE")
    try:
        assert assoc.is_established
        assert assoc.acceptor.implementation_class_uid == IMPLEMENTATION_CLASS_UID  # ScanSide's own, not pynetdicom's
        assert assoc.acceptor.implementation_version_name == IMPLEMENTATION_VERSION_NAME
        mr = [cx for cx in assoc.accepted_contexts if cx.abstract_syntax == MR]
        return mr[0].transfer_syntax[0] if mr else None
    finally:
        assoc.release()


def test_the_receiver_prefers_explicit_vr_then_lossless_then_lossy(appliance):
    assert accepted() == PREFERRED  # every decoder is installed here: nothing is left out of negotiation
    assert tuple(keyword(s) for s in PREFERRED) == DICOM_TRANSFER_SYNTAXES  # the metric's closed label set
    _, port = receiver_app(appliance)
    assert negotiated(port, [uid.ImplicitVRLittleEndian, uid.ExplicitVRLittleEndian]) == uid.ExplicitVRLittleEndian
    assert negotiated(port, [uid.JPEGLosslessSV1, uid.ImplicitVRLittleEndian]) == uid.ImplicitVRLittleEndian
    assert negotiated(port, [uid.JPEGBaseline8Bit, uid.JPEG2000, uid.JPEGLSLossless]) == uid.JPEGLSLossless
    assert negotiated(port, [uid.JPEGBaseline8Bit]) == uid.JPEGBaseline8Bit  # only lossy offered: taken
    assert negotiated(port, [uid.MPEG2MPML]) is None  # no decoder for video: refused at negotiation


@needs_dcmtk
def test_legacy_converted_enhanced_mr_is_taken_and_scored(appliance, tmp_path):
    from highdicom.legacy import LegacyConvertedEnhancedMRImage

    app, port = receiver_app(appliance)
    classic = as_new_study(cine_datasets(seed=32), tag="classic")
    folder = write_variant(classic, uid.ExplicitVRLittleEndian, tmp_path / "classic")
    lce_source = as_new_study(classic, tag="legacy")
    lce = LegacyConvertedEnhancedMRImage(legacy_datasets=lce_source, series_instance_uid=generate_uid(),
                                         series_number=901, sop_instance_uid=generate_uid(), instance_number=1)
    assert lce.SOPClassUID == LEGACY_CONVERTED_ENHANCED_MR and int(lce.NumberOfFrames) == len(classic)
    (tmp_path / "lce").mkdir()
    lce.save_as(tmp_path / "lce" / "lce.dcm", enforce_file_format=True)
    for path in (folder, tmp_path / "lce"):  # -R: propose the files' own SOP classes (storescu's list lacks LCE)
        sent = run(STORESCU, "-R", "-aet", "MRI1", "-aec", "SCANSIDE", "+sd", "+r", "127.0.0.1", str(port),
                   str(path))
        assert sent.returncode == 0, sent.stderr
    with ApplianceClient(app.grpc_address) as client:
        got = when_scored(client, {classic[0].SeriesInstanceUID, lce.SeriesInstanceUID})
    (flag_a, a), (flag_b, b) = got[classic[0].SeriesInstanceUID], got[lce.SeriesInstanceUID]
    assert flag_a == flag_b
    np.testing.assert_allclose(b, a, atol=1e-5)  # one file of the same frames, with the same geometry and timing
