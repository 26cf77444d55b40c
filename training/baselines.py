"""Baselines that a synthetic cohort must not be solvable by: simple image statistics of the model tensor.

If a single statistic (mean intensity, bright area, its change over the cycle) or a ridge model on ~100 of them
scores a finding nearly as well as a CNN, the cohort teaches nothing about hearts. numpy only.

    python -m training.baselines --n 600
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time

import numpy as np

from training.evalmath import auroc

_THRESHOLDS = (0.3, 0.5, 0.7)
_PERCENTILES = (5, 25, 50, 75, 95)


def _area_stats(bright: np.ndarray, prefix: str) -> tuple[list[np.ndarray], list[str]]:
    """bright: (N, T) fraction of pixels above a threshold; level, cycle extremes and their change."""
    lo, hi = bright.min(axis=1), bright.max(axis=1)
    cols = [bright.mean(axis=1), lo, hi, hi - lo, (hi - lo) / np.maximum(hi, 1e-6), bright.std(axis=1),
            bright[:, 0]]
    names = [f"{prefix}_mean", f"{prefix}_min", f"{prefix}_max", f"{prefix}_range", f"{prefix}_relrange",
             f"{prefix}_tstd", f"{prefix}_t0"]
    return cols, names


def simple_statistics(tensors: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """~100 per-study statistics of (N, T, C, H, W) tensors: intensity levels, bright areas and their cycle."""
    x = np.asarray(tensors, dtype=np.float32)
    if x.ndim != 5:
        raise ValueError(f"expected (N, T, C, H, W) tensors, got shape {x.shape}")
    n, t, c, h, w = x.shape
    cols: list[np.ndarray] = []
    names: list[str] = []

    def add(values: np.ndarray, name: str) -> None:
        cols.append(np.asarray(values, dtype=np.float64).reshape(n))
        names.append(name)

    add(x.mean(axis=(1, 2, 3, 4)), "mean")
    add(x.std(axis=(1, 2, 3, 4)), "std")
    add(x.std(axis=1).mean(axis=(1, 2, 3)), "temporal_std")
    ch, cw = h // 4, w // 4
    centre = x[..., ch:h - ch, cw:w - cw]
    add(centre.mean(axis=(1, 2, 3, 4)), "centre_mean")
    add(centre.std(axis=1).mean(axis=(1, 2, 3)), "centre_temporal_std")
    for s in range(c):
        xs = x[:, :, s].reshape(n, t, h * w)
        flat = xs.reshape(n, -1)
        add(flat.mean(axis=1), f"s{s}_mean")
        add(flat.std(axis=1), f"s{s}_std")
        for q, v in zip(_PERCENTILES, np.percentile(flat, _PERCENTILES, axis=1), strict=True):
            add(v, f"s{s}_p{q}")
        add(xs.std(axis=1).mean(axis=1), f"s{s}_temporal_std")
        frame_mean = xs.mean(axis=2)  # (N, T)
        add(frame_mean.max(axis=1) - frame_mean.min(axis=1), f"s{s}_mean_range")
        cs = x[:, :, s, ch:h - ch, cw:w - cw].reshape(n, t, -1)
        add(cs.mean(axis=(1, 2)), f"s{s}_centre_mean")
        add(cs.std(axis=1).mean(axis=1), f"s{s}_centre_temporal_std")
        for thr in _THRESHOLDS:
            area = (xs > thr).mean(axis=2)
            a_cols, a_names = _area_stats(area, f"s{s}_bright{thr:g}")
            cols.extend(a_cols)
            names.extend(a_names)
        c_area = (cs > 0.5).mean(axis=2)
        a_cols, a_names = _area_stats(c_area, f"s{s}_centre_bright0.5")
        cols.extend(a_cols)
        names.extend(a_names)
    whole = (x > 0.5).mean(axis=(2, 3, 4))
    a_cols, a_names = _area_stats(whole, "all_bright0.5")
    cols.extend(a_cols)
    names.extend(a_names)
    return np.stack(cols, axis=1), names


def _labels_2d(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y, dtype=bool)
    return y[:, None] if y.ndim == 1 else y


def best_single_statistic(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                          test_y: np.ndarray) -> list[dict]:
    """Per finding (column of y): the statistic and sign with the best train AUROC, and its AUROC on test."""
    train_y, test_y = _labels_2d(train_y), _labels_2d(test_y)
    out = []
    for f in range(train_y.shape[1]):
        best_j, best_sign, best_auc = -1, 1.0, -1.0
        for j in range(train_x.shape[1]):
            a = auroc(train_x[:, j], train_y[:, f])
            if np.isnan(a):
                continue
            sign = 1.0 if a >= 0.5 else -1.0
            a = max(a, 1.0 - a)
            if a > best_auc:
                best_j, best_sign, best_auc = j, sign, a
        test_auc = float("nan") if best_j < 0 else auroc(best_sign * test_x[:, best_j], test_y[:, f])
        out.append({"index": best_j, "sign": best_sign, "train_auroc": best_auc, "test_auroc": test_auc})
    return out


def _standardise(train_x: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    mu = train_x.mean(axis=0)
    sd = train_x.std(axis=0)
    sd = np.where(sd > 1e-12, sd, 1.0)
    return [(a - mu) / sd for a in (train_x, *others)]


def _ridge(x: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    """Ridge regression on +-1 targets with an unpenalised intercept; returns (weights..., intercept)."""
    xm = x.mean(axis=0)
    t = np.where(y, 1.0, -1.0)
    tm = t.mean()
    xc = x - xm
    w = np.linalg.solve(xc.T @ xc + lam * len(x) * np.eye(x.shape[1]), xc.T @ (t - tm))
    return np.concatenate([w, [tm - xm @ w]])


def _predict(x: np.ndarray, coef: np.ndarray) -> np.ndarray:
    return x @ coef[:-1] + coef[-1]


LAMBDAS = tuple(10.0 ** k for k in np.arange(-4.0, 2.01, 0.5))


def cross_validated_linear(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                           folds: int = 5, seed: int = 0) -> list[dict]:
    """Per finding: ridge on standardised statistics, its penalty chosen by k-fold CV AUROC on train; test AUROC."""
    train_y, test_y = _labels_2d(train_y), _labels_2d(test_y)
    xs, xt = _standardise(np.asarray(train_x, np.float64), np.asarray(test_x, np.float64))
    fold_of = np.random.default_rng(seed).permutation(len(xs)) % folds
    out = []
    for f in range(train_y.shape[1]):
        y = train_y[:, f]
        if y.all() or not y.any():
            out.append({"lambda": float("nan"), "cv_auroc": float("nan"), "test_auroc": float("nan")})
            continue
        cv = []
        for lam in LAMBDAS:
            scores = np.empty(len(xs))
            for k in range(folds):
                held = fold_of == k
                inner = _standardise(xs[~held], xs[held])
                scores[held] = _predict(inner[1], _ridge(inner[0], y[~held], lam))
            cv.append(auroc(scores, y))
        cv_arr = np.nan_to_num(np.asarray(cv), nan=-1.0)
        best = int(np.argmax(cv_arr))
        coef = _ridge(xs, y, LAMBDAS[best])
        out.append({"lambda": LAMBDAS[best], "cv_auroc": float(cv_arr[best]),
                    "test_auroc": auroc(_predict(xt, coef), test_y[:, f])})
    return out


def _one(args: tuple[int, str, dict]) -> tuple[np.ndarray, np.ndarray]:
    from appliance.dev.synth import plan_study
    from appliance.dev.synth.arrays import study_tensor
    from appliance.dev.synth.reports import study_labels
    from appliance.preprocess import PreprocessSpec
    from training.prompts import FINDING_IDS

    seed, vendor, spec_dict = args
    plan = plan_study(seed=seed, vendor=vendor)
    tensor = study_tensor(plan, PreprocessSpec.from_dict(spec_dict)).astype(np.float16)
    labels = study_labels(plan.params)
    return tensor, np.array([labels[f] for f in FINDING_IDS], dtype=bool)


def build(n: int, seed: int, processes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    from appliance.preprocess import PreprocessSpec

    # the reference bundle's model input (training/build_reference.py REFERENCE_SPEC)
    spec = PreprocessSpec(frames=16, size=(64, 64), fov_mm=200.0)
    jobs = [(seed + i, "AB"[i % 2], spec.to_dict()) for i in range(n)]
    with mp.get_context("spawn").Pool(processes) as pool:
        results = pool.map(_one, jobs, chunksize=8)
    return np.stack([r[0] for r in results]), np.stack([r[1] for r in results])


def main(argv: list[str] | None = None) -> None:
    from training.prompts import FINDING_IDS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=600, help="studies (half train, half test)")
    ap.add_argument("--seed", type=int, default=777_000)
    ap.add_argument("--processes", type=int, default=2)
    args = ap.parse_args(argv)
    started = time.perf_counter()
    tensors, labels = build(args.n, args.seed, args.processes)
    print(f"built {len(tensors)} studies in {time.perf_counter() - started:.0f} s")
    x, names = simple_statistics(tensors)
    half = len(x) // 2
    single = best_single_statistic(x[:half], labels[:half], x[half:], labels[half:])
    linear = cross_validated_linear(x[:half], labels[:half], x[half:], labels[half:])
    print(f"{len(names)} statistics")
    print(f"{'finding':26s} {'pos':>4s} {'single':>7s} {'linear':>7s}  best statistic")
    for f, fid in enumerate(FINDING_IDS):
        s, lin = single[f], linear[f]
        stat = names[s["index"]] if s["index"] >= 0 else "-"
        print(f"{fid:26s} {int(labels[:, f].sum()):4d} {s['test_auroc']:7.3f} {lin['test_auroc']:7.3f}  "
              f"{'+' if s['sign'] > 0 else '-'}{stat}")
    sa = np.nanmean([s["test_auroc"] for s in single])
    la = np.nanmean([lin["test_auroc"] for lin in linear])
    print(f"{'mean':26s} {'':4s} {sa:7.3f} {la:7.3f}")


if __name__ == "__main__":
    main()
