import numpy as np
import pytest

from training.evalmath import auroc, balanced_threshold, fit_logistic, recall_at_k


def test_auroc_against_a_hand_count():
    scores = np.array([0.1, 0.4, 0.35, 0.8, 0.35])
    labels = np.array([0, 0, 1, 1, 1], dtype=bool)
    # positive/negative pairs: (0.35>0.1) (0.35<0.4) (0.8>0.1) (0.8>0.4) (0.35>0.1) (0.35<0.4) -> 4 of 6
    assert auroc(scores, labels) == pytest.approx(4 / 6)
    assert auroc(np.array([1.0, 1.0]), np.array([True, False])) == 0.5
    assert np.isnan(auroc(np.array([1.0, 2.0]), np.array([True, True])))


def test_balanced_threshold_equalises_sensitivity_and_specificity():
    rng = np.random.default_rng(0)
    neg, pos = rng.normal(0, 1, 2000), rng.normal(2, 1, 500)
    scores = np.concatenate([neg, pos])
    labels = np.concatenate([np.zeros(2000, bool), np.ones(500, bool)])
    t = balanced_threshold(scores, labels)
    assert abs((pos >= t).mean() - (neg < t).mean()) < 0.02
    assert t == pytest.approx(1.0, abs=0.1)  # the midpoint of two equal-width classes


def test_logistic_fit_recovers_a_known_model():
    rng = np.random.default_rng(1)
    x = rng.uniform(-3, 3, 20000)
    y = rng.random(20000) < 1 / (1 + np.exp(-(2.0 * x - 1.0)))
    slope, intercept = fit_logistic(x, y, l2=0.0)
    assert slope == pytest.approx(2.0, rel=0.05) and intercept == pytest.approx(-1.0, abs=0.08)


def test_recall_at_k():
    text = np.eye(4)
    image = np.array([[1, 0, 0, 0], [0, 0.1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=float)
    r = recall_at_k(image, text, ks=(1, 2))
    assert r[1] == 0.75 and r[2] == 1.0
