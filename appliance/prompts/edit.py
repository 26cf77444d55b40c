"""Editing the label bank on the appliance: new prompts and new findings, embedded by the bundle's own text
encoder, scored with no retraining. Every edit goes to the site overlay in the data folder (appliance.prompts.overlay),
versioned and revertible; the shipped bundle is never written.

Thresholds fitted on labelled validation data cannot be refitted here (the appliance has no labels). When a
finding's prompts change, its threshold is re-derived from the bundle's reference embeddings so that the same share
of reference studies is positive as the finding's prevalence says; a finding whose prompts are back to the shipped
ones gets the shipped, fitted threshold and calibration back exactly.
"""

from __future__ import annotations

import getpass
import io
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from appliance.bundle import Bundle, BundleError, Finding, LabelBank, load_bundle
from appliance.prompts.overlay import EditRecord, Effective, Overlay, overlay_dir
from appliance.scoring import normalise
from appliance.text import TextEncoder, words

NEAREST_FINDINGS = 3
NEAREST_PROMPTS = 5
# A prompt whose embedding is this far from every prompt of the bank (|cosine| below it, so a negation read by rule
# counts like its statement) is refused as unrelated: the tower gives any sentence a projection on the findings'
# axes, so text about no finding still scores (docs/reference-model.md: unrelated text is not neutral). Measured on
# the committed tower: the held-out clinical paraphrases and negations are at 0.44 or more from their nearest bank
# prompt, other cardiac concepts (valves, myocarditis, thrombus) at 0.38 or more, text about no heart at 0.26 or
# less (tests/test_prompts_overlay.py keeps both sides).
RELEVANCE_MIN_COSINE = 0.30


class PromptRefused(ValueError):
    """The edit was not made; the message says why (an unknown word, a duplicate, a missing finding...)."""


@dataclass(frozen=True)
class Neighbour:
    finding_id: str
    text: str  # the finding's name, or the prompt
    cosine: float


@dataclass(frozen=True)
class Edit:
    record: EditRecord
    bank: LabelBank
    message: str
    nearest_findings: tuple[Neighbour, ...] = ()
    nearest_prompts: tuple[Neighbour, ...] = ()
    reads_as: str = ""  # how the model reads the prompt (abbreviations spelled out, a negation), when not as written


@dataclass
class Site:
    """A bundle (read only) and the data folder whose overlay holds this site's edits of its bank."""

    bundle: Bundle
    overlay: Overlay

    @classmethod
    def open(cls, bundle_path: Path, data_dir: Path) -> Site:
        bundle = load_bundle(bundle_path)
        return cls(bundle, Overlay(overlay_dir(data_dir), bundle.label_bank))

    def effective(self) -> Effective:
        return self.overlay.current()


def default_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for the uid (a container)
        return "unknown"


def text_encoder(bundle: Bundle) -> TextEncoder:
    try:
        return TextEncoder.for_bundle(bundle)
    except (ValueError, OSError) as exc:
        raise PromptRefused(f"bundle {bundle.name} has no usable text encoder ({exc}): its prompts cannot be "
                            "edited on the appliance") from None


def reference_embeddings(bundle: Bundle) -> np.ndarray:
    te = bundle.text_encoder or {}
    if "reference_embeddings" not in te:
        raise PromptRefused(f"bundle {bundle.name} has no reference embeddings to set thresholds from")
    reference = np.load(io.BytesIO((bundle.root / te["reference_embeddings"]).read_bytes()))
    return normalise(reference, bundle.embedding_dim)


def prevalence_matched(embeddings: np.ndarray, reference: np.ndarray, prevalence: float) -> tuple[float, float, float]:
    """(threshold, slope, intercept): the threshold leaves `prevalence` of the reference studies positive; the
    slope maps the reference scores' interquartile range onto probabilities 0.25..0.75; the calibration passes
    through 0.5 at the threshold (intercept = -slope * threshold)."""
    axis = np.asarray(embeddings, dtype=np.float64).mean(axis=0)
    scores = reference @ axis
    threshold = float(np.quantile(scores, 1.0 - prevalence))
    q1, q3 = np.quantile(scores, [0.25, 0.75])
    slope = 2 * math.log(3) / max(float(q3 - q1), 1e-6)
    return threshold, slope, -slope * threshold


def _refit(finding: Finding, shipped: LabelBank, reference: np.ndarray | None) -> tuple[Finding, bool]:
    """The finding with its threshold for its present prompts, and whether that is the shipped (fitted) one: the
    shipped finding itself when its prompts, prevalence and rarity are the shipped ones again."""
    original = next((f for f in shipped.findings if f.id == finding.id), None)
    if (original is not None and set(finding.prompts) == set(original.prompts)
            and finding.prevalence == original.prevalence and finding.rare == original.rare):
        return original, True
    if reference is None:
        raise PromptRefused("no reference embeddings to set a threshold from")
    threshold, slope, intercept = prevalence_matched(finding.embeddings, reference, finding.prevalence)
    return replace(finding, threshold=threshold, slope=slope, intercept=intercept), False


def _same(a: str, b: str) -> bool:
    return " ".join(a.casefold().split()) == " ".join(b.casefold().split())


def _too_long(encoder: TextEncoder, prompt: str) -> bool:
    check = getattr(encoder, "too_long", None)
    if callable(check):
        return bool(check(prompt))
    return len(words(prompt)) > int(getattr(encoder.tokenizer, "max_length", 64))


def check_prompt(encoder: TextEncoder, bank: LabelBank, finding_id: str, prompt: str) -> None:
    """Raise PromptRefused saying why `prompt` cannot be added to `finding_id` in `bank`."""
    if not prompt.strip():
        raise PromptRefused("the prompt is empty")
    unknown = encoder.unrepresentable(prompt)
    if unknown:
        raise PromptRefused(f"the text encoder cannot represent {', '.join(repr(w) for w in unknown)} (not in the "
                            f"vocabulary it was trained with): the prompt would be read as something else; "
                            "rephrase it in words it knows")
    if _too_long(encoder, prompt):
        limit = getattr(encoder.tokenizer, "max_length", "its")
        raise PromptRefused(f"the prompt is longer than the text encoder reads ({limit} tokens): it would be cut")
    for f in bank.findings:
        for p in f.prompts:
            if _same(p, prompt) and f.id == finding_id:
                raise PromptRefused(f"finding {finding_id!r} already has the prompt {p!r}")
            if _same(p, prompt):
                raise PromptRefused(f"{prompt!r} is already a prompt of finding {f.id!r}: one text cannot mean two "
                                    "findings")


def relevance(bank: LabelBank, embedding: np.ndarray) -> tuple[float, str, str]:
    """(|cosine|, finding id, prompt) of the bank prompt nearest to one prompt embedding, by absolute cosine."""
    e = normalise(embedding, bank.dim)[0]
    return max(((abs(float(v @ e / np.linalg.norm(v))), f.id, p) for f in bank.findings
                for p, v in zip(f.prompts, f.embeddings, strict=True)), default=(0.0, "", ""))


def check_relevance(bank: LabelBank, embedding: np.ndarray, prompt: str) -> None:
    """Raise PromptRefused when the prompt is about none of the bank's findings (RELEVANCE_MIN_COSINE)."""
    cosine, finding_id, nearest_prompt = relevance(bank, embedding)
    if finding_id and cosine < RELEVANCE_MIN_COSINE:
        raise PromptRefused(f"the text encoder reads {prompt!r} as about none of the bank's findings (nearest: "
                            f"{finding_id}: {nearest_prompt!r} at cosine {cosine:.2f}, below {RELEVANCE_MIN_COSINE}): "
                            "it would still get scores, and they would mean nothing; write what the images show")


def nearest(bank: LabelBank, embedding: np.ndarray) -> tuple[tuple[Neighbour, ...], tuple[Neighbour, ...]]:
    """The findings (cosine to their mean prompt embedding) and the prompts nearest to one prompt embedding."""
    e = normalise(embedding, bank.dim)[0]
    axes = bank.axes / np.linalg.norm(bank.axes, axis=1, keepdims=True)
    by_finding = sorted(((float(a @ e), f) for a, f in zip(axes, bank.findings, strict=True)),
                        key=lambda t: -t[0])[:NEAREST_FINDINGS]
    prompts = [(float(v @ e), f.id, p) for f in bank.findings for p, v in zip(f.prompts, f.embeddings, strict=True)]
    prompts.sort(key=lambda t: -t[0])
    return (tuple(Neighbour(f.id, f.name, c) for c, f in by_finding),
            tuple(Neighbour(fid, p, c) for c, fid, p in prompts[:NEAREST_PROMPTS]))


def add_prompt(site: Site, finding_id: str, prompt: str, by: str | None = None, name: str | None = None,
               prevalence: float | None = None, rare: bool | None = None) -> Edit:
    """Add `prompt` to a finding, or make a new finding with it (then `prevalence` is required)."""
    encoder = text_encoder(site.bundle)
    prompt = prompt.strip()
    if prevalence is not None and not 0.0 < prevalence < 1.0:
        raise PromptRefused(f"prevalence must be between 0 and 1 (a share of studies), got {prevalence}")
    with site.overlay.locked():
        before = site.effective()
        bank = before.bank
        check_prompt(encoder, bank, finding_id, prompt)
        existing = next((f for f in bank.findings if f.id == finding_id), None)
        if existing is None and prevalence is None:
            raise PromptRefused(f"{finding_id!r} is a new finding: give --prevalence, the share of studies you "
                                "expect to have it, so a threshold can be set without labels")
        embedding = encoder.embed([prompt])
        close_findings, close_prompts = nearest(bank, embedding)
        check_relevance(bank, embedding, prompt)
        try:
            if existing is None:
                base = Finding(finding_id, name or finding_id.replace("_", " "), (prompt,), embedding, 0.0, 1.0, 0.0,
                               float(prevalence), bool(rare))  # type: ignore[arg-type]
            else:
                base = replace(existing, prompts=(*existing.prompts, prompt),
                               embeddings=np.vstack([existing.embeddings, embedding]),
                               prevalence=existing.prevalence if prevalence is None else prevalence,
                               rare=existing.rare if rare is None else rare)
        except BundleError as exc:
            raise PromptRefused(str(exc)) from None
        finding, fitted = _refit(base, site.bundle.label_bank, reference_embeddings(site.bundle))
        findings = [finding if f.id == finding_id else f for f in bank.findings]
        if existing is None:
            findings.append(finding)
        new = LabelBank(tuple(findings), bank.reference)
        action = "add_finding" if existing is None else "add_prompt"
        record = site.overlay.record(before, new, action, finding_id, prompt, by or default_user())
    what = "added finding" if existing is None else "added a prompt to"
    reading = encoder.reading(prompt)
    return Edit(record, new, f"{what} {finding_id!r}; {_threshold_note(finding, fitted)}", close_findings,
                close_prompts, reading.describe() if reading.negated or reading.partial or reading.statement != prompt
                else "")


def _threshold_note(f: Finding, fitted: bool) -> str:
    if fitted:
        return f"its prompts are the shipped ones: the shipped threshold {f.threshold:.4f} (fitted on labels) is back"
    return (f"threshold {f.threshold:.4f} set so that {100 * f.prevalence:.1f} % of the bundle's reference studies "
            "are positive (not fitted on labels)")


def remove(site: Site, finding_id: str, prompt: str | None = None, by: str | None = None) -> Edit:
    """Remove one prompt of a finding, or (no prompt, or its last one) the whole finding."""
    with site.overlay.locked():
        before = site.effective()
        bank = before.bank
        existing = next((f for f in bank.findings if f.id == finding_id), None)
        if existing is None:
            raise PromptRefused(f"no finding {finding_id!r} in the label bank (version {before.version})")
        match = next((p for p in existing.prompts if _same(p, prompt)), None) if prompt is not None else None
        if prompt is not None and match is None:
            raise PromptRefused(f"finding {finding_id!r} has no prompt {prompt!r}")
        if match is None or len(existing.prompts) == 1:
            findings = tuple(f for f in bank.findings if f.id != finding_id)
            if not findings:
                raise PromptRefused("refusing to remove the last finding of the label bank")
            new = LabelBank(findings, bank.reference)
            record = site.overlay.record(before, new, "remove_finding", finding_id, match, by or default_user())
            return Edit(record, new, f"removed finding {finding_id!r}")
        keep = [i for i, p in enumerate(existing.prompts) if p != match]
        base = replace(existing, prompts=tuple(existing.prompts[i] for i in keep),
                       embeddings=existing.embeddings[keep])
        shipped = site.bundle.label_bank
        reference = None if _back_to_shipped(base, shipped) else reference_embeddings(site.bundle)
        finding, fitted = _refit(base, shipped, reference)
        new = LabelBank(tuple(finding if f.id == finding_id else f for f in bank.findings), bank.reference)
        record = site.overlay.record(before, new, "remove_prompt", finding_id, match, by or default_user())
    return Edit(record, new, f"removed a prompt from {finding_id!r}; {_threshold_note(finding, fitted)}")


def _back_to_shipped(finding: Finding, shipped: LabelBank) -> bool:
    original = next((f for f in shipped.findings if f.id == finding.id), None)
    return original is not None and set(original.prompts) == set(finding.prompts) and \
        original.prevalence == finding.prevalence and original.rare == finding.rare


def revert(site: Site, version: str, by: str | None = None) -> Edit:
    """Return to an earlier bank version (as `history` lists it; 0 or the shipped hash: the shipped bank),
    recorded as an edit of its own."""
    with site.overlay.locked():
        before = site.effective()
        try:
            target, bank = site.overlay.resolve(version)
        except ValueError as exc:
            raise PromptRefused(str(exc)) from None
        if bank.content_hash == before.bank.content_hash:
            raise PromptRefused(f"the bank in force ({before.version}) is already the bank of version {target}")
        record = site.overlay.record(before, bank, "revert", "", None, by or default_user(), note=f"to {target}")
    return Edit(record, bank, f"returned to the bank of version {target}")


def history(site: Site) -> list[EditRecord]:
    return site.overlay.entries()


def format_history(site: Site) -> str:
    entries = history(site)
    shipped = site.bundle.label_bank.content_hash
    lines = [f"shipped bank {shipped} ({site.bundle.name} {site.bundle.version})"]
    if not entries:
        lines.append("no edits")
    for e in entries:
        what = e.action.replace("_", " ")
        target = " ".join(x for x in (repr(e.finding) if e.finding else "", repr(e.prompt) if e.prompt else "",
                                      e.note) if x)
        stale = "" if e.base == shipped else f"  [made on another shipped bank {e.base}]"
        lines.append(f"{e.seq:4}  {e.at}  {e.by:12}  {what:14}  {target}  {e.previous} -> {e.version}{stale}")
    return "\n".join(lines)


def describe(site: Site) -> str:
    effective = site.effective()
    shipped = site.bundle.label_bank
    bank = effective.bank
    edited = "" if effective.seq == 0 else f", {effective.seq} edits into this site's history"
    lines = [f"{site.bundle.name} {site.bundle.version}: label bank {effective.version} (shipped {shipped.content_hash}"
             f"{edited}): {len(bank.findings)} findings"]
    if effective.stale_overlay:
        lines.append("  note: this site's edits were made on another shipped bank and are not applied")
    for f in bank.findings:
        flag = " (rare)" if f.rare else ""
        source = "fitted" if any(f.id == g.id and f.prompts == g.prompts and f.threshold == g.threshold
                                 for g in shipped.findings) else "prevalence-matched"
        lines.append(f"  {f.id}{flag}: {f.name}; threshold {f.threshold:.4f} ({source}), prevalence "
                     f"{f.prevalence:.3f}")
        lines += [f"    - {p}" for p in f.prompts]
    return "\n".join(lines)


def format_nearest(edit: Edit) -> str:
    if not edit.nearest_findings:
        return ""
    lines = [f"read as: {edit.reads_as} (abbreviations spelled out, negation read by rule)"] if edit.reads_as else []
    lines += ["what the model reads the new prompt as (cosine similarity):", "  nearest findings:"]
    lines += [f"    {n.cosine:+.3f}  {n.finding_id} ({n.text})" for n in edit.nearest_findings]
    lines.append("  nearest prompts:")
    lines += [f"    {n.cosine:+.3f}  {n.finding_id}: {n.text}" for n in edit.nearest_prompts]
    return "\n".join(lines)

