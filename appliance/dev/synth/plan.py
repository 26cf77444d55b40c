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
_STREAM_CASE, _STREAM_PARAMS, _STREAM_GEOMETRY, _STREAM_PEOPLE, _STREAM_SIGNAL, _STREAM_ACQUISITION = range(1, 7)
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
    # how this scan went (all of it in the pixels, none in the headers except the slice thickness)
    noise_scale: float = 1.0  # noise relative to the vendor's nominal SNR
    shading_strength: float = 1.0  # coil shading relative to a well-placed coil
    slice_shifts_mm: tuple[tuple[float, float], ...] = ()  # per anatomical slice: breath-hold misregistration
    phase_fracs: tuple[tuple[float, ...], ...] = ()  # per anatomical slice: the cycle fraction each phase shows
    slab_frac: float = 0.0  # slice thickness in long-axis fractions (partial volume), 0: an ideal thin slice

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

    def render_offset(self, slice_index: int) -> tuple[float, float]:
        """Where the heart's centre line appears in this slice's image: the planned offset plus the slice's
        breathing shift (the header still says where the plane was planned)."""
        du, dv = self.slice_shifts_mm[slice_index] if self.slice_shifts_mm else (0.0, 0.0)
        base = self.stack.center_offset_mm
        return (base[0] + du, base[1] + dv)

    def render_phase(self, slice_index: int, phase: int) -> float:
        """Fraction of the cardiac cycle that cine phase ``phase`` of this slice really shows (mistriggering)."""
        if self.phase_fracs:
            return self.phase_fracs[slice_index][phase]
        return phase / self.n_phases


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream])


def _add_minutes(hhmmss: str, minutes: float) -> str:
    t = dt.datetime.strptime(hhmmss, "%H%M%S") + dt.timedelta(minutes=minutes)
    return t.strftime("%H%M%S")


def _slice_timing(rng: np.random.Generator, n_phases: int) -> tuple[float, ...]:
    """Cycle fraction each phase of one slice shows: a little trigger jitter always; now and then a delayed
    trigger (the whole slice shifted in time) or a missed one (a frame repeats its predecessor)."""
    fracs = np.arange(n_phases) / n_phases + rng.normal(0.0, 0.01)
    event = rng.random()
    if event < 0.08:
        fracs = fracs + rng.uniform(0.04, 0.1) * rng.choice([-1.0, 1.0])
    elif event < 0.16 and n_phases > 2:
        k = int(rng.integers(1, n_phases))
        span = int(rng.integers(1, 3))
        fracs[k:k + span] = fracs[k - 1]
    return tuple(float(f) % 1.0 for f in fracs)


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
    acq = _rng(seed, _STREAM_ACQUISITION)
    # per-study protocol tweaks within the vendor's defaults: field of view, matrix, slice thickness
    fov_scale = float(acq.uniform(0.88, 1.12))
    matrix_scale = float(acq.choice([0.875, 1.0, 1.0, 1.125]))
    thickness = float(acq.uniform(6.0, 10.0))
    if matrix is None:
        rows, cols = (int(np.clip(8 * round(n * matrix_scale / 8), 160, 256)) for n in (prof.rows, prof.cols))
    else:
        rows, cols = int(matrix[0]), int(matrix[1])
    if rows < 16 or cols < 16:
        raise ValueError("matrix must be at least 16 x 16")
    spacing = (prof.fov_mm[0] * fov_scale / rows, prof.fov_mm[1] * fov_scale / cols)

    case_rng = _rng(seed, _STREAM_CASE)
    cond = sample_condition(case_rng) if condition is None else condition
    sev = sample_severity(case_rng) if severity is None else float(severity)
    if cond == "normal":
        sev = 0.0
    params = sample_params(cond, _rng(seed, _STREAM_PARAMS), sev)

    geo_rng = _rng(seed, _STREAM_GEOMETRY)
    pose = make_pose(geo_rng, params.long_axis_mm)
    # hearts sit at different angles and places in the chest; planners centre them only roughly
    rotation = prof.rotation_deg + float(geo_rng.uniform(-30.0, 30.0))
    offset = (float(geo_rng.uniform(-12.0, 12.0)), float(geo_rng.uniform(-12.0, 12.0)))
    stack = plan_sax_stack(pose, n_slices, rows, cols, spacing, rotation, prof.normal_sign, offset, thickness)

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
    gain_scale = float(math.exp(np.clip(_rng(seed, _STREAM_SIGNAL).normal(0.0, 0.15), -0.3, 0.3)))
    noise_scale = float(math.exp(acq.uniform(math.log(0.55), math.log(2.0))))
    shading_strength = float(acq.uniform(0.7, 3.5))
    shifts = np.clip(acq.normal(0.0, 2.0, (n_slices, 2)), -6.0, 6.0)
    slice_shifts = tuple((float(a), float(b)) for a, b in shifts)
    phase_fracs = tuple(_slice_timing(acq, n_phases) for _ in range(n_slices))

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
        noise_scale=noise_scale,
        shading_strength=shading_strength,
        slice_shifts_mm=slice_shifts,
        phase_fracs=phase_fracs,
        slab_frac=0.5 * thickness / params.long_axis_mm,
    )
