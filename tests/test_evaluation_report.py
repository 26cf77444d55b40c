"""The reference model's report states every target with its measured value, met or not."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")  # training.evaluate is part of the training extra

from training.evaluate import Evaluation, SplitResult, to_markdown
from training.prompt_eval import PromptResult

NAMES = {"a": "Finding A", "b": "Finding B"}


def _split(a: float, b: float) -> SplitResult:
    return SplitResult({"a": a, "b": b}, {"a": 0.9, "b": 0.9}, {"a": 5, "b": 5}, 100)


def _targets(ev: Evaluation) -> dict[str, str]:
    text = to_markdown(ev, NAMES, "# report")
    rows = [line.split(" | ") for line in text.split("### Targets")[1].split("###")[0].splitlines()
            if line.startswith("| ") and not line.startswith("| target")]
    return {r[0].lstrip("| "): r[2].rstrip(" |") for r in rows}


def test_targets_met_and_missed_are_both_reported():
    ev = Evaluation()
    ev.splits = {"teacher": {"test": _split(0.95, 0.97), "external": _split(0.9, 0.9)},
                 "student": {"test": _split(0.94, 0.92), "external": _split(0.85, 0.88)}}
    ev.baselines = {"single": {"a": 0.80, "b": 0.85}, "linear": {"a": 0.85, "b": 0.90}}
    ev.prompts = [PromptResult("a", "paraphrase", "x", 0.93, 0.94), PromptResult("a", "paraphrase", "y", 0.70, 0.94),
                  PromptResult("a", "negated", "no x", 0.07, 0.94), PromptResult("b", "negated", "no y", 0.40, 0.94),
                  PromptResult("a", "unrelated", "a cat", 0.70, 0.94)]
    ev.prompts_raw = [PromptResult("a", "paraphrase", "x", 0.60, 0.94), PromptResult("a", "paraphrase", "y", 0.6, 0.94),
                      PromptResult("a", "negated", "no x", 0.90, 0.94), PromptResult("b", "negated", "no y", 0.4, 0.94)]
    ev.ood_rate = {"internal": 0.01, "vendor C": 0.30}
    met = _targets(ev)
    assert met["Student AUROC >= 0.90 on every finding (internal test)"] == "yes"
    assert met["Student within 0.02 of the teacher on every finding"] == "**no**"  # B is 0.05 short
    assert met["Student at least 0.10 above the best baseline, mean over findings"] == "**no**"  # +0.055
    assert met["Held-out paraphrases: >= 80 % within 0.05 AUROC of the finding's own prompts"] == "**no**"  # 50 %
    text = to_markdown(ev, NAMES, "# report")
    assert "Finding A +0.090, Finding B +0.040" in text and "vendor C 30.0 %" in text
    assert "50 % read as the appliance reads them, 0 % by the tower alone" in text
    assert met["Held-out negated prompts below 0.5 AUROC"] == "yes"
    assert "100 % read as the appliance reads them (negation by rule), 50 % by the tower alone" in text
    assert met["Unrelated text near 0.5 AUROC (mean distance from 0.5; 0.05 taken as near)"] == "**no**"  # 0.200
    assert "| unrelated mean \\|AUROC - 0.5\\| | 0.200 |" in text
