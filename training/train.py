"""Teacher: video and text encoders trained together on (study, impression) pairs with a symmetric InfoNCE loss.
Student: a smaller video encoder distilled from the frozen teacher's image embeddings on studies without reports.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from appliance.text import Tokenizer
from training.cohort import Split
from training.models import STUDENT, TEACHER, TextConfig, TextEncoder, VideoConfig, VideoEncoder, clip_loss


@dataclass(frozen=True)
class TrainConfig:
    teacher_epochs: int = 20
    student_epochs: int = 20
    batch: int = 48
    lr: float = 2e-3
    weight_decay: float = 0.02
    temperature: float = 0.05  # CMR-CLIP's fixed temperature
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


def train_teacher(train: Split, tokenizer: Tokenizer, cfg: TrainConfig, log: Callable[[str], None] = print,
                  video_cfg: VideoConfig = TEACHER) -> tuple[VideoEncoder, TextEncoder]:
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    video = VideoEncoder(video_cfg)
    text = TextEncoder(TextConfig(vocab_size=tokenizer.size, max_length=tokenizer.max_length,
                                  embed_dim=video_cfg.embed_dim))
    params = list(video.parameters()) + list(text.parameters())
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    n = len(train.tensors)
    steps = cfg.teacher_epochs * (n // cfg.batch)
    scheduler = _schedule(optimizer, steps)
    # Every study has several impressions written by different "readers"; each epoch draws one at random.
    encoded = [tokenizer.encode(reports) for reports in train.reports]
    rng = np.random.default_rng(cfg.seed)
    for epoch in range(cfg.teacher_epochs):
        video.train()
        text.train()
        started, total, count = time.perf_counter(), 0.0, 0
        for idx in _batches(n, cfg.batch, gen):
            idx_np = idx.numpy()
            x = augment(torch.from_numpy(np.asarray(train.tensors[idx_np], dtype=np.float32)), gen)
            picks = [encoded[i] for i in idx_np]
            which = rng.integers(0, [len(p[0]) for p in picks])
            ids = torch.from_numpy(np.stack([p[0][w] for p, w in zip(picks, which, strict=True)]))
            mask = torch.from_numpy(np.stack([p[1][w] for p, w in zip(picks, which, strict=True)]))
            loss = clip_loss(video(x), text(ids, mask), cfg.temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        log(f"teacher epoch {epoch + 1}/{cfg.teacher_epochs}: loss {total / count:.3f} "
            f"({time.perf_counter() - started:.0f} s)")
    video.eval()
    text.eval()
    return video, text


@torch.no_grad()
def embed_images(model: VideoEncoder, tensors: np.ndarray, batch: int = 64) -> np.ndarray:
    model.eval()
    out = [model(torch.from_numpy(np.asarray(tensors[i : i + batch], dtype=np.float32))).numpy()
           for i in range(0, len(tensors), batch)]
    return np.concatenate(out).astype(np.float32)


@torch.no_grad()
def embed_texts(model: TextEncoder, tokenizer: Tokenizer, texts: list[str], batch: int = 256) -> np.ndarray:
    model.eval()
    out = []
    for i in range(0, len(texts), batch):
        ids, mask = tokenizer.encode(texts[i : i + batch])
        out.append(model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy())
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
