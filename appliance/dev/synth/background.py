"""Surroundings of the heart in a short-axis plane: chest wall, subcutaneous fat, lungs, liver, descending aorta.

Kept deliberately low in structure: enough that a model cannot key on a uniform background, not so much that the
phantom pretends to be anatomy it is not. Shapes live in the heart frame (see phantom.py) and are signed distances.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from appliance.dev.synth.phantom import HeartParams, Layer

FAT = 0.78
SOFT_TISSUE = 0.28
LIVER = 0.34
LUNG = 0.05
AORTA = 0.82


def _ellipse(u: np.ndarray, v: np.ndarray, cu: float, cv: float, au: float, av: float) -> np.ndarray:
    """Signed distance to an axis-aligned ellipse, scaled by the smaller semi-axis (good enough away from edges)."""
    f = np.sqrt(((u - cu) / au) ** 2 + ((v - cv) / av) ** 2)
    return (f - 1.0) * np.float32(min(au, av))


def _texture(u: np.ndarray, v: np.ndarray, seed: int) -> np.ndarray:
    """Smooth multiplicative texture from a few seeded plane waves; cheap and free of any FFT/filter dependency."""
    rng = np.random.default_rng([seed, 7919])
    out = np.ones(np.broadcast_shapes(u.shape, v.shape), dtype=np.float32)
    for _ in range(3):
        k = rng.uniform(1.0 / 60.0, 1.0 / 20.0) * 2.0 * np.pi
        ang = rng.uniform(0.0, np.pi)
        phase = rng.uniform(0.0, 2.0 * np.pi)
        out += np.float32(0.05) * np.sin(np.float32(k * np.cos(ang)) * u + np.float32(k * np.sin(ang)) * v
                                         + np.float32(phase))
    return out


def _placement(params: HeartParams) -> tuple[float, ...]:
    """Per-patient jitter of the organs around the heart (mm), seeded by the anatomy: no two chests alike."""
    rng = np.random.default_rng([params.anatomy_seed, 104729])
    return tuple(float(x) for x in rng.uniform(-1.0, 1.0, 8))


def sax_background(params: HeartParams, u: np.ndarray, v: np.ndarray, z_frac: float) -> list[Layer]:
    """Background layers, painted in order; the first two (body, then body minus fat) enclose the heart."""
    z = float(np.clip(z_frac, 0.0, 1.0))
    b = float(params.body_scale)
    j = _placement(params)
    body = _ellipse(u, v, -15.0 * b + 6.0 * j[0], 12.0 + 10.0 * (b - 1.0) + 4.0 * j[1], 165.0 * b, 118.0 * b)
    # subcutaneous fat grows faster than the frame: thin patients have little, large ones a thick bright rim
    fat_mm = float(np.clip(11.0 * b**3 * (1.0 + 0.35 * j[2]), 4.0, 40.0))
    inner = body + np.float32(fat_mm)
    soft = np.float32(SOFT_TISSUE) * _texture(u, v, params.anatomy_seed)
    # the diaphragm and liver rise into view towards the apex, below and to the right of the heart
    liver_top = 85.0 - 40.0 * z + 15.0 * j[3]
    liver = np.maximum(_ellipse(u, v, -70.0 * b, liver_top + 75.0, 115.0 * b, 75.0 * b), inner)
    lung_left = np.maximum(_ellipse(u, v, 80.0 * b + 8.0 * j[4], -12.0, 42.0 * b, 72.0 * b), inner)
    lung_right = np.maximum(_ellipse(u, v, -105.0 * b + 8.0 * j[5], -5.0, 40.0 * b, 75.0 * b), inner)
    aorta_r = 11.0 * b**0.5 * (1.0 + 0.15 * j[6])
    aorta = (np.sqrt((u - np.float32(8.0 + 6.0 * j[7])) ** 2 + (v - np.float32(66.0 * b**0.5)) ** 2)
             - np.float32(aorta_r))
    return [
        (body, FAT),
        (inner, soft),
        (liver, LIVER),
        (lung_left, LUNG),
        (lung_right, LUNG),
        (aorta, AORTA),
    ]
