"""Synthetic case mix: which condition a case has, how severe, and the heart parameters that show it.

Severity is continuous in [0, 1] so that a cohort spans borderline to florid cases rather than caricatures.
Overlaps (RV involvement in DCM/ICM, a small effusion with amyloid) are sampled here and end up in the params,
which stay the single source of truth; ``findings`` reads the visible abnormalities back out of them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from appliance.dev.synth.phantom import HeartParams

CONDITIONS = ("normal", "dcm", "icm", "hcm", "amyloid", "rv_dysfunction", "effusion")

# Rough referral mix of a CMR service (research appliance demo, not epidemiology).
DEFAULT_MIX: Mapping[str, float] = {
    "normal": 0.40,
    "dcm": 0.15,
    "icm": 0.20,
    "hcm": 0.10,
    "amyloid": 0.03,
    "rv_dysfunction": 0.07,
    "effusion": 0.05,
}

FINDINGS = (
    "lv_dilated",
    "lv_systolic_dysfunction",
    "regional_wall_motion_abnormality",
    "asymmetric_septal_hypertrophy",
    "concentric_lv_thickening",
    "rv_dilated",
    "rv_systolic_dysfunction",
    "pericardial_effusion",
)


def sample_severity(rng: np.random.Generator) -> float:
    """Severity in [0, 1], weighted away from the extremes (Beta(2, 2))."""
    return float(rng.beta(2.0, 2.0))


def sample_condition(rng: np.random.Generator, mix: Mapping[str, float] | None = None) -> str:
    mix = DEFAULT_MIX if mix is None else mix
    unknown = set(mix) - set(CONDITIONS)
    if unknown:
        raise ValueError(f"unknown conditions in mix: {sorted(unknown)}")
    names = list(mix)
    weights = np.asarray([mix[n] for n in names], dtype=float)
    if np.any(weights < 0) or weights.sum() <= 0:
        raise ValueError("mix weights must be non-negative and not all zero")
    return names[int(rng.choice(len(names), p=weights / weights.sum()))]


def _normal(rng: np.random.Generator) -> HeartParams:
    return HeartParams(
        lv_edd_radius_mm=float(np.clip(rng.normal(23.0, 1.2), 20.5, 25.5)),
        lv_ef=float(rng.uniform(0.56, 0.70)),
        lv_wall_mm=float(np.clip(rng.normal(8.0, 0.6), 6.8, 9.5)),
        septal_extra_mm=float(rng.uniform(0.0, 1.0)),
        rv_scale=float(rng.uniform(0.9, 1.1)),
        rv_ef=float(rng.uniform(0.50, 0.65)),
        rv_wall_mm=float(rng.uniform(3.0, 4.0)),
        long_axis_mm=float(np.clip(rng.normal(90.0, 5.0), 78.0, 102.0)),
        heart_rate_bpm=float(rng.uniform(55.0, 85.0)),
        myocardial_signal=float(rng.uniform(0.22, 0.28)),
        anatomy_seed=int(rng.integers(0, 2**31 - 1)),
    )


def _rv_involvement(rng: np.random.Generator, s: float) -> dict[str, float]:
    return {"rv_scale": float(1.15 + 0.35 * s + rng.uniform(0.0, 0.1)),
            "rv_ef": float(0.42 - 0.15 * s + rng.uniform(-0.03, 0.03))}


def sample_params(condition: str, rng: np.random.Generator, severity: float | None = None) -> HeartParams:
    """Heart parameters for a case of ``condition``; severity in [0, 1] (sampled when None, ignored for normal)."""
    if condition not in CONDITIONS:
        raise ValueError(f"unknown condition {condition!r}; expected one of {CONDITIONS}")
    s = sample_severity(rng) if severity is None else float(severity)
    if not 0.0 <= s <= 1.0:
        raise ValueError(f"severity {s} outside [0, 1]")
    base = _normal(rng)

    def j(scale: float) -> float:
        return float(rng.uniform(-scale, scale))

    changes: dict[str, Any] = {}
    if condition == "dcm":
        changes = {
            "lv_edd_radius_mm": 27.0 + 8.0 * s + j(1.0),
            "lv_ef": 0.44 - 0.30 * s + j(0.03),
            "lv_wall_mm": 7.8 - 1.8 * s + j(0.4),
            "heart_rate_bpm": float(rng.uniform(65.0, 95.0)),
        }
        if rng.random() < 0.35 * s + 0.05:
            changes.update(_rv_involvement(rng, s))
        if rng.random() < 0.3:
            changes["lge_pattern"] = "midwall"
    elif condition == "icm":
        territory = str(rng.choice(["LAD", "RCA", "LCX"], p=[0.5, 0.3, 0.2]))
        changes = {
            "akinetic_territory": territory,
            "akinetic_extent": 0.35 + 0.65 * s,
            "akinetic_thinning": 0.2 + 0.45 * s + j(0.05),
            "lv_ef": 0.52 - 0.27 * s + j(0.03),
            "lv_edd_radius_mm": 24.0 + 5.0 * s + j(1.0),
            "lge_pattern": "ischemic",
            "scar_transmurality": float(np.clip(0.3 + 0.7 * s + j(0.1), 0.1, 1.0)),
        }
        # inferior infarcts often take the RV with them (proximal RCA)
        if rng.random() < (0.35 if territory == "RCA" else 0.08):
            changes.update(_rv_involvement(rng, s))
    elif condition == "hcm":
        changes = {
            "septal_extra_mm": 5.0 + 10.0 * s + j(0.8),
            "lv_wall_mm": 9.0 + 2.0 * s + j(0.5),
            "lv_edd_radius_mm": 21.0 - 4.0 * s + j(0.8),
            "lv_ef": 0.68 + 0.07 * s + j(0.02),
            "lge_pattern": "insertion" if rng.random() < 0.5 + 0.4 * s else "none",
        }
    elif condition == "amyloid":
        changes = {
            "lv_wall_mm": 12.5 + 5.5 * s + j(0.6),
            "septal_extra_mm": float(rng.uniform(0.0, 2.0)),
            "lv_edd_radius_mm": 21.0 - 2.0 * s + j(0.8),
            "lv_ef": 0.56 - 0.22 * s + j(0.03),
            "rv_wall_mm": 5.0 + 3.0 * s + j(0.4),
            "rv_ef": 0.48 - 0.15 * s + j(0.03),
            "effusion_mm": 2.0 + 4.0 * s + j(0.5),
            "myocardial_signal": 0.29 + 0.05 * s,
            "lge_pattern": "diffuse",
        }
    elif condition == "rv_dysfunction":
        changes = {
            "rv_scale": 1.2 + 0.6 * s + j(0.05),
            "rv_ef": 0.42 - 0.27 * s + j(0.03),
            "septal_flattening": float(np.clip(0.9 * s + j(0.1), 0.0, 1.0)),
            "lv_edd_radius_mm": base.lv_edd_radius_mm - 2.0 * s,
        }
    elif condition == "effusion":
        changes = {
            "effusion_mm": 4.0 + 16.0 * s + j(1.0),
            "heart_rate_bpm": float(rng.uniform(70.0, 105.0)),
        }
    return dataclasses.replace(base, **changes)


def findings(params: HeartParams) -> tuple[str, ...]:
    """Visible abnormalities implied by the params, thresholded like a reader would call them."""
    p = params
    out = []
    if p.lv_edd_radius_mm >= 27.5:
        out.append("lv_dilated")
    if p.lv_ef < 0.50:
        out.append("lv_systolic_dysfunction")
    if p.akinetic_territory is not None and p.akinetic_extent > 0.0:
        out.append("regional_wall_motion_abnormality")
    if p.septal_extra_mm >= 4.0 and p.septal_extra_mm >= 0.3 * p.lv_wall_mm:
        out.append("asymmetric_septal_hypertrophy")
    if p.lv_wall_mm >= 12.0:
        out.append("concentric_lv_thickening")
    if p.rv_scale >= 1.15:
        out.append("rv_dilated")
    if p.rv_ef < 0.40:
        out.append("rv_systolic_dysfunction")
    if p.effusion_mm >= 3.0:
        out.append("pericardial_effusion")
    return tuple(out)
