"""Cine short-axis frames straight from a StudyPlan, for training: same pixels and geometry as the DICOM files.

Training needs tens of thousands of studies, and the DICOM path pays for things a training batch never looks at:
the localizer and LGE series, a pydicom dataset per image, and every slice and phase of the cine stack although
the preprocessing keeps three slices and only the phases its time resampling touches. This module renders just
those frames and hands them to the appliance's own `stack_from_arrays`, so the tensor is the one the appliance
would compute from the files (tests compare the two bit for bit).

Exactness rests on replaying what the writer does: the same per-series shading stream, the same per-instance noise
stream (keyed by the instance number, which depends on the vendor's slice order), the same quantisation, and
geometry passed through the same Decimal String formatting the datasets carry.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from appliance.dev.synth.dataset import _ds
from appliance.dev.synth.phantom import render_slice
from appliance.dev.synth.pixels import bias_field, to_stored
from appliance.dev.synth.plan import SeriesPlan, StudyPlan
from appliance.dev.synth.writer import _noise_rng, _slice_order
from appliance.preprocess import ArrayFrame, PreprocessSpec, plan_stack, stack_from_arrays

__all__ = ["CineGeometry", "cine_frames", "cine_geometry", "needed_frames", "study_tensor"]


@dataclass(frozen=True)
class CineGeometry:
    """What one cine instance's header says about where it is, plus which slice/phase of the plan it is.

    Has the attributes `plan_stack` reads, so the preprocessing can be planned before anything is rendered.
    """

    slice_index: int  # anatomical, 0 = base (index into plan.stack.planes)
    phase: int
    instance_number: int
    position: tuple[float, float, float]
    orientation: tuple[float, float, float, float, float, float]
    pixel_spacing: tuple[float, float]
    trigger_time: float | None
    shape: tuple[int, int]


def _cine_series(plan: StudyPlan) -> SeriesPlan:
    series = plan.series_of("cine")
    if series is None:
        raise ValueError("plan has no cine series")
    return series


def _as_read(value: float, digits: int) -> float:
    # the appliance sees the header's decimal string, not the planner's float
    return float(_ds(value, digits))


def _rescale(plan: StudyPlan) -> tuple[float, float]:
    prof = plan.profile
    if prof.rescale_slope is None:
        return 1.0, 0.0
    return float(_ds(prof.rescale_slope)), float(_ds(prof.rescale_intercept or 0.0))


def cine_geometry(plan: StudyPlan) -> list[CineGeometry]:
    """Every cine instance's geometry, in the order the scanner sends them; renders nothing."""
    _cine_series(plan)
    triggers = plan.trigger_times_ms()
    out = []
    number = 0
    for slice_index in _slice_order(plan):
        plane = plan.stack.planes[slice_index]
        x, y, z = (_as_read(c, 4) for c in plane.position)
        r0, r1, r2, c0, c1, c2 = (_as_read(c, 6) for c in plane.orientation)
        position, orientation = (x, y, z), (r0, r1, r2, c0, c1, c2)
        spacing = (_as_read(plane.pixel_spacing[0], 6), _as_read(plane.pixel_spacing[1], 6))
        for phase in range(plan.n_phases):
            number += 1
            out.append(CineGeometry(slice_index, phase, number, position, orientation, spacing,
                                    _as_read(triggers[phase], 2), (plane.rows, plane.cols)))
    return out


class _Renderer:
    """Renders cine frames of one plan; holds the series-wide coil shading so it is drawn once."""

    def __init__(self, plan: StudyPlan) -> None:
        self.plan = plan
        self.series = _cine_series(plan)
        # the writer draws the shading from this stream before any image of the series
        self.bias = bias_field(plan.rows, plan.cols, np.random.default_rng([plan.seed, self.series.series_number, 0]),
                               plan.shading_strength)
        self.slope, self.intercept = _rescale(plan)

    def pixels(self, g: CineGeometry) -> np.ndarray:
        plan, stack = self.plan, self.plan.stack
        plane = stack.planes[g.slice_index]
        image = render_slice(plan.params, plane.sax_level, plan.render_phase(g.slice_index, g.phase), plan.rows,
                             plan.cols, plan.pixel_spacing, plan.render_offset(g.slice_index), stack.rotation_deg,
                             stack.mirror, slab_frac=plan.slab_frac)
        stored = to_stored(image, plan.profile, _noise_rng(plan, self.series, g.instance_number), plan.gain_scale,
                           self.bias, plan.noise_scale)
        out = stored.astype(np.float32)
        # float32 arithmetic, in this order, is what the appliance's frame loader does
        if self.slope != 1.0 or self.intercept != 0.0:
            out *= np.float32(self.slope)
            out += np.float32(self.intercept)
        return out

    def frame(self, g: CineGeometry) -> ArrayFrame:
        return ArrayFrame(self.pixels(g), g.position, g.orientation, g.pixel_spacing, g.trigger_time)


def cine_frames(plan: StudyPlan, slices: Iterable[int] | None = None) -> list[ArrayFrame]:
    """All phases of the given anatomical slice indices (None: every slice), in scanner order, pixels rescaled."""
    geometry = cine_geometry(plan)
    if slices is not None:
        wanted = {int(s) for s in slices}
        bad = sorted(s for s in wanted if not 0 <= s < plan.n_slices)
        if bad:
            raise ValueError(f"slice indices {bad} outside 0..{plan.n_slices - 1}")
        geometry = [g for g in geometry if g.slice_index in wanted]
    renderer = _Renderer(plan)
    return [renderer.frame(g) for g in geometry]


def needed_frames(geometry: Sequence[CineGeometry], spec: PreprocessSpec) -> list[int]:
    """Indices into ``geometry`` of the frames the preprocessing will read for ``spec``, ascending."""
    stack_plan = plan_stack(geometry, [g.shape for g in geometry], spec)
    needed: set[int] = set()
    for picked in stack_plan.picked:
        # same test as the preprocessing uses to skip phases no output frame touches
        used = np.flatnonzero(np.abs(picked.phase_weights).sum(axis=0) > 0)
        needed.update(picked.frame_indices[int(p)] for p in used)
    return sorted(needed)


def study_tensor(plan: StudyPlan, spec: PreprocessSpec) -> np.ndarray:
    """What `stack_from_arrays(cine_frames(plan), spec)` returns, rendering only the frames it reads.

    Frames the preprocessing skips are NaN stand-ins rather than zeros: were a future preprocessing to read them,
    the result would fail loudly (non-finite pixels) instead of being quietly different from the DICOM path.
    """
    geometry = cine_geometry(plan)
    needed = set(needed_frames(geometry, spec))
    renderer = _Renderer(plan)
    frames = []
    for i, g in enumerate(geometry):
        if i in needed:
            frames.append(renderer.frame(g))
        else:
            placeholder = np.broadcast_to(np.float32(np.nan), g.shape)
            frames.append(ArrayFrame(placeholder, g.position, g.orientation, g.pixel_spacing, g.trigger_time))
    return stack_from_arrays(frames, spec)
