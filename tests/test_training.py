"""The training pipeline's parts on tiny inputs (needs the `train` extra: torch)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="training needs the train extra (torch)")

from appliance.bundle import Finding, LabelBank  # noqa: E402
from appliance.text import Tokenizer  # noqa: E402
from training.cohort import Split  # noqa: E402
from training.evalmath import auroc  # noqa: E402
from training.export import export_text, export_video  # noqa: E402
from training.label_bank_fit import fit_bank  # noqa: E402
from training.models import TextConfig, TextEncoder, VideoConfig, VideoEncoder, clip_loss  # noqa: E402
from training.train import TrainConfig, distill_student  # noqa: E402

TINY = VideoConfig(widths=(4, 8), temporal=8, embed_dim=6)


def tiny_split(n: int = 8) -> Split:
    rng = np.random.default_rng(0)
    return Split("t", rng.random((n, 4, 3, 16, 16)).astype(np.float16), np.zeros((n, 1), bool),
                 [["normal heart"]] * n, ["A"] * n, ["normal"] * n, list(range(n)))


def test_exports_match_pytorch_and_keep_layernorm():
    torch.manual_seed(0)
    video = VideoEncoder(TINY).eval()
    data = export_video(video, np.random.default_rng(1).random((3, 4, 3, 16, 16)).astype(np.float32))
    assert len(data) > 0
    tok = Tokenizer.build(["no left ventricular hypertrophy", "the left ventricle is dilated"], min_count=1)
    text = TextEncoder(TextConfig(vocab_size=tok.size, max_length=tok.max_length, width=16, heads=2, layers=1,
                                  embed_dim=6)).eval()
    ids, mask = tok.encode(["no left ventricular hypertrophy", "dilated"])
    assert export_text(text, ids, mask)  # raises if LayerNormalization is missing or ORT disagrees


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
