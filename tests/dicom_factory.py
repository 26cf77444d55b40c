"""Small hand-made DICOM files for parser and ingest tests, including the bad kinds a watch folder sees."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)


def mr_dataset(rows: int = 32, cols: int = 32, *, series_uid: str | None = None, study_uid: str | None = None,
               sop_uid: str | None = None, position: tuple[float, float, float] = (0.0, 0.0, 0.0),
               trigger_time: float | None = 0.0, syntax: str = ExplicitVRLittleEndian, seed: int = 0,
               **attrs: Any) -> Dataset:
    rng = np.random.default_rng(seed)
    ds = Dataset()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid or generate_uid()
    meta.TransferSyntaxUID = syntax
    ds.file_meta = meta
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.Modality = "MR"
    ds.PatientName = "SYNTH^UNIT"
    ds.PatientID = "UNIT0001"
    ds.Manufacturer = "UnitTest"
    ds.SeriesDescription = "unit cine"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M"]
    ds.ImagePositionPatient = list(position)
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [1.5, 1.5]
    ds.SliceThickness = 8
    if trigger_time is not None:
        ds.TriggerTime = trigger_time
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    for key, value in attrs.items():
        setattr(ds, key, value)
    pixels = rng.integers(0, 4000, (rows, cols), dtype=np.uint16)
    ds.PixelData = pixels.astype(">u2" if syntax == ExplicitVRBigEndian else "<u2").tobytes()
    return ds


def write(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def with_private_sequence(ds: Dataset) -> Dataset:
    """Add a private sequence (written with undefined length by pydicom when asked) before the geometry tags."""
    inner = Dataset()
    inner.add_new(0x00291010, "OB", b"\x01\x02" * 50)
    block = ds.private_block(0x0029, "UNIT PRIVATE", create=True)
    block.add_new(0x20, "SQ", Sequence([inner, inner]))
    ds[0x00291020].is_undefined_length = True
    return ds


def cine_series(folder: Path, slices: int = 4, phases: int = 5, rows: int = 32, cols: int = 32,
                images_in_acquisition: bool = True, syntax: str = ExplicitVRLittleEndian) -> list[Path]:
    """A tiny cine stack: `slices` parallel positions along z, `phases` trigger times each."""
    series_uid, study_uid = generate_uid(), generate_uid()
    paths = []
    for s in range(slices):
        for p in range(phases):
            extra: dict[str, Any] = {"CardiacNumberOfImages": phases, "InstanceNumber": s * phases + p + 1}
            if images_in_acquisition:
                extra["ImagesInAcquisition"] = slices * phases
            ds = mr_dataset(rows, cols, series_uid=series_uid, study_uid=study_uid, position=(0.0, 0.0, -8.0 * s),
                            trigger_time=40.0 * p, syntax=syntax, seed=s * 100 + p, **extra)
            paths.append(write(ds, folder / f"im{s:02d}_{p:02d}.dcm"))
    return paths


ALL_SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian)
