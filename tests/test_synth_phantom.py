"""The synthetic phantom shows what its parameters say: measured on rendered pixels, not read back from params."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest
from image_measure import flood

from appliance.dev.synth.background import sax_background
from appliance.dev.synth.conditions import CONDITIONS, DEFAULT_MIX, findings, sample_condition, sample_params
from appliance.dev.synth.motion import contraction
from appliance.dev.synth.phantom import HeartParams, render_points, render_slice, slice_coordinates

N = 121  # odd, so the heart centre (no offset) falls on pixel (60, 60)
C = N // 2
PS = 1.0
BRIGHT = 0.575  # midway between bSSFP blood (0.9) and myocardium (0.25)


def lv_area_mm2(p: HeartParams, z: float, phase: float) -> float:
    img = render_slice(p, z, phase, N, N, PS)
    return float(flood(img > BRIGHT, (C, C)).sum()) * PS * PS


def ray(img: np.ndarray, direction: str) -> np.ndarray:
    """Pixels from the centre outwards: lateral = +u (columns up), septal = -u, anterior = -v (rows down)."""
    return {"lateral": img[C, C:], "septal": img[C, C::-1], "anterior": img[C::-1, C]}[direction]


def runs(profile: np.ndarray) -> list[tuple[bool, int]]:
    """(is_bright, length in pixels) runs along a profile."""
    out: list[tuple[bool, int]] = []
    for bright in profile > BRIGHT:
        if out and out[-1][0] == bool(bright):
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((bool(bright), 1))
    return out


def test_render_is_deterministic_float32_and_in_range():
    p = HeartParams(effusion_mm=5.0, akinetic_territory="LCX", akinetic_extent=0.6)
    a = render_slice(p, 0.4, 0.2, 256, 256, 1.4)
    b = render_slice(p, 0.4, 0.2, 256, 256, 1.4)
    assert a.dtype == np.float32 and a.shape == (256, 256)
    assert np.array_equal(a, b)
    assert a.min() >= 0.0 and a.max() <= 1.0
    assert a.max() > 0.85  # blood is bright
    assert not np.array_equal(a, render_slice(p, 0.4, 0.3, 256, 256, 1.4))  # and it moves


@pytest.mark.parametrize("params", [
    HeartParams(),
    HeartParams(rv_scale=1.8, effusion_mm=20.0, septal_extra_mm=15.0, lv_edd_radius_mm=35.0, lv_wall_mm=12.0),
    HeartParams(septal_flattening=0.9, rv_scale=1.6, akinetic_territory="LAD", akinetic_extent=1.0),
])
@pytest.mark.parametrize("z", [-0.2, 0.05, 0.5, 0.93, 1.1])
def test_windowed_render_matches_full_frame(params, z):
    # render_slice only models a window around the heart; outside it nothing of the heart may be missing
    u, v = slice_coordinates(160, 150, (1.6, 1.5), (3.0, -2.0), 20.0, True)
    full = render_points(params, u, v, z, 0.3, edge_mm=1.2 * 1.6, background=sax_background(params, u, v, z))
    fast = render_slice(params, z, 0.3, 160, 150, (1.6, 1.5), (3.0, -2.0), 20.0, True)
    assert np.abs(full - fast).max() < 1e-5


def test_contraction_curve_shape():
    es = 0.35
    assert contraction(0.0, es) == pytest.approx(0.0)
    assert contraction(es, es) == pytest.approx(1.0)
    systole = [contraction(x, es) for x in np.linspace(0.0, es, 20)]
    assert all(b >= a for a, b in itertools.pairwise(systole))
    assert contraction(0.999, es) < 0.01
    assert 0.1 < contraction(0.8, es) < 0.3  # diastasis: mostly but not fully refilled


def test_fractional_area_change_follows_ef():
    normal = HeartParams(lv_ef=0.62)
    dcm = HeartParams(lv_edd_radius_mm=32.0, lv_ef=0.18, lv_wall_mm=6.5)
    fac = {}
    for name, p in (("normal", normal), ("dcm", dcm)):
        ed = lv_area_mm2(p, 0.4, 0.0)
        es = lv_area_mm2(p, 0.4, p.es_phase_frac)
        fac[name] = 1.0 - es / ed
        # the cavity area at ES tracks the volume target (level shift from long-axis motion allowed for)
        assert es / ed == pytest.approx(p.es_area_fraction(), abs=0.1)
    assert fac["normal"] > 0.40
    assert fac["dcm"] < 0.20
    assert fac["normal"] - fac["dcm"] > 0.25
    assert lv_area_mm2(dcm, 0.4, 0.0) > 1.6 * lv_area_mm2(normal, 0.4, 0.0)  # dilated


def septum_mm(p: HeartParams) -> float:
    img = render_slice(p, 0.3, 0.0, N, N, PS)
    r = runs(ray(img, "septal"))
    assert r[0][0] and not r[1][0] and r[2][0], "expected LV blood, septum, RV blood along the septal ray"
    return r[1][1] * PS


def test_hcm_septum_is_thicker():
    normal = septum_mm(HeartParams(lv_wall_mm=8.0))
    hcm = septum_mm(HeartParams(lv_wall_mm=9.0, septal_extra_mm=12.0, lv_edd_radius_mm=20.0))
    assert normal == pytest.approx(8.0, abs=2.5)
    assert hcm - normal > 8.0


def bright_after_wall_mm(p: HeartParams, direction: str = "lateral") -> float:
    r = runs(ray(render_slice(p, 0.45, 0.0, N, N, PS), direction))
    assert r[0][0] and not r[1][0]
    return (r[2][1] if len(r) > 2 and r[2][0] else 0) * PS


def test_effusion_is_a_bright_ring_outside_the_myocardium():
    assert bright_after_wall_mm(HeartParams()) == 0.0
    assert bright_after_wall_mm(HeartParams(effusion_mm=12.0)) >= 6.0


def endo_radius_mm(img: np.ndarray, direction: str) -> float:
    return float(np.argmax(ray(img, direction) < BRIGHT)) * PS


def test_akinetic_territory_does_not_move_inward():
    p = HeartParams(akinetic_territory="LAD", akinetic_extent=1.0, akinetic_thinning=0.5, lv_ef=0.35)
    ed = render_slice(p, 0.4, 0.0, N, N, PS)
    es = render_slice(p, 0.4, p.es_phase_frac, N, N, PS)
    anterior = endo_radius_mm(es, "anterior") / endo_radius_mm(ed, "anterior")
    lateral = endo_radius_mm(es, "lateral") / endo_radius_mm(ed, "lateral")
    assert anterior > 0.9  # LAD territory: akinetic
    assert lateral < 0.8  # remote myocardium still contracts
    normal = render_slice(HeartParams(lv_ef=0.35), 0.4, HeartParams(lv_ef=0.35).es_phase_frac, N, N, PS)
    assert endo_radius_mm(normal, "anterior") / endo_radius_mm(ed, "anterior") < 0.9


def test_rv_present_mid_absent_at_apex():
    p = HeartParams()

    def rv_pixels(z: float) -> int:
        img = render_slice(p, z, 0.0, N, N, PS)
        bright = img > BRIGHT
        yy, xx = np.mgrid[:N, :N]
        near = (yy - C) ** 2 + (xx - C) ** 2 < 52**2  # stops short of the descending aorta
        return int((bright & near & ~flood(bright, (C, C))).sum())

    assert rv_pixels(0.4) > 300
    assert rv_pixels(0.93) < 5


def test_rv_dilation_and_dysfunction_are_visible():
    def rv_area(p: HeartParams, phase: float) -> float:
        img = render_slice(p, 0.4, phase, N, N, PS)
        bright = img > BRIGHT
        return float((bright & ~flood(bright, (C, C))).sum())

    normal, sick = HeartParams(), HeartParams(rv_scale=1.7, rv_ef=0.2, septal_flattening=0.8)
    assert rv_area(sick, 0.0) > 1.8 * rv_area(normal, 0.0)
    normal_change = 1 - rv_area(normal, normal.es_phase_frac) / rv_area(normal, 0.0)
    sick_change = 1 - rv_area(sick, sick.es_phase_frac) / rv_area(sick, 0.0)
    assert normal_change > sick_change + 0.2


def test_lge_shows_scar_in_the_territory_only():
    p = HeartParams(akinetic_territory="LAD", akinetic_extent=1.0, lge_pattern="ischemic", scar_transmurality=1.0)
    img = render_slice(p, 0.4, 0.7, N, N, PS, contrast="lge")
    r_epi = 23.0 + 4.0  # inside the myocardium on both rays
    anterior = ray(img, "anterior")[int(r_epi / PS)]
    lateral = ray(img, "lateral")[int(r_epi / PS)]
    assert anterior > 0.7 and lateral < 0.15


def test_invalid_params_are_rejected():
    with pytest.raises(ValueError):
        HeartParams(lv_ef=1.2)
    with pytest.raises(ValueError):
        HeartParams(akinetic_territory="LMCA")


@pytest.mark.parametrize("condition", CONDITIONS)
def test_sample_params_is_deterministic(condition):
    a = sample_params(condition, np.random.default_rng(3))
    b = sample_params(condition, np.random.default_rng(3))
    assert a == b


def test_conditions_carry_their_signs():
    rng = np.random.default_rng(0)
    for s in (0.0, 0.5, 1.0):
        assert "lv_dilated" in findings(sample_params("dcm", rng, s)) or s == 0.0
        dcm = sample_params("dcm", rng, s)
        assert dcm.lv_ef < 0.5
        icm = sample_params("icm", rng, s)
        assert icm.akinetic_territory in ("LAD", "LCX", "RCA") and icm.akinetic_extent >= 0.35
        hcm = sample_params("hcm", rng, s)
        assert hcm.septal_extra_mm >= 4.0 and hcm.lv_ef >= 0.65
        amy = sample_params("amyloid", rng, s)
        assert amy.lv_wall_mm >= 11.5 and amy.rv_wall_mm >= 4.5 and amy.effusion_mm > 1.0
        rv = sample_params("rv_dysfunction", rng, s)
        assert rv.rv_scale >= 1.15 and rv.rv_ef < 0.46
        eff = sample_params("effusion", rng, s)
        assert eff.effusion_mm >= 3.0
        assert findings(sample_params("normal", rng, s)) == ()
    mild = sample_params("dcm", np.random.default_rng(1), 0.1)
    severe = sample_params("dcm", np.random.default_rng(1), 0.9)
    assert severe.lv_edd_radius_mm > mild.lv_edd_radius_mm + 4 and severe.lv_ef < mild.lv_ef - 0.15


def test_default_mix_frequencies():
    rng = np.random.default_rng(11)
    draws = [sample_condition(rng) for _ in range(6000)]
    assert set(draws) == set(CONDITIONS)
    amyloid = draws.count("amyloid") / len(draws)
    assert DEFAULT_MIX["amyloid"] == pytest.approx(0.03)
    assert 0.015 < amyloid < 0.045
    assert draws.count("normal") / len(draws) == pytest.approx(DEFAULT_MIX["normal"], abs=0.03)
    assert sample_condition(rng, {"hcm": 1.0}) == "hcm"
    with pytest.raises(ValueError):
        sample_condition(rng, {"flu": 1.0})


def test_render_slice_speed_budget():
    # generous bound (shared CI cores); the design target is a few ms per 256 x 256 slice
    p = HeartParams()
    render_slice(p, 0.11, 0.0, 256, 256, 1.4)
    t0 = time.perf_counter()
    for k in range(10):
        render_slice(p, 0.2 + 0.05 * k, 0.1 * k, 256, 256, 1.4)
    per_slice_ms = (time.perf_counter() - t0) * 100.0
    assert per_slice_ms < 40.0
