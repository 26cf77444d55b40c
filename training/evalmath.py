"""Numbers for choosing thresholds and judging models: AUROC, the ROC point where TPR = 1 - FPR, a one-variable
logistic calibration, retrieval recall@k. numpy only, so they are testable without torch."""

from __future__ import annotations

import numpy as np


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve by the rank-sum (Mann-Whitney) formula, ties counted half. NaN if one class is
    absent."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):  # average ranks over ties
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def balanced_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The threshold at the ROC point where TPR is closest to 1 - FPR (sensitivity = specificity), as CMR-CLIP
    chooses its zero-shot thresholds. Midway between neighbouring scores, so it does not sit on a study."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=bool)
    if labels.all() or not labels.any():
        raise ValueError("need both positive and negative examples to choose a threshold")
    candidates = np.unique(scores)
    mids = np.concatenate([[candidates[0] - 1e-6], (candidates[:-1] + candidates[1:]) / 2, [candidates[-1] + 1e-6]])
    pos, neg = scores[labels], scores[~labels]
    tpr = (pos[None, :] >= mids[:, None]).mean(axis=1)
    tnr = (neg[None, :] < mids[:, None]).mean(axis=1)
    gap = np.abs(tpr - tnr)
    best = np.flatnonzero(gap == gap.min())
    return float(mids[best[len(best) // 2]])


def fit_logistic(scores: np.ndarray, labels: np.ndarray, l2: float = 1e-3, iterations: int = 50) -> tuple[float, float]:
    """(slope, intercept) of P(positive | score) = sigmoid(slope * score + intercept), by Newton's method with a
    little L2 on the slope so that a perfectly separated finding still gets a finite slope."""
    x = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    mu, sd = x.mean(), x.std() or 1.0
    z = (x - mu) / sd  # standardised for a well-conditioned fit
    w = np.zeros(2)
    X = np.stack([z, np.ones_like(z)], axis=1)
    for _ in range(iterations):
        p = 1 / (1 + np.exp(-(X @ w)))
        grad = X.T @ (p - y) + np.array([l2 * w[0] * len(y), 0.0])
        hess = (X * (p * (1 - p))[:, None]).T @ X + np.diag([l2 * len(y), 1e-9])
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    slope = w[0] / sd
    return float(slope), float(w[1] - slope * mu)


def fit_anchored_logistic(scores: np.ndarray, labels: np.ndarray, threshold: float, l2: float = 1e-3,
                          iterations: int = 50) -> float:
    """The slope of P(positive | score) = sigmoid(slope * (score - threshold)): a calibration that passes through
    0.5 at the decision threshold, so a finding called positive never shows a probability under one half."""
    z = np.asarray(scores, dtype=np.float64) - threshold
    y = np.asarray(labels, dtype=np.float64)
    sd = z.std() or 1.0
    z = z / sd
    w = 1.0
    for _ in range(iterations):
        p = 1 / (1 + np.exp(-w * z))
        grad = float(z @ (p - y)) + l2 * w * len(y)
        hess = float((z * z) @ (p * (1 - p))) + l2 * len(y)
        step = grad / hess
        w -= step
        if abs(step) < 1e-10:
            break
    return float(max(w, 1e-6) / sd)


def recall_at_k(image: np.ndarray, text: np.ndarray, ks: tuple[int, ...] = (1, 5, 10)) -> dict[int, float]:
    """Study -> report retrieval: how often a study's own report is among the k most similar reports."""
    image = image / np.linalg.norm(image, axis=1, keepdims=True)
    text = text / np.linalg.norm(text, axis=1, keepdims=True)
    sims = image @ text.T
    own = np.diag(sims)
    rank = (sims > own[:, None]).sum(axis=1)  # 0 = best
    return {k: float((rank < k).mean()) for k in ks}
