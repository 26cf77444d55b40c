"""Editing a bundle's label bank on the appliance: new prompts and new findings, embedded by the bundle's own text
encoder, scored with no retraining.

Thresholds fitted on labelled validation data cannot be refitted here (the appliance has no labels). When a
finding's prompts change, its threshold is re-derived from the bundle's reference embeddings so that the same
share of reference studies is positive as the finding's prevalence says; the result says so.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from appliance.bundle import Bundle, BundleError, Finding, LabelBank, load_bundle, save_label_bank
from appliance.scoring import normalise
from appliance.text import TextEncoder


@dataclass(frozen=True)
class Edit:
    bundle: Bundle
    message: str
    unknown_words: tuple[str, ...] = ()


def _text_parts(bundle: Bundle) -> tuple[TextEncoder, np.ndarray]:
    te = bundle.text_encoder
    if not te or "path" not in te or "vocabulary" not in te:
        raise BundleError(f"bundle {bundle.name} has no text encoder: its prompts cannot be edited on the appliance")
    encoder = TextEncoder(bundle.root / te["path"], bundle.root / te["vocabulary"])
    if "reference_embeddings" not in te:
        raise BundleError(f"bundle {bundle.name} has no reference embeddings to set thresholds from")
    reference = np.load(io.BytesIO((bundle.root / te["reference_embeddings"]).read_bytes()))
    return encoder, normalise(reference, bundle.embedding_dim)


def _prevalence_matched(embeddings: np.ndarray, reference: np.ndarray, prevalence: float) -> tuple[float, float, float]:
    """(threshold, slope, intercept): the threshold leaves `prevalence` of the reference studies positive; the
    slope maps the reference scores' interquartile range onto probabilities 0.25..0.75."""
    axis = embeddings.mean(axis=0)
    scores = reference @ axis
    threshold = float(np.quantile(scores, 1.0 - prevalence))
    q1, q3 = np.quantile(scores, [0.25, 0.75])
    slope = 2 * math.log(3) / max(float(q3 - q1), 1e-6)
    return threshold, slope, -slope * threshold


def add_prompt(bundle_path: Path, finding_id: str, prompt: str, name: str | None = None,
               prevalence: float | None = None, rare: bool = False) -> Edit:
    bundle = load_bundle(bundle_path)
    encoder, reference = _text_parts(bundle)
    unknown = tuple(encoder.tokenizer.unknown_words(prompt))
    bank = bundle.label_bank
    existing = next((f for f in bank.findings if f.id == finding_id), None)
    if existing is not None and prompt in existing.prompts:
        raise BundleError(f"finding {finding_id!r} already has the prompt {prompt!r}")
    new_embedding = encoder.embed([prompt])
    if existing is None:
        if prevalence is None:
            raise BundleError(f"{finding_id!r} is a new finding: give --prevalence, the share of studies you "
                              "expect to have it, so a threshold can be set without labels")
        prompts, embeddings = (prompt,), new_embedding
        base = Finding(finding_id, name or finding_id.replace("_", " "), prompts, embeddings, 0.0, 1.0, 0.0,
                       prevalence, rare)
    else:
        base = replace(existing, prompts=(*existing.prompts, prompt),
                       embeddings=np.vstack([existing.embeddings, new_embedding]),
                       prevalence=existing.prevalence if prevalence is None else prevalence)
    threshold, slope, intercept = _prevalence_matched(base.embeddings, reference, base.prevalence)
    finding = replace(base, threshold=threshold, slope=slope, intercept=intercept)
    findings = [finding if f.id == finding_id else f for f in bank.findings]
    if existing is None:
        findings.append(finding)
    saved = save_label_bank(bundle, LabelBank(tuple(findings), bank.reference))
    what = "added finding" if existing is None else "added a prompt to"
    return Edit(saved, f"{what} {finding_id!r}; threshold {threshold:.4f} set so that {100 * base.prevalence:.1f} % "
                       "of the bundle's reference studies are positive (not fitted on labels)", unknown)


def remove(bundle_path: Path, finding_id: str, prompt: str | None = None) -> Edit:
    bundle = load_bundle(bundle_path)
    bank = bundle.label_bank
    existing = next((f for f in bank.findings if f.id == finding_id), None)
    if existing is None:
        raise BundleError(f"no finding {finding_id!r} in bundle {bundle.name}")
    if prompt is None or (len(existing.prompts) == 1 and prompt in existing.prompts):
        findings = tuple(f for f in bank.findings if f.id != finding_id)
        if not findings:
            raise BundleError("refusing to remove the last finding of the bundle")
        return Edit(save_label_bank(bundle, LabelBank(findings, bank.reference)), f"removed finding {finding_id!r}")
    if prompt not in existing.prompts:
        raise BundleError(f"finding {finding_id!r} has no prompt {prompt!r}")
    _, reference = _text_parts(bundle)
    keep = [i for i, p in enumerate(existing.prompts) if p != prompt]
    base = replace(existing, prompts=tuple(existing.prompts[i] for i in keep), embeddings=existing.embeddings[keep])
    threshold, slope, intercept = _prevalence_matched(base.embeddings, reference, base.prevalence)
    finding = replace(base, threshold=threshold, slope=slope, intercept=intercept)
    bank2 = LabelBank(tuple(finding if f.id == finding_id else f for f in bank.findings), bank.reference)
    return Edit(save_label_bank(bundle, bank2), f"removed a prompt from {finding_id!r}; threshold re-set to "
                                                f"{threshold:.4f} from the reference studies")


def describe(bundle_path: Path) -> str:
    bundle = load_bundle(bundle_path)
    lines = [f"{bundle.name} {bundle.version}: {len(bundle.label_bank.findings)} findings"]
    for f in bundle.label_bank.findings:
        flag = " (rare)" if f.rare else ""
        lines.append(f"  {f.id}{flag}: {f.name}; threshold {f.threshold:.4f}, prevalence {f.prevalence:.3f}")
        lines += [f"    - {p}" for p in f.prompts]
    return "\n".join(lines)
