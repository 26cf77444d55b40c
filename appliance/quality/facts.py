"""What the series' headers say, as the gate needs it: phases, slices, and where the heart's axes lie in the image.

Read from the same stack plan the preprocessing makes (no pixels), so the facts describe exactly the slices and
phases that went into the tensor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from appliance.preprocess.geometry import BASE_TO_APEX_LPS, StackPlan, plan_stack
from appliance.preprocess.spec import PreprocessSpec

_ANTERIOR_LPS = np.array([0.0, -1.0, 0.0])


@dataclass(frozen=True)
class SeriesFacts:
    phases: int  # fewest acquired phases (trigger times) among the slices the tensor was made from
    slices: int  # slice positions in the stack
    frames: int  # the model's frames per cycle (the bundle's preprocessing)
    fov_mm: float  # the tensor's field of view
    # The heart's lateral (+u) and inferior (+v) axes as the header places them in the tensor's image plane:
    # unit 2D vectors (along columns, along rows). A header that does not match its pixels shows up as the anatomy
    # lying the other way round.
    lateral_xy: tuple[float, float] = (1.0, 0.0)
    inferior_xy: tuple[float, float] = (0.0, 1.0)


def heart_axes(row_dir: Sequence[float], col_dir: Sequence[float]) -> tuple[tuple[float, float], tuple[float, float]]:
    """The heart's lateral and inferior axes in image coordinates from ImageOrientationPatient alone.

    A short-axis plane is perpendicular to the long axis; the inferior wall faces away from the anterior chest wall
    and the lateral wall towards the patient's left (DICOM LPS: +x left, +y posterior), the convention the
    preprocessing and the synthetic scanner share.
    """
    row = np.asarray(row_dir, dtype=np.float64)
    col = np.asarray(col_dir, dtype=np.float64)
    axis = np.cross(row, col)
    norm = float(np.linalg.norm(axis))
    if norm < 1e-6:
        return (1.0, 0.0), (0.0, 1.0)
    axis /= norm
    if float(axis @ BASE_TO_APEX_LPS) < 0:
        axis = -axis
    anterior = _ANTERIOR_LPS - float(_ANTERIOR_LPS @ axis) * axis
    if float(np.linalg.norm(anterior)) < 1e-6:
        return (1.0, 0.0), (0.0, 1.0)
    inferior = -anterior / np.linalg.norm(anterior)
    lateral = np.cross(axis, inferior)
    if lateral[0] < 0.0:
        lateral = -lateral

    def in_plane(v: np.ndarray) -> tuple[float, float]:
        x, y = float(v @ row), float(v @ col)
        n = math.hypot(x, y) or 1.0
        return x / n, y / n

    return in_plane(lateral), in_plane(inferior)


def series_facts(frames: Sequence[object], shapes: Sequence[tuple[int, int]], spec: PreprocessSpec,
                 plan: StackPlan | None = None) -> SeriesFacts:
    """Facts of a series whose tensor `spec` made (frames: `Frame`s or `ArrayFrame`s, with their pixel shapes);
    `plan`, when the caller already has the stack plan the tensor was rendered from, saves planning it again."""
    if plan is None:
        plan = plan_stack(frames, shapes, spec)  # type: ignore[arg-type]
    mid = plan.picked[len(plan.picked) // 2]
    first = frames[mid.frame_indices[0]]
    orientation = first.orientation  # type: ignore[attr-defined]
    lateral, inferior = heart_axes(orientation[:3], orientation[3:])
    return SeriesFacts(phases=min(len(p.trigger_times) for p in plan.picked), slices=plan.slice_count,
                       frames=spec.frames, fov_mm=spec.fov_mm, lateral_xy=lateral, inferior_xy=inferior)
