"""The training pipeline's parts on tiny inputs (needs the `train` extra: torch)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="training needs the train extra (torch)")

from appliance.bundle import Finding, LabelBank  # noqa: E402
from training.cohort import Split  # noqa: E402
from training.evalmath import auroc, fit_anchored_logistic  # noqa: E402
from training.export import export_video  # noqa: E402
from training.label_bank_fit import fit_bank  # noqa: E402
from training.models import VideoConfig, VideoEncoder, clip_loss  # noqa: E402
from training.prompt_eval import evaluate_prompts, leaked_prompts, summary  # noqa: E402
from training.train import TrainConfig, distill_student, train_image_tower  # noqa: E402

TINY = VideoConfig(widths=(4, 8), temporal=8, embed_dim=6)


def tiny_split(n: int = 8) -> Split:
    rng = np.random.default_rng(0)
    return Split("t", rng.random((n, 4, 3, 16, 16)).astype(np.float16), np.zeros((n, 1), bool),
                 [["normal heart"]] * n, ["A"] * n, ["normal"] * n, list(range(n)))


def test_export_matches_pytorch():
    torch.manual_seed(0)
    video = VideoEncoder(TINY).eval()
    data = export_video(video, np.random.default_rng(1).random((3, 4, 3, 16, 16)).astype(np.float32))
    assert len(data) > 0  # export_video raises if ONNX Runtime and PyTorch disagree


def test_locked_text_training_meets_the_frozen_targets():
    """Two kinds of study, each with its own fixed report embedding: after training, each study is nearer its own
    kind's report than the other's, and the projection has the text tower's width."""
    rng = np.random.default_rng(0)
    n = 32
    kind = np.arange(n) % 2
    x = rng.random((n, 4, 3, 16, 16)).astype(np.float32) * 0.2
    x[kind == 1, :, :, 4:12, 4:12] += 0.8  # kind 1 has a bright square
    split = Split("t", x.astype(np.float16), np.zeros((n, 1), bool), [["r"]] * n, ["A"] * n, ["n"] * n,
                  list(range(n)))
    texts = np.eye(7, dtype=np.float32)[:2]
    reports = [texts[k][None] for k in kind]
    video = train_image_tower(split, reports, TrainConfig(teacher_epochs=15, batch=8, lr=5e-3), log=lambda m: None,
                              video_cfg=TINY)
    with torch.no_grad():
        out = torch.nn.functional.normalize(video(torch.from_numpy(x)), dim=1).numpy()
    assert out.shape == (n, 7)
    sims = out @ texts.T
    assert ((sims[:, 1] > sims[:, 0]) == (kind == 1)).mean() >= 0.9


def test_anchored_calibration_puts_one_half_at_the_threshold():
    rng = np.random.default_rng(0)
    labels = rng.random(500) < 0.4
    scores = rng.normal(0.0, 1.0, 500) + 2.0 * labels
    slope = fit_anchored_logistic(scores, labels, threshold=1.0)
    assert slope > 0.5  # the scores separate the classes, so probability rises with the score
    p = 1 / (1 + np.exp(-slope * (scores - 1.0)))
    assert np.array_equal(p >= 0.5, scores >= 1.0)


def test_prompt_evaluation_and_leak_check():
    rng = np.random.default_rng(0)
    d = 6
    labels = rng.random((200, 1)) < 0.5
    axis = np.eye(d)[0]
    emb = rng.normal(0, 0.3, (200, d)) + np.where(labels, 1.0, -1.0) * axis
    bank = LabelBank((Finding("pericardial_effusion", "PE", ("p",), axis[None], 0.0, 1.0, 0.0, 0.5, False),), None)

    def embed(texts: list[str]) -> np.ndarray:  # paraphrases point along the axis, negations against it
        out = np.array([(-axis if t.startswith("no ") else axis) + 0.01 * i for i, t in enumerate(texts)])
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    results = evaluate_prompts(emb, labels, bank, embed)
    s = summary(results)
    assert s["paraphrases within 0.05 of own prompts"] == 1.0
    assert s["negated below 0.5"] == 1.0
    assert leaked_prompts(["A rim of pericardial fluid is seen."]) == ["a rim of pericardial fluid"]
    assert leaked_prompts(["No pericardial effusion."]) == []


def test_clip_loss_prefers_matching_pairs():
    x = torch.eye(4)
    assert clip_loss(x, x, 0.05) < clip_loss(x, x.roll(1, dims=0), 0.05)


def test_label_bank_fit_puts_thresholds_between_the_classes():
    rng = np.random.default_rng(0)
    d = 8
    axis = np.eye(d)[0]
    labels = rng.random((400, 1)) < 0.3
    emb = rng.normal(0, 0.3, (400, d)) + np.where(labels, 1.0, -1.0) * axis
    bank = LabelBank((Finding("f", "F", ("p",), axis[None], 0.0, 1.0, 0.0, 0.0, False),), None)
    fitted = fit_bank(bank, emb, labels, emb, np.array([0.3]))
    f = fitted.findings[0]
    scores = emb @ axis / np.linalg.norm(emb, axis=1)
    assert auroc(scores, labels[:, 0]) > 0.99
    assert ((scores >= f.threshold) == labels[:, 0]).mean() > 0.97
    assert f.slope > 0 and fitted.reference is not None


def test_distillation_from_precomputed_teacher_embeddings():
    split = tiny_split()
    targets = np.random.default_rng(2).normal(size=(8, 5)).astype(np.float32)
    student = distill_student(targets, split, TrainConfig(student_epochs=1, batch=4), log=lambda m: None,
                              student_cfg=TINY)
    out = student(torch.from_numpy(np.asarray(split.tensors[:2], dtype=np.float32)))
    assert out.shape == (2, 5)
    with pytest.raises(ValueError, match="teacher embeddings"):
        distill_student(targets[:3], split, TrainConfig(student_epochs=1, batch=4), student_cfg=TINY)
