"""The quality gate's atlas sampler fills its bilinear samples in two buffers: the correlations must be exactly the
ones of the expression it replaced (one product per corner, summed in order), bit for bit, for the search's and the
refinement's batches alike."""

from __future__ import annotations

import numpy as np

from appliance.quality import atlas
from appliance.quality.gate import _AtlasSampler


def reference_samples(sampler: _AtlasSampler, centres, lateral, inferior) -> np.ndarray:
    """The (M, K, P) samples as the gate computed them before (ec19c4e)."""
    h, w = sampler._h, sampler._w
    px = centres[:, :1] + (sampler._u * lateral[:, :1] + sampler._v * inferior[:, :1]) / sampler._pixel_mm
    py = centres[:, 1:] + (sampler._u * lateral[:, 1:] + sampler._v * inferior[:, 1:]) / sampler._pixel_mm
    valid = (px >= 0) & (px <= w - 1) & (py >= 0) & (py <= h - 1)
    x0 = np.clip(np.floor(px).astype(np.intp), 0, w - 2)
    y0 = np.clip(np.floor(py).astype(np.intp), 0, h - 2)
    fx = np.clip(px - x0, 0, 1).astype(np.float32)
    fy = np.clip(py - y0, 0, 1).astype(np.float32)
    idx = y0 * w + x0
    m = sampler._maps
    a = np.take(m, idx, axis=1) * ((1 - fx) * (1 - fy) * valid)
    a += np.take(m, idx + 1, axis=1) * (fx * (1 - fy) * valid)
    a += np.take(m, idx + w, axis=1) * ((1 - fx) * fy * valid)
    a += np.take(m, idx + w + 1, axis=1) * (fx * fy * valid)
    return a


def test_the_correlations_are_the_replaced_expressions_bit_for_bit(monkeypatch):
    rng = np.random.default_rng(7)
    slices = next(c for c in range(3, 20) if atlas.maps(c) is not None)
    mean = rng.random((slices, 48, 48)).astype(np.float32)
    sd = rng.random((slices, 48, 48)).astype(np.float32)
    sampler = _AtlasSampler(mean, sd, atlas.maps(slices), pixel_mm=3.1)
    captured: dict[str, np.ndarray] = {}
    real_einsum = np.einsum

    def spy(spec, *ops, **kw):
        if spec == "mkp,mkp->mk":
            captured["a"] = ops[0].copy()
        return real_einsum(spec, *ops, **kw)

    for k in (392, 72):  # the search's batch (8 orientations x 49 positions) and the refinement's
        centres = rng.uniform(-5, 53, (k, 2))  # some grids run off the image
        angle = rng.uniform(0, 2 * np.pi, k)
        lateral = np.stack([np.cos(angle), np.sin(angle)], axis=1)
        inferior = np.stack([-np.sin(angle), np.cos(angle)], axis=1) * rng.choice([-1, 1], (k, 1))
        got = sampler.correlations(centres, lateral, inferior)
        expected_samples = reference_samples(sampler, centres, lateral, inferior)
        monkeypatch.setattr(np, "einsum", spy)
        again = sampler.correlations(centres, lateral, inferior)
        monkeypatch.setattr(np, "einsum", real_einsum)
        assert np.array_equal(captured["a"], expected_samples)  # the samples themselves, bit for bit
        assert np.array_equal(got, again) and np.isfinite(got).all()
