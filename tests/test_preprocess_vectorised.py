"""The vectorised tensor (slices loaded as stacks, phases blended from the two each output frame weights) against
the implementation it replaced, kept here as the reference: frame by frame, a matrix product over every phase. On
real synthetic series of each vendor profile, written as a scanner writes them and read through the appliance's
own reader: the same tensor within float32 rounding, and the same scores from the reference bundle."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from appliance.bundle import load_bundle
from appliance.config import DEFAULT_BUNDLE
from appliance.dev.synth import iter_instances, plan_study, write_instance
from appliance.handovers import Frame
from appliance.inference import create_backend
from appliance.ingest.reader import read_instance
from appliance.preprocess import PreprocessSpec, plan_stack, resample_images, series_to_tensor
from appliance.preprocess.pixels import load_into, load_stack
from appliance.preprocess.tensor import _normalise
from appliance.scoring import ScoringPolicy, score_batch


def reference_tensor(frames: Sequence[Frame], spec: PreprocessSpec) -> np.ndarray:
    """The tensor as the appliance made it before the burst work (commit ec19c4e's _render)."""
    plan = plan_stack(frames, [(f.pixels.rows, f.pixels.columns) for f in frames], spec)
    t_out, channels, h, w = spec.tensor_shape
    tensor = np.empty((t_out, channels, h, w), dtype=np.float32)
    masks = []
    for c, sp in enumerate(plan.picked):
        weights = sp.phase_weights
        used = np.flatnonzero(np.abs(weights).sum(axis=0) > 0)
        stack = np.empty((used.size, sp.shape[0], sp.shape[1]), dtype=np.float32)
        for j, p in enumerate(used):
            load_into(frames[sp.frame_indices[p]].pixels, stack[j])
        resampled, mask = resample_images(stack, sp.pixel_spacing, spec)
        tensor[:, c] = (weights[:, used] @ resampled.reshape(used.size, h * w)).reshape(t_out, h, w)
        masks.append(mask)
    _normalise(tensor, masks, spec.percentiles)
    return tensor


@pytest.fixture(scope="module")
def series(tmp_path_factory) -> dict[str, list[Frame]]:
    """One cine stack per vendor profile (A explicit VR, B implicit VR, C with a rescale slope and intercept)."""
    out = {}
    for k, vendor in enumerate("ABC"):
        root = tmp_path_factory.mktemp(f"vendor{vendor}")
        plan = plan_study(seed=4100 + k, vendor=vendor, n_slices=10, n_phases=20 + 5 * k)
        paths = [write_instance(inst, root, mode="rename") for inst in iter_instances(plan)
                 if inst.series_role == "cine_sax"]
        out[vendor] = [f for p in paths for f in read_instance(str(p), settled=True).frames]
    return out


@pytest.mark.parametrize("vendor", "ABC")
def test_the_tensor_is_the_reference_within_float32_rounding(series, vendor):
    spec = load_bundle(DEFAULT_BUNDLE).preprocess
    frames = series[vendor]
    new, old = series_to_tensor(frames, spec), reference_tensor(frames, spec)
    assert new.dtype == old.dtype == np.float32 and new.shape == old.shape
    np.testing.assert_allclose(new, old, rtol=0, atol=4 * np.finfo(np.float32).eps)
    assert np.array_equal(new == 0, old == 0)  # the same pixels masked outside the images


def test_a_spec_with_more_frames_than_phases_and_other_fractions_agrees_too(series):
    spec = PreprocessSpec(frames=40, size=(48, 56), fov_mm=260.0, slice_fractions=(0.0, 0.3, 0.6, 1.0))
    frames = series["C"]
    np.testing.assert_allclose(series_to_tensor(frames, spec), reference_tensor(frames, spec), rtol=0,
                               atol=4 * np.finfo(np.float32).eps)


@pytest.mark.parametrize("vendor", "ABC")
def test_a_stack_loads_as_frame_by_frame_bit_for_bit(series, vendor):
    refs = [f.pixels for f in series[vendor][:25]]
    stack = np.empty((len(refs), refs[0].rows, refs[0].columns), dtype=np.float32)
    load_stack(refs, stack)
    for ref, plane in zip(refs, stack, strict=True):
        one = np.empty_like(plane)
        load_into(ref, one)
        assert np.array_equal(one, plane)
    if vendor == "C":
        assert any(r.rescale_slope != 1.0 or r.rescale_intercept != 0.0 for r in refs)  # the rescale is exercised


def test_the_scores_do_not_change(series):
    bundle = load_bundle(DEFAULT_BUNDLE)
    backend = create_backend("onnxruntime", bundle, max_batch=6)
    try:
        new = np.stack([series_to_tensor(f, bundle.preprocess) for f in series.values()])
        old = np.stack([reference_tensor(f, bundle.preprocess) for f in series.values()])
        emb_new, emb_old = backend.infer(new), backend.infer(old)
    finally:
        backend.close()
    np.testing.assert_allclose(emb_new, emb_old, rtol=0, atol=1e-5)
    policy = ScoringPolicy()
    for a, b in zip(score_batch(emb_new, bundle.label_bank, policy), score_batch(emb_old, bundle.label_bank, policy),
                    strict=True):
        assert [f.positive for f in a.findings] == [f.positive for f in b.findings]
        assert a.needs_review == b.needs_review
        np.testing.assert_allclose([f.score for f in a.findings], [f.score for f in b.findings], rtol=0, atol=1e-5)


def test_a_short_file_is_a_preprocess_error_on_the_stack_path(series, tmp_path):
    import dataclasses
    import shutil

    from appliance.preprocess import PreprocessError

    refs = [f.pixels for f in series["A"][:3]]
    cut = tmp_path / "cut.dcm"
    shutil.copyfile(refs[1].path, cut)
    with open(cut, "r+b") as fh:
        fh.truncate(refs[1].offset + 10)
    refs[1] = dataclasses.replace(refs[1], path=str(cut))
    with pytest.raises(PreprocessError, match="file too short"):
        load_stack(refs, np.empty((3, refs[0].rows, refs[0].columns), dtype=np.float32))
