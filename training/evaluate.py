"""The evaluation report: zero-shot AUROC and accuracy per finding for teacher and student on the internal test
split and on the held-out vendor, retrieval recall, size, FLOPs, CPU latency, and the out-of-distribution check."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from appliance.bundle import LabelBank
from appliance.scoring import finding_scores, normalise, ood_distances
from training.evalmath import auroc, recall_at_k
from training.models import VideoEncoder, count_parameters


@dataclass
class SplitResult:
    auroc: dict[str, float]
    accuracy: dict[str, float]
    positives: dict[str, int]
    n: int


@dataclass
class Evaluation:
    splits: dict[str, dict[str, SplitResult]] = field(default_factory=dict)  # model -> split -> result
    retrieval: dict[str, dict[int, float]] = field(default_factory=dict)  # model -> k -> recall
    ood_rate: dict[str, float] = field(default_factory=dict)  # split -> fraction flagged (student bank)
    size: dict[str, dict[str, float]] = field(default_factory=dict)  # model -> params / MFLOPs
    latency_ms: dict[str, float] = field(default_factory=dict)
    export_cosine: dict[str, float] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    prompts: list[Any] = field(default_factory=list)  # training.prompt_eval.PromptResult, student, internal test
    prompts_raw: list[Any] = field(default_factory=list)  # the same prompts read without the abbreviation lexicon
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)  # baseline -> finding -> AUROC (test)
    notes: list[str] = field(default_factory=list)


def evaluate_split(embeddings: np.ndarray, labels: np.ndarray, bank: LabelBank) -> SplitResult:
    scores = finding_scores(embeddings, bank)
    out = SplitResult({}, {}, {}, len(labels))
    for j, f in enumerate(bank.findings):
        out.auroc[f.id] = auroc(scores[:, j], labels[:, j])
        out.accuracy[f.id] = float(((scores[:, j] >= f.threshold) == labels[:, j]).mean())
        out.positives[f.id] = int(labels[:, j].sum())
    return out


def ood_rate(embeddings: np.ndarray, bank: LabelBank) -> float:
    if bank.reference is None:
        raise ValueError("the label bank has no reference statistics to measure out-of-distribution against")
    distances = ood_distances(normalise(embeddings, bank.dim), bank.reference)
    return float((distances > bank.reference.threshold).mean())


def retrieval(image: np.ndarray, text: np.ndarray) -> dict[int, float]:
    return recall_at_k(image, text, (1, 5, 10))


def macs_per_study(model: VideoEncoder, sample_shape: tuple[int, ...]) -> float:
    """Multiply-accumulates of one study through the encoder, counted from the conv and linear layers it runs."""
    total = 0

    def conv_hook(module: torch.nn.Conv2d | torch.nn.Conv1d, inputs: Any, output: torch.Tensor) -> None:
        nonlocal total
        kernel = int(np.prod(module.kernel_size)) * module.in_channels // module.groups
        total += int(output.numel()) * kernel

    def linear_hook(module: torch.nn.Linear, inputs: Any, output: torch.Tensor) -> None:
        nonlocal total
        total += int(output.numel()) * module.in_features

    handles = []
    for m in model.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv1d)):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, torch.nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    with torch.no_grad():
        model.eval()
        model(torch.zeros((1, *sample_shape)))
    for h in handles:
        h.remove()
    return float(total)


def size_of(model: VideoEncoder, sample_shape: tuple[int, ...]) -> dict[str, float]:
    macs = macs_per_study(model, sample_shape)
    return {"parameters": float(count_parameters(model)), "mflops": 2 * macs / 1e6}


def cpu_latency_ms(model: VideoEncoder, onnx_bytes: bytes, sample: np.ndarray, repeats: int = 30) -> dict[str, float]:
    """Median wall time of one study (batch 1) in ONNX Runtime and in PyTorch eager, same threads."""
    x = np.asarray(sample[None], dtype=np.float32)
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    timings: dict[str, list[float]] = {"onnxruntime": [], "pytorch_eager": []}
    xt = torch.from_numpy(x)
    model.eval()
    for _ in range(3):  # warm-up
        session.run(None, {name: x})
        with torch.no_grad():
            model(xt)
    for _ in range(repeats):
        t = time.perf_counter()
        session.run(None, {name: x})
        timings["onnxruntime"].append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        with torch.no_grad():
            model(xt)
        timings["pytorch_eager"].append((time.perf_counter() - t) * 1000)
    return {k: statistics.median(v) for k, v in timings.items()}


def to_markdown(ev: Evaluation, finding_names: dict[str, str], header: str) -> str:
    lines = [header, "", *_target_lines(ev, finding_names)]
    for split, title in (("test", "Internal test split (vendors A and B)"),
                         ("external", "Held-out vendor C (\"the other hospital\")")):
        if not all(split in ev.splits.get(m, {}) for m in ("teacher", "student")):
            continue
        t, s = ev.splits["teacher"][split], ev.splits["student"][split]
        lines += [f"### {title}: {s.n} studies", "",
                  "| finding | positives | AUROC teacher | AUROC student | student - teacher | "
                  "accuracy teacher | accuracy student |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for fid, name in finding_names.items():
            delta = s.auroc[fid] - t.auroc[fid]
            lines.append(f"| {name} | {s.positives[fid]} | {t.auroc[fid]:.3f} | {s.auroc[fid]:.3f} | "
                         f"{delta:+.3f} | {t.accuracy[fid]:.3f} | {s.accuracy[fid]:.3f} |")
        lines.append("")
    lines += _baseline_lines(ev, finding_names) + _prompt_lines(ev, finding_names)
    if ev.retrieval:
        lines += ["### Retrieval: study -> its own report among the internal test reports", "",
                  "| model | recall@1 | recall@5 | recall@10 |", "|---|---:|---:|---:|"]
        for model, r in ev.retrieval.items():
            lines.append(f"| {model} | {r[1]:.3f} | {r[5]:.3f} | {r[10]:.3f} |")
        lines.append("")
    if ev.size:
        lines += ["### Size and speed (one study, batch 1, this machine's CPU)", "",
                  "| model | parameters | MFLOPs per study |", "|---|---:|---:|"]
        for model, sz in ev.size.items():
            lines.append(f"| {model} | {sz['parameters']:,.0f} | {sz['mflops']:.0f} |")
        lines.append("")
        for what, ms in ev.latency_ms.items():
            lines.append(f"- student CPU latency, {what}: {ms:.2f} ms")
        for what, cos in ev.export_cosine.items():
            lines.append(f"- ONNX Runtime vs PyTorch, {what}: min cosine {cos:.6f}")
        lines.append("")
    if ev.ood_rate:
        lines += ["### Out-of-distribution check (student bundle's reference statistics)", "",
                  "| split | flagged |", "|---|---:|"]
        for split, rate in ev.ood_rate.items():
            lines.append(f"| {split} | {100 * rate:.1f} % |")
        lines.append("")
    if ev.timings_s:
        lines += ["### Build time on this machine", "", "| step | seconds |", "|---|---:|"]
        lines += [f"| {step} | {sec:.0f} |" for step, sec in ev.timings_s.items()]
        lines.append("")
    lines += [f"- {n}" for n in ev.notes]
    return "\n".join(lines) + "\n"


def _target_lines(ev: Evaluation, names: dict[str, str]) -> list[str]:
    """The reference model's targets, each with its measured value and whether it is met; nothing left out."""
    if not all(m in ev.splits and "test" in ev.splits[m] for m in ("teacher", "student")):
        return []
    from training.prompt_eval import summary

    s, t = ev.splits["student"]["test"], ev.splits["teacher"]["test"]
    worst = min(names, key=lambda f: s.auroc[f])
    gap = max(names, key=lambda f: t.auroc[f] - s.auroc[f])
    rows = [("Student AUROC >= 0.90 on every finding (internal test)",
             f"lowest {s.auroc[worst]:.3f} ({names[worst]}); {sum(s.auroc[f] >= 0.90 for f in names)} of "
             f"{len(names)} at or above", all(s.auroc[f] >= 0.90 for f in names)),
            ("Student within 0.02 of the teacher on every finding",
             f"largest shortfall {t.auroc[gap] - s.auroc[gap]:+.3f} ({names[gap]})",
             all(t.auroc[f] - s.auroc[f] <= 0.02 for f in names))]
    if ev.baselines:
        margins = [s.auroc[f] - max(ev.baselines[k].get(f, float("nan")) for k in ev.baselines) for f in names]
        mean_margin = float(np.nanmean(margins))
        rows.append(("Student at least 0.10 above the best baseline, mean over findings", f"{mean_margin:+.3f}",
                     mean_margin >= 0.10))
    if ev.prompts:
        read = summary(ev.prompts)
        share = read["paraphrases within 0.05 of own prompts"]
        above = read["paraphrases within 0.05 of own prompts or above"]
        alone = summary(ev.prompts_raw) if ev.prompts_raw else {}  # the tower alone, the prompts as typed
        raw = alone.get("paraphrases within 0.05 of own prompts", float("nan"))
        rows.append(("Held-out paraphrases: >= 80 % within 0.05 AUROC of the finding's own prompts",
                     f"{100 * share:.0f} % read as the appliance reads them, {100 * raw:.0f} % by the tower alone; "
                     f"{100 * above:.0f} % within 0.05 or better than the own prompts", share >= 0.80))
        if any(r.kind == "negated" for r in ev.prompts):
            neg = read["negated below 0.5"]
            neg_raw = alone.get("negated below 0.5", float("nan"))
            rows.append(("Held-out negated prompts below 0.5 AUROC",
                         f"{100 * neg:.0f} % read as the appliance reads them (negation by rule), "
                         f"{100 * neg_raw:.0f} % by the tower alone", neg >= 0.999))
        if any(r.kind == "unrelated" for r in ev.prompts):
            unrel = read["unrelated mean |AUROC - 0.5|"]
            rows.append(("Unrelated text near 0.5 AUROC (mean distance from 0.5; 0.05 taken as near)", f"{unrel:.3f}",
                         unrel <= 0.05))
    lines = ["### Targets", "", "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {what} | {value} | {'yes' if ok else '**no**'} |" for what, value, ok in rows]
    if "external" in ev.splits["student"]:
        c = ev.splits["student"]["external"]
        drops = ", ".join(f"{names[f]} {s.auroc[f] - c.auroc[f]:+.3f}" for f in names)
        lines += ["", f"- Vendor C (held out), student AUROC drop per finding, internal minus C: {drops}."]
    if ev.ood_rate:
        lines += ["- Out-of-distribution flag rate: " +
                  ", ".join(f"{k} {100 * v:.1f} %" for k, v in ev.ood_rate.items()) + "."]
    lines += ["- The input quality gate's targets are measured on the corrupted set: docs/quality-gate.md.", ""]
    return lines


def _baseline_lines(ev: Evaluation, names: dict[str, str]) -> list[str]:
    if not ev.baselines or "student" not in ev.splits:
        return []
    kinds = list(ev.baselines)
    s, t = ev.splits["student"]["test"], ev.splits["teacher"]["test"]
    lines = ["### Baselines on the internal test split (fitted on the train split's images and labels)", "",
             "| finding | " + " | ".join(kinds) + " | teacher | student | student - best baseline |",
             "|---|" + "---:|" * (len(kinds) + 3)]
    margins = []
    for fid, name in names.items():
        base = [ev.baselines[k].get(fid, float("nan")) for k in kinds]
        margin = s.auroc[fid] - max(base)
        margins.append(margin)
        lines.append(f"| {name} | " + " | ".join(f"{b:.3f}" for b in base) +
                     f" | {t.auroc[fid]:.3f} | {s.auroc[fid]:.3f} | {margin:+.3f} |")
    lines += ["", f"- Student minus the best baseline, mean over findings: {np.nanmean(margins):+.3f} "
              "(target: at least +0.10).", ""]
    return lines


def _prompt_lines(ev: Evaluation, names: dict[str, str]) -> list[str]:
    if not ev.prompts:
        return []
    from training.prompt_eval import summary

    raw = {(r.finding_id, r.kind, r.prompt): r.auroc for r in ev.prompts_raw}
    lines = ["### Held-out prompts (student, internal test split; one prompt each, as a site would add it)", "",
             "Read as the appliance reads a site's prompt: abbreviations spelled out by the bundle's lexicon "
             "(appliance/lexicon.py), a negated statement read by rule and its embedding reversed "
             "(appliance/negation.py). The last column is the text tower alone, the prompt as typed.", "",
             "| finding | kind | prompt | AUROC | own prompts | within 0.05 | AUROC, tower alone |",
             "|---|---|---|---:|---:|---|---:|"]
    for r in ev.prompts:
        if r.kind == "unrelated":
            continue
        mark = ("yes" if r.within else "no") if r.kind == "paraphrase" else ""
        without = raw.get((r.finding_id, r.kind, r.prompt))
        lines.append(f"| {names.get(r.finding_id, r.finding_id)} | {r.kind} | {r.prompt} | {r.auroc:.3f} | "
                     f"{r.own_auroc:.3f} | {mark} | {'' if without is None else f'{without:.3f}'} |")
    lines += ["", "Unrelated text, AUROC against each finding's labels:", "",
              "| prompt | " + " | ".join(names.values()) + " |", "|---|" + "---:|" * len(names)]
    for p in sorted({r.prompt for r in ev.prompts if r.kind == "unrelated"}):
        row = {r.finding_id: r.auroc for r in ev.prompts if r.kind == "unrelated" and r.prompt == p}
        lines.append(f"| {p} | " + " | ".join(f"{row.get(f, float('nan')):.2f}" for f in names) + " |")
    with_lexicon = summary(ev.prompts)
    without = summary(ev.prompts_raw) if ev.prompts_raw else {}
    lines += ["", "| summary | as the appliance reads | tower alone |", "|---|---:|---:|"]
    cell = {k: k.replace("|", "\\|") for k in with_lexicon}  # "|AUROC - 0.5|" must not split the row
    lines += [f"| {cell[k]} | {v:.3f} | {without[k]:.3f} |" if k in without else f"| {cell[k]} | {v:.3f} | |"
              for k, v in with_lexicon.items()]
    lines.append("")
    return lines
