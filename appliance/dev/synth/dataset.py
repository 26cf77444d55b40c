"""Assembling one MR Image Storage dataset (Part 10 ready) from a plan, a series, a plane and stored pixels."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, MRImageStorage

from appliance.dev.synth.geometry import ImagePlane
from appliance.dev.synth.plan import SeriesPlan, StudyPlan

_SEQUENCES = {
    # kind -> (ScanningSequence, SequenceVariant, ScanOptions, TR ms, TE ms, flip deg). Both cardiac series are
    # ECG-triggered, so ScanOptions says CG (PS3.3 C.8.3.1: TriggerTime belongs only to a gated image); the
    # inversion of LGE is a ScanningSequence term (IR), not a scan option.
    "cine": (["GR"], ["SS", "SK"], "CG", 3.0, 1.4, 60.0),
    "lge": (["GR", "IR"], ["SK", "SP", "MP"], "CG", 5.2, 2.0, 20.0),
    "localizer": (["GR"], ["SP"], "", 3.4, 1.5, 50.0),
}


@dataclass(frozen=True)
class ImageSpec:
    """Per-image facts that differ between instances of a series."""

    plane: ImagePlane
    instance_number: int
    sop_instance_uid: str
    acquisition_time: str
    trigger_time_ms: float | None = None
    cardiac_number_of_images: int | None = None
    image_type: Sequence[str] = ("ORIGINAL", "PRIMARY", "M", "ND")
    inversion_time_ms: float | None = None


def _ds(value: float, digits: int = 6) -> str:
    """Decimal String within the 16-character VR limit."""
    text = f"{value:.{digits}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _age(birth: str, on: str) -> str:
    b = dt.datetime.strptime(birth, "%Y%m%d").date()
    d = dt.datetime.strptime(on, "%Y%m%d").date()
    years = d.year - b.year - ((d.month, d.day) < (b.month, b.day))
    return f"{years:03d}Y"


def build_dataset(plan: StudyPlan, series: SeriesPlan, spec: ImageSpec, pixels: np.ndarray) -> FileDataset:
    prof = plan.profile
    plane = spec.plane
    if pixels.dtype != np.uint16 or pixels.shape != (plane.rows, plane.cols):
        raise ValueError(f"pixels must be uint16 {(plane.rows, plane.cols)}, got {pixels.dtype} {pixels.shape}")

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = UID(spec.sop_instance_uid)
    meta.TransferSyntaxUID = prof.transfer_syntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "SCANSIDE_SYNTH"
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)

    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = list(spec.image_type)
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = spec.sop_instance_uid
    ds.StudyDate = plan.study_date
    ds.SeriesDate = plan.study_date
    ds.AcquisitionDate = plan.study_date
    ds.ContentDate = plan.study_date
    ds.StudyTime = plan.study_time
    ds.SeriesTime = series.series_time
    ds.AcquisitionTime = spec.acquisition_time
    ds.ContentTime = spec.acquisition_time
    ds.AccessionNumber = plan.accession_number
    ds.Modality = "MR"
    ds.Manufacturer = prof.manufacturer
    ds.ReferringPhysicianName = ""
    ds.StationName = f"SYNTH{prof.key}"
    ds.StudyDescription = "CMR^Synthetic research study"
    ds.SeriesDescription = series.description
    ds.ManufacturerModelName = prof.model_name
    ds.PatientName = plan.patient_name
    ds.PatientID = plan.patient_id
    ds.PatientBirthDate = plan.patient_birth_date
    ds.PatientSex = plan.patient_sex
    ds.PatientAge = _age(plan.patient_birth_date, plan.study_date)
    ds.BodyPartExamined = "HEART"

    scanning, variant, options, tr, te, flip = _SEQUENCES[series.kind]
    ds.ScanningSequence = scanning
    ds.SequenceVariant = variant
    ds.ScanOptions = options
    ds.MRAcquisitionType = "2D"
    ds.SequenceName = prof.cine_sequence_name if series.kind == "cine" else series.kind
    ds.SliceThickness = _ds(plan.stack.thickness_mm if series.kind != "localizer" else 10.0)
    ds.RepetitionTime = _ds(tr)
    ds.EchoTime = _ds(te)
    ds.EchoTrainLength = 1  # Type 2: k-space lines per excitation, one for these gradient-echo sequences
    ds.MagneticFieldStrength = _ds(prof.field_strength_t)
    ds.FlipAngle = _ds(flip)
    ds.SoftwareVersions = prof.software_version
    ds.ProtocolName = series.protocol
    ds.PatientPosition = "HFS"
    if spec.inversion_time_ms is not None:
        ds.InversionTime = _ds(spec.inversion_time_ms)
    if series.kind != "localizer":
        ds.SpacingBetweenSlices = _ds(plan.stack.spacing_mm)
        ds.HeartRate = int(round(plan.params.heart_rate_bpm))
        ds.NominalInterval = int(round(plan.params.rr_ms))
    if spec.trigger_time_ms is not None:
        ds.TriggerTime = _ds(spec.trigger_time_ms, 2)
    if spec.cardiac_number_of_images is not None:
        ds.CardiacNumberOfImages = spec.cardiac_number_of_images

    ds.StudyInstanceUID = plan.study_uid
    ds.SeriesInstanceUID = series.series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = series.series_number
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = spec.instance_number
    ds.ImagePositionPatient = [_ds(x, 4) for x in plane.position]
    ds.ImageOrientationPatient = [_ds(x, 6) for x in plane.orientation]
    ds.FrameOfReferenceUID = plan.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = _ds(float(np.dot(plane.centre(), plane.normal)), 4)
    if prof.writes_images_in_acquisition:
        ds.ImagesInAcquisition = series.n_images

    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = plane.rows
    ds.Columns = plane.cols
    ds.PixelSpacing = [_ds(plane.pixel_spacing[0], 6), _ds(plane.pixel_spacing[1], 6)]
    ds.BitsAllocated = 16
    ds.BitsStored = prof.bits_stored
    ds.HighBit = prof.bits_stored - 1
    ds.PixelRepresentation = 0
    window_real = prof.gain * plan.gain_scale
    ds.WindowCenter = _ds(0.45 * window_real, 1)
    ds.WindowWidth = _ds(0.9 * window_real, 1)
    if prof.rescale_slope is not None:
        ds.RescaleIntercept = _ds(prof.rescale_intercept or 0.0)
        ds.RescaleSlope = _ds(prof.rescale_slope)
        ds.RescaleType = "US"
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
    return ds
