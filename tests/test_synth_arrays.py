"""Training fast path: cine frames and model tensors straight from a plan must equal what the DICOM files give."""

from __future__ import annotations

import numpy as np
import pytest

import appliance.dev.synth.arrays as arrays
from appliance.dev.synth import iter_instances, plan_study
from appliance.dev.synth.arrays import cine_frames, cine_geometry, needed_frames, study_tensor
from appliance.preprocess import ArrayFrame, PreprocessSpec, plan_stack, stack_from_arrays

SPEC = PreprocessSpec(frames=16, size=(64, 64), fov_mm=200.0)
SMALL = {"n_slices": 5, "n_phases": 6, "matrix": (48, 56)}


def dicom_frames(plan) -> list[ArrayFrame]:
    """The reference: what the appliance would read back from the files, frame by frame."""
    out = []
    for inst in iter_instances(plan):
        if inst.series_role != "cine_sax":
            continue
        ds = inst.dataset
        slope, intercept = float(ds.get("RescaleSlope", 1.0)), float(ds.get("RescaleIntercept", 0.0))
        pixels = (ds.pixel_array.astype(np.float64) * slope + intercept).astype(np.float32)
        out.append(ArrayFrame(pixels, tuple(float(x) for x in ds.ImagePositionPatient),
                              tuple(float(x) for x in ds.ImageOrientationPatient),
                              tuple(float(x) for x in ds.PixelSpacing), float(ds.TriggerTime)))
    return out


@pytest.mark.parametrize("vendor", ["A", "B", "C"])
def test_cine_frames_equal_the_dicom_frames(vendor):
    plan = plan_study(21, vendor, condition="hcm", **SMALL)
    ref, fast = dicom_frames(plan), cine_frames(plan)
    assert len(fast) == len(ref) == plan.n_slices * plan.n_phases
    for r, f in zip(ref, fast, strict=True):
        assert f.pixels.dtype == np.float32
        np.testing.assert_array_equal(f.pixels, r.pixels)
        assert (f.position, f.orientation, f.pixel_spacing, f.trigger_time) == (
            r.position, r.orientation, r.pixel_spacing, r.trigger_time)


@pytest.mark.parametrize("vendor,seed", [("A", 3), ("B", 4), ("C", 5)])
def test_study_tensor_equals_the_dicom_path(vendor, seed):
    plan = plan_study(seed, vendor)  # the vendor's real matrix, slice and phase counts
    expected = stack_from_arrays(dicom_frames(plan), SPEC)
    got = study_tensor(plan, SPEC)
    assert got.shape == SPEC.tensor_shape and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    assert expected.std() > 0.05  # a real image, not an all-zero tensor that would match anything


def test_other_specs_and_slice_subsets():
    plan = plan_study(8, "C", condition="dcm", **SMALL)
    every = cine_frames(plan)
    spec = PreprocessSpec(frames=9, size=(40, 32), fov_mm=120.0, slice_fractions=(0.0, 0.4, 1.0))
    np.testing.assert_allclose(study_tensor(plan, spec), stack_from_arrays(every, spec), rtol=0, atol=1e-6)
    some = cine_frames(plan, [3, 1])
    expected = [f for f, g in zip(every, cine_geometry(plan), strict=True) if g.slice_index in (1, 3)]
    assert len(some) == len(expected) == 2 * plan.n_phases
    for a, b in zip(some, expected, strict=True):
        np.testing.assert_array_equal(a.pixels, b.pixels)
        assert a.position == b.position and a.trigger_time == b.trigger_time
    with pytest.raises(ValueError):
        cine_frames(plan, [plan.n_slices])


def test_geometry_plans_like_the_full_stack():
    plan = plan_study(2, "B")
    geometry = cine_geometry(plan)
    frames = cine_frames(plan, [])  # no pixels rendered
    assert frames == []
    by_geometry = plan_stack(geometry, [g.shape for g in geometry], SPEC)
    # the preprocessing orders base -> apex whatever the vendor's disk order and normal sign
    picked = [geometry[sp.frame_indices[0]].slice_index for sp in by_geometry.picked]
    expected = [int(np.floor(f * (plan.n_slices - 1) + 0.5)) for f in SPEC.slice_fractions]
    assert picked == expected
    assert all(geometry[i].slice_index in picked for i in needed_frames(geometry, SPEC))


def test_only_the_frames_the_preprocessing_reads_are_rendered(monkeypatch):
    plan = plan_study(6, "A")
    calls = []
    real = arrays.render_slice

    def counting(*args, **kwargs):
        calls.append(args[1:3])  # (z_frac, phase_frac)
        return real(*args, **kwargs)

    monkeypatch.setattr(arrays, "render_slice", counting)
    study_tensor(plan, SPEC)
    geometry = cine_geometry(plan)
    assert len(calls) == len(needed_frames(geometry, SPEC))
    assert len(calls) <= 3 * plan.n_phases < len(geometry) / 3
    assert len({z for z, _ in calls}) == 3
