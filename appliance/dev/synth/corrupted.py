"""Corrupted cine series for the input quality gate, and its measurement: SYNTHETIC DATA, NOT FOR CLINICAL USE.

From a synthetic study (`plan_study`) this makes what a scanner, a mis-set protocol or a wrong series can send: the
pixels flipped or transposed while the header stays the same (upside-down, transposed, mirrored), one frame
repeated (no motion), pure noise, non-cardiac content (a moving smooth texture, or slices below the heart with
breathing), the heart outside the field of view, too few phases, too few slices, and clean studies. Everything is
deterministic from (kind, seed, vendor): the committed set is this generator plus `SET` below; nothing binary.

    python -m appliance.dev.synth.corrupted --n 40            # the share flagged per kind, clean false positives
    python -m appliance.dev.synth.corrupted --fit-atlas       # refit appliance/quality/_atlas_data.py
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from appliance.config.sections import QualityConfig
from appliance.dev.synth.arrays import cine_frames, cine_geometry, study_tensor
from appliance.dev.synth.geometry import plan_sax_stack
from appliance.dev.synth.phantom import render_slice
from appliance.dev.synth.pixels import bias_field, to_stored
from appliance.dev.synth.plan import StudyPlan, plan_study
from appliance.preprocess import ArrayFrame, PreprocessSpec, plan_stack, stack_from_arrays
from appliance.quality import QualityVerdict, SeriesFacts, assess, series_facts
from appliance.quality import atlas as atlas_mod

# The reference bundle's preprocessing (engines/reference-v1): what the gate is calibrated for.
SPEC = PreprocessSpec(frames=16, size=(64, 64), fov_mm=200.0)

CORRUPTIONS = ("upside_down", "transposed", "mirrored", "static", "noise", "non_cardiac", "outside_fov",
               "too_few_phases", "too_few_slices")
KINDS = ("clean", *CORRUPTIONS)

# The committed set: which seeds each measurement uses. Corrupted series alternate vendors A, B, C; clean ones are
# vendors A and B (trained on) plus C (held out). The atlas is fitted on seeds that are measured nowhere.
SET: dict[str, Any] = {
    "corrupted_seeds_from": 500_000,
    "clean_seeds_from": 0,
    "clean_c_seeds_from": 200_000,
    "atlas_seeds_from": 900_000,
    "vendors_corrupted": ("A", "B", "C"),
    "vendors_clean": ("A", "B"),
}


@dataclass(frozen=True)
class Sample:
    kind: str
    seed: int
    vendor: str
    tensor: np.ndarray
    facts: SeriesFacts


def _rng(kind: str, seed: int) -> np.random.Generator:
    return np.random.default_rng([seed, 7177, KINDS.index(kind)])


def _picked_slices(plan: StudyPlan, spec: PreprocessSpec) -> list[int]:
    geometry = cine_geometry(plan)
    stack = plan_stack(geometry, [g.shape for g in geometry], spec)
    by_position = sorted({g.slice_index for g in geometry})
    return sorted({by_position[p.slice_index] for p in stack.picked})


def _frames(plan: StudyPlan, spec: PreprocessSpec) -> list[ArrayFrame]:
    """The frames of the slices the tensor is made from (all phases), pixels as the header describes them."""
    return cine_frames(plan, slices=_picked_slices(plan, spec))


def _with_pixels(frames: list[ArrayFrame], change: Callable[[int, ArrayFrame], np.ndarray]) -> list[ArrayFrame]:
    return [dataclasses.replace(f, pixels=np.ascontiguousarray(change(i, f), dtype=np.float32))
            for i, f in enumerate(frames)]


def _by_slice(frames: list[ArrayFrame]) -> dict[tuple[float, ...], list[int]]:
    groups: dict[tuple[float, ...], list[int]] = {}
    for i, f in enumerate(frames):
        groups.setdefault(tuple(round(v, 2) for v in f.position), []).append(i)
    return groups


def _noise_like(plan: StudyPlan, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    prof = plan.profile
    return to_stored(np.zeros(shape, np.float32), prof, rng, plan.gain_scale * float(rng.uniform(0.5, 3.0)))


def _smooth_texture(shape: tuple[int, int], rng: np.random.Generator, frames: int) -> list[np.ndarray]:
    """A smooth random texture (sums of plane waves, ~10-60 mm) that drifts and changes over the cycle."""
    rows, cols = shape
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float32)
    waves = [(rng.uniform(2 * np.pi / 60, 2 * np.pi / 8), rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi),
              rng.uniform(0.3, 1.0), rng.uniform(-1.5, 1.5)) for _ in range(8)]
    out = []
    for t in range(frames):
        img = np.zeros(shape, np.float32)
        for k, ang, phase, amp, speed in waves:
            img += amp * np.sin(k * (np.cos(ang) * x + np.sin(ang) * y) + phase + speed * 2 * np.pi * t / frames)
        out.append(np.clip(0.45 + 0.12 * img, 0.0, None))
    return out


def _below_heart(plan: StudyPlan, frames: list[ArrayFrame], rng: np.random.Generator) -> list[ArrayFrame]:
    """Other anatomy: the same field of view but below the apex (liver, lungs, body wall), moving with breathing."""
    stack = plan.stack
    groups = _by_slice(frames)
    bias = bias_field(plan.rows, plan.cols, rng)
    amplitude_px = float(rng.uniform(1.0, 6.0))
    angle = float(rng.uniform(0, 2 * np.pi))
    pixels: dict[int, np.ndarray] = {}
    for level, members in enumerate(groups.values()):
        z = 1.15 + 0.15 * level
        base = render_slice(plan.params, z, 0.0, plan.rows, plan.cols, plan.pixel_spacing, stack.center_offset_mm,
                            stack.rotation_deg, stack.mirror)
        for k, i in enumerate(members):
            s = amplitude_px * math.sin(2 * math.pi * k / len(members))
            shifted = np.roll(base, (round(s * math.sin(angle)), round(s * math.cos(angle))), axis=(0, 1))
            pixels[i] = to_stored(shifted, plan.profile, rng, plan.gain_scale, bias).astype(np.float32)
    return _with_pixels(frames, lambda i, f: pixels[i])


def _static(frames: list[ArrayFrame]) -> list[ArrayFrame]:
    first = {i: members[0] for members in _by_slice(frames).values() for i in members}
    return _with_pixels(frames, lambda i, f: frames[first[i]].pixels)


def _outside_fov(plan: StudyPlan, rng: np.random.Generator) -> StudyPlan:
    """The same heart, planned with the image centre 70-110 mm away from it (a mis-placed stack)."""
    distance, angle = float(rng.uniform(70.0, 110.0)), float(rng.uniform(0, 2 * np.pi))
    s = plan.stack
    prof = plan.profile
    offset = (s.center_offset_mm[0] + distance * math.cos(angle), s.center_offset_mm[1] + distance * math.sin(angle))
    stack = plan_sax_stack(s.pose, plan.n_slices, plan.rows, plan.cols, plan.pixel_spacing, s.rotation_deg,
                           prof.normal_sign, offset, s.thickness_mm)
    return dataclasses.replace(plan, stack=stack)


def make(kind: str, seed: int, vendor: str = "A", spec: PreprocessSpec = SPEC) -> Sample:
    """One series of `kind` (see KINDS): its model tensor and the facts its headers give."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; one of {', '.join(KINDS)}")
    rng = _rng(kind, seed)
    if kind == "too_few_phases":
        plan = plan_study(seed, vendor=vendor, n_phases=int(rng.integers(3, math.ceil(spec.frames / 2))))
    elif kind == "too_few_slices":
        plan = plan_study(seed, vendor=vendor, n_slices=int(rng.integers(3, 5)))
    else:
        plan = plan_study(seed, vendor=vendor)
    if kind in ("clean", "too_few_phases", "too_few_slices", "outside_fov"):
        if kind == "outside_fov":
            plan = _outside_fov(plan, rng)
        geometry = cine_geometry(plan)
        facts = series_facts(geometry, [g.shape for g in geometry], spec)
        return Sample(kind, seed, vendor, study_tensor(plan, spec), facts)
    geometry = cine_geometry(plan)  # the headers, which the corruptions below leave as they are
    facts = series_facts(geometry, [g.shape for g in geometry], spec)
    frames = _frames(plan, spec)
    if kind == "upside_down":
        frames = _with_pixels(frames, lambda i, f: f.pixels[::-1, :])
    elif kind == "mirrored":
        frames = _with_pixels(frames, lambda i, f: f.pixels[:, ::-1])
    elif kind == "transposed":
        frames = _with_pixels(frames, lambda i, f: f.pixels.T)
    elif kind == "static":
        frames = _static(frames)
    elif kind == "noise":
        frames = _with_pixels(frames, lambda i, f: _noise_like(plan, f.pixels.shape, rng))
    elif kind == "non_cardiac":
        if seed % 2:
            textures = {}
            for members in _by_slice(frames).values():
                for i, img in zip(members, _smooth_texture(frames[members[0]].pixels.shape, rng, len(members)),
                                  strict=True):
                    textures[i] = to_stored(img, plan.profile, rng, plan.gain_scale).astype(np.float32)
            frames = _with_pixels(frames, lambda i, f: textures[i])
        else:
            frames = _below_heart(plan, frames, rng)
    return Sample(kind, seed, vendor, stack_from_arrays(frames, spec), facts)


def samples(kind: str, n: int, vendors: tuple[str, ...], seed_from: int) -> Iterator[Sample]:
    for k in range(n):
        yield make(kind, seed_from + k, vendors[k % len(vendors)])


def fit_atlas(n: int, spec: PreprocessSpec = SPEC, rounds: int = 3) -> np.ndarray:
    """The average of `n` clean studies' canonical maps (vendors A and B), z-scored again.

    The first round centres each study on its image centre (the planning puts the heart there); later rounds on
    where the previous round's atlas matches it best, as the gate will look for it."""
    from appliance.quality.gate import canonical_maps, orientation_scores

    studies = list(samples("clean", n, SET["vendors_clean"], SET["atlas_seeds_from"]))
    pixel_mm = spec.fov_mm / max(spec.size)
    centre_px = ((spec.size[1] - 1) / 2.0, (spec.size[0] - 1) / 2.0)
    centres = [centre_px] * len(studies)
    template = np.zeros(0)
    for round_ in range(rounds):
        total = count = None
        for s, centre in zip(studies, centres, strict=True):
            mean, sd = s.tensor.mean(axis=0), s.tensor.std(axis=0)
            maps = canonical_maps(mean, sd, np.array([centre]), pixel_mm, s.facts.lateral_xy,
                                  s.facts.inferior_xy)[:, :, 0]
            ok = np.isfinite(maps)
            total = np.where(ok, maps, 0.0) if total is None else total + np.where(ok, maps, 0.0)
            count = ok.astype(np.float64) if count is None else count + ok
        assert total is not None and count is not None
        mean_maps = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        mu = np.nanmean(mean_maps, axis=(-2, -1), keepdims=True)
        sigma = np.nanstd(mean_maps, axis=(-2, -1), keepdims=True)
        template = np.nan_to_num((mean_maps - mu) / np.maximum(sigma, 1e-6))
        if round_ == rounds - 1:
            break
        atlas_mod.install(template)
        centres = []
        for s in studies:
            mean, sd = s.tensor.mean(axis=0), s.tensor.std(axis=0)
            centres.append(orientation_scores(mean, sd, centre_px, pixel_mm, s.facts)["as_labelled"][1])
    return template


def measure_set(n: int, clean: int, clean_c: int, cfg: QualityConfig | None = None,
                log: Callable[[str], None] = print) -> dict[str, object]:
    """Per kind: how many series, how many flagged not assessable, and by which first reason."""
    cfg = QualityConfig() if cfg is None else cfg
    plan: list[tuple[str, int, tuple[str, ...], int]] = [
        ("clean", clean, SET["vendors_clean"], SET["clean_seeds_from"]),
        ("clean", clean_c, ("C",), SET["clean_c_seeds_from"]),
    ] + [(k, n, SET["vendors_corrupted"], SET["corrupted_seeds_from"]) for k in CORRUPTIONS]
    rows: dict[str, dict[str, object]] = {}
    misses: list[dict[str, object]] = []
    for kind, count, vendors, seed_from in plan:
        label = "clean_C" if vendors == ("C",) else kind
        started = time.perf_counter()
        flagged = 0
        reasons: Counter[str] = Counter()
        for s in samples(kind, count, vendors, seed_from):
            v = assess(s.tensor, s.facts, cfg)
            if not v.assessable:
                flagged += 1
                reasons[v.reasons[0]] += 1
            if (kind == "clean") != v.assessable:
                misses.append({"kind": label, "seed": s.seed, "vendor": s.vendor, "reasons": list(v.reasons),
                               "measures": {k: round(x, 3) for k, x in v.measures.items()}})
        share = flagged / count if count else 0.0
        rows[label] = {"series": count, "not_assessable": flagged, "share": round(share, 4),
                       "first_reasons": dict(reasons.most_common())}
        log(f"{label:<15} {count:>4} series  not assessable {flagged:>4} ({100 * share:5.1f} %)  "
            f"{dict(reasons.most_common())}  [{time.perf_counter() - started:.0f} s]")
    return {"set": SET, "spec": SPEC.to_dict(), "config": dataclasses.asdict(cfg), "kinds": rows, "misses": misses}


def verdict_of(kind: str, seed: int, vendor: str = "A") -> QualityVerdict:
    s = make(kind, seed, vendor)
    return assess(s.tensor, s.facts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m appliance.dev.synth.corrupted", description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=40, help="series per corruption kind")
    ap.add_argument("--clean", type=int, default=300, help="clean series of vendors A and B")
    ap.add_argument("--clean-c", type=int, default=60, help="clean series of vendor C (held out)")
    ap.add_argument("--json", type=Path, help="also write the counts (and every miss) here")
    ap.add_argument("--fit-atlas", type=int, nargs="?", const=200, metavar="N",
                    help="refit the gate's atlas from N clean studies into appliance/quality/_atlas_data.py")
    args = ap.parse_args(argv)
    if args.fit_atlas:
        template = fit_atlas(args.fit_atlas)
        target = Path(atlas_mod.__file__).with_name("_atlas_data.py")
        target.write_text(atlas_mod.encode(template))
        atlas_mod.install(None)
        print(f"wrote {target} from {args.fit_atlas} clean studies")
        return 0
    result = measure_set(args.n, args.clean, args.clean_c)
    kinds = result["kinds"]
    assert isinstance(kinds, dict)
    corrupted = [kinds[k] for k in CORRUPTIONS]
    caught = sum(int(r["not_assessable"]) for r in corrupted) / max(sum(int(r["series"]) for r in corrupted), 1)
    clean_rows = [kinds[k] for k in ("clean", "clean_C") if k in kinds]
    wrong = sum(int(r["not_assessable"]) for r in clean_rows) / max(sum(int(r["series"]) for r in clean_rows), 1)
    print(f"corrupted not assessable: {100 * caught:.1f} %   clean flagged: {100 * wrong:.2f} %")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
