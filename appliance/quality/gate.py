"""Is this tensor a usable cine short-axis stack? A pure function of the model tensor and the series' facts.

Each check is one measured quantity against one threshold of `[quality]` (docs/quality-gate.md):

- too_few_phases / too_few_slices: from the headers. Fewer acquired phases than half the model's frames means
  most model frames are blends of two acquired ones; fewer than five slices puts base, mid and apex side by side.
- noise: the mean correlation of horizontally and vertically adjacent pixels, frame by frame. Images of anatomy
  are smooth at the tensor's ~3 mm pixels (correlation ~0.9); noise is not (~0).
- no_cardiac_motion: the 99th percentile of each pixel's standard deviation over the cardiac cycle, absolute and
  relative to the median (the noise floor). A beating heart moves blood/myocardium edges by several pixels; a
  static series (one frame repeated) moves nothing, and fresh noise each frame moves everything a little.
- heart_outside_fov: the centre of that motion (robust: re-centred twice within `heart_radius_mm`) lies farther
  than `max_heart_offset_mm` from the image centre, which the planning puts on the heart.
- not_cardiac: the motion is not concentrated in one heart-sized region (a moving texture, breathing-only motion
  of other anatomy), or the stack does not resemble the short-axis atlas in any orientation.
- wrong_orientation: the atlas (average correctly oriented stack in the heart's own frame: LV in the middle, RV
  septal and a little anterior, descending aorta posterior, lungs at the sides, liver inferior-right) is matched
  better by a flipped, transposed or rotated image than by the image as its header orients it.

The image checks are ordered: once one fails, the later ones (which assume what it refutes) are not applied.
"""

from __future__ import annotations

import math

import numpy as np

from appliance.config.sections import QualityConfig
from appliance.quality import atlas
from appliance.quality.facts import SeriesFacts
from appliance.quality.verdict import QualityVerdict

# The closed set of reasons, in the order they are reported (and the label set of the metric).
REASONS = ("too_few_phases", "too_few_slices", "noise", "no_cardiac_motion", "heart_outside_fov", "not_cardiac",
           "wrong_orientation")

# The eight ways to lay a square image down (x along columns, y along rows): the header's orientation and the
# seven a header that lies could hide. Matrices act on (x, y) about the image centre.
ORIENTATIONS: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {
    "as_labelled": ((1, 0), (0, 1)),
    "mirrored": ((-1, 0), (0, 1)),
    "upside_down": ((1, 0), (0, -1)),
    "rotated_180": ((-1, 0), (0, -1)),
    "transposed": ((0, 1), (1, 0)),
    "anti_transposed": ((0, -1), (-1, 0)),
    "rotated_90": ((0, -1), (1, 0)),
    "rotated_270": ((0, 1), (-1, 0)),
}


DEFAULTS = QualityConfig()


def assess(tensor: np.ndarray, facts: SeriesFacts, cfg: QualityConfig = DEFAULTS) -> QualityVerdict:
    """The verdict on one prepared series: (T, C, H, W) or (1, T, C, H, W) float32, as the preprocessing made it."""
    x = np.asarray(tensor, dtype=np.float32)
    if x.ndim == 5 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 4:
        raise ValueError(f"tensor must be (T, C, H, W), got shape {np.shape(tensor)}")
    reasons: list[str] = []
    min_phases = max(2, math.ceil(cfg.min_phase_ratio * facts.frames))
    if facts.phases < min_phases:
        reasons.append("too_few_phases")
    if facts.slices < cfg.min_slices:
        reasons.append("too_few_slices")
    m = measure(x, facts, cfg)
    image_reason = _image_reason(m, cfg)
    if image_reason is not None:
        reasons.append(image_reason)
    m["phases"] = float(facts.phases)
    m["slices"] = float(facts.slices)
    return QualityVerdict(assessable=not reasons, reasons=tuple(reasons), measures=m)


def _image_reason(m: dict[str, float], cfg: QualityConfig) -> str | None:
    if not m["neighbour_correlation"] >= cfg.min_neighbour_correlation:
        return "noise"
    if not (m["motion"] >= cfg.min_motion and m["motion_ratio"] >= cfg.min_motion_ratio):
        return "no_cardiac_motion"
    if not m["heart_offset_mm"] <= cfg.max_heart_offset_mm:
        return "heart_outside_fov"
    if not (m["motion_compactness"] >= cfg.min_motion_compactness
            and m["atlas_similarity"] >= cfg.min_atlas_similarity):
        return "not_cardiac"
    if not m["orientation_margin"] >= cfg.min_orientation_margin:
        return "wrong_orientation"
    return None


def measure(x: np.ndarray, facts: SeriesFacts, cfg: QualityConfig) -> dict[str, float]:
    """Every measured quantity of the gate, by name (they travel with the verdict for debugging)."""
    _, c, h, w = x.shape
    pixel_mm = facts.fov_mm / max(h, w)
    out: dict[str, float] = {"neighbour_correlation": neighbour_correlation(x)}
    sd = x.std(axis=0)  # (C, H, W)
    mean = x.mean(axis=0)
    p99 = float(np.percentile(sd, 99.0))
    floor = float(np.median(sd))
    out["motion"] = p99
    out["motion_ratio"] = p99 / max(floor, 0.005)
    excess = np.maximum(sd * sd - (2.0 * floor) ** 2, 0.0).sum(axis=0)  # (H, W): motion above the noise floor
    centre, compactness = motion_centre(excess, cfg.heart_radius_mm / pixel_mm)
    out["motion_compactness"] = compactness
    image_centre = ((w - 1) / 2.0, (h - 1) / 2.0)
    if atlas.maps(c) is None:  # no atlas fitted for this many slices: the anatomy checks cannot be made
        out["heart_offset_mm"] = _distance_mm(centre, image_centre, pixel_mm)
        out.update(atlas_similarity=1.0, atlas_as_labelled=1.0, orientation_margin=1.0)
        return out
    scores = orientation_scores(mean, sd, centre, pixel_mm, facts)
    best = max(scores, key=lambda k: scores[k][0])
    best_other = max(v[0] for k, v in scores.items() if k != "as_labelled")
    out["heart_offset_mm"] = _distance_mm(scores[best][1], image_centre, pixel_mm)
    out["atlas_similarity"] = scores[best][0]
    out["atlas_as_labelled"] = scores["as_labelled"][0]
    out["orientation_margin"] = scores["as_labelled"][0] - best_other
    return out


def _distance_mm(a: tuple[float, float], b: tuple[float, float], pixel_mm: float) -> float:
    return float(math.hypot(a[0] - b[0], a[1] - b[1]) * pixel_mm)


def neighbour_correlation(x: np.ndarray) -> float:
    """Mean Pearson correlation of each pixel with its right and lower neighbours, over frames and slices."""
    def corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a = a - a.mean(axis=(-2, -1), keepdims=True)
        b = b - b.mean(axis=(-2, -1), keepdims=True)
        num = (a * b).sum(axis=(-2, -1))
        den = np.sqrt((a * a).sum(axis=(-2, -1)) * (b * b).sum(axis=(-2, -1)))
        return np.where(den > 1e-12, num / np.maximum(den, 1e-12), 0.0)

    right = corr(x[..., :, :-1], x[..., :, 1:])
    down = corr(x[..., :-1, :], x[..., 1:, :])
    return float(0.5 * (right.mean() + down.mean()))


def motion_centre(excess: np.ndarray, radius_px: float) -> tuple[tuple[float, float], float]:
    """(x, y) pixel centre of the motion, re-centred within `radius_px`, and the share of motion within it."""
    h, w = excess.shape
    total = float(excess.sum())
    if total <= 0.0:
        return ((w - 1) / 2.0, (h - 1) / 2.0), 0.0
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    cx, cy = float((excess * xx).sum() / total), float((excess * yy).sum() / total)
    inside = np.ones_like(excess, dtype=bool)
    for _ in range(3):
        inside = (xx - cx) ** 2 + (yy - cy) ** 2 <= radius_px**2
        weight = excess * inside
        s = float(weight.sum())
        if s <= 0.0:
            break
        cx, cy = float((weight * xx).sum() / s), float((weight * yy).sum() / s)
    inside = (xx - cx) ** 2 + (yy - cy) ** 2 <= radius_px**2
    return (cx, cy), float((excess * inside).sum() / total)


def _blur(a: np.ndarray, passes: int = 2) -> np.ndarray:
    """[1, 2, 1] / 4 smoothing along the last two axes, `passes` times (edges repeated)."""
    for _ in range(passes):
        p = np.pad(a, [(0, 0)] * (a.ndim - 2) + [(1, 1), (1, 1)], mode="edge")
        a = 0.25 * p[..., :-2, 1:-1] + 0.5 * p[..., 1:-1, 1:-1] + 0.25 * p[..., 2:, 1:-1]
        p = np.pad(a, [(0, 0)] * (a.ndim - 2) + [(1, 1), (1, 1)], mode="edge")
        a = 0.25 * p[..., 1:-1, :-2] + 0.5 * p[..., 1:-1, 1:-1] + 0.25 * p[..., 1:-1, 2:]
    return a


def canonical_maps(mean: np.ndarray, sd: np.ndarray, centres: np.ndarray, pixel_mm: float,
                   lateral: tuple[float, float], inferior: tuple[float, float]) -> np.ndarray:
    """(C, 2, K, N, N): mean intensity and motion sampled on the atlas grid in the heart's frame (u lateral,
    v inferior, millimetres) about each of the K (x, y) pixel `centres`, each map z-scored; NaN off the image."""
    _, h, w = mean.shape
    maps = _blur(np.stack([mean, sd], axis=1))  # (C, 2, H, W)
    g = (np.arange(atlas.SIZE) - (atlas.SIZE - 1) / 2.0) * atlas.STEP_MM
    v, u = np.meshgrid(g, g, indexing="ij")
    centres = np.atleast_2d(np.asarray(centres, dtype=np.float64))
    px = centres[:, 0, None, None] + (u * lateral[0] + v * inferior[0]) / pixel_mm
    py = centres[:, 1, None, None] + (u * lateral[1] + v * inferior[1]) / pixel_mm
    valid = (px >= 0) & (px <= w - 1) & (py >= 0) & (py <= h - 1)
    x0 = np.clip(np.floor(px).astype(np.intp), 0, w - 2)
    y0 = np.clip(np.floor(py).astype(np.intp), 0, h - 2)
    fx, fy = np.clip(px - x0, 0, 1), np.clip(py - y0, 0, 1)
    out = (maps[..., y0, x0] * (1 - fx) * (1 - fy) + maps[..., y0, x0 + 1] * fx * (1 - fy)
           + maps[..., y0 + 1, x0] * (1 - fx) * fy + maps[..., y0 + 1, x0 + 1] * fx * fy)
    out = np.where(valid, out, np.nan)
    mu = np.nanmean(out, axis=(-2, -1), keepdims=True)
    sigma = np.nanstd(out, axis=(-2, -1), keepdims=True)
    return (out - mu) / np.maximum(sigma, 1e-6)


# Where the atlas is tried about the motion's centre: the heart's centre is not the motion's (a large RV that moves
# more than a failing LV pulls it aside), so the best position is searched: a 12 mm grid out to 36 mm, then 6 mm
# around the best of it.
SEARCH_MM = np.arange(-36.0, 36.1, 12.0)
REFINE_MM = np.array([-6.0, 0.0, 6.0])


def _grid(centre: tuple[float, float], steps_mm: np.ndarray, pixel_mm: float) -> np.ndarray:
    dy, dx = np.meshgrid(steps_mm / pixel_mm, steps_mm / pixel_mm, indexing="ij")
    return np.stack([centre[0] + dx.ravel(), centre[1] + dy.ravel()], axis=1)


def orientation_scores(mean: np.ndarray, sd: np.ndarray, centre: tuple[float, float], pixel_mm: float,
                       facts: SeriesFacts) -> dict[str, tuple[float, tuple[float, float]]]:
    """Per orientation the image could really have: the best correlation with the atlas and where (x, y) it is.

    All eight orientations are searched at once: one bilinear sampling of the blurred maps for every (orientation,
    position) pair of a step, and Pearson correlations from running sums. It computes what `similarity` of
    `canonical_maps` would (Pearson ignores their z-scoring) at a fraction of the cost: this search runs on the
    scoring path of every series."""
    template = atlas.maps(mean.shape[0])
    if template is None:
        raise ValueError(f"no atlas for {mean.shape[0]} slices")
    names = list(ORIENTATIONS)
    lat = np.empty((len(names), 2))
    inf = np.empty((len(names), 2))
    for i, ((a, b), (cc, d)) in enumerate(ORIENTATIONS.values()):
        # if the pixels are g(the image the header describes), the heart's axis L appears along g(L)
        lat[i] = (a * facts.lateral_xy[0] + b * facts.lateral_xy[1], cc * facts.lateral_xy[0] + d * facts.lateral_xy[1])
        inf[i] = (a * facts.inferior_xy[0] + b * facts.inferior_xy[1],
                  cc * facts.inferior_xy[0] + d * facts.inferior_xy[1])
    sampler = _AtlasSampler(mean, sd, template, pixel_mm)
    best_r = np.full(len(names), -2.0)
    best_c = np.tile(np.asarray(centre, dtype=np.float64), (len(names), 1))
    for steps in (SEARCH_MM, REFINE_MM):
        centres = np.stack([_grid((float(c[0]), float(c[1])), steps, pixel_mm) for c in best_c])  # (O, K, 2)
        k = centres.shape[1]
        r = sampler.correlations(centres.reshape(-1, 2), np.repeat(lat, k, axis=0),
                                 np.repeat(inf, k, axis=0)).reshape(len(names), k)
        top = np.argmax(r, axis=1)
        better = r[np.arange(len(names)), top] > best_r
        best_r = np.where(better, r[np.arange(len(names)), top], best_r)
        best_c = np.where(better[:, None], centres[np.arange(len(names)), top], best_c)
    return {name: (float(best_r[i]), (float(best_c[i, 0]), float(best_c[i, 1]))) for i, name in enumerate(names)}


class _AtlasSampler:
    """The blurred mean and motion maps of one series, ready to be sampled on the atlas grid and correlated with
    the (finite, fixed) atlas at many positions and orientations in one go."""

    def __init__(self, mean: np.ndarray, sd: np.ndarray, template: np.ndarray, pixel_mm: float) -> None:
        c, h, w = mean.shape
        self._h, self._w = h, w
        maps = _blur(np.stack([mean, sd], axis=1).astype(np.float32)).reshape(c * 2, h * w)  # (M, H*W)
        # Each map z-scored over the whole image first: Pearson does not see it, and it keeps the float32 running
        # sums below far from cancellation (a map that is constant, a static series' motion, stays exactly 0).
        mu = maps.mean(axis=1, keepdims=True)
        sigma = maps.std(axis=1, keepdims=True)
        self._maps = ((maps - mu) / np.maximum(sigma, 1e-6)).astype(np.float32)
        self._t = template.reshape(c * 2, -1).astype(np.float32)  # (M, P)
        self._pixel_mm = pixel_mm
        g = (np.arange(atlas.SIZE) - (atlas.SIZE - 1) / 2.0) * atlas.STEP_MM
        v, u = np.meshgrid(g, g, indexing="ij")
        self._u, self._v = u.ravel(), v.ravel()  # (P,)

    def correlations(self, centres: np.ndarray, lateral: np.ndarray, inferior: np.ndarray) -> np.ndarray:
        """(K,) mean over maps of the Pearson correlation with the atlas, where the grid lies on the image, for the
        grid about each (x, y) pixel centre with its own lateral and inferior pixel directions (all (K, 2))."""
        h, w = self._h, self._w
        px = centres[:, :1] + (self._u * lateral[:, :1] + self._v * inferior[:, :1]) / self._pixel_mm  # (K, P)
        py = centres[:, 1:] + (self._u * lateral[:, 1:] + self._v * inferior[:, 1:]) / self._pixel_mm
        valid = (px >= 0) & (px <= w - 1) & (py >= 0) & (py <= h - 1)
        x0 = np.clip(np.floor(px).astype(np.intp), 0, w - 2)
        y0 = np.clip(np.floor(py).astype(np.intp), 0, h - 2)
        fx = np.clip(px - x0, 0, 1).astype(np.float32)
        fy = np.clip(py - y0, 0, 1).astype(np.float32)
        idx = y0 * w + x0
        m = self._maps
        # bilinear, with the points off the image weighted 0: (M, K, P). The same products summed in the same order
        # as one expression per corner would, in two buffers instead of eight temporaries of ~4 MB each (the search
        # step's K is 392): fresh pages for each cost more than the arithmetic. The indices are in range (x0, y0
        # clipped above), so mode="clip" changes nothing but lets take() fill `part` without a buffer of its own.
        a = np.take(m, idx, axis=1, mode="clip")
        a *= (1 - fx) * (1 - fy) * valid
        part = np.take(m, idx + 1, axis=1, mode="clip")
        part *= fx * (1 - fy) * valid
        a += part
        np.take(m, idx + w, axis=1, out=part, mode="clip")
        part *= (1 - fx) * fy * valid
        a += part
        np.take(m, idx + w + 1, axis=1, out=part, mode="clip")
        part *= fx * fy * valid
        a += part
        ok = valid.astype(np.float32)
        n = np.maximum(ok.sum(axis=1), 1.0)  # (K,)
        t = self._t
        sa = a.sum(axis=2)  # (M, K)
        saa = np.einsum("mkp,mkp->mk", a, a)
        sab = np.einsum("mkp,mp->mk", a, t)
        sb = (ok @ t.T).T
        sbb = (ok @ (t * t).T).T
        cov = sab - sa * sb / n
        va = saa - sa * sa / n
        vb = sbb - sb * sb / n
        # a map constant over the grid correlates with nothing: the sums' rounding must not make it a correlation
        flat = (va <= 1e-5 * np.maximum(saa, 1e-30)) | (vb <= 1e-5 * np.maximum(sbb, 1e-30))
        den = np.sqrt(np.maximum(va, 0.0) * np.maximum(vb, 0.0))
        r = np.where(flat | (den <= 1e-12), 0.0, cov / np.where(den > 0, den, 1.0))
        return r.mean(axis=0)


def similarity(maps: np.ndarray, template: np.ndarray) -> np.ndarray:
    """Mean over slices and maps (the first two axes) of the Pearson correlation with the atlas over the last two,
    where both are defined: shape maps.shape[2:-2]."""
    ok = np.isfinite(maps) & np.isfinite(template)
    a, b = np.where(ok, maps, 0.0), np.where(ok, template, 0.0)
    n = np.maximum(ok.sum(axis=(-2, -1)), 1)
    ac = np.where(ok, a - (a.sum(axis=(-2, -1)) / n)[..., None, None], 0.0)
    bc = np.where(ok, b - (b.sum(axis=(-2, -1)) / n)[..., None, None], 0.0)
    den = np.sqrt((ac * ac).sum(axis=(-2, -1)) * (bc * bc).sum(axis=(-2, -1)))
    r = np.where(den > 1e-12, (ac * bc).sum(axis=(-2, -1)) / np.maximum(den, 1e-12), 0.0)
    return r.mean(axis=(0, 1))
