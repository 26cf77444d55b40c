"""A synthetic study decided up front: who (synthetic), what condition, which vendor, which series, where.

Every random choice comes from its own seeded stream, so asking for a different condition or matrix does not
shift the geometry or the demographics of the same seed.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

import numpy as np

from appliance.dev.synth.conditions import CONDITIONS, findings, sample_condition, sample_params, sample_severity
from appliance.dev.synth.geometry import SaxStack, make_pose, plan_sax_stack
from appliance.dev.synth.phantom import HeartParams
from appliance.dev.synth.uids import short_key, synth_uid
from appliance.dev.synth.vendors import VendorProfile, get_vendor

# independent random streams of one plan
_STREAM_CASE, _STREAM_PARAMS, _STREAM_GEOMETRY, _STREAM_PEOPLE, _STREAM_SIGNAL = range(1, 6)
_EPOCH = dt.date(2024, 1, 1)


@dataclass(frozen=True)
class Truth:
    """What the synthetic case really has; the params hold the full detail."""

    condition: str
    severity: float
    findings: tuple[str, ...]


@dataclass(frozen=True)
class SeriesPlan:
    kind: str  # "localizer" | "cine" | "lge"
    role: str  # "cine_sax" | "other", as the appliance should classify it
    series_uid: str
    series_number: int
    description: str
    protocol: str
    n_images: int
    series_time: str  # HHMMSS


@dataclass
class StudyPlan:
    seed: int
    vendor: str
    condition: str
    severity: float
    params: HeartParams
    n_slices: int
    n_phases: int
    rows: int
    cols: int
    pixel_spacing: tuple[float, float]  # DICOM PixelSpacing: (between rows, between columns)
    patient_name: str
    patient_id: str
    patient_birth_date: str
    patient_sex: str
    accession_number: str
    study_uid: str
    frame_of_reference_uid: str
    study_date: str
    study_time: str
    stack: SaxStack
    series: tuple[SeriesPlan, ...]
    truth: Truth
    gain_scale: float  # per-study receiver gain variation around the vendor's nominal gain

    @property
    def profile(self) -> VendorProfile:
        return get_vendor(self.vendor)

    @property
    def path_key(self) -> str:
        """Opaque per-study folder key (derived from the study UID, never from patient identity)."""
        return short_key(self.study_uid)

    @property
    def n_images(self) -> int:
        return sum(s.n_images for s in self.series)

    def trigger_times_ms(self) -> tuple[float, ...]:
        rr = self.params.rr_ms
        return tuple(round(k * rr / self.n_phases, 2) for k in range(self.n_phases))

    def series_of(self, kind: str) -> SeriesPlan | None:
        return next((s for s in self.series if s.kind == kind), None)


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream])


def _add_minutes(hhmmss: str, minutes: float) -> str:
    t = dt.datetime.strptime(hhmmss, "%H%M%S") + dt.timedelta(minutes=minutes)
    return t.strftime("%H%M%S")


def plan_study(seed: int, vendor: str = "A", condition: str | None = None, severity: float | None = None,
               n_slices: int | None = None, n_phases: int | None = None,
               matrix: tuple[int, int] | None = None) -> StudyPlan:
    """Decide everything about one synthetic study; nothing is rendered yet."""
    if seed < 0:
        raise ValueError("seed must be non-negative")
    prof = get_vendor(vendor)
    if condition is not None and condition not in CONDITIONS:
        raise ValueError(f"unknown condition {condition!r}")
    n_slices = prof.n_slices if n_slices is None else int(n_slices)
    n_phases = prof.n_phases if n_phases is None else int(n_phases)
    if n_slices < 1 or n_phases < 1:
        raise ValueError("n_slices and n_phases must be >= 1")
    rows, cols = (prof.rows, prof.cols) if matrix is None else (int(matrix[0]), int(matrix[1]))
    if rows < 16 or cols < 16:
        raise ValueError("matrix must be at least 16 x 16")
    spacing = (prof.fov_mm[0] / rows, prof.fov_mm[1] / cols)

    case_rng = _rng(seed, _STREAM_CASE)
    cond = sample_condition(case_rng) if condition is None else condition
    sev = sample_severity(case_rng) if severity is None else float(severity)
    if cond == "normal":
        sev = 0.0
    params = sample_params(cond, _rng(seed, _STREAM_PARAMS), sev)

    geo_rng = _rng(seed, _STREAM_GEOMETRY)
    pose = make_pose(geo_rng, params.long_axis_mm)
    rotation = prof.rotation_deg + float(geo_rng.uniform(-8.0, 8.0))
    offset = (float(geo_rng.uniform(-4.0, 4.0)), float(geo_rng.uniform(-4.0, 4.0)))
    stack = plan_sax_stack(pose, n_slices, rows, cols, spacing, rotation, prof.normal_sign, offset,
                           prof.slice_thickness_mm)

    people = _rng(seed, _STREAM_PEOPLE)
    study_day = _EPOCH + dt.timedelta(days=int(people.integers(0, 730)))
    age = int(people.integers(20, 86))
    birth = study_day - dt.timedelta(days=int(age * 365.25 + people.integers(0, 365)))
    study_time = f"{int(people.integers(7, 18)):02d}{int(people.integers(0, 60)):02d}{int(people.integers(0, 60)):02d}"
    sex = "F" if people.random() < 0.45 else "M"
    accession = f"SA{int(people.integers(0, 10**8)):08d}"

    key = ("study", seed, vendor, condition, severity, n_slices, n_phases, rows, cols)
    study_uid = synth_uid(*key)
    series = [
        SeriesPlan("localizer", "other", synth_uid(study_uid, "localizer"), prof.series_numbers[0],
                   prof.localizer_description, prof.localizer_protocol, 3, _add_minutes(study_time, 1)),
        SeriesPlan("cine", "cine_sax", synth_uid(study_uid, "cine"), prof.series_numbers[1],
                   prof.cine_description, prof.cine_protocol, n_slices * n_phases, _add_minutes(study_time, 6)),
    ]
    if prof.lge_description is not None and prof.series_numbers[2] is not None:
        series.append(SeriesPlan("lge", "other", synth_uid(study_uid, "lge"), prof.series_numbers[2],
                                 prof.lge_description, prof.lge_protocol or prof.lge_description, n_slices,
                                 _add_minutes(study_time, 22)))
    gain_scale = float(math.exp(_rng(seed, _STREAM_SIGNAL).normal(0.0, 0.06)))

    return StudyPlan(
        seed=seed,
        vendor=vendor,
        condition=cond,
        severity=sev,
        params=params,
        n_slices=n_slices,
        n_phases=n_phases,
        rows=rows,
        cols=cols,
        pixel_spacing=spacing,
        patient_name=f"SYNTH^P{seed:06d}",
        patient_id=f"SYN{seed:08d}",
        patient_birth_date=birth.strftime("%Y%m%d"),
        patient_sex=sex,
        accession_number=accession,
        study_uid=study_uid,
        frame_of_reference_uid=synth_uid(study_uid, "frame_of_reference"),
        study_date=study_day.strftime("%Y%m%d"),
        study_time=study_time,
        stack=stack,
        series=tuple(series),
        truth=Truth(cond, sev, findings(params)),
        gain_scale=gain_scale,
    )
