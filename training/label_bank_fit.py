"""From prompt embeddings and a labelled validation split to the label bank the appliance scores with."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from appliance.bundle import Finding, LabelBank
from appliance.scoring import finding_scores, fit_reference_stats
from training.evalmath import auroc, balanced_threshold, fit_logistic
from training.prompts import FINDINGS, FindingDef


def select_prompts(candidates: Sequence[str], embed_prompts: Callable[[list[str]], np.ndarray],
                   val_embeddings: np.ndarray, val_labels: np.ndarray, min_prompts: int = 2,
                   max_prompts: int = 3) -> tuple[tuple[str, ...], float]:
    """Greedy forward selection on the validation split: add the candidate whose inclusion gives the mean prompt
    embedding the best AUROC, keep at least `min_prompts` (several phrasings are more robust than one) and stop
    when another one no longer helps. Returns (prompts, validation AUROC)."""
    emb = embed_prompts(list(candidates))
    x = val_embeddings / np.linalg.norm(val_embeddings, axis=1, keepdims=True)
    chosen: list[int] = []
    best = -1.0
    while len(chosen) < min(max_prompts, len(candidates)):
        trials = [(auroc(x @ emb[[*chosen, i]].mean(axis=0), val_labels), i)
                  for i in range(len(candidates)) if i not in chosen]
        score, pick = max(trials)
        if len(chosen) >= min_prompts and score <= best:
            break
        chosen.append(pick)
        best = score
    return tuple(candidates[i] for i in chosen), best


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
    split; out-of-distribution reference statistics from the (unlabelled) reference embeddings."""
    scores = finding_scores(val_embeddings, bank)
    fitted = []
    for j, f in enumerate(bank.findings):
        threshold = balanced_threshold(scores[:, j], val_labels[:, j])
        slope, intercept = fit_logistic(scores[:, j], val_labels[:, j])
        fitted.append(Finding(f.id, f.name, f.prompts, f.embeddings, threshold, slope, intercept,
                              float(prevalence[j]), f.rare))
    return LabelBank(tuple(fitted), fit_reference_stats(reference_embeddings, k=k, quantile=ood_quantile))
