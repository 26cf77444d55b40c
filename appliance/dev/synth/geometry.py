"""Where the synthetic heart and its image planes sit in patient space (DICOM LPS: +x left, +y posterior, +z up).

The appliance's preprocessing relies on this convention: the long axis runs base -> apex towards the patient's
left, anterior and inferior (close to normalize(+0.6, -0.5, -0.6)); short-axis planes are perpendicular to it,
ImagePositionPatient is the centre of the top-left pixel and the image centre lies on the heart's centre line
(plus a few mm of seeded offset).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

Vec3 = tuple[float, float, float]

NOMINAL_LONG_AXIS: Vec3 = (0.6, -0.5, -0.6)
_ANTERIOR = np.array([0.0, -1.0, 0.0])


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _vec(v: np.ndarray) -> Vec3:
    return (float(v[0]), float(v[1]), float(v[2]))


@dataclass(frozen=True)
class HeartPose:
    """The heart frame in patient coordinates: origin is the LV centre at the base (z_frac 0)."""

    origin: Vec3
    long_axis: Vec3  # unit, base -> apex
    lateral: Vec3  # unit, heart-frame +u (towards the LV lateral wall)
    inferior: Vec3  # unit, heart-frame +v (towards the inferior wall)
    long_axis_mm: float

    def centre(self, z_frac: float) -> np.ndarray:
        return np.asarray(self.origin) + z_frac * self.long_axis_mm * np.asarray(self.long_axis)

    def to_heart(self, xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(u mm, v mm, z_frac) of patient points with shape (..., 3)."""
        rel = np.asarray(xyz, dtype=np.float64) - np.asarray(self.origin)
        u = rel @ np.asarray(self.lateral)
        v = rel @ np.asarray(self.inferior)
        z = (rel @ np.asarray(self.long_axis)) / self.long_axis_mm
        return u.astype(np.float32), v.astype(np.float32), z.astype(np.float32)


def make_pose(rng: np.random.Generator, long_axis_mm: float, jitter: float = 0.06) -> HeartPose:
    """A seeded pose: the nominal long axis tilted a little, the heart a little off the isocentre."""
    axis = _unit(np.asarray(NOMINAL_LONG_AXIS) + rng.normal(0.0, jitter, 3))
    # "inferior" in cardiac terms is the diaphragmatic wall, facing away from the anterior chest wall
    anterior_in_plane = _unit(_ANTERIOR - (_ANTERIOR @ axis) * axis)
    inferior = -anterior_in_plane
    lateral = np.cross(axis, inferior)
    if lateral[0] < 0.0:  # the lateral wall faces the patient's left
        lateral = -lateral
    mid = np.array([15.0, 5.0, -10.0]) + rng.normal(0.0, 8.0, 3)
    origin = mid - 0.5 * long_axis_mm * axis
    return HeartPose(_vec(origin), _vec(axis), _vec(lateral), _vec(inferior), float(long_axis_mm))


@dataclass(frozen=True)
class ImagePlane:
    """Geometry of one 2D image as DICOM describes it."""

    position: Vec3  # ImagePositionPatient: centre of the top-left pixel
    row_dir: Vec3  # direction of increasing column index
    col_dir: Vec3  # direction of increasing row index
    rows: int
    cols: int
    pixel_spacing: tuple[float, float]  # (between rows, between columns), as DICOM PixelSpacing
    z_frac: float | None = None  # long-axis level for short-axis planes
    label: str = ""

    @property
    def sax_level(self) -> float:
        """z_frac of a short-axis plane (the phantom renders only those)."""
        if self.z_frac is None:
            raise ValueError(f"plane {self.label!r} is not a short-axis plane")
        return self.z_frac

    @property
    def normal(self) -> Vec3:
        return _vec(np.cross(np.asarray(self.row_dir), np.asarray(self.col_dir)))

    @property
    def orientation(self) -> tuple[float, float, float, float, float, float]:
        return (*self.row_dir, *self.col_dir)

    def pixel_points(self) -> np.ndarray:
        """Patient coordinates of every pixel centre, shape (rows, cols, 3)."""
        r = np.arange(self.rows)[:, None, None] * self.pixel_spacing[0]
        c = np.arange(self.cols)[None, :, None] * self.pixel_spacing[1]
        return np.asarray(self.position) + c * np.asarray(self.row_dir) + r * np.asarray(self.col_dir)

    def centre(self) -> np.ndarray:
        half_c = (self.cols - 1) / 2.0 * self.pixel_spacing[1]
        half_r = (self.rows - 1) / 2.0 * self.pixel_spacing[0]
        return np.asarray(self.position) + half_c * np.asarray(self.row_dir) + half_r * np.asarray(self.col_dir)


@dataclass(frozen=True)
class SaxStack:
    """A short-axis stack plus what the phantom needs to render it in the same orientation."""

    pose: HeartPose
    planes: tuple[ImagePlane, ...]  # anatomical order, base first
    thickness_mm: float
    spacing_mm: float
    rotation_deg: float  # in-plane rotation of the row direction from lateral towards inferior
    mirror: bool  # column direction flipped (slice normal points the other way)
    center_offset_mm: tuple[float, float]  # heart centre line relative to the image centre (along rows, cols)

    @property
    def z_fracs(self) -> tuple[float, ...]:
        return tuple(float(p.z_frac) for p in self.planes if p.z_frac is not None)


def stack_spacing(long_axis_mm: float, n_slices: int, lo: float = 8.0, hi: float = 10.0) -> float:
    """Slice-to-slice distance that covers ~90% of the long axis, kept in the usual 8-10 mm clinical range.

    Many slices on a short heart therefore run past the apex or into the atrium, which real stacks do too.
    """
    if n_slices < 2:
        return lo
    return float(np.clip(0.9 * long_axis_mm / (n_slices - 1), lo, hi))


def plan_sax_stack(pose: HeartPose, n_slices: int, rows: int, cols: int, pixel_spacing: tuple[float, float],
                   rotation_deg: float, normal_sign: int, center_offset_mm: tuple[float, float],
                   thickness_mm: float = 8.0) -> SaxStack:
    """Short-axis planes centred on mid-ventricle; ``normal_sign`` +1 makes cross(row, col) point base -> apex."""
    if normal_sign not in (1, -1):
        raise ValueError("normal_sign must be +1 or -1")
    axis = np.asarray(pose.long_axis)
    lat, inf = np.asarray(pose.lateral), np.asarray(pose.inferior)
    phi = math.radians(rotation_deg)
    row = math.cos(phi) * lat + math.sin(phi) * inf
    col = -math.sin(phi) * lat + math.cos(phi) * inf
    mirror = bool(np.sign(np.cross(row, col) @ axis) != normal_sign)
    if mirror:
        col = -col
    spacing = stack_spacing(pose.long_axis_mm, n_slices)
    half_c = (cols - 1) / 2.0 * pixel_spacing[1] + center_offset_mm[0]
    half_r = (rows - 1) / 2.0 * pixel_spacing[0] + center_offset_mm[1]
    planes = []
    for k in range(n_slices):
        z = 0.5 + (k - (n_slices - 1) / 2.0) * spacing / pose.long_axis_mm
        position = pose.centre(z) - half_c * row - half_r * col
        planes.append(ImagePlane(_vec(position), _vec(row), _vec(col), rows, cols,
                                 (float(pixel_spacing[0]), float(pixel_spacing[1])), z_frac=float(z), label=f"sax{k}"))
    return SaxStack(pose, tuple(planes), float(thickness_mm), spacing, float(rotation_deg), mirror,
                    (float(center_offset_mm[0]), float(center_offset_mm[1])))


def localizer_planes(pose: HeartPose, rows: int, cols: int,
                     pixel_spacing: tuple[float, float]) -> tuple[ImagePlane, ...]:
    """Axial, coronal and sagittal planes through mid-ventricle, as a 3-plane scout would place them."""
    centre = pose.centre(0.5)
    orientations = {
        "axial": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
        "coronal": ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
        "sagittal": ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0)),
    }
    half_c = (cols - 1) / 2.0 * pixel_spacing[1]
    half_r = (rows - 1) / 2.0 * pixel_spacing[0]
    out = []
    for label, (row, col) in orientations.items():
        position = centre - half_c * np.asarray(row) - half_r * np.asarray(col)
        out.append(ImagePlane(_vec(position), row, col, rows, cols,
                              (float(pixel_spacing[0]), float(pixel_spacing[1])), label=label))
    return tuple(out)
