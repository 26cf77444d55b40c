"""From prompt embeddings and a labelled validation split to the label bank the appliance scores with."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from appliance.bundle import Finding, LabelBank
from appliance.scoring import finding_scores, fit_reference_stats

from .evalmath import balanced_threshold, fit_logistic
from .prompts import FINDINGS, FindingDef


def provisional_bank(embed_prompts: Callable[[list[str]], np.ndarray],
                     findings: Sequence[FindingDef] = FINDINGS) -> LabelBank:
    """Prompt embeddings only; thresholds and calibration still to be fitted."""
    out = []
    for f in findings:
        emb = embed_prompts(list(f.prompts))
        out.append(Finding(f.id, f.name, f.prompts, emb, 0.0, 1.0, 0.0, 0.0, f.rare))
    return LabelBank(tuple(out), None)


def fit_bank(bank: LabelBank, val_embeddings: np.ndarray, val_labels: np.ndarray,
             reference_embeddings: np.ndarray, prevalence: np.ndarray, k: int = 8,
             ood_quantile: float = 0.99) -> LabelBank:
    """Thresholds at the validation ROC point where TPR = 1 - FPR; a logistic calibration per finding on the same
    split; out-of-distribution reference statistics from the (unlabelled) reference embeddings."""
    scores = finding_scores(val_embeddings, bank)
    fitted = []
    for j, f in enumerate(bank.findings):
        threshold = balanced_threshold(scores[:, j], val_labels[:, j])
        slope, intercept = fit_logistic(scores[:, j], val_labels[:, j])
        fitted.append(Finding(f.id, f.name, f.prompts, f.embeddings, threshold, slope, intercept,
                              float(prevalence[j]), f.rare))
    return LabelBank(tuple(fitted), fit_reference_stats(reference_embeddings, k=k, quantile=ood_quantile))
