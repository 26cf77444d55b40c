"""Three fictional scanner vendors that differ the way real ones do in what they send to a DICOM node.

Manufacturer names are invented; the naming styles, encodings and file habits mimic common practice so that the
appliance meets the same variety it would in a real department: series naming, matrix and spacing, phase count,
bit depth, rescale use, slice order and normal sign, whether the series size is announced, transfer syntax, file
layout, and whether a file appears atomically or grows in place.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian


@dataclass(frozen=True)
class VendorProfile:
    key: str
    manufacturer: str
    model_name: str
    field_strength_t: float
    software_version: str
    # series naming (SeriesDescription / ProtocolName)
    cine_description: str
    cine_protocol: str
    localizer_description: str
    localizer_protocol: str
    lge_description: str | None  # None: this vendor's exam has no late-enhancement stack
    lge_protocol: str | None
    series_numbers: tuple[int, int, int | None]  # localizer, cine SAX, LGE (None: no LGE stack)
    cine_image_type: tuple[str, ...]
    cine_sequence_name: str
    # acquisition
    rows: int
    cols: int
    fov_mm: tuple[float, float]  # (along columns i.e. rows*spacing, along rows i.e. cols*spacing)
    n_phases: int
    n_slices: int
    slice_thickness_mm: float
    rotation_deg: float  # in-plane rotation of the short-axis view before the per-study jitter
    normal_sign: int  # +1: cross(row, col) points base -> apex; -1: apex -> base
    slice_order: str  # "base_to_apex" | "apex_to_base" (order on disk and of InstanceNumber)
    # pixel encoding
    bits_stored: int
    rescale_slope: float | None  # None: no Rescale tags; stored values are the real values
    rescale_intercept: float | None
    gain: float  # real-value units per phantom intensity unit
    noise_sigma: float  # per-channel Gaussian sigma as a fraction of gain (magnitude image -> Rician)
    # transfer
    writes_images_in_acquisition: bool
    transfer_syntax: UID
    layout: str  # "nested" | "flat" | "dicom_dir"
    write_mode: str  # "rename" | "inplace"

    @property
    def pixel_spacing(self) -> tuple[float, float]:
        """DICOM PixelSpacing (between rows, between columns) for the default matrix."""
        return (self.fov_mm[0] / self.rows, self.fov_mm[1] / self.cols)

    @property
    def max_stored(self) -> int:
        return (1 << self.bits_stored) - 1


VENDORS: dict[str, VendorProfile] = {
    "A": VendorProfile(
        key="A",
        manufacturer="Aurora Medical Systems",
        model_name="Aurora Vista 1.5T",
        field_strength_t=1.5,
        software_version="AV-21.3",
        cine_description="cine_sax_retro",
        cine_protocol="cine_sax_retro",
        localizer_description="localizer_3pl",
        localizer_protocol="localizer",
        lge_description="psir_sax_lge",
        lge_protocol="lge_sax_psir",
        series_numbers=(1, 9, 14),
        cine_image_type=("ORIGINAL", "PRIMARY", "M", "NORM", "DIS2D"),
        cine_sequence_name="*tfi2d1_25",
        rows=208,
        cols=256,
        fov_mm=(292.5, 360.0),
        n_phases=25,
        n_slices=12,
        slice_thickness_mm=8.0,
        rotation_deg=0.0,
        normal_sign=-1,
        slice_order="base_to_apex",
        bits_stored=12,
        rescale_slope=None,
        rescale_intercept=None,
        gain=1800.0,
        noise_sigma=0.025,
        writes_images_in_acquisition=True,
        transfer_syntax=ExplicitVRLittleEndian,
        layout="nested",
        write_mode="rename",
    ),
    "B": VendorProfile(
        key="B",
        manufacturer="Borealis Healthcare",
        model_name="Borealis HDx 3.0T",
        field_strength_t=3.0,
        software_version="BX 27.0 M4",
        cine_description="FIESTA CINE SAX",
        cine_protocol="CMR FUNCTION/FIESTA CINE SAX",
        localizer_description="3-PLANE LOC",
        localizer_protocol="CMR FUNCTION/3-PLANE LOC",
        lge_description=None,
        lge_protocol=None,
        series_numbers=(1, 5, None),
        cine_image_type=("ORIGINAL", "PRIMARY", "OTHER"),
        cine_sequence_name="fiestacine",
        rows=224,
        cols=224,
        fov_mm=(350.0, 350.0),
        n_phases=20,
        n_slices=10,
        slice_thickness_mm=8.0,
        rotation_deg=0.0,
        normal_sign=1,
        slice_order="apex_to_base",
        bits_stored=16,
        rescale_slope=None,
        rescale_intercept=None,
        gain=12000.0,
        noise_sigma=0.035,
        writes_images_in_acquisition=True,
        transfer_syntax=ImplicitVRLittleEndian,
        layout="flat",
        write_mode="inplace",
    ),
    "C": VendorProfile(
        key="C",
        manufacturer="Cobalt Imaging",
        model_name="Cobalt Ingenium 1.5T",
        field_strength_t=1.5,
        software_version="5.7.1",
        cine_description="sBTFE_SA_CINE",
        cine_protocol="sBTFE_SA_CINE",
        localizer_description="Survey",
        localizer_protocol="SURVEY_3PL",
        lge_description="T1TFE_LGE_SA",
        lge_protocol="T1TFE_LGE_SA",
        series_numbers=(101, 701, 1101),
        cine_image_type=("ORIGINAL", "PRIMARY", "M_FFE", "M", "FFE"),
        cine_sequence_name="BTFE",
        rows=192,
        cols=192,
        fov_mm=(340.0, 340.0),
        n_phases=30,
        n_slices=11,
        slice_thickness_mm=8.0,
        rotation_deg=90.0,
        normal_sign=-1,
        slice_order="apex_to_base",
        bits_stored=12,
        rescale_slope=2.5,
        rescale_intercept=0.0,
        gain=5000.0,
        noise_sigma=0.02,
        writes_images_in_acquisition=False,
        transfer_syntax=ExplicitVRLittleEndian,
        layout="dicom_dir",
        write_mode="rename",
    ),
}


def get_vendor(key: str) -> VendorProfile:
    try:
        return VENDORS[key]
    except KeyError:
        raise ValueError(f"unknown vendor {key!r}; expected one of {sorted(VENDORS)}") from None
