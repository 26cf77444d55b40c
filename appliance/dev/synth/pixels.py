"""From phantom intensity to the stored pixel values a vendor would write."""

from __future__ import annotations

import numpy as np

from appliance.dev.synth.vendors import VendorProfile


def bias_field(rows: int, cols: int, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """Smooth receive-coil shading: anterior/posterior array elements make intensity drift across the image.

    ``strength`` 1 is a well-placed coil; a few times that is a coil off-centre or a large patient, where the
    signal falls away from the nearest elements (a ramp, a bowl, and a bright spot near one element).
    """
    y = np.linspace(-1.0, 1.0, rows, dtype=np.float32)[:, None]
    x = np.linspace(-1.0, 1.0, cols, dtype=np.float32)[None, :]
    gx, gy = rng.uniform(-0.08, 0.08, 2)
    q = rng.uniform(0.0, 0.1)
    field = 1.0 + np.float32(gx) * x + np.float32(gy) * y + np.float32(q) * (y * y)
    if strength == 1.0:
        return np.clip(field, 0.75, 1.25).astype(np.float32)
    k = np.float32(strength)
    cx, cy = rng.uniform(-0.8, 0.8, 2)
    amp, width = rng.uniform(0.0, 0.12), rng.uniform(0.35, 0.8)
    spot = np.exp(-((x - np.float32(cx)) ** 2 + (y - np.float32(cy)) ** 2) / np.float32(2.0 * width * width))
    field = 1.0 + k * (field - 1.0) + k * np.float32(amp) * (spot - np.float32(0.5))
    return np.clip(field, 0.5, 1.6).astype(np.float32)


def to_stored(intensity: np.ndarray, vendor: VendorProfile, rng: np.random.Generator, gain_scale: float = 1.0,
              bias: np.ndarray | None = None, noise_scale: float = 1.0) -> np.ndarray:
    """Magnitude image with Rician noise, quantised to the vendor's stored range (uint16).

    Noise is added to both channels of a complex signal and the magnitude taken, which gives the Rician floor in
    air and the near-Gaussian noise in tissue that real magnitude images have. ``noise_scale`` is the study's
    SNR relative to the vendor's nominal one (patient size, coil, parallel-imaging factor).
    """
    gain = np.float32(vendor.gain * gain_scale)
    real = intensity.astype(np.float32, copy=False) * gain
    if bias is not None:
        real = real * bias
    sigma = np.float32(vendor.noise_sigma * noise_scale * vendor.gain * gain_scale)
    noise = rng.standard_normal((2, *intensity.shape), dtype=np.float32)
    noise *= sigma
    noise[0] += real
    magnitude = np.sqrt(noise[0] * noise[0] + noise[1] * noise[1])
    slope = vendor.rescale_slope if vendor.rescale_slope is not None else 1.0
    intercept = vendor.rescale_intercept if vendor.rescale_intercept is not None else 0.0
    stored = np.rint((magnitude - np.float32(intercept)) / np.float32(slope))
    return np.clip(stored, 0, vendor.max_stored).astype(np.uint16)
