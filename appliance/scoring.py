"""Zero-shot scoring of study embeddings against a label bank (CMR-CLIP style).

Per finding the score is the mean cosine between the L2-normalised study embedding and the finding's prompt
embeddings; there is no softmax across findings (they are not mutually exclusive) and no negative prompts. The
threshold and calibration live in the label bank so they travel with the prompts they were fitted for.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from appliance.bundle import LabelBank, ReferenceStats
from appliance.handovers import FindingScore, Scores

NEAR_THRESHOLD = "near_threshold"
RARE_FINDING = "rare_finding"
OUT_OF_DISTRIBUTION = "out_of_distribution"

# Floors for fitted variances: a direction the training embeddings never moved in would otherwise make any
# movement along it an infinite distance.
_MIN_VARIANCE = 1e-8


class ScoringError(ValueError):
    """The embedding cannot be scored (wrong size, not finite, zero)."""


@dataclass(frozen=True)
class ScoringPolicy:
    review_band: tuple[float, float] = (0.35, 0.65)  # calibrated probabilities inside it are flagged for review
    flag_rare_positive: bool = True
    ood_check: bool = True

    def __post_init__(self) -> None:
        lo, hi = self.review_band
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"review_band must satisfy 0 <= low <= high <= 1, got {self.review_band!r}")


def normalise(embeddings: np.ndarray, dim: int) -> np.ndarray:
    """(N, D) or (D,) -> L2-normalised float64 (N, D), refusing what cannot be a model output."""
    e = np.asarray(embeddings, dtype=np.float64)
    if e.ndim == 1:
        e = e[None, :]
    if e.ndim != 2 or e.shape[1] != dim:
        raise ScoringError(f"embedding must have {dim} values per study, got shape {np.shape(embeddings)}")
    if not np.isfinite(e).all():
        raise ScoringError("embedding contains non-finite values (NaN or inf)")
    norms = np.linalg.norm(e, axis=1, keepdims=True)
    if (norms < 1e-12).any():
        raise ScoringError("embedding is all zeros; cannot compute cosine similarity")
    return e / norms


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # Split by sign so large |x| neither overflows exp nor loses precision.
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    ex = np.exp(x[~pos])
    out[~pos] = ex / (1.0 + ex)
    return out


def ood_distances(normalised: np.ndarray, reference: ReferenceStats) -> np.ndarray:
    """Distance of each (already normalised) embedding from the training distribution, shape (N,).

    d^2 = sum_i (c_i . (x - mean))^2 / variance_i + |residual|^2 / residual_variance, where the residual is the part
    of x - mean outside the k principal components. Under a Gaussian model d^2 is roughly chi-squared with D degrees
    of freedom; the bank's threshold is an empirical quantile of d on the training embeddings.
    """
    x = np.atleast_2d(np.asarray(normalised, dtype=np.float64))
    if x.shape[1] != reference.dim:
        raise ScoringError(f"embedding has {x.shape[1]} values, reference statistics {reference.dim}")
    centred = x - reference.mean
    proj = centred @ reference.components.T  # (N, k)
    inside = (proj**2 / reference.variances).sum(axis=1)
    residual = np.maximum((centred**2).sum(axis=1) - (proj**2).sum(axis=1), 0.0)
    return np.sqrt(inside + residual / reference.residual_variance)


def ood_distance(normalised_embedding: np.ndarray, reference: ReferenceStats) -> float:
    return float(ood_distances(np.asarray(normalised_embedding)[None, :], reference)[0])


def fit_reference_stats(embeddings: np.ndarray, k: int = 8, quantile: float = 0.99) -> ReferenceStats:
    """Reference statistics from training embeddings (N, D): top-k PCA of the L2-normalised embeddings plus the
    mean variance of the remaining directions; threshold = `quantile` of the training set's own distances."""
    e = np.asarray(embeddings, dtype=np.float64)
    if e.ndim != 2 or e.shape[0] < 2:
        raise ValueError(f"need at least 2 embeddings as an (N, D) array, got shape {e.shape}")
    if not 0.0 < quantile <= 1.0:
        raise ValueError(f"quantile must be in (0, 1], got {quantile}")
    n, d = e.shape
    x = normalise(e, d)
    mean = x.mean(axis=0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    variances_all = s**2 / (n - 1)
    k = max(0, min(k, d - 1, n - 1))
    variances = np.maximum(variances_all[:k], _MIN_VARIANCE)
    residual_total = float(variances_all[k:].sum())
    residual_variance = max(residual_total / (d - k), _MIN_VARIANCE)
    provisional = ReferenceStats(mean, vt[:k], variances, residual_variance, threshold=1.0)
    distances = ood_distances(x, provisional)
    threshold = float(np.quantile(distances, quantile))
    return ReferenceStats(mean, vt[:k], variances, residual_variance, threshold=max(threshold, 1e-12))


def finding_scores(embeddings: np.ndarray, bank: LabelBank) -> np.ndarray:
    """(N, F) zero-shot scores: each finding's mean cosine over its prompts. Training fits thresholds on these."""
    # The mean cosine over unit prompt vectors is one dot product with their mean.
    return normalise(embeddings, bank.dim) @ bank.axes.T


def score_batch(embeddings: np.ndarray, bank: LabelBank, policy: ScoringPolicy = ScoringPolicy()) -> list[Scores]:
    x = normalise(embeddings, bank.dim)
    scores = x @ bank.axes.T  # (N, F), as finding_scores
    thresholds = np.array([f.threshold for f in bank.findings])
    slopes = np.array([f.slope for f in bank.findings])
    # Anchored at the threshold (LabelBank findings have intercept = -slope * threshold), and the decision read off
    # the probability: what is shown as positive always has probability >= 0.5, and the reverse.
    probabilities = _sigmoid(slopes * (scores - thresholds))
    positives = probabilities >= 0.5
    distances = ood_distances(x, bank.reference) if bank.reference is not None else None
    lo, hi = policy.review_band

    results = []
    for n in range(x.shape[0]):
        study_reasons: list[str] = []
        distance = None
        if distances is not None:
            distance = float(distances[n])
            if policy.ood_check and distance > bank.reference.threshold:  # type: ignore[union-attr]
                study_reasons.append(OUT_OF_DISTRIBUTION)
        findings = []
        finding_reasons: list[str] = []
        for j, f in enumerate(bank.findings):
            p = float(probabilities[n, j])
            positive = bool(positives[n, j])
            reasons = []
            if lo <= p <= hi:
                reasons.append(NEAR_THRESHOLD)
            if policy.flag_rare_positive and f.rare and positive:
                reasons.append(RARE_FINDING)
            finding_reasons.extend(f"{f.id}:{r}" for r in reasons)
            findings.append(
                FindingScore(
                    finding_id=f.id,
                    name=f.name,
                    score=float(scores[n, j]),
                    threshold=f.threshold,
                    probability=p,
                    positive=positive,
                    rare=f.rare,
                    review_reasons=tuple(reasons),
                )
            )
        reasons_all = tuple(study_reasons + finding_reasons)
        results.append(Scores(findings=tuple(findings), ood_distance=distance, review_reasons=reasons_all))
    return results


def score_embedding(embedding: np.ndarray, bank: LabelBank, policy: ScoringPolicy = ScoringPolicy()) -> Scores:
    e = np.asarray(embedding)
    if e.ndim != 1:
        raise ScoringError(f"score_embedding takes one embedding (D,), got shape {e.shape}; use score_batch")
    return score_batch(e[None, :], bank, policy)[0]


def sigmoid(x: float) -> float:
    return float(_sigmoid(np.array([x], dtype=np.float64))[0])


__all__ = [
    "NEAR_THRESHOLD",
    "OUT_OF_DISTRIBUTION",
    "RARE_FINDING",
    "ScoringError",
    "ScoringPolicy",
    "fit_reference_stats",
    "normalise",
    "ood_distance",
    "ood_distances",
    "score_batch",
    "score_embedding",
    "sigmoid",
]


NOT_ASSESSABLE = "not_assessable"


def mark_not_assessable(scores: Scores, reasons: tuple[str, ...]) -> Scores:
    """The input quality gate found the series unusable: every finding negative (its score and probability kept,
    for the record), the study flagged for review, and the gate's reasons carried to the result and the SR."""
    findings = tuple(replace(f, positive=False, review_reasons=(*f.review_reasons, NOT_ASSESSABLE))
                     for f in scores.findings)
    return replace(scores, findings=findings, assessable=False, quality_reasons=tuple(reasons),
                   review_reasons=(NOT_ASSESSABLE, *[r for r in scores.review_reasons if r != NOT_ASSESSABLE]))
