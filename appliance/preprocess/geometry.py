"""The stack from the frames' geometry alone: slices ordered base to apex, the base, mid and apex slices picked,
and the weights that bring each slice's phases onto the model's cardiac-cycle grid."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from appliance.preprocess.spec import PreprocessError, PreprocessSpec

# Heart long axis, base -> apex, in DICOM patient coordinates (LPS): towards the patient's left, anterior (-P) and
# inferior (-S). Only its sign relative to the slice normal is used, so the exact angle does not matter.
BASE_TO_APEX_LPS = np.array([1.0, -1.0, -1.0]) / math.sqrt(3.0)

SLICE_TOLERANCE_MM = 0.5
# cos(2.5 degrees): scanners write parallel stacks with identical orientations, so anything beyond rounding noise
# means the frames do not form one stack.
PARALLEL_COS = math.cos(math.radians(2.5))


class _FrameGeometry(Protocol):
    """What planning reads of a frame: a Frame from the spool or an ArrayFrame in memory."""

    @property
    def position(self) -> tuple[float, float, float]: ...
    @property
    def orientation(self) -> tuple[float, float, float, float, float, float]: ...
    @property
    def pixel_spacing(self) -> tuple[float, float]: ...
    @property
    def trigger_time(self) -> float | None: ...


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

    def used_phases(self) -> np.ndarray:
        """Positions in frame_indices that some output time point draws on; the others are never read."""
        return np.flatnonzero(np.abs(self.phase_weights).sum(axis=0) > 0)


@dataclass(frozen=True)
class StackPlan:
    slice_count: int
    slice_positions_mm: tuple[float, ...]  # along the base -> apex axis, ascending
    picked: tuple[SlicePlan, ...]  # one per channel

    def used_frames(self) -> list[int]:
        """Indices into the series' frames that the model tensor is made of, channel by channel, each once."""
        return list(dict.fromkeys(sp.frame_indices[p] for sp in self.picked for p in sp.used_phases()))


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
        s = math.floor(fraction * (len(groups) - 1) + 0.5)
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
