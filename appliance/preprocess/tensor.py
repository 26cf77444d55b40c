"""The model tensor assembled: planned slices and phases loaded, resampled, interpolated in time and normalised
by percentiles of the whole tensor."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import numpy as np

from appliance.handovers import CompleteSeries, Frame, PreparedSeries
from appliance.preprocess.geometry import ArrayFrame, StackPlan, plan_stack
from appliance.preprocess.pixels import load_stack
from appliance.preprocess.resample import resample_images
from appliance.preprocess.spec import PreprocessError, PreprocessSpec


def _render(plan: StackPlan, load: Callable[[Sequence[int], np.ndarray], None], spec: PreprocessSpec) -> np.ndarray:
    """`load(indices, out)` fills out (n, rows, columns) with those input frames' pixels."""
    t_out, channels, h, w = spec.tensor_shape
    tensor = np.empty((t_out, channels, h, w), dtype=np.float32)
    masks: list[np.ndarray | None] = []
    for c, sp in enumerate(plan.picked):
        weights = sp.phase_weights
        used = sp.used_phases()  # phases no output frame touches are never read
        stack = np.empty((used.size, sp.shape[0], sp.shape[1]), dtype=np.float32)
        load([sp.frame_indices[p] for p in used], stack)
        resampled, mask = resample_images(stack, sp.pixel_spacing, spec)
        tensor[:, c] = _blend_phases(weights[:, used], resampled.reshape(used.size, h * w)).reshape(t_out, h, w)
        masks.append(mask)
    _normalise(tensor, masks, spec.percentiles)
    return tensor


def _blend_phases(weights: np.ndarray, phases: np.ndarray) -> np.ndarray:
    """weights (T, P) @ phases (P, N), from the few phases each output frame weights (two: linear
    interpolation in time) rather than a matrix product. The product went to BLAS, whose threads, on a loaded
    2-core appliance sharing the CPU with ONNX Runtime's, cost more than all the rest of the tensor; the result is
    the same to float32 rounding (a product may sum in another order, or fused)."""
    k = max(int((weights != 0).sum(axis=1).max()), 1)
    cols = np.argsort(weights == 0, axis=1, kind="stable")[:, :k]  # each row's weighted phases first
    taken = np.take_along_axis(weights, cols, axis=1)  # (T, k); 0 where a row weights fewer than k
    out = phases[cols[:, 0]] * taken[:, :1]
    for j in range(1, k):
        out += phases[cols[:, j]] * taken[:, j:j + 1]
    return out


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


def series_to_tensor(frames: Sequence[Frame], spec: PreprocessSpec, plan: StackPlan | None = None) -> np.ndarray:
    """The model input (T, C, H, W) float32 for one cine short-axis stack; pixels are read from the files.
    `plan`: the stack plan, when the caller made it already (the quality gate reads it too)."""
    if plan is None:
        plan = plan_stack(frames, [(f.pixels.rows, f.pixels.columns) for f in frames], spec)
    return _render(plan, lambda indices, out: load_stack([frames[i].pixels for i in indices], out), spec)


def stack_from_arrays(frames: Sequence[ArrayFrame], spec: PreprocessSpec) -> np.ndarray:
    """Same as `series_to_tensor` for in-memory images (training, synthetic data)."""
    arrays = [np.asarray(f.pixels, dtype=np.float32) for f in frames]
    for i, a in enumerate(arrays):
        if a.ndim != 2:
            raise PreprocessError(f"frame {i} pixels must be 2D (rows, columns), got shape {a.shape}")
    plan = plan_stack(frames, [a.shape for a in arrays], spec)
    return _render(plan, _copy_from(arrays), spec)


def _copy_from(arrays: Sequence[np.ndarray]) -> Callable[[Sequence[int], np.ndarray], None]:
    def load(indices: Sequence[int], out: np.ndarray) -> None:
        for j, i in enumerate(indices):
            out[j] = arrays[i]

    return load


def prepare(series: CompleteSeries, spec: PreprocessSpec, plan: StackPlan | None = None) -> PreparedSeries:
    start = time.perf_counter()
    tensor = series_to_tensor(series.frames, spec, plan)
    elapsed = (time.perf_counter() - start) * 1000.0
    return PreparedSeries(info=series.info, tensor=tensor, timings_ms={"preprocess": elapsed},
                          instance_paths=tuple(series.instance_paths))
