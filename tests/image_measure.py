"""Measuring synthetic images in tests."""

from __future__ import annotations

import numpy as np


def flood(mask: np.ndarray, seed: tuple[int, int]) -> np.ndarray:
    """4-connected component of ``mask`` containing ``seed``."""
    region = np.zeros_like(mask)
    region[seed] = mask[seed]
    while True:
        grown = region.copy()
        grown[1:] |= region[:-1]
        grown[:-1] |= region[1:]
        grown[:, 1:] |= region[:, :-1]
        grown[:, :-1] |= region[:, 1:]
        grown &= mask
        if np.array_equal(grown, region):
            return region
        region = grown
