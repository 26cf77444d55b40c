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
    """A normal heart of a patient of some build: cavity, walls and RV scale with body size, so a large normal
    heart is as big as a mildly dilated one and a small patient's walls as thin as a thinned infarct's rim.
    Every value stays on the normal side of the reader's cut-offs in ``findings``, some of them just."""
    body = float(np.clip(rng.normal(1.0, 0.09), 0.8, 1.22))
    return HeartParams(
        lv_edd_radius_mm=float(np.clip(23.0 * body + rng.normal(0.0, 1.2), 19.0, 27.3)),
        lv_ef=float(rng.uniform(0.52, 0.72)),
        lv_wall_mm=float(np.clip(8.3 * body**0.7 + rng.normal(0.0, 1.0), 6.0, 11.2)),
        septal_extra_mm=float(rng.uniform(0.0, 2.8)),
        rv_scale=float(np.clip(body * rng.uniform(0.9, 1.06), 0.8, 1.13)),
        rv_ef=float(rng.uniform(0.44, 0.66)),
        rv_wall_mm=float(rng.uniform(2.5, 4.5)),
        effusion_mm=float(rng.uniform(0.0, 2.6)) if rng.random() < 0.4 else 0.0,  # physiological fluid
        long_axis_mm=float(np.clip(rng.normal(90.0 * body, 6.0), 70.0, 112.0)),
        heart_rate_bpm=float(rng.uniform(50.0, 100.0)),
        myocardial_signal=float(rng.uniform(0.18, 0.32)),
        anatomy_seed=int(rng.integers(0, 2**31 - 1)),
        body_scale=body,
        blood_signal=float(rng.uniform(0.6, 0.98)),
        # most adults have some; heavier patients more (it is what reports never mention)
        epicardial_fat_mm=float(np.clip(rng.gamma(2.0, 2.2) * body**2, 0.0, 14.0)),
        effusion_signal=float(rng.uniform(0.55, 0.9)),
        blood_inhomogeneity=float(rng.uniform(0.0, 0.45)),
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
            "lv_edd_radius_mm": 25.5 + 9.5 * s + j(1.2),
            "lv_ef": 0.47 - 0.32 * s + j(0.02),
            "lv_wall_mm": float(np.clip(base.lv_wall_mm - 2.0 * s + j(0.5), 5.0, 11.0)),
            "heart_rate_bpm": float(rng.uniform(60.0, 110.0)),
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
            "akinetic_thinning": 0.1 + 0.5 * s + j(0.05),
            "lv_ef": 0.53 - 0.28 * s + j(0.03),
            "lv_edd_radius_mm": base.lv_edd_radius_mm + 5.0 * s + j(1.0),
            "lge_pattern": "ischemic",
            "scar_transmurality": float(np.clip(0.3 + 0.7 * s + j(0.1), 0.1, 1.0)),
        }
        # inferior infarcts often take the RV with them (proximal RCA)
        if rng.random() < (0.35 if territory == "RCA" else 0.08):
            changes.update(_rv_involvement(rng, s))
    elif condition == "hcm":
        changes = {
            "septal_extra_mm": 4.2 + 11.0 * s + float(rng.uniform(0.0, 0.8)),
            "lv_wall_mm": float(np.clip(base.lv_wall_mm + 1.5 * s + j(0.5), 6.0, 11.5)),
            "lv_edd_radius_mm": base.lv_edd_radius_mm - 1.0 - 4.0 * s + j(0.8),
            "lv_ef": 0.68 + 0.07 * s + j(0.02),
            "lge_pattern": "insertion" if rng.random() < 0.5 + 0.4 * s else "none",
        }
    elif condition == "amyloid":
        changes = {
            "lv_wall_mm": 12.1 + 6.0 * s + float(rng.uniform(0.0, 0.8)),
            "septal_extra_mm": float(rng.uniform(0.0, 2.0)),
            "lv_edd_radius_mm": base.lv_edd_radius_mm - 1.0 - 2.0 * s + j(0.8),
            "lv_ef": 0.56 - 0.22 * s + j(0.03),
            "rv_wall_mm": 5.0 + 3.0 * s + j(0.4),
            "rv_ef": 0.48 - 0.15 * s + j(0.03),
            "effusion_mm": 2.0 + 4.0 * s + j(0.5),
            "myocardial_signal": float(np.clip(base.myocardial_signal + 0.02 + 0.05 * s, 0.0, 0.4)),
            "lge_pattern": "diffuse",
        }
    elif condition == "rv_dysfunction":
        changes = {
            "rv_scale": 1.17 + 0.6 * s + float(rng.uniform(0.0, 0.05)),
            "rv_ef": 0.42 - 0.27 * s + j(0.03),
            "septal_flattening": float(np.clip(0.9 * s + j(0.1), 0.0, 1.0)),
            "lv_edd_radius_mm": base.lv_edd_radius_mm - 2.0 * s,
        }
    elif condition == "effusion":
        changes = {
            "effusion_mm": 3.1 + 16.0 * s + float(rng.uniform(0.0, 1.0)),
            "heart_rate_bpm": float(rng.uniform(65.0, 110.0)),
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
