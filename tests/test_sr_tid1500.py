"""The SR as a TID 1500 Measurement Report (the default): checked by dicom3tools' dciodvfy, rendered by dcmtk's
dsr2html, read back with highdicom's TID 1500 parser, and sent through a real Orthanc by the whole appliance.
Real synthetic images, real files; the comprehensive form is checked by the same validator."""

from __future__ import annotations

import dataclasses
import io
import re
import subprocess
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from conftest import wait_for
from orthanc_peer import OrthancPeer, orthanc_binary
from pydicom.sr.codedict import codes
from test_sr_export import cine_files, scored  # noqa: F401  (cine_files is a fixture)

from appliance.config import ConfigError, load_settings
from appliance.export.source import capture_source
from appliance.export.sr import SrSettings, build_sr
from appliance.export.sr_codes import FINDING_SNOMED, SCHEME
from appliance.export.sr_tid1500 import QUALITATIVE_EVALUATIONS
from appliance.handovers import ExportState, FindingScore, Scores, StudyResult

DCIODVFY = Path("/usr/bin/dciodvfy")
DSR2HTML = Path("/usr/bin/dsr2html")
needs_dciodvfy = pytest.mark.skipif(not DCIODVFY.exists(), reason="dicom3tools (Debian package) is not installed")
needs_dsr2html = pytest.mark.skipif(not DSR2HTML.exists(), reason="dcmtk (Debian package) is not installed")


def shipped_findings() -> tuple[FindingScore, ...]:
    """One per finding of the shipped bank (its ids and names), positives, a rare one, review reasons."""
    return (
        FindingScore("lv_systolic_dysfunction", "LV systolic dysfunction", 0.30, 0.25, 0.81, True, False,
                     ("near_threshold",)),
        FindingScore("lv_dilation", "LV dilation", 0.10, 0.25, 0.12, False, False, ()),
        FindingScore("lv_hypertrophy", "LV hypertrophy", 0.28, 0.22, 0.77, True, False, ()),
        FindingScore("rv_dilation", "RV dilation", 0.05, 0.21, 0.03, False, False, ()),
        FindingScore("rv_dysfunction", "RV dysfunction", 0.04, 0.21, 0.02, False, False, ()),
        FindingScore("pericardial_effusion", "Pericardial effusion", 0.02, 0.20, 0.01, False, False, ()),
        FindingScore("nonischaemic_cm", "Non-ischaemic cardiomyopathy", 0.11, 0.24, 0.2, False, False, ()),
        FindingScore("ischaemic_cm", "Ischaemic cardiomyopathy", 0.09, 0.24, 0.15, False, False, ()),
        FindingScore("hcm", "Hypertrophic cardiomyopathy", 0.12, 0.23, 0.22, False, False, ()),
        FindingScore("amyloidosis", "Cardiac amyloidosis", 0.26, 0.20, 0.6, True, True, ("rare_finding",)),
    )


def full_result(series_uid: str, study_uid: str, assessable: bool = True) -> StudyResult:
    base = scored(series_uid, study_uid)
    scores = Scores(shipped_findings(), 2.5, ("near_threshold", "rare_finding"))
    if not assessable:  # as scoring.mark_not_assessable leaves it: nothing positive, the gate's reasons
        findings = tuple(dataclasses.replace(f, positive=False, review_reasons=(*f.review_reasons, "not_assessable"))
                         for f in scores.findings)
        scores = dataclasses.replace(scores, findings=findings, assessable=False,
                                     quality_reasons=("not a short-axis stack",),
                                     review_reasons=("not_assessable", *scores.review_reasons))
    return dataclasses.replace(base, scores=scores, bank_version="0123456789ab.2")


@pytest.fixture
def source(cine_files):  # noqa: F811
    plan, cine, files, refs = cine_files
    return plan, cine, refs, capture_source(files[0], refs)


def dciodvfy_errors(path: Path) -> list[str]:
    done = subprocess.run([str(DCIODVFY), str(path)], capture_output=True, text=True, timeout=120)
    lines = (done.stdout + done.stderr).splitlines()
    assert any(line.strip() == "ComprehensiveSR" for line in lines), lines[:5]  # it recognised the IOD
    return [line for line in lines if line.startswith("Error")]


def evaluations(group) -> dict[str, str]:
    """(concept name meaning -> value meaning) of a measurement group's CODE evaluations."""
    return {e.name.meaning: e.value.meaning for e in group.get_qualitative_evaluations()}


def report_level(sr) -> list[tuple[str, str]]:
    """The Qualitative Evaluations container (TID 1500 row 12) as (name, value) pairs."""
    (box,) = [item for item in sr.ContentSequence if item.ConceptNameCodeSequence[0].CodeValue
              == QUALITATIVE_EVALUATIONS.value]
    out = []
    for item in box.ContentSequence:
        value = item.TextValue if item.ValueType == "TEXT" else item.ConceptCodeSequence[0].CodeMeaning
        out.append((item.ConceptNameCodeSequence[0].CodeMeaning, value))
    return out


# --- validation: dciodvfy ------------------------------------------------------------------------------------------

@needs_dciodvfy
@pytest.mark.parametrize("template", ["tid1500", "comprehensive"])
@pytest.mark.parametrize("assessable", [True, False])
def test_dciodvfy_finds_no_error_in_either_form(source, tmp_path, template, assessable):
    plan, cine, _, src = source
    path = tmp_path / "sr.dcm"
    path.write_bytes(build_sr(full_result(cine.series_uid, plan.study_uid, assessable), src,
                              SrSettings(template=template)).data)
    assert dciodvfy_errors(path) == []


@needs_dciodvfy
def test_the_dciodvfy_check_reports_a_broken_document(source, tmp_path):
    plan, cine, _, src = source
    sr = pydicom.dcmread(io.BytesIO(build_sr(full_result(cine.series_uid, plan.study_uid), src).data))
    del sr.CompletionFlag  # Type 1 in the SR Document General module
    sr.ContentSequence[-1].ContentSequence[0].ValueType = "SCOORD"  # a TEXT item now claims to be a coordinate
    sr.save_as(tmp_path / "broken.dcm")
    errors = dciodvfy_errors(tmp_path / "broken.dcm")
    assert any("CompletionFlag" in e for e in errors) and any("SCOORD" in e or "Graphic" in e for e in errors), errors


# --- structure, read back with highdicom's TID 1500 parser ---------------------------------------------------------

def test_each_finding_reads_back_with_its_code_evaluation_measurements_and_tracking(source):
    plan, cine, _, src = source
    result = full_result(cine.series_uid, plan.study_uid)
    doc = build_sr(result, src)
    sr = hd.sr.srread(io.BytesIO(doc.data))
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33" and sr.ContentTemplateSequence[0].TemplateIdentifier \
        == "1500"
    report = sr.content
    assert isinstance(report, hd.sr.MeasurementReport)
    assert sr.ConceptNameCodeSequence[0].CodeValue == "126000"  # Imaging Measurement Report: what OHIF requires
    groups = report.get_image_measurement_groups()
    assert len(groups) == len(result.scores.findings)
    uids = set()
    for group, f in zip(groups, result.scores.findings, strict=True):
        assert group.tracking_identifier == f.name
        uids.add(str(group.tracking_uid))
        concept = group.finding_type
        if f.finding_id in FINDING_SNOMED:
            assert (concept.scheme_designator, concept.value) == ("SCT", FINDING_SNOMED[f.finding_id][0])
        else:
            assert (concept.scheme_designator, concept.value) == (SCHEME, f.finding_id)
        values = evaluations(group)
        assert values[concept.meaning] == ("Present" if f.positive else "Absent")
        assert values["Needs human review"] == ("Yes" if f.review_reasons else "No")
        assert values.get("Rare phenotype") == ("Yes" if f.rare else None)
        measured = {m.name.meaning: (m.value, m.unit.value) for m in group.get_measurements()}
        assert measured == {"Prompt similarity score": (pytest.approx(f.score), "1"),
                            "Decision threshold": (pytest.approx(f.threshold), "1"),
                            "Calibrated probability": (pytest.approx(f.probability), "1")}
        texts = [i.TextValue for i in group[0].ContentSequence if i.ValueType == "TEXT"
                 and i.ConceptNameCodeSequence[0].CodeMeaning == "Review reason"]
        assert texts == list(f.review_reasons)
        algorithm = {i.ConceptNameCodeSequence[0].CodeMeaning: i.get("TextValue") for i in group[0].ContentSequence
                     if i.RelationshipType == "HAS CONCEPT MOD" and i.ValueType == "TEXT"
                     and i.ConceptNameCodeSequence[0].CodeMeaning != "Algorithm Parameters"}
        params = [i.TextValue for i in group[0].ContentSequence
                  if i.ConceptNameCodeSequence[0].CodeMeaning == "Algorithm Parameters"]
        assert algorithm == {"Algorithm Name": result.bundle_name, "Algorithm Version": result.bundle_version}
        assert params == ["label bank 0123456789ab.2", "backend onnxruntime (fp32)"]
    assert len(uids) == len(groups)  # one tracking UID per finding
    # Rebuilt (after a restart, say), the document is new but each finding keeps its tracking UID.
    again = hd.sr.srread(io.BytesIO(build_sr(result, src).data)).content.get_image_measurement_groups()
    assert [str(g.tracking_uid) for g in again] == [str(g.tracking_uid) for g in groups]
    assert report_level(sr) == [
        ("Comment", "RESEARCH USE ONLY - NOT FOR DIAGNOSTIC USE. Zero-shot scores from ScanSide, research software; "
                    "not a medical device, not reviewed by a physician."),
        ("Series assessable", "Yes"), ("Needs human review", "Yes"),
        ("Review reason", "near_threshold"), ("Review reason", "rare_finding")]
    (device,) = report.get_observer_contexts(observer_type=codes.DCM.Device)
    assert device.observer_identifying_attributes.name == "ScanSide"


def test_the_standard_codes_are_exactly_the_table(source):
    plan, cine, _, src = source
    groups = hd.sr.srread(io.BytesIO(build_sr(full_result(cine.series_uid, plan.study_uid), src).data)) \
        .content.get_image_measurement_groups()
    coded = {g.tracking_identifier: (g.finding_type.scheme_designator, g.finding_type.value, g.finding_type.meaning)
             for g in groups}
    assert {k: v for k, v in coded.items() if v[0] == "SCT"} == {
        "LV systolic dysfunction": ("SCT", "134401001", "Left ventricular systolic dysfunction"),
        "LV hypertrophy": ("SCT", "55827005", "Left ventricular hypertrophy"),
        "Pericardial effusion": ("SCT", "373945007", "Pericardial effusion"),
        "Hypertrophic cardiomyopathy": ("SCT", "233873004", "Hypertrophic cardiomyopathy"),
    }
    assert coded["Cardiac amyloidosis"] == (SCHEME, "amyloidosis", "Cardiac amyloidosis")


def test_a_not_assessable_series_says_so_and_calls_no_finding_present(source):
    plan, cine, _, src = source
    sr = hd.sr.srread(io.BytesIO(build_sr(full_result(cine.series_uid, plan.study_uid, assessable=False),
                                          src).data))
    groups = sr.content.get_image_measurement_groups()
    presence = [evaluations(g)[g.finding_type.meaning] for g in groups]
    assert presence == ["Undetermined"] * len(groups)  # neither present nor absent: the images cannot tell
    level = report_level(sr)
    assert ("Series assessable", "No") in level and ("Why not assessable", "not a short-axis stack") in level
    assert ("Review reason", "not_assessable") in level


def test_the_images_are_referenced_once_each_in_the_library_and_the_evidence(source):
    plan, cine, refs, src = source
    sr = pydicom.dcmread(io.BytesIO(build_sr(full_result(cine.series_uid, plan.study_uid), src).data))
    (library,) = [i for i in sr.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "111028"]
    (group,) = library.ContentSequence
    images = [(i.ReferencedSOPSequence[0].ReferencedSOPClassUID, i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
              for i in group.ContentSequence if i.ValueType == "IMAGE"]
    assert sorted(images) == sorted(refs) and len(images) == cine.n_images
    shared = {i.ConceptNameCodeSequence[0].CodeMeaning: i for i in group.ContentSequence
              if i.RelationshipType == "HAS ACQ CONTEXT"}
    assert shared["Modality"].ConceptCodeSequence[0].CodeValue == "MR"
    assert src.dataset().FrameOfReferenceUID == shared["Frame of Reference UID"].UID
    (study_ref,) = sr.CurrentRequestedProcedureEvidenceSequence
    (series_ref,) = study_ref.ReferencedSeriesSequence
    assert series_ref.SeriesInstanceUID == cine.series_uid
    assert sorted((r.ReferencedSOPClassUID, r.ReferencedSOPInstanceUID) for r in series_ref.ReferencedSOPSequence) \
        == sorted(refs)


def library_images(sr) -> list[tuple[str, str]]:
    (library,) = [i for i in sr.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "111028"]
    (group,) = library.ContentSequence
    return [(i.ReferencedSOPSequence[0].ReferencedSOPClassUID, i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
            for i in group.ContentSequence if i.ValueType == "IMAGE"]


def test_only_the_images_the_model_was_given_are_referenced_once_they_are_known(source):
    plan, cine, refs, src = source
    used = [uid for _, uid in refs[5:40:3]]  # not the first (the kept header's), in another order than the series'
    known = dataclasses.replace(src, used=tuple(reversed(used)))
    sr = pydicom.dcmread(io.BytesIO(build_sr(full_result(cine.series_uid, plan.study_uid), known).data))
    assert sorted(library_images(sr)) == sorted(r for r in refs if r[1] in used)
    (study_ref,) = sr.CurrentRequestedProcedureEvidenceSequence
    (series_ref,) = study_ref.ReferencedSeriesSequence
    evidence = {r.ReferencedSOPInstanceUID for r in series_ref.ReferencedSOPSequence}
    assert evidence == set(used) | {src.dataset().SOPInstanceUID}  # the kept header is evidence of identity
    assert dataclasses.replace(src, used=("1.2.3.404",)).referenced == src.instances  # none of them known: every image


def test_identity_comes_from_the_source_and_nothing_else_identifies_the_patient(source):
    plan, cine, _, src = source
    sr = pydicom.dcmread(io.BytesIO(build_sr(full_result(cine.series_uid, plan.study_uid), src).data))
    assert (str(sr.PatientName), sr.PatientID, sr.AccessionNumber) == \
        (plan.patient_name, plan.patient_id, plan.accession_number)
    content = str(sr.ContentSequence)
    for identifier in (plan.patient_id, str(plan.patient_name), plan.accession_number, cine.series_uid,
                       plan.study_uid):
        assert identifier not in content  # the series is referenced by its images, not quoted in the content
    assert sr.VerificationFlag == "UNVERIFIED" and sr.PreliminaryFlag == "PRELIMINARY"


def test_an_unknown_template_is_refused_by_the_builder_and_the_configuration(source, tmp_path):
    plan, cine, _, src = source
    with pytest.raises(ValueError, match="unknown SR template 'tid-1500'"):
        build_sr(full_result(cine.series_uid, plan.study_uid), src, SrSettings(template="tid-1500"))
    cfg = tmp_path / "scanside.toml"
    cfg.write_text('[export]\nsr_template = "basic"\n')
    with pytest.raises(ConfigError, match=r"export\.sr_template must be tid1500 or comprehensive, not 'basic'"):
        load_settings(cfg, env={})
    assert load_settings(env={}).export.sr_template == "tid1500"
    assert load_settings(env={"SCANSIDE_EXPORT_SR_TEMPLATE": "comprehensive"}).export.sr_template == "comprehensive"


# --- rendering: dsr2html -------------------------------------------------------------------------------------------

@needs_dsr2html
@pytest.mark.parametrize("assessable", [True, False])
def test_dsr2html_renders_the_findings_and_their_presence(source, tmp_path, assessable):
    plan, cine, _, src = source
    result = full_result(cine.series_uid, plan.study_uid, assessable)
    path = tmp_path / "sr.dcm"
    path.write_bytes(build_sr(result, src).data)
    done = subprocess.run([str(DSR2HTML), str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    html = done.stdout
    assert "Imaging Measurement Report" in html and "RESEARCH USE ONLY" in html
    for f in result.scores.findings:
        assert f.name in html
    shown = re.findall(r"\b(Present|Absent|Undetermined)\b", html)
    if assessable:
        assert shown.count("Present") == sum(f.positive for f in result.scores.findings) == 3
        assert shown.count("Absent") == len(result.scores.findings) - 3
    else:
        assert shown == ["Undetermined"] * len(result.scores.findings)


# --- the whole appliance to a real Orthanc, default settings -------------------------------------------------------

@pytest.mark.slow
@pytest.mark.skipif(orthanc_binary() is None, reason="Orthanc (Debian package orthanc) is not installed")
def test_the_appliance_files_a_tid1500_sr_in_orthanc_that_reads_back_as_stored(appliance, tmp_path):
    from appliance.dev.synth import SyntheticScanner, plan_study

    pacs = OrthancPeer(tmp_path / "orthanc", aet="PACS")
    pacs.start()
    try:
        app = appliance(export={"pacs_ae_title": pacs.aet, "pacs_host": "127.0.0.1", "pacs_port": pacs.dicom_port,
                                "folder": str(tmp_path / "sr-out"), "retry_initial_s": 0.2, "retry_max_s": 0.5,
                                "timeout_s": 5})
        plan = plan_study(seed=51, vendor="A", n_slices=8, n_phases=20, matrix=(128, 128))
        SyntheticScanner(Path(app.settings.paths.incoming) / "scan", [plan], pace_s=0).start()
        (cine,) = [s for s in plan.series if s.role == "cine_sax"]
        wait_for(lambda: [e.state for e in app.store.exports.items(series_uid=cine.series_uid)]
                 == [ExportState.DELIVERED] * 2, timeout=90, what="the SR delivered to Orthanc and the folder")
        (instance,) = pacs.instances()
        data = pacs.instance_file(instance)
        (written,) = (tmp_path / "sr-out").glob("*.dcm")
        sr = hd.sr.srread(io.BytesIO(data))
        folder_copy = pydicom.dcmread(written)  # the same document at both (Orthanc rewrites the file meta)
        assert folder_copy.SOPInstanceUID == sr.SOPInstanceUID and folder_copy.ContentSequence == sr.ContentSequence
        assert sr.StudyInstanceUID == plan.study_uid and isinstance(sr.content, hd.sr.MeasurementReport)
        stored = app.store.results.for_series(cine.series_uid)
        groups = sr.content.get_image_measurement_groups()
        assert [g.tracking_identifier for g in groups] == [f.name for f in stored.scores.findings]
        # The Image Library lists the images the model tensor was made of: the picked slices, not the whole stack.
        images = library_images(folder_copy)
        assert 0 < len(images) < cine.n_images and len(set(images)) == len(images)
        expected = "Undetermined" if not stored.scores.assessable else None
        for group, f in zip(groups, stored.scores.findings, strict=True):
            assert evaluations(group)[group.finding_type.meaning] == \
                (expected or ("Present" if f.positive else "Absent"))
        if DCIODVFY.exists():
            (tmp_path / "from-orthanc.dcm").write_bytes(data)
            assert dciodvfy_errors(tmp_path / "from-orthanc.dcm") == []
    finally:
        pacs.kill()


def test_a_long_series_is_referenced_once_per_image(source):
    """A 12 x 25 cine series' source (every image known, none marked used) references each of its 300 images, and
    the kept header's, once. How long the build takes is the bench's (`scanside bench`: SR build), not a test's."""
    plan, cine, refs, src = source
    many = tuple((refs[0][0], f"{refs[0][1]}.{n}") for n in range(300))
    big = dataclasses.replace(src, instances=many)
    doc = build_sr(full_result(cine.series_uid, plan.study_uid), big)
    sr = pydicom.dcmread(io.BytesIO(doc.data))
    (study_ref,) = sr.CurrentRequestedProcedureEvidenceSequence
    assert sum(len(s.ReferencedSOPSequence) for s in study_ref.ReferencedSeriesSequence) == 301
    assert len(library_images(sr)) == 301
