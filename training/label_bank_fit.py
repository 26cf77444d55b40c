"""From prompt embeddings and a labelled validation split to the label bank the appliance scores with."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from appliance.bundle import Finding, LabelBank
from appliance.scoring import finding_scores, fit_reference_stats
from training.evalmath import balanced_threshold, fit_anchored_logistic
from training.prompts import FINDINGS, FindingDef


def provisional_bank(embed_prompts: Callable[[list[str]], np.ndarray],
                     findings: Sequence[FindingDef] = FINDINGS,
                     prompts: dict[str, tuple[str, ...]] | None = None) -> LabelBank:
    """Prompt embeddings only (the findings' own prompts, or `prompts` chosen per finding); thresholds and
    calibration still to be fitted."""
    out = []
    for f in findings:
        chosen = prompts[f.id] if prompts is not None else f.prompts
        emb = embed_prompts(list(chosen))
        out.append(Finding(f.id, f.name, tuple(chosen), emb, 0.0, 1.0, 0.0, 0.0, f.rare))
    return LabelBank(tuple(out), None)


def fit_bank(bank: LabelBank, val_embeddings: np.ndarray, val_labels: np.ndarray,
             reference_embeddings: np.ndarray, prevalence: np.ndarray, k: int = 8,
             ood_quantile: float = 0.99) -> LabelBank:
    """Thresholds at the validation ROC point where TPR = 1 - FPR; a logistic calibration per finding on the same
    split, anchored at the threshold; out-of-distribution reference statistics from the (unlabelled) reference
    embeddings."""
    scores = finding_scores(val_embeddings, bank)
    fitted = []
    for j, f in enumerate(bank.findings):
        threshold = balanced_threshold(scores[:, j], val_labels[:, j])
        slope = fit_anchored_logistic(scores[:, j], val_labels[:, j], threshold)
        intercept = -slope * threshold  # probability 0.5 exactly at the threshold: decision and probability agree
        fitted.append(Finding(f.id, f.name, f.prompts, f.embeddings, threshold, slope, intercept,
                              float(prevalence[j]), f.rare))
    return LabelBank(tuple(fitted), fit_reference_stats(reference_embeddings, k=k, quantile=ood_quantile))
