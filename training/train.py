"""Teacher: a video encoder trained to meet a frozen, pretrained text tower on (study, report) pairs (locked-text).
Student: a smaller video encoder distilled from the frozen teacher's image embeddings on studies without reports.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from training.cohort import Split
from training.models import STUDENT, TEACHER, VideoConfig, VideoEncoder


@dataclass(frozen=True)
class TrainConfig:
    teacher_epochs: int = 20
    student_epochs: int = 20
    batch: int = 48
    lr: float = 2e-3
    weight_decay: float = 0.02
    temperature: float = 0.05  # the learned temperature's start (CMR-CLIP's fixed value)
    regression_weight: float = 10.0  # the cosine-to-mean-report term beside InfoNCE
    seed: int = 0


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """What differs between two acquisitions of one heart on one vendor: a few pixels of shift, gain and a little
    noise. Not in-plane rotation or a different vendor's look: those are what the out-of-distribution check is
    for (vendor C is held out)."""
    n = x.shape[0]
    shifts = torch.randint(-3, 4, (n, 2), generator=gen)
    out = torch.stack([torch.roll(x[i], shifts=(int(shifts[i, 0]), int(shifts[i, 1])), dims=(-2, -1))
                       for i in range(n)])
    gain = 1.0 + 0.1 * (torch.rand((n, 1, 1, 1, 1), generator=gen) - 0.5)
    noise = 0.02 * torch.randn(out.shape, generator=gen)
    return (out * gain + noise).clamp_(0.0, 1.2)


def _batches(n: int, size: int, gen: torch.Generator, drop_last: bool = True):
    order = torch.randperm(n, generator=gen)
    stop = n - size + 1 if drop_last else n
    for i in range(0, max(stop, 1), size):
        yield order[i : i + size]


def _schedule(optimizer: torch.optim.Optimizer, steps: int, warmup: int = 50) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, steps - warmup))))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_image_tower(train: Split, report_embeddings: list[np.ndarray], cfg: TrainConfig,
                      log: Callable[[str], None] = print, video_cfg: VideoConfig = TEACHER) -> VideoEncoder:
    """Locked-text training: the text tower is frozen (its report embeddings are computed once, outside), and the
    image encoder, ending in a learned linear projection into the text tower's space, is trained to meet it.

    `report_embeddings[i]` is (k, D), study i's k reports as the frozen tower embeds them. The loss is CLIP's
    symmetric InfoNCE against one report drawn per study each epoch (a learned temperature, as in CLIP, since a
    frozen general-domain tower puts all cardiac reports close together), plus the cosine to the mean of the
    study's reports: many studies have near-identical reports (most normals read alike), and the contrastive term
    alone would push those apart."""
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    dim = int(report_embeddings[0].shape[1])
    video = VideoEncoder(replace(video_cfg, embed_dim=dim))
    log_scale = torch.nn.Parameter(torch.tensor(math.log(1.0 / cfg.temperature)))
    params = [*video.parameters(), log_scale]
    groups: list[dict[str, Any]] = [{"params": list(video.parameters())},
                                    {"params": [log_scale], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups,
                                  lr=cfg.lr, weight_decay=cfg.weight_decay)
    n = len(train.tensors)
    steps = cfg.teacher_epochs * (n // cfg.batch)
    scheduler = _schedule(optimizer, steps)
    reports = [F.normalize(torch.from_numpy(np.asarray(r, dtype=np.float32)), dim=1) for r in report_embeddings]
    means = F.normalize(torch.stack([r.mean(dim=0) for r in reports]), dim=1)
    rng = np.random.default_rng(cfg.seed)
    for epoch in range(cfg.teacher_epochs):
        video.train()
        started, total, count = time.perf_counter(), 0.0, 0
        for idx in _batches(n, cfg.batch, gen):
            idx_np = np.sort(idx.numpy())
            x = augment(torch.from_numpy(np.asarray(train.tensors[idx_np], dtype=np.float32)), gen)
            picks = torch.stack([reports[i][int(rng.integers(0, len(reports[i])))] for i in idx_np])
            image = F.normalize(video(x), dim=1)
            logits = image @ picks.t() * log_scale.exp().clamp(max=100.0)
            target = torch.arange(len(idx_np))
            contrastive = (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
            regression = (1 - (image * means[torch.from_numpy(idx_np)]).sum(dim=1)).mean()
            loss = contrastive + cfg.regression_weight * regression
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            total += float(loss.detach()) * len(idx_np)
            count += len(idx_np)
        log(f"image tower epoch {epoch + 1}/{cfg.teacher_epochs}: loss {total / count:.3f}, temperature "
            f"{float(1 / log_scale.detach().exp()):.4f} ({time.perf_counter() - started:.0f} s)")
    video.eval()
    return video


@torch.no_grad()
def embed_images(model: VideoEncoder, tensors: np.ndarray, batch: int = 64) -> np.ndarray:
    model.eval()
    out = [model(torch.from_numpy(np.asarray(tensors[i : i + batch], dtype=np.float32))).numpy()
           for i in range(0, len(tensors), batch)]
    return np.concatenate(out).astype(np.float32)


def distill_student(teacher: VideoEncoder | np.ndarray, archive: Split, cfg: TrainConfig,
                    log: Callable[[str], None] = print, student_cfg: VideoConfig = STUDENT) -> VideoEncoder:
    """Match the frozen teacher's normalised embeddings (cosine + MSE) on unlabelled studies; the student sees
    augmented studies, the teacher saw the clean ones, so the student learns the teacher's view of the heart, not of
    the noise. `teacher` may be the embeddings themselves, (N, D) in archive order: a site distilling from a teacher
    it runs elsewhere (e.g. CMR-CLIP with its own preprocessing) passes those."""
    torch.manual_seed(cfg.seed + 1)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    raw = teacher if isinstance(teacher, np.ndarray) else embed_images(teacher, archive.tensors)
    if len(raw) != len(archive.tensors):
        raise ValueError(f"{len(raw)} teacher embeddings for {len(archive.tensors)} archive studies")
    targets = F.normalize(torch.from_numpy(np.asarray(raw, dtype=np.float32)), dim=1)
    student = VideoEncoder(replace(student_cfg, embed_dim=targets.shape[1]))
    optimizer = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n = len(archive.tensors)
    scheduler = _schedule(optimizer, cfg.student_epochs * (n // cfg.batch))
    for epoch in range(cfg.student_epochs):
        student.train()
        started, total, count = time.perf_counter(), 0.0, 0
        for idx in _batches(n, cfg.batch, gen):
            idx_sorted = np.sort(idx.numpy())
            x = augment(torch.from_numpy(np.asarray(archive.tensors[idx_sorted], dtype=np.float32)), gen)
            pred = F.normalize(student(x), dim=1)
            target = targets[torch.from_numpy(idx_sorted)]
            loss = (1 - (pred * target).sum(dim=1)).mean() + F.mse_loss(pred, target) * target.shape[1]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        log(f"student epoch {epoch + 1}/{cfg.student_epochs}: loss {total / count:.4f} "
            f"({time.perf_counter() - started:.0f} s)")
    student.eval()
    return student
