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


# --- wired into the running appliance ------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_static_series_through_the_running_appliance_is_stored_not_assessable(appliance, tmp_path):
    """Real watch folder, SQLite, ONNX Runtime, gRPC and Prometheus: a cine series whose every phase is the first
    one (a scanner that did not trigger) is stored as a result that is not assessable, names the reason, calls no
    finding positive, and is counted; a clean study beside it is assessable."""
    import urllib.request
    from pathlib import Path

    import pydicom
    from conftest import wait_for

    from appliance.dev.synth import plan_study, write_study
    from appliance.serve.client import ApplianceClient

    app = appliance()
    incoming = Path(app.settings.paths.incoming)
    static_plan = plan_study(seed=71, vendor="A", n_slices=8, n_phases=20, matrix=(160, 160))
    clean_plan = plan_study(seed=72, vendor="B", n_slices=8, n_phases=20, matrix=(160, 160))
    staging = tmp_path / "staging"
    files = write_study(static_plan, staging / "static")
    first_phase: dict[tuple[str, str], bytes] = {}
    datasets = [pydicom.dcmread(f) for f in files]
    cine = [(f, ds) for f, ds in zip(files, datasets, strict=True) if "TriggerTime" in ds and ds.Modality == "MR"]
    for f, ds in sorted(cine, key=lambda p: float(p[1].TriggerTime)):
        key = (str(ds.SeriesInstanceUID), str(ds.ImagePositionPatient))
        ds.PixelData = first_phase.setdefault(key, ds.PixelData)
        ds.save_as(f)
    (cine_uid,) = [s.series_uid for s in static_plan.series if s.role == "cine_sax"]
    (clean_uid,) = [s.series_uid for s in clean_plan.series if s.role == "cine_sax"]
    write_study(clean_plan, staging / "clean")
    for sub in ("static", "clean"):
        (staging / sub).rename(incoming / sub)
    with ApplianceClient(app.grpc_address) as client:
        client.wait_until_serving()
        results = wait_for(lambda: {r.series_instance_uid: r for r in client.list_all()}
                           if {cine_uid, clean_uid} <= {r.series_instance_uid for r in client.list_all()} else None,
                           timeout=60, what="both cine series scored")
    bad, good = results[cine_uid], results[clean_uid]
    assert bad.not_assessable and "no_cardiac_motion" in bad.quality_reasons
    assert bad.needs_review and "not_assessable" in bad.review_reasons
    assert not any(f.positive for f in bad.findings)
    assert not good.not_assessable and not good.quality_reasons
    text = urllib.request.urlopen(f"http://127.0.0.1:{app.metrics_port}/metrics", timeout=5).read().decode()
    assert 'scanside_series_not_assessable_total{reason="no_cardiac_motion"} 1.0' in text
    assert 'scanside_series_not_assessable_total{reason="noise"} 0.0' in text


@pytest.mark.parametrize("kind,vendor", [("clean", "A"), ("clean", "C"), ("transposed", "B"), ("static", "A"),
                                         ("outside_fov", "A")])
def test_the_fast_atlas_search_finds_what_the_reference_search_does(kind, vendor):
    """orientation_scores batches every orientation and position and correlates from running sums; it must find the
    same best correlation and position as searching grid by grid with canonical_maps and similarity (the plain,
    slow definition kept for atlas fitting)."""
    from appliance.quality import atlas
    from appliance.quality.gate import REFINE_MM, SEARCH_MM, _grid, canonical_maps, orientation_scores, similarity

    s = make(kind, SEED + 7, vendor)
    x = s.tensor[0] if s.tensor.ndim == 5 else s.tensor
    mean, sd = x.mean(axis=0), x.std(axis=0)
    pixel_mm = s.facts.fov_mm / max(x.shape[-2:])
    centre = ((x.shape[-1] - 1) / 2.0 + 1.3, (x.shape[-2] - 1) / 2.0 - 0.7)
    template = atlas.maps(x.shape[1])
    fast = orientation_scores(mean, sd, centre, pixel_mm, s.facts)
    assert set(fast) == set(ORIENTATIONS)
    for name, ((a, b), (c, d)) in ORIENTATIONS.items():
        la, lb = s.facts.lateral_xy
        ia, ib = s.facts.inferior_xy
        lat, inf = (a * la + b * lb, c * la + d * lb), (a * ia + b * ib, c * ia + d * ib)
        best = (-2.0, centre)
        for steps in (SEARCH_MM, REFINE_MM):
            centres = _grid(best[1], steps, pixel_mm)
            r = similarity(canonical_maps(mean, sd, centres, pixel_mm, lat, inf), template[:, :, None])
            k = int(np.argmax(r))
            if r[k] > best[0]:
                best = (float(r[k]), (float(centres[k, 0]), float(centres[k, 1])))
        assert fast[name][0] == pytest.approx(best[0], abs=1e-5), name
        assert fast[name][1] == pytest.approx(best[1], abs=1e-6), name
