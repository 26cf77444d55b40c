"""In-plane resampling onto the model's field of view: bilinear, separable, pixels outside the source masked."""

from __future__ import annotations

import functools

import numpy as np

from appliance.preprocess.spec import PreprocessSpec


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
