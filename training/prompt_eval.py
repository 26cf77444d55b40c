"""Zero-shot one step off the path: held-out paraphrases, negations and unrelated text, scored as a site's own
prompt would be (one prompt, its cosine to the study's embedding), beside the finding's own prompts."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from appliance.bundle import LabelBank
from appliance.scoring import finding_scores, normalise
from training.evalmath import auroc
from training.heldout_prompts import NEGATED, PARAPHRASES, UNRELATED


@dataclass(frozen=True)
class PromptResult:
    finding_id: str
    kind: str  # "paraphrase" | "negated" | "unrelated"
    prompt: str
    auroc: float
    own_auroc: float  # the finding's own prompts (the bank's axis) on the same studies

    @property
    def within(self) -> bool:
        return abs(self.auroc - self.own_auroc) <= 0.05


def leaked_prompts(reports: Iterable[str]) -> list[str]:
    """Held-out paraphrases that appear verbatim in the given reports (must be none)."""
    text = "\n".join(r.lower() for r in reports)
    return [p for prompts in PARAPHRASES.values() for p in prompts if p.lower() in text]


def evaluate_prompts(embeddings: np.ndarray, labels: np.ndarray, bank: LabelBank,
                     embed: Callable[[list[str]], np.ndarray]) -> list[PromptResult]:
    x = normalise(embeddings, bank.dim)
    own = finding_scores(embeddings, bank)
    out: list[PromptResult] = []
    for j, f in enumerate(bank.findings):
        own_auc = auroc(own[:, j], labels[:, j])
        for kind, prompts in (("paraphrase", PARAPHRASES.get(f.id, ())), ("negated", NEGATED.get(f.id, ())),
                              ("unrelated", UNRELATED)):
            if not prompts:
                continue
            emb = embed(list(prompts))
            for prompt, e in zip(prompts, emb, strict=True):
                out.append(PromptResult(f.id, kind, prompt, auroc(x @ e, labels[:, j]), own_auc))
    return out


def summary(results: list[PromptResult]) -> dict[str, float]:
    para = [r for r in results if r.kind == "paraphrase"]
    neg = [r for r in results if r.kind == "negated"]
    unrel = [r for r in results if r.kind == "unrelated"]
    return {
        "paraphrases": len(para),
        "paraphrases within 0.05 of own prompts": float(np.mean([r.within for r in para])) if para else 0.0,
        # a paraphrase that beats the finding's own prompts is not a failure to generalise
        "paraphrases within 0.05 of own prompts or above": float(np.mean(
            [r.auroc >= r.own_auroc - 0.05 for r in para])) if para else 0.0,
        "paraphrase mean AUROC": float(np.mean([r.auroc for r in para])) if para else 0.0,
        "negated below 0.5": float(np.mean([r.auroc < 0.5 for r in neg])) if neg else 0.0,
        "negated mean AUROC": float(np.mean([r.auroc for r in neg])) if neg else 0.0,
        "unrelated mean |AUROC - 0.5|": float(np.mean([abs(r.auroc - 0.5) for r in unrel])) if unrel else 0.0,
        "unrelated max |AUROC - 0.5|": float(np.max([abs(r.auroc - 0.5) for r in unrel])) if unrel else 0.0,
    }
