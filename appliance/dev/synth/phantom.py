"""Analytic heart phantom in the heart's own frame, rendered as anti-aliased short-axis (or arbitrary-plane) images.

Heart frame (millimetres): ``u`` points to the LV lateral wall, ``v`` to the inferior wall, ``z_frac`` runs along the
long axis from the base (0) to the apex (1). Angles around the LV centre are measured from ``+u`` towards ``+v``:
0 deg lateral, 90 inferior, 180 septal (RV side), 270 anterior. A short-axis image with no rotation and no mirror
shows the heart as a viewer standing at the apex sees it: RV on the left, anterior wall at the top.

Every structure is a signed distance (negative inside) turned into coverage over about one pixel, so edges are
anti-aliased and sub-pixel wall motion changes the image smoothly instead of in one-pixel jumps.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from appliance.dev.synth.background import FAT, sax_background
from appliance.dev.synth.motion import contraction, end_systole_fraction

TERRITORIES: dict[str, tuple[float, float]] = {
    # coronary territory -> (centre angle, half width) in degrees at mid-ventricle, heart frame
    "LAD": (235.0, 65.0),
    "LCX": (15.0, 55.0),
    "RCA": (120.0, 50.0),
}
LGE_PATTERNS = ("none", "ischemic", "midwall", "insertion", "diffuse")
CONTRASTS = ("bssfp", "lge")

_RV_ANGLE_DEG = 200.0  # the RV sits septal and slightly anterior
_PAPILLARY_ANGLES_DEG = (315.0, 110.0)  # anterolateral, posteromedial
_FAR = np.float32(1.0e3)
_MAX_RADIAL_SHORTENING = 0.5  # beyond this remote hyperkinesis stops compensating and the EF target is missed

Layer = tuple[np.ndarray, "float | np.ndarray"]


@dataclass(frozen=True)
class HeartParams:
    """Everything that shapes one synthetic heart. The ground truth of a synthetic case is this record."""

    lv_edd_radius_mm: float = 23.0  # end-diastolic LV cavity radius at the base/mid level
    lv_ef: float = 0.62
    lv_wall_mm: float = 8.0
    septal_extra_mm: float = 0.0  # asymmetric septal thickening on top of lv_wall_mm
    akinetic_territory: str | None = None  # None | "LAD" | "LCX" | "RCA"
    akinetic_extent: float = 0.0  # 0..1, how much of the territory is involved
    akinetic_thinning: float = 0.0  # 0..1, fraction of wall thickness lost in the territory
    rv_scale: float = 1.0  # 1 normal, up to ~1.8 dilated
    rv_ef: float = 0.58
    rv_wall_mm: float = 3.5
    effusion_mm: float = 0.0  # pericardial effusion thickness, 0 = none
    long_axis_mm: float = 90.0
    heart_rate_bpm: float = 70.0
    septal_flattening: float = 0.0  # 0..1, D-shaped LV from RV pressure/volume overload
    myocardial_signal: float = 0.25  # bSSFP myocardium intensity
    lge_pattern: str = "none"  # enhancement pattern shown by the late-enhancement contrast
    scar_transmurality: float = 0.0  # 0..1, depth of ischaemic scar from the endocardium
    anatomy_seed: int = 0  # drives the background texture and the organs' exact placement only
    body_scale: float = 1.0  # patient build: scales the chest, the subcutaneous fat and the organs around the heart
    blood_signal: float = 0.9  # bSSFP blood-pool intensity (inflow, field strength, flip angle vary it)
    # epicardial fat: as bright as fluid in bSSFP, so a bright rim round the heart is not by itself an effusion;
    # it is patchy (AV grooves, RV free wall, apex) and does not slide with the cycle the way fluid does
    epicardial_fat_mm: float = 0.0
    effusion_signal: float = 0.8  # bSSFP fluid intensity (simple fluid bright, proteinaceous or bloody less so)
    # slow flow and dephasing darken parts of the blood pool, differently in each phase: the cavity is not one
    # level, so "pixels above a threshold" is not the cavity area
    blood_inhomogeneity: float = 0.0

    def __post_init__(self) -> None:
        checks = {
            "lv_edd_radius_mm": (10.0, 45.0),
            "lv_ef": (0.05, 0.85),
            "lv_wall_mm": (3.0, 25.0),
            "septal_extra_mm": (0.0, 25.0),
            "akinetic_extent": (0.0, 1.0),
            "akinetic_thinning": (0.0, 0.9),
            "rv_scale": (0.5, 2.5),
            "rv_ef": (0.05, 0.85),
            "rv_wall_mm": (1.0, 15.0),
            "effusion_mm": (0.0, 40.0),
            "long_axis_mm": (50.0, 140.0),
            "heart_rate_bpm": (30.0, 180.0),
            "septal_flattening": (0.0, 1.0),
            "myocardial_signal": (0.0, 1.0),
            "scar_transmurality": (0.0, 1.0),
            "body_scale": (0.6, 1.5),
            "blood_signal": (0.3, 1.0),
            "epicardial_fat_mm": (0.0, 15.0),
            "effusion_signal": (0.3, 1.0),
            "blood_inhomogeneity": (0.0, 0.6),
        }
        for name, (lo, hi) in checks.items():
            value = getattr(self, name)
            if not lo <= value <= hi:
                raise ValueError(f"{name}={value} outside [{lo}, {hi}]")
        if self.akinetic_territory not in (None, *TERRITORIES):
            raise ValueError(f"unknown territory {self.akinetic_territory!r}")
        if self.lge_pattern not in LGE_PATTERNS:
            raise ValueError(f"unknown LGE pattern {self.lge_pattern!r}")

    @property
    def rr_ms(self) -> float:
        return 60000.0 / self.heart_rate_bpm

    @property
    def es_phase_frac(self) -> float:
        return end_systole_fraction(self.heart_rate_bpm)

    @property
    def long_axis_shortening(self) -> float:
        """Fractional base-to-apex shortening at end-systole; tracks global function like MAPSE does."""
        return 0.2 * self.lv_ef

    def es_area_fraction(self) -> float:
        """Target LV cavity cross-section at end-systole relative to end-diastole (same anatomical level).

        Cavity volume is area x length, so the radial part of the volume change is what the long-axis
        shortening leaves over: (1 - EF) / (1 - shortening).
        """
        return (1.0 - self.lv_ef) / (1.0 - self.long_axis_shortening)


@dataclass(frozen=True)
class TissueSignals:
    """Intensities of the tissues for one contrast, in phantom units (~0..1)."""

    blood: float
    effusion: float
    pericardium: float
    enhanced: float  # late-enhancing myocardium; unused for cine
    background_scale: float


BSSFP = TissueSignals(blood=0.9, effusion=0.8, pericardium=0.1, enhanced=0.0, background_scale=1.0)
LGE = TissueSignals(blood=0.38, effusion=0.15, pericardium=0.05, enhanced=0.92, background_scale=0.55)
_LGE_NULLED_MYOCARDIUM = 0.04


def _smoothstep(e0: float, e1: float, x: np.ndarray | float) -> np.ndarray | float:
    t = np.clip((np.asarray(x, dtype=np.float32) - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _arc_weight(cos_t: np.ndarray | float, sin_t: np.ndarray | float, centre_deg: float,
                half_width: np.ndarray | float, soft_deg: float = 15.0) -> np.ndarray | float:
    """1 inside an angular sector, 0 outside, with a smooth ~2*soft_deg transition; works on cos/sin to avoid atan2."""
    c = math.radians(centre_deg)
    cos_d = cos_t * math.cos(c) + sin_t * math.sin(c)
    hw = np.asarray(half_width, dtype=np.float32)
    lo = np.cos(np.radians(np.clip(hw + soft_deg, 0.0, 180.0)))
    hi = np.cos(np.radians(np.clip(hw - soft_deg, 0.0, 180.0)))
    t = np.clip((cos_d - lo) / np.maximum(hi - lo, 1e-6), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _smooth_min(a, b, k: float):
    """Polynomial smooth minimum: rounds the corners where a flattened septum meets the free wall."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


def _apex_profile(z: np.ndarray | float, end: float) -> np.ndarray | float:
    """Radius profile of a truncated ellipsoid-like ventricle: flat at the base, closing at z = end."""
    zp = np.maximum(z, 0.0) / end
    return np.sqrt(np.clip(1.0 - zp**3, 0.0, 1.0))


def _territory_weight(p: HeartParams, cos_t, sin_t, z) -> np.ndarray | float:
    if p.akinetic_territory is None or p.akinetic_extent <= 0.0:
        return np.float32(0.0)
    centre, hw = TERRITORIES[p.akinetic_territory]
    zc = np.clip(z, 0.0, 1.0)
    hw_z: np.ndarray | float
    z_fade: np.ndarray | float
    if p.akinetic_territory == "LAD":
        # the LAD usually supplies the whole apex, so its territory wraps around the apical slices
        hw_z = hw * (1.0 + 1.6 * _smoothstep(0.55, 0.9, zc))
        z_fade = 1.0
    else:
        hw_z = hw
        z_fade = 1.0 - _smoothstep(0.7, 0.9, zc)
    hw_eff = hw_z * (0.45 + 0.55 * p.akinetic_extent)
    w = _arc_weight(cos_t, sin_t, centre, hw_eff, soft_deg=25.0) * z_fade * _smoothstep(0.0, 0.15, p.akinetic_extent)
    return np.where(np.asarray(z) < 0.0, 0.0, w)


def _lv_ed_geometry(p: HeartParams, cos_t, sin_t, z):
    """End-diastolic LV endo/epi radii along the rays (cos_t, sin_t) at anatomical level z, plus akinesia weight."""
    R = p.lv_edd_radius_mm
    zc = np.clip(z, 0.0, 1.0)
    prof_endo = _apex_profile(z, 0.92)
    prof_epi = _apex_profile(z, 1.0)
    wall = p.lv_wall_mm * (1.0 - 0.35 * zc**2)
    sept_z = 1.0 - 0.6 * _smoothstep(0.5, 1.0, zc)  # HCM hypertrophy is mostly basal-mid septal
    w_sept = _arc_weight(cos_t, sin_t, 190.0, 55.0) * sept_z
    w_aki = _territory_weight(p, cos_t, sin_t, z)
    wall_t = wall * (1.0 - p.akinetic_thinning * w_aki) + p.septal_extra_mm * w_sept
    # part of septal hypertrophy bulges into the LV cavity, part into the RV
    r_endo = np.maximum(R * prof_endo - 0.4 * p.septal_extra_mm * w_sept, 0.0)
    r_epi = np.where(r_endo > 0.0, r_endo + wall_t, 0.0)
    r_epi = np.maximum(r_epi, (R + wall) * prof_epi)
    if p.septal_flattening > 0.0:
        cos_s = -cos_t  # cosine of the angle to the septum
        sept_wall = wall + p.septal_extra_mm * sept_z
        h_epi = (R * prof_endo - 0.4 * p.septal_extra_mm * sept_z + sept_wall) * (1.0 - 0.3 * p.septal_flattening)
        h_endo = h_epi - sept_wall
        safe = np.maximum(cos_s, 1e-3)
        line_epi = np.where(cos_s > 1e-3, h_epi / safe, _FAR)
        line_endo = np.where(cos_s > 1e-3, np.maximum(h_endo, 0.0) / safe, _FAR)
        r_epi = _smooth_min(r_epi, line_epi, 4.0)
        r_endo = np.maximum(_smooth_min(r_endo, line_endo, 4.0), 0.0)
    # above the mitral plane the slice cuts the thin-walled left atrium, which does not contract with the LV
    atrial = np.sqrt(np.clip(1.0 - (np.minimum(z, 0.0) / 0.35) ** 2, 0.0, 1.0))
    is_atrium = np.asarray(z) < 0.0
    r_endo = np.where(is_atrium, 0.95 * R * atrial, r_endo)
    r_epi = np.where(is_atrium, np.where(atrial > 0.0, 0.95 * R * atrial + 2.5, 0.0), r_epi)
    return r_endo, r_epi, w_aki


_Z_GRID = np.linspace(0.0, 1.0, 41)


@functools.lru_cache(maxsize=512)
def _area_moments(p: HeartParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-level moments of the ED cavity over angle, weighted by how mobile each angle is.

    With r(theta) = r_ed(theta) * (1 - m(theta) * delta) the cavity area is A0 - 2*A1*delta + A2*delta^2, so the
    remote myocardium's extra shortening (delta) that reaches the target area solves a quadratic per level.
    """
    theta = np.linspace(0.0, 2.0 * np.pi, 180, endpoint=False)
    cos_t, sin_t = np.cos(theta)[None, :], np.sin(theta)[None, :]
    z = _Z_GRID[:, None]
    r_endo, _, w_aki = _lv_ed_geometry(p, cos_t, sin_t, z)
    r2 = np.broadcast_to(r_endo, (len(_Z_GRID), len(theta))) ** 2
    m = 1.0 - np.broadcast_to(w_aki, r2.shape)
    return r2.mean(axis=1), (r2 * m).mean(axis=1), (r2 * m * m).mean(axis=1)


def _shortening(p: HeartParams, z, c: float) -> np.ndarray | float:
    a0, a1, a2 = (np.interp(np.clip(z, 0.0, 1.0), _Z_GRID, m) for m in _area_moments(p))
    target = 1.0 - (1.0 - p.es_area_fraction()) * c
    disc = a1 * a1 - a2 * a0 * (1.0 - target)
    safe_a2 = np.maximum(a2, 1e-9)
    delta = np.where(disc >= 0.0, (a1 - np.sqrt(np.maximum(disc, 0.0))) / safe_a2, a1 / safe_a2)
    delta = np.where(a2 > 1e-9, delta, 0.0)
    return np.where(np.asarray(z) < 0.0, 0.0, np.clip(delta, 0.0, _MAX_RADIAL_SHORTENING)).astype(np.float32)


def _lv_radii(p: HeartParams, cos_t, sin_t, z, c: float):
    """LV endo/epi radii at contraction state c; myocardial area is conserved per angle so the wall thickens."""
    r_endo_ed, r_epi_ed, w_aki = _lv_ed_geometry(p, cos_t, sin_t, z)
    delta = _shortening(p, z, c)
    r_endo = r_endo_ed * (1.0 - (1.0 - w_aki) * delta)
    r_epi = np.sqrt(np.maximum(r_endo**2 + r_epi_ed**2 - r_endo_ed**2, 0.0))
    return r_endo, r_epi, w_aki


def _ellipse_sdf(pr, q, a: np.ndarray | float, b: np.ndarray | float) -> np.ndarray:
    """First-order signed distance to an axis-aligned ellipse (exact on the boundary, which is where it matters)."""
    f = np.sqrt((pr / a) ** 2 + (q / b) ** 2)
    g = np.sqrt((pr / (a * a)) ** 2 + (q / (b * b)) ** 2)
    ratio = np.where(g > 1e-9, f / np.maximum(g, 1e-9), np.minimum(a, b))
    return (f - 1.0) * ratio


def _rv_sdf(p: HeartParams, u, v, z, c: float, r_sept):
    """Signed distance to the RV cavity ellipse (before the LV is cut out of it) and the RV's level profile."""
    prof = np.where(np.asarray(z) >= 0.0,
                    np.sqrt(np.clip(1.0 - (np.maximum(z, 0.0) / 0.8) ** 2, 0.0, 1.0)),
                    np.sqrt(np.clip(1.0 - (np.minimum(z, 0.0) / 0.35) ** 2, 0.0, 1.0)))
    c_eff = np.where(np.asarray(z) >= 0.0, c, 0.0)  # the right atrium fills while the RV empties
    shrink = 1.0 - p.rv_ef * c_eff
    depth = 20.0 * p.rv_scale**1.3 * prof * shrink**0.75
    a_t = np.maximum(40.0 * p.rv_scale**0.7 * prof**0.6 * shrink**0.25, 0.5)
    a_r = np.maximum(0.3 * r_sept + depth, 0.5)
    d_c = 0.7 * r_sept
    ang = math.radians(_RV_ANGLE_DEG)
    cr, sr = math.cos(ang), math.sin(ang)
    pr = u * cr + v * sr - d_c
    q = -u * sr + v * cr
    d = _ellipse_sdf(pr, q, a_r, a_t)
    return np.where(prof > 0.02, d, _FAR)


def _coverage(d: np.ndarray, edge_mm: float) -> np.ndarray:
    return np.clip(0.5 - d / edge_mm, 0.0, 1.0)


def _paint(img: np.ndarray, d: np.ndarray, value, edge_mm: float) -> None:
    a = _coverage(d, edge_mm)
    img += a * (value - img)


def _paint_background(img: np.ndarray, layers: Sequence[Layer], scale: float, edge_mm: float,
                      keep_clear: np.ndarray | None = None) -> None:
    for i, (d, value) in enumerate(layers):
        # the first two layers are the body outline, which the heart sits inside; the rest must not touch it
        d_eff = d if (i < 2 or keep_clear is None) else np.maximum(d, keep_clear)
        _paint(img, d_eff, value * np.float32(scale), edge_mm)


def heart_extent_mm(params: HeartParams) -> float:
    """Conservative in-plane radius around the LV centre beyond which no slice shows heart or pericardial fluid."""
    p = params
    r_lv = p.lv_edd_radius_mm + p.lv_wall_mm + p.septal_extra_mm
    depth = 20.0 * p.rv_scale**1.3
    a_t = 40.0 * p.rv_scale**0.7
    rv = max(r_lv + depth, math.hypot(0.7 * r_lv, a_t))
    return max(r_lv, rv) + p.rv_wall_mm + p.epicardial_fat_mm + 1.2 * p.effusion_mm + 12.0


def _epicardial_fat(p: HeartParams, cos_t, sin_t, z) -> np.ndarray:
    """Epicardial fat thickness (mm) round the heart: thickest in the AV groove and over the RV free wall,
    a pad at the apex, little over the lateral LV; a per-patient angular pattern keeps no two hearts alike."""
    zc = np.clip(z, 0.0, 1.0)
    rng = np.random.default_rng([p.anatomy_seed, 611953])
    shift = float(rng.uniform(-25.0, 25.0))
    groove = 1.0 - _smoothstep(0.0, 0.3, zc)  # AV groove at the base
    apex = _smoothstep(0.75, 1.0, zc)
    rv_free = _arc_weight(cos_t, sin_t, 225.0 + shift, 45.0, 25.0)
    inferior = _arc_weight(cos_t, sin_t, 120.0 - shift, 30.0, 20.0)
    pattern = 0.25 + 0.75 * np.maximum(rv_free, 0.6 * inferior) + 0.5 * groove + 0.4 * apex
    return (p.epicardial_fat_mm * np.clip(pattern, 0.0, 1.4) / 1.4).astype(np.float32, copy=False)


def _flow_field(p: HeartParams, u, v, phase_frac: float) -> np.ndarray:
    """Smooth [0, 1] darkening pattern of the blood pool that drifts through the cycle (slow flow, dephasing)."""
    rng = np.random.default_rng([p.anatomy_seed, 15485863])
    out = np.zeros(np.broadcast_shapes(np.shape(u), np.shape(v)), dtype=np.float32)
    for _ in range(2):
        k = rng.uniform(1.0 / 40.0, 1.0 / 15.0) * 2.0 * np.pi
        ang = rng.uniform(0.0, 2.0 * np.pi)
        phase = rng.uniform(0.0, 2.0 * np.pi) + 2.0 * np.pi * phase_frac * rng.choice([-1.0, 1.0])
        out += np.float32(0.25) * (1.0 + np.sin(np.float32(k * np.cos(ang)) * u + np.float32(k * np.sin(ang)) * v
                                                 + np.float32(phase)))
    return out


def _lge_enhancement(p: HeartParams, cos_t, sin_t, z, depth, w_aki) -> np.ndarray | float:
    """Fraction of enhancing myocardium per pixel for the late-enhancement contrast (depth: 0 endo .. 1 epi)."""
    zc = np.clip(z, 0.0, 1.0)
    if p.lge_pattern == "ischemic":
        tr = max(p.scar_transmurality, 0.05)
        return w_aki * (1.0 - _smoothstep(tr - 0.08, tr + 0.08, depth))
    mid = _smoothstep(0.25, 0.4, depth) * (1.0 - _smoothstep(0.6, 0.75, depth))
    if p.lge_pattern == "midwall":
        return _arc_weight(cos_t, sin_t, 185.0, 40.0) * mid * (1.0 - _smoothstep(0.6, 0.85, zc))
    if p.lge_pattern == "insertion":
        return (_arc_weight(cos_t, sin_t, _RV_ANGLE_DEG - 78.0, 10.0, 8.0)
                + _arc_weight(cos_t, sin_t, _RV_ANGLE_DEG + 78.0, 10.0, 8.0)) * mid
    if p.lge_pattern == "diffuse":
        return 0.35 + 0.6 * (1.0 - _smoothstep(0.35, 0.7, depth))
    return np.float32(0.0)


def render_points(params: HeartParams, u: np.ndarray, v: np.ndarray, z_frac: np.ndarray | float,
                  phase_frac: float, *, edge_mm: float = 1.5, contrast: str = "bssfp",
                  background: Sequence[Layer] = ()) -> np.ndarray:
    """Phantom intensity at heart-frame points (u, v in mm, z_frac along the long axis), any array shape.

    ``background`` layers (signed distance, intensity) are painted first, in order, and kept clear of the heart
    and its pericardial space so that lung or liver never overlap the myocardium.
    """
    if contrast not in CONTRASTS:
        raise ValueError(f"unknown contrast {contrast!r}")
    p = params
    sig = BSSFP if contrast == "bssfp" else LGE
    c = contraction(phase_frac, p.es_phase_frac)
    # the apex stays put while the base descends, so a fixed plane meets a more basal level in systole
    z_anat = 1.0 - (1.0 - np.asarray(z_frac, dtype=np.float32)) / (1.0 - p.long_axis_shortening * c)

    rho = np.sqrt(u * u + v * v) + np.float32(1e-4)
    cos_t, sin_t = u / rho, v / rho

    r_endo, r_epi, w_aki = (np.asarray(a, dtype=np.float32) for a in _lv_radii(p, cos_t, sin_t, z_anat, c))
    d_lv_endo = np.where(r_endo > 0.3, rho - r_endo, _FAR)
    d_lv_epi = np.where(r_epi > 0.3, rho - r_epi, _FAR)

    ang = math.radians(_RV_ANGLE_DEG)
    _, r_sept, _ = _lv_radii(p, math.cos(ang), math.sin(ang), z_anat, c)
    d_rv = _rv_sdf(p, u, v, z_anat, c, np.asarray(r_sept, dtype=np.float32)).astype(np.float32, copy=False)
    d_rv_epi = d_rv - p.rv_wall_mm
    d_heart = np.minimum(d_lv_epi, d_rv_epi)

    eff = np.float32(0.0)
    if p.effusion_mm > 0.0:
        # fluid collects dependently (inferior/posterior) and thins out over the apex and at the reflections
        taper = np.clip((1.12 - z_anat) / 0.12, 0.0, 1.0) * np.clip((z_anat + 0.35) / 0.35, 0.0, 1.0)
        eff = (p.effusion_mm * (0.75 + 0.45 * np.maximum(sin_t, 0.0)) * taper).astype(np.float32, copy=False)

    fat = np.float32(0.0)
    if p.epicardial_fat_mm > 0.0:
        fat = _epicardial_fat(p, cos_t, sin_t, z_anat)

    img = np.zeros(np.broadcast_shapes(np.shape(u), np.shape(v)), dtype=np.float32)
    _paint_background(img, background, sig.background_scale, edge_mm, keep_clear=-(d_heart - fat - eff - 3.0))

    if p.effusion_mm > 0.0:
        # the fluid lies outside the fat, between the visceral and the parietal pericardium
        fluid = np.float32(p.effusion_signal if contrast == "bssfp" else sig.effusion)
        _paint(img, d_heart - fat - eff - 1.2, sig.pericardium, edge_mm)
        _paint(img, d_heart - fat - eff, fluid, edge_mm)
    if p.epicardial_fat_mm > 0.0:
        _paint(img, d_heart - fat, np.float32(FAT * sig.background_scale), edge_mm)

    if contrast == "bssfp":
        myo = np.float32(p.myocardial_signal)
    else:
        depth = np.clip((rho - r_endo) / np.maximum(r_epi - r_endo, 0.5), 0.0, 1.0)
        e = _lge_enhancement(p, cos_t, sin_t, z_anat, depth, w_aki)
        myo = (_LGE_NULLED_MYOCARDIUM + np.clip(e, 0.0, 1.0) * (sig.enhanced - _LGE_NULLED_MYOCARDIUM)).astype(
            np.float32, copy=False)
    _paint(img, d_rv_epi, np.float32(p.myocardial_signal if contrast == "bssfp" else _LGE_NULLED_MYOCARDIUM),
           edge_mm)
    _paint(img, d_lv_epi, myo, edge_mm)

    if contrast == "bssfp":
        blood = np.float32(p.blood_signal)
        if p.blood_inhomogeneity > 0.0:
            blood = blood * (1.0 - np.float32(p.blood_inhomogeneity) * _flow_field(p, u, v, phase_frac))
    else:
        blood = sig.blood * (0.55 if p.lge_pattern == "diffuse" else 1.0)
    _paint(img, d_lv_endo, blood, edge_mm)
    _paint(img, np.maximum(d_rv, -d_lv_epi), blood, edge_mm)

    zp = np.clip(z_anat, 0.0, 1.0)
    pap_r = np.float32(3.5) * _smoothstep(0.15, 0.3, zp) * (1.0 - _smoothstep(0.65, 0.8, zp)) * (1.0 + 0.35 * c)
    if np.max(pap_r) > 0.3:
        pap_value = np.float32(p.myocardial_signal) if contrast == "bssfp" else np.float32(_LGE_NULLED_MYOCARDIUM)
        for deg in _PAPILLARY_ANGLES_DEG:
            ca, sa = math.cos(math.radians(deg)), math.sin(math.radians(deg))
            r_at, _, _ = _lv_radii(p, ca, sa, z_anat, c)
            dist = np.float32(0.62) * np.asarray(r_at, dtype=np.float32)
            d_pap = np.sqrt((u - dist * ca) ** 2 + (v - dist * sa) ** 2) - pap_r
            _paint(img, np.where(pap_r > 0.3, d_pap, _FAR), pap_value, edge_mm)
    return img


def slice_coordinates(rows: int, cols: int, pixel_spacing_mm: float | tuple[float, float],
                      center_offset_mm: tuple[float, float] = (0.0, 0.0), rotation_deg: float = 0.0,
                      mirror: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Heart-frame (u, v) of every pixel of a short-axis image.

    The image row direction is the heart's lateral axis rotated by ``rotation_deg`` towards inferior; the column
    direction follows at +90 deg, or -90 deg when ``mirror`` (which flips the sign of the slice normal). The heart's
    centre line sits ``center_offset_mm`` (along rows, along columns) from the image centre.
    """
    if isinstance(pixel_spacing_mm, (int, float)):
        ps_r = ps_c = float(pixel_spacing_mm)
    else:
        ps_r, ps_c = (float(s) for s in pixel_spacing_mm)
    x = (np.arange(cols, dtype=np.float32) - (cols - 1) / 2.0) * ps_c - center_offset_mm[0]
    y = (np.arange(rows, dtype=np.float32) - (rows - 1) / 2.0) * ps_r - center_offset_mm[1]
    phi = math.radians(rotation_deg)
    s = -1.0 if mirror else 1.0
    cp, sp = np.float32(math.cos(phi)), np.float32(math.sin(phi))
    u = x[None, :] * cp - np.float32(s) * y[:, None] * sp
    v = x[None, :] * sp + np.float32(s) * y[:, None] * cp
    return u, v


@functools.lru_cache(maxsize=4)
def _slice_frame(params: HeartParams, z_frac: float, rows: int, cols: int, spacing: tuple[float, float],
                 center_offset_mm: tuple[float, float], rotation_deg: float, mirror: bool, contrast: str):
    """Coordinates, painted background and background layers of one slice position.

    Cine phases of a slice share all of this, and it is most of the cost of a frame, so a writer that renders a
    slice's phases one after another pays for it once. Arrays are frozen because they are shared.
    """
    u, v = slice_coordinates(rows, cols, spacing, center_offset_mm, rotation_deg, mirror)
    edge = max(1.2 * max(spacing), 0.8)
    layers = sax_background(params, u, v, z_frac)
    scale = (BSSFP if contrast == "bssfp" else LGE).background_scale
    img = np.zeros((rows, cols), dtype=np.float32)
    _paint_background(img, layers, scale, edge)
    bound = heart_extent_mm(params) + 2.0 * edge
    inside = (u * u + v * v) < np.float32(bound * bound)
    r_idx = np.flatnonzero(inside.any(axis=1))
    c_idx = np.flatnonzero(inside.any(axis=0))
    win = None if r_idx.size == 0 else np.s_[r_idx[0]:r_idx[-1] + 1, c_idx[0]:c_idx[-1] + 1]
    cropped = [] if win is None else [
        (d[win].copy(), value[win].copy() if isinstance(value, np.ndarray) else value) for d, value in layers]
    arrays = [img] + ([] if win is None else [u[win].copy(), v[win].copy()])
    arrays += [a for layer in cropped for a in layer if isinstance(a, np.ndarray)]
    for a in arrays:
        a.flags.writeable = False
    uw, vw = (arrays[1], arrays[2]) if win is not None else (None, None)
    return img, win, uw, vw, tuple(cropped), edge


def render_slice(params: HeartParams, z_frac: float, phase_frac: float, rows: int, cols: int,
                 pixel_spacing_mm: float | tuple[float, float], center_offset_mm: tuple[float, float] = (0.0, 0.0),
                 rotation_deg: float = 0.0, mirror: bool = False, contrast: str = "bssfp",
                 slab_frac: float = 0.0) -> np.ndarray:
    """One short-axis image (float32, rows x cols) in phantom intensity units (~0..1), noise-free.

    Only a window around the heart goes through the full model; the rest of the field of view is background,
    which is what keeps a 256 x 256 slice within a few milliseconds.
    """
    if contrast not in CONTRASTS:
        raise ValueError(f"unknown contrast {contrast!r}")
    if isinstance(pixel_spacing_mm, (int, float)):
        spacing = (float(pixel_spacing_mm), float(pixel_spacing_mm))
    else:
        spacing = (float(pixel_spacing_mm[0]), float(pixel_spacing_mm[1]))
    offset = (float(center_offset_mm[0]), float(center_offset_mm[1]))
    bg, win, uw, vw, layers, edge = _slice_frame(params, float(z_frac), int(rows), int(cols), spacing, offset,
                                                 float(rotation_deg), bool(mirror), contrast)
    img = bg.copy()
    if win is not None:
        if slab_frac > 0.0:
            # partial volume: a slice of finite thickness averages the anatomy over its slab (two samples)
            img[win] = 0.5 * (
                render_points(params, uw, vw, float(z_frac) - 0.5 * slab_frac, phase_frac, edge_mm=edge,
                              contrast=contrast, background=layers)
                + render_points(params, uw, vw, float(z_frac) + 0.5 * slab_frac, phase_frac, edge_mm=edge,
                                contrast=contrast, background=layers))
        else:
            img[win] = render_points(params, uw, vw, z_frac, phase_frac, edge_mm=edge, contrast=contrast,
                                     background=layers)
    return img
