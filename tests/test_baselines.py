"""The simple-statistic baselines find a statistic that encodes the label, and find nothing in noise."""

from __future__ import annotations

import numpy as np
import pytest

from training.baselines import best_single_statistic, cross_validated_linear, simple_statistics


def _tensors(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0.0, 0.4, (n, 4, 3, 16, 16)).astype(np.float32)


def test_statistics_shape_names_and_values():
    rng = np.random.default_rng(0)
    x = _tensors(5, rng)
    x[2, :, 1, 4:12, 4:12] = 0.9  # one study with a bright centre in slice 1
    stats, names = simple_statistics(x)
    assert stats.shape == (5, len(names)) and 80 <= len(names) <= 160
    assert len(set(names)) == len(names) and np.isfinite(stats).all()
    col = {name: stats[:, i] for i, name in enumerate(names)}
    assert col["mean"] == pytest.approx(x.reshape(5, -1).mean(axis=1), rel=1e-5)
    assert col["s1_bright0.5_mean"][2] == pytest.approx(64 / 256)
    assert col["s1_bright0.5_mean"][[0, 1, 3, 4]].max() == 0.0
    assert col["s0_bright0.5_mean"][2] == 0.0
    with pytest.raises(ValueError):
        simple_statistics(x[0])


def test_bright_area_change_over_the_cycle_is_measured():
    x = np.zeros((2, 4, 3, 16, 16), dtype=np.float32)
    x[0, :, 0, 4:12, 4:12] = 0.9  # constant cavity
    x[1, :, 0, 4:12, 4:12] = 0.9
    x[1, 2, 0, 4:12, 4:12] = 0.0  # it empties in one frame
    x[1, 2, 0, 6:10, 6:10] = 0.9
    stats, names = simple_statistics(x)
    rng_col = stats[:, names.index("s0_bright0.5_range")]
    assert rng_col[0] == 0.0 and rng_col[1] == pytest.approx((64 - 16) / 256)


def test_a_statistic_that_encodes_the_label_scores_one_and_noise_about_half():
    rng = np.random.default_rng(1)
    n = 400
    y = rng.random((n, 2)) < 0.3
    x = rng.normal(size=(n, 20))
    x[:, 7] = -3.0 * y[:, 0] + 0.1 * rng.normal(size=n)  # finding 0 is encoded, with a negative sign
    tr, te = slice(0, 200), slice(200, n)
    single = best_single_statistic(x[tr], y[tr], x[te], y[te])
    assert single[0]["index"] == 7 and single[0]["sign"] == -1.0 and single[0]["test_auroc"] == 1.0
    assert 0.35 < single[1]["test_auroc"] < 0.65  # picked on train by chance, so near 0.5 on test
    linear = cross_validated_linear(x[tr], y[tr], x[te], y[te], folds=5)
    assert linear[0]["test_auroc"] > 0.99
    assert 0.35 < linear[1]["test_auroc"] < 0.65


def test_linear_model_combines_statistics_a_single_one_cannot():
    rng = np.random.default_rng(2)
    n = 600
    a, b, c = rng.normal(size=(3, n))
    y = (a - b + c) > 0  # no statistic alone separates well, their combination does perfectly
    x = np.stack([a, b, c, rng.normal(size=n)], axis=1)
    tr, te = slice(0, 300), slice(300, n)
    single = best_single_statistic(x[tr], y[tr], x[te], y[te])[0]["test_auroc"]
    linear = cross_validated_linear(x[tr], y[tr], x[te], y[te])[0]["test_auroc"]
    assert single < 0.85 and linear > 0.98
