"""The input quality gate (appliance/quality): every kind of corrupted series is found not assessable, clean
studies of every vendor pass, and its settings are checked. Series come from appliance.dev.synth.corrupted."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.config import ConfigError, Settings
from appliance.dev.synth.corrupted import CORRUPTIONS, SET, make
from appliance.quality import REASONS, assess, heart_axes
from appliance.quality.gate import ORIENTATIONS

SEED = SET["corrupted_seeds_from"]

# What each corruption must be called (its first reason); None: any image reason will do.
EXPECTED = {
    "upside_down": {"wrong_orientation"},
    "transposed": {"wrong_orientation"},
    "mirrored": {"wrong_orientation"},
    "static": {"no_cardiac_motion"},
    "noise": {"noise"},
    "non_cardiac": {"not_cardiac", "no_cardiac_motion", "heart_outside_fov"},
    "outside_fov": {"heart_outside_fov", "no_cardiac_motion"},
    "too_few_phases": {"too_few_phases"},
    "too_few_slices": {"too_few_slices"},
}


@pytest.mark.parametrize("kind", CORRUPTIONS)
@pytest.mark.parametrize("vendor", ["A", "C"])
def test_each_corruption_is_not_assessable(kind, vendor):
    seed = SEED + (0 if vendor == "A" else 1)  # non_cardiac alternates texture (odd) and other anatomy (even)
    s = make(kind, seed, vendor)
    v = assess(s.tensor, s.facts)
    assert not v.assessable, (kind, v.measures)
    assert v.reasons[0] in EXPECTED[kind], (v.reasons, v.measures)
    assert set(v.reasons) <= set(REASONS)


@pytest.mark.parametrize("seed,vendor", [(0, "A"), (1, "B"), (2, "A"), (3, "B"), (200_000, "C"), (200_001, "C")])
def test_clean_studies_are_assessable(seed, vendor):
    s = make("clean", seed, vendor)
    v = assess(s.tensor, s.facts)
    assert v.assessable and v.reasons == (), v.measures
    assert v.measures["orientation_margin"] > 0.02 and v.measures["heart_offset_mm"] < 30


def test_the_same_pixels_with_the_header_flipped_are_caught():
    """The gate reads orientation from the header: a clean tensor whose header claims the other way round fails."""
    s = make("clean", 5, "B")
    lat, inf = s.facts.lateral_xy, s.facts.inferior_xy
    lying = type(s.facts)(**{**s.facts.__dict__, "lateral_xy": (-lat[0], -lat[1])})
    assert assess(s.tensor, s.facts).assessable
    v = assess(s.tensor, lying)
    assert v.reasons == ("wrong_orientation",), v.measures
    assert inf == s.facts.inferior_xy


def test_five_dimensional_batch_of_one_and_bad_shapes():
    s = make("clean", 7, "A")
    assert assess(s.tensor[None], s.facts).assessable
    with pytest.raises(ValueError, match="T, C, H, W"):
        assess(s.tensor[0], s.facts)


def test_a_constant_tensor_is_not_assessable():
    s = make("clean", 8, "A")
    v = assess(np.zeros_like(s.tensor), s.facts)
    assert not v.assessable and v.reasons[0] in ("noise", "no_cardiac_motion")


def test_heart_axes_follow_the_header():
    # an axial-ish plane: rows along patient left (+x), columns posterior (+y): lateral ~ +x, inferior ~ +y
    lat, inf = heart_axes((1.0, 0.0, 0.0), (0.0, 1.0, 0.0))
    assert lat[0] > 0.9 and inf[1] > 0.9
    # the same plane with its columns reversed: inferior now points up the image
    _, inf2 = heart_axes((1.0, 0.0, 0.0), (0.0, -1.0, 0.0))
    assert inf2[1] < -0.9
    assert len(ORIENTATIONS) == 8


def test_quality_settings_are_validated():
    assert Settings().quality.enabled
    with pytest.raises(ConfigError, match=r"quality\.min_phase_ratio"):
        Settings().replace(quality={"min_phase_ratio": 0})
    with pytest.raises(ConfigError, match=r"quality\.min_slices"):
        Settings().replace(quality={"min_slices": 1})
    assert not Settings().replace(quality={"enabled": False}).quality.enabled
