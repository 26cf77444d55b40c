"""Synthetic studies as model input tensors, through the appliance's own preprocessing (no files on disk).

Training and calibration call exactly the code the appliance runs: the synthetic scanner's datasets become
`ArrayFrame`s with their DICOM geometry, and `stack_from_arrays` makes the tensor `series_to_tensor` would.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from appliance.dev.synth import StudyPlan, iter_instances, plan_study
from appliance.preprocess import ArrayFrame, PreprocessSpec, stack_from_arrays


def cine_frames(plan: StudyPlan) -> list[ArrayFrame]:
    frames = []
    for inst in iter_instances(plan):
        if inst.series_role != "cine_sax":
            continue
        ds = inst.dataset
        pixels = ds.pixel_array.astype(np.float32) * float(ds.get("RescaleSlope", 1.0)) + float(
            ds.get("RescaleIntercept", 0.0))
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        r0, r1, r2, c0, c1, c2 = (float(v) for v in ds.ImageOrientationPatient)
        rows, cols = (float(v) for v in ds.PixelSpacing)
        frames.append(ArrayFrame(pixels=pixels, position=(x, y, z), orientation=(r0, r1, r2, c0, c1, c2),
                                 pixel_spacing=(rows, cols),
                                 trigger_time=float(ds.TriggerTime)))
    return frames


def study_tensor(plan: StudyPlan, spec: PreprocessSpec) -> np.ndarray:
    return stack_from_arrays(cine_frames(plan), spec)


def cohort_tensors(n: int, seed: int, spec: PreprocessSpec, vendors: Sequence[str] = ("A", "B")) -> np.ndarray:
    """(n, T, C, H, W) for n synthetic studies, conditions from the default mix, vendors in turn."""
    plans = [plan_study(seed=seed + i, vendor=vendors[i % len(vendors)]) for i in range(n)]
    return np.stack([study_tensor(p, spec) for p in plans])
