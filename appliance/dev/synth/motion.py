"""Timing of the cardiac cycle: how far the ventricles have contracted at a point of the R-R interval.

One shared curve drives both ventricles so that end-diastole and end-systole fall on the same cine phases.
"""

from __future__ import annotations

import math


def end_systole_fraction(heart_rate_bpm: float) -> float:
    """Fraction of the R-R interval at which end-systole falls.

    Systole shortens much less than diastole as the rate rises, so end-systole moves later in the cycle with
    tachycardia (square-root dependence, as in Bazett-style QT scaling).
    """
    return float(min(0.48, max(0.28, 0.35 * math.sqrt(heart_rate_bpm / 70.0))))


def contraction(phase_frac: float, es_frac: float) -> float:
    """Contraction state in [0, 1]: 0 at end-diastole (phase 0), 1 at end-systole.

    Diastole is split into rapid filling, diastasis and the atrial kick, which is what gives a cine volume curve
    its characteristic asymmetric shape; a plain sinusoid would make every study look the same.
    """
    p = phase_frac % 1.0
    if p <= es_frac:
        return 0.5 * (1.0 - math.cos(math.pi * p / es_frac))
    d = (p - es_frac) / (1.0 - es_frac)
    if d < 0.35:
        return 0.25 + 0.375 * (1.0 + math.cos(math.pi * d / 0.35))
    if d < 0.75:
        return 0.25 - 0.07 * (d - 0.35) / 0.4
    return 0.09 * (1.0 + math.cos(math.pi * (d - 0.75) / 0.25))
