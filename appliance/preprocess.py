"""Series -> model input tensor: the one implementation, shared by the appliance and by training.

The pipeline is deliberately built from operations that are linear with weights summing to one (bilinear in-plane
resampling, linear interpolation between cardiac phases) followed by a percentile normalisation of the whole tensor.
That makes the output invariant to any positive affine change of the stored values (rescale slope/intercept, 12 vs
16 bit storage), which is the main source of vendor-to-vendor intensity differences. Pixels outside the source image
are therefore not interpolated against zeros; they are masked and set to 0 only after normalisation.

Only the frames that contribute to the output are read from disk: the geometry is planned from the `Frame` metadata
first, then the base/mid/apex slices' phases are loaded.
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from appliance.handovers import CompleteSeries, Frame, PixelRef, PreparedSeries

# Identifies the algorithm below. A bundle trained with a different algorithm must not be fed by this one, so the
# manifest carries this string and `PreprocessSpec.from_dict` refuses any other.
ALGORITHM = "scanside.cine_sax/1"

# Heart long axis, base -> apex, in DICOM patient coordinates (LPS): towards the patient's left, anterior (-P) and
# inferior (-S). Only its sign relative to the slice normal is used, so the exact angle does not matter.
BASE_TO_APEX_LPS = np.array([1.0, -1.0, -1.0]) / math.sqrt(3.0)

SLICE_TOLERANCE_MM = 0.5
# cos(2.5 degrees): scanners write parallel stacks with identical orientations, so anything beyond rounding noise
# means the frames do not form one stack.
PARALLEL_COS = math.cos(math.radians(2.5))


class PreprocessError(ValueError):
    """The series cannot be turned into a model input; the message says why."""


@dataclass(frozen=True)
class PreprocessSpec:
    frames: int = 16
    size: tuple[int, int] = (96, 96)
    fov_mm: float = 240.0
    slice_fractions: tuple[float, ...] = (0.2, 0.5, 0.8)
    percentiles: tuple[float, float] = (1.0, 99.5)

    def __post_init__(self) -> None:
        _check_int("frames", self.frames, minimum=2)
        if not isinstance(self.size, (tuple, list)) or len(self.size) != 2:
            raise PreprocessError(f"preprocessing size must be (height, width), got {self.size!r}")
        _check_int("size[0]", self.size[0], minimum=4)
        _check_int("size[1]", self.size[1], minimum=4)
        if not _is_real(self.fov_mm) or not self.fov_mm > 0:
            raise PreprocessError(f"preprocessing fov_mm must be a positive finite number, got {self.fov_mm!r}")
        fractions = self.slice_fractions
        if not isinstance(fractions, (tuple, list)) or not fractions:
            raise PreprocessError(f"preprocessing slice_fractions must be a non-empty list, got {fractions!r}")
        for f in fractions:
            if not _is_real(f) or not 0.0 <= f <= 1.0:
                raise PreprocessError(f"preprocessing slice_fractions must lie in [0, 1], got {fractions!r}")
        pct = self.percentiles
        if (
            not isinstance(pct, (tuple, list))
            or len(pct) != 2
            or not all(_is_real(p) for p in pct)
            or not 0.0 <= pct[0] < pct[1] <= 100.0
        ):
            raise PreprocessError(
                f"preprocessing percentiles must be (low, high) with 0 <= low < high <= 100, got {pct!r}"
            )
        # Normalise lists (from JSON) to tuples so specs compare and hash by value.
        object.__setattr__(self, "size", (int(self.size[0]), int(self.size[1])))
        object.__setattr__(self, "fov_mm", float(self.fov_mm))
        object.__setattr__(self, "slice_fractions", tuple(float(f) for f in fractions))
        object.__setattr__(self, "percentiles", (float(pct[0]), float(pct[1])))

    @property
    def channels(self) -> int:
        return len(self.slice_fractions)

    @property
    def tensor_shape(self) -> tuple[int, int, int, int]:
        return (self.frames, self.channels, self.size[0], self.size[1])

    def to_dict(self) -> dict[str, Any]:
        return {
            "algorithm": ALGORITHM,
            "frames": self.frames,
            "size": list(self.size),
            "fov_mm": self.fov_mm,
            "slice_fractions": list(self.slice_fractions),
            "intensity_percentiles": list(self.percentiles),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PreprocessSpec:
        if not isinstance(data, Mapping):
            raise PreprocessError(f"preprocessing must be a JSON object, got {type(data).__name__}")
        expected = {"algorithm", "frames", "size", "fov_mm", "slice_fractions", "intensity_percentiles"}
        missing = sorted(expected - data.keys())
        unknown = sorted(data.keys() - expected)
        if missing:
            raise PreprocessError(f"preprocessing is missing {', '.join(missing)}")
        # An unknown key is a setting this code would silently ignore, so the tensor would differ from training.
        if unknown:
            raise PreprocessError(f"preprocessing has unknown settings {', '.join(unknown)}")
        if data["algorithm"] != ALGORITHM:
            raise PreprocessError(
                f"preprocessing algorithm {data['algorithm']!r} is not supported (this build implements {ALGORITHM!r})"
            )
        return cls(
            frames=data["frames"],
            size=tuple(data["size"]) if isinstance(data["size"], list) else data["size"],
            fov_mm=data["fov_mm"],
            slice_fractions=tuple(data["slice_fractions"])
            if isinstance(data["slice_fractions"], list)
            else data["slice_fractions"],
            percentiles=tuple(data["intensity_percentiles"])
            if isinstance(data["intensity_percentiles"], list)
            else data["intensity_percentiles"],
        )


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_int(label: str, value: object, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise PreprocessError(f"preprocessing {label} must be an integer >= {minimum}, got {value!r}")


# --- pixels -------------------------------------------------------------------------------------------------------


def load_frame(ref: PixelRef) -> np.ndarray:
    """The frame's modality values (rescale applied) as float32 (rows, columns)."""
    out = np.empty((ref.rows, ref.columns), dtype=np.float32)
    _load_into(ref, out)
    return out


def _load_into(ref: PixelRef, out: np.ndarray) -> None:
    # Converting straight into the caller's buffer saves a copy per frame on the latency-critical path.
    raw = _decode_with_pydicom(ref) if ref.decode_with_pydicom else _read_raw(ref)
    if raw.shape != out.shape:
        raise PreprocessError(f"{ref.path}: pixels are {raw.shape}, expected {out.shape}")
    np.copyto(out, raw, casting="unsafe")
    if ref.rescale_slope != 1.0 or ref.rescale_intercept != 0.0:
        out *= np.float32(ref.rescale_slope)
        out += np.float32(ref.rescale_intercept)


def _read_raw(ref: PixelRef) -> np.ndarray:
    if ref.offset < 0:
        raise PreprocessError(f"{ref.path}: no byte offset for the pixel data and decode_with_pydicom is not set")
    try:
        dtype = np.dtype(ref.dtype)
    except TypeError as exc:
        raise PreprocessError(f"{ref.path}: unknown pixel dtype {ref.dtype!r}") from exc
    if not 0 <= ref.frame_index < max(ref.number_of_frames, 1):
        raise PreprocessError(f"{ref.path}: frame index {ref.frame_index} outside 0..{ref.number_of_frames - 1}")
    size = ref.frame_bytes
    start = ref.offset + ref.frame_index * size
    try:
        fd = os.open(ref.path, os.O_RDONLY)
    except OSError as exc:
        raise PreprocessError(f"{ref.path}: cannot open pixel data: {exc.strerror}") from exc
    try:
        data = os.pread(fd, size, start)
    finally:
        os.close(fd)
    if len(data) != size:
        raise PreprocessError(
            f"{ref.path}: file too short for frame {ref.frame_index}: needed {size} bytes at offset {start}, "
            f"got {len(data)}"
        )
    return np.frombuffer(data, dtype=dtype).reshape(ref.rows, ref.columns)


def _decode_with_pydicom(ref: PixelRef) -> np.ndarray:
    # Imported here: the fast path never needs pydicom's pixel handlers.
    from pydicom.pixels import pixel_array

    index = ref.frame_index if ref.number_of_frames > 1 else None
    try:
        arr = pixel_array(ref.path, index=index)
    except Exception as exc:  # pydicom raises many types (missing codec, bad data, I/O)
        raise PreprocessError(f"{ref.path}: pydicom could not decode frame {ref.frame_index}: {exc}") from exc
    if arr.ndim == 3 and index is None:
        arr = arr[ref.frame_index]
    if arr.shape != (ref.rows, ref.columns):
        raise PreprocessError(
            f"{ref.path}: decoded frame is {arr.shape}, expected ({ref.rows}, {ref.columns}) (colour or wrong frame?)"
        )
    return arr


# --- geometry -----------------------------------------------------------------------------------------------------


class _FrameGeometry(Protocol):
    position: tuple[float, float, float]
    orientation: tuple[float, float, float, float, float, float]
    pixel_spacing: tuple[float, float]
    trigger_time: float | None


@dataclass(frozen=True, eq=False)
class ArrayFrame:
    """An in-memory image with the same geometry as a `Frame`, for training and tests. Pixels already rescaled."""

    pixels: np.ndarray  # (rows, columns)
    position: tuple[float, float, float]
    orientation: tuple[float, float, float, float, float, float]
    pixel_spacing: tuple[float, float]
    trigger_time: float | None


@dataclass(frozen=True, eq=False)
class SlicePlan:
    """One picked slice: which input frames, in phase order, and how they blend into the output time points."""

    slice_index: int  # 0 = base
    frame_indices: tuple[int, ...]  # into the input sequence, ordered by trigger time
    trigger_times: tuple[float, ...]
    phase_weights: np.ndarray  # (T, phases)
    shape: tuple[int, int]  # (rows, columns)
    pixel_spacing: tuple[float, float]


@dataclass(frozen=True)
class StackPlan:
    slice_count: int
    slice_positions_mm: tuple[float, ...]  # along the base -> apex axis, ascending
    picked: tuple[SlicePlan, ...]  # one per channel


def plan_stack(frames: Sequence[_FrameGeometry], shapes: Sequence[tuple[int, int]], spec: PreprocessSpec) -> StackPlan:
    """Order the stack base -> apex, pick the channel slices and compute their phase weights. Reads no pixels."""
    n = len(frames)
    if n == 0:
        raise PreprocessError("series has no frames")
    try:
        orient = np.array([f.orientation for f in frames], dtype=np.float64).reshape(n, 6)
        pos = np.array([f.position for f in frames], dtype=np.float64).reshape(n, 3)
    except (TypeError, ValueError) as exc:
        raise PreprocessError(f"series has malformed position/orientation: {exc}") from exc
    if not (np.isfinite(orient).all() and np.isfinite(pos).all()):
        raise PreprocessError("series has non-finite position/orientation values")
    normals = np.cross(orient[:, :3], orient[:, 3:])
    lengths = np.linalg.norm(normals, axis=1)
    if (lengths < 1e-6).any():
        bad = int(np.argmin(lengths))
        raise PreprocessError(f"frame {bad} has a degenerate orientation {tuple(orient[bad])}: row and column parallel")
    normals /= lengths[:, None]
    normal = normals[0]
    cosines = np.abs(normals @ normal)
    if (cosines < PARALLEL_COS).any():
        worst = float(np.degrees(np.arccos(np.clip(cosines.min(), -1.0, 1.0))))
        raise PreprocessError(f"slices are not parallel (normals differ by up to {worst:.1f} degrees); not one stack")
    if float(normal @ BASE_TO_APEX_LPS) < 0:
        normal = -normal
    depth = pos @ normal  # grows from base to apex

    order = np.argsort(depth, kind="stable")
    gaps = np.diff(depth[order]) > SLICE_TOLERANCE_MM
    groups = np.split(order, np.flatnonzero(gaps) + 1)
    if len(groups) < 3:
        raise PreprocessError(f"series has {len(groups)} slice position(s); need at least 3 for base, mid and apex")
    positions = tuple(float(depth[g].mean()) for g in groups)

    # Every slice is checked, not only the picked ones, so whether a series is refused does not depend on the
    # bundle's slice fractions.
    slices = [_order_slice(s, g, frames, shapes) for s, g in enumerate(groups)]
    picked = []
    for fraction in spec.slice_fractions:
        s = int(math.floor(fraction * (len(groups) - 1) + 0.5))
        members, times, shape, spacing = slices[s]
        picked.append(
            SlicePlan(
                slice_index=s,
                frame_indices=members,
                trigger_times=times,
                phase_weights=phase_weights(times, spec.frames),
                shape=shape,
                pixel_spacing=spacing,
            )
        )
    return StackPlan(slice_count=len(groups), slice_positions_mm=positions, picked=tuple(picked))


def _order_slice(
    s: int, members: np.ndarray, frames: Sequence[_FrameGeometry], shapes: Sequence[tuple[int, int]]
) -> tuple[tuple[int, ...], tuple[float, ...], tuple[int, int], tuple[float, float]]:
    """Check one slice position and return its frames in phase order with their trigger times, shape, spacing."""
    times = []
    for i in members:
        t = frames[i].trigger_time
        if t is None or not math.isfinite(t):
            raise PreprocessError(
                f"slice {s} (from base) has a frame without a trigger time; is the series gated cine?"
            )
        times.append(float(t))
    if len(members) < 2:
        raise PreprocessError(f"slice {s} (from base) has {len(members)} phase; need at least 2 for cine")
    by_time = np.argsort(np.array(times), kind="stable")
    members = members[by_time]
    times_sorted = [times[k] for k in by_time]
    shape0 = tuple(shapes[members[0]])
    for i in members[1:]:
        if tuple(shapes[i]) != shape0:
            raise PreprocessError(f"slice {s} (from base) mixes matrix sizes {shape0} and {tuple(shapes[i])}")
    try:
        spacings = np.array([frames[i].pixel_spacing for i in members], dtype=np.float64).reshape(len(members), 2)
    except (TypeError, ValueError) as exc:
        raise PreprocessError(f"slice {s} (from base) has malformed pixel spacing: {exc}") from exc
    spacing0 = (float(spacings[0, 0]), float(spacings[0, 1]))
    if not all(math.isfinite(v) and v > 0 for v in spacing0):
        raise PreprocessError(f"slice {s} (from base) has invalid pixel spacing {spacing0}")
    differs = np.abs(spacings - spacings[0]) > 1e-4 * spacings[0]
    if differs.any():
        other = tuple(spacings[int(np.flatnonzero(differs.any(axis=1))[0])])
        raise PreprocessError(f"slice {s} (from base) mixes pixel spacings {spacing0} and {other}")
    if (np.diff(times_sorted) <= 0).any():
        raise PreprocessError(
            f"slice {s} (from base) has repeated trigger times {times_sorted}; two acquisitions mixed in one series?"
        )
    return tuple(int(i) for i in members), tuple(times_sorted), (int(shape0[0]), int(shape0[1])), spacing0


def phase_weights(trigger_times: Sequence[float], frames: int) -> np.ndarray:
    """(frames, phases) weights resampling one cardiac cycle to `frames` evenly spaced time points, cyclically.

    The cycle length is not in the frames' metadata, so it is taken as the span of the trigger times plus one
    median phase interval (the next phase would have been the next R wave). Output frame k sits at k/frames of the
    cycle, measured from the first acquired phase.
    """
    t = np.asarray(trigger_times, dtype=np.float64)
    p = t.size
    if p < 2:
        raise PreprocessError(f"need at least 2 phases, got {p}")
    steps = np.diff(t)
    if (steps <= 0).any():
        raise PreprocessError(f"trigger times repeat or are unsorted: {t.tolist()}")
    cycle = t[-1] - t[0] + float(np.median(steps))
    knots = np.append((t - t[0]) / cycle, 1.0)  # phase p+1 of the last knot is phase 0 again
    targets = np.arange(frames, dtype=np.float64) / frames
    left = np.clip(np.searchsorted(knots, targets, side="right") - 1, 0, p - 1)
    alpha = (targets - knots[left]) / (knots[left + 1] - knots[left])
    weights = np.zeros((frames, p), dtype=np.float64)
    rows = np.arange(frames)
    np.add.at(weights, (rows, left), 1.0 - alpha)
    np.add.at(weights, (rows, (left + 1) % p), alpha)
    return weights.astype(np.float32)


# --- in-plane resampling ------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _resample_taps(
    rows: int, cols: int, spacing: tuple[float, float], size: tuple[int, int], fov_mm: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Flat source indices (4, H*W), bilinear weights (4, H*W) and the inside mask (H*W) or None if all inside.

    Cached because a scanner protocol produces the same (matrix, spacing) for every series; computing these is most
    of the cost of resampling one image.
    """
    ys, yw, yin = _axis_taps(rows, spacing[0], size[0], fov_mm)
    xs, xw, xin = _axis_taps(cols, spacing[1], size[1], fov_mm)
    idx = np.empty((4, size[0] * size[1]), dtype=np.intp)
    wts = np.empty((4, size[0] * size[1]), dtype=np.float32)
    k = 0
    for a in (0, 1):
        for b in (0, 1):
            idx[k] = (ys[:, a, None] * cols + xs[None, :, b]).ravel()
            wts[k] = (yw[:, a, None] * xw[None, :, b]).ravel()
            k += 1
    inside = (yin[:, None] & xin[None, :]).ravel()
    mask = None if inside.all() else inside
    for arr in (idx, wts) + ((mask,) if mask is not None else ()):
        arr.setflags(write=False)
    return idx, wts, mask


def _axis_taps(n_src: int, spacing: float, n_out: int, fov_mm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    step = fov_mm / n_out
    # Pixel centres, in mm from the image centre, for the output grid; then in source pixel units.
    centre_mm = (np.arange(n_out) - (n_out - 1) / 2.0) * step
    src = (n_src - 1) / 2.0 + centre_mm / spacing
    inside = (src >= -0.5) & (src <= n_src - 0.5)  # within the source pixels' footprint
    # Clamp so edge pixels are extended rather than blended with zeros; outside points are masked later.
    src = np.clip(src, 0.0, n_src - 1.0)
    lo = np.minimum(np.floor(src).astype(np.intp), n_src - 1)
    hi = np.minimum(lo + 1, n_src - 1)
    frac = src - lo
    return np.stack([lo, hi], axis=1), np.stack([1.0 - frac, frac], axis=1), inside


def resample_images(
    images: np.ndarray, spacing: tuple[float, float], spec: PreprocessSpec
) -> tuple[np.ndarray, np.ndarray | None]:
    """(P, rows, cols) -> (P, H, W) covering fov_mm x fov_mm about the image centre, plus the inside mask (H, W)."""
    p, rows, cols = images.shape
    idx, wts, mask = _resample_taps(rows, cols, (float(spacing[0]), float(spacing[1])), spec.size, spec.fov_mm)
    taps = np.take(images.reshape(p, rows * cols), idx, axis=1)  # (P, 4, H*W)
    out = np.einsum("pkn,kn->pn", taps, wts)
    h, w = spec.size
    return out.reshape(p, h, w), (mask.reshape(h, w) if mask is not None else None)


# --- assembly -----------------------------------------------------------------------------------------------------


def _render(plan: StackPlan, load: Callable[[int, np.ndarray], None], spec: PreprocessSpec) -> np.ndarray:
    t_out, channels, h, w = spec.tensor_shape
    tensor = np.empty((t_out, channels, h, w), dtype=np.float32)
    masks: list[np.ndarray | None] = []
    for c, sp in enumerate(plan.picked):
        weights = sp.phase_weights
        used = np.flatnonzero(np.abs(weights).sum(axis=0) > 0)  # phases no output frame touches are never read
        stack = np.empty((used.size, sp.shape[0], sp.shape[1]), dtype=np.float32)
        for j, p in enumerate(used):
            load(sp.frame_indices[p], stack[j])
        resampled, mask = resample_images(stack, sp.pixel_spacing, spec)
        tensor[:, c] = (weights[:, used] @ resampled.reshape(used.size, h * w)).reshape(t_out, h, w)
        masks.append(mask)
    _normalise(tensor, masks, spec.percentiles)
    return tensor


def _normalise(tensor: np.ndarray, masks: list[np.ndarray | None], percentiles: tuple[float, float]) -> None:
    """In place: map the tensor's own low/high percentiles (over pixels inside the source images) to 0/1."""
    if any(m is not None for m in masks):
        full = np.stack([np.ones(tensor.shape[2:], bool) if m is None else m for m in masks])
        values = tensor[:, full]
    else:
        full = None
        values = tensor.reshape(-1)
    if values.size == 0:
        raise PreprocessError("field of view does not overlap any of the images")
    lo, hi = _percentiles(values, percentiles)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise PreprocessError("pixel values are not finite")
    span = hi - lo
    if span <= 0:
        tensor.fill(0.0)  # a constant image carries nothing; do not divide by zero
    else:
        tensor -= np.float32(lo)
        tensor *= np.float32(1.0 / span)
        np.clip(tensor, 0.0, 1.0, out=tensor)
    if full is not None:
        tensor[:, ~full] = 0.0


def _percentiles(values: np.ndarray, percentiles: tuple[float, float]) -> tuple[float, float]:
    """np.percentile's default (linear) method with one partition pass instead of one per order statistic."""
    n = values.size
    pos = np.asarray(percentiles, dtype=np.float64) / 100.0 * (n - 1)
    below = np.floor(pos).astype(np.intp)
    above = np.minimum(below + 1, n - 1)
    part = np.partition(values.ravel(), np.unique(np.concatenate([below, above])))
    lo_hi = part[below].astype(np.float64) * (1.0 - (pos - below)) + part[above].astype(np.float64) * (pos - below)
    return float(lo_hi[0]), float(lo_hi[1])


def series_to_tensor(frames: Sequence[Frame], spec: PreprocessSpec) -> np.ndarray:
    """The model input (T, C, H, W) float32 for one cine short-axis stack; pixels are read from the files."""
    shapes = [(f.pixels.rows, f.pixels.columns) for f in frames]
    plan = plan_stack(frames, shapes, spec)
    return _render(plan, lambda i, out: _load_into(frames[i].pixels, out), spec)


def stack_from_arrays(frames: Sequence[ArrayFrame], spec: PreprocessSpec) -> np.ndarray:
    """Same as `series_to_tensor` for in-memory images (training, synthetic data)."""
    arrays = [np.asarray(f.pixels, dtype=np.float32) for f in frames]
    for i, a in enumerate(arrays):
        if a.ndim != 2:
            raise PreprocessError(f"frame {i} pixels must be 2D (rows, columns), got shape {a.shape}")
    plan = plan_stack(frames, [a.shape for a in arrays], spec)
    return _render(plan, _copy_from(arrays), spec)


def _copy_from(arrays: Sequence[np.ndarray]) -> Callable[[int, np.ndarray], None]:
    def load(i: int, out: np.ndarray) -> None:
        out[...] = arrays[i]

    return load


def prepare(series: CompleteSeries, spec: PreprocessSpec) -> PreparedSeries:
    start = time.perf_counter()
    tensor = series_to_tensor(series.frames, spec)
    elapsed = (time.perf_counter() - start) * 1000.0
    return PreparedSeries(info=series.info, tensor=tensor, timings_ms={"preprocess": elapsed})
