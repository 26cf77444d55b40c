"""The networks: a video encoder (teacher and student share the design, not the width) and a report text encoder.

Both are built from operators that export cleanly to ONNX opset 17 and that TensorRT takes: Conv, BatchNorm (folded
at export), ReLU, pooling and reductions, MatMul, Softmax, and LayerNorm as the single LayerNormalization op.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class VideoConfig:
    widths: tuple[int, ...] = (32, 64, 128, 192)
    temporal: int = 192
    embed_dim: int = 128
    in_channels: int = 3


TEACHER = VideoConfig(widths=(24, 48, 96, 160), temporal=256)
STUDENT = VideoConfig(widths=(16, 32, 64, 96), temporal=128)


def _block(cin: int, cout: int, convs: int) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout),
                               nn.ReLU(inplace=True)]
    for _ in range(convs - 1):
        layers += [nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class VideoEncoder(nn.Module):
    """(N, T, C, H, W) -> (N, D). Each frame's slices (base, mid, apex as channels) go through a small 2D CNN; the
    per-frame features then go through a temporal convolution, and the clip is summarised by its mean and by its
    range over the cycle (max - min), which is what contraction looks like to a network."""

    def __init__(self, cfg: VideoConfig = TEACHER) -> None:
        super().__init__()
        self.cfg = cfg
        layers, cin = [], cfg.in_channels
        for i, width in enumerate(cfg.widths):
            # One conv at full resolution, two below it: the first stage is where the pixels (and the cost) are.
            layers.append(_block(cin, width, 1 if i == 0 else 2))
            cin = width
        self.frames = nn.Sequential(*layers)
        self.temporal = nn.Sequential(nn.Conv1d(cin, cfg.temporal, 3, padding=1), nn.ReLU(inplace=True),
                                      nn.Conv1d(cfg.temporal, cfg.temporal, 3, padding=1), nn.ReLU(inplace=True))
        self.head = nn.Sequential(nn.Linear(2 * cfg.temporal, cfg.temporal), nn.ReLU(inplace=True),
                                  nn.Linear(cfg.temporal, cfg.embed_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, c, h, w = x.shape
        f = self.frames(x.reshape(n * t, c, h, w)).mean(dim=(2, 3))  # (N*T, F)
        f = self.temporal(f.reshape(n, t, -1).transpose(1, 2))  # (N, F', T)
        summary = torch.cat([f.mean(dim=2), f.amax(dim=2) - f.amin(dim=2)], dim=1)
        return self.head(summary)


@dataclass(frozen=True)
class TextConfig:
    vocab_size: int
    max_length: int = 64
    width: int = 128
    heads: int = 4
    layers: int = 2
    embed_dim: int = 128


class _Attention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        n, length, d = x.shape
        qkv = self.qkv(x).reshape(n, length, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        att = torch.softmax(q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5 + bias, dim=-1)
        return self.out((att @ v).transpose(1, 2).reshape(n, length, d))


class _Layer(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = _Attention(width, heads)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), bias)
        return x + self.mlp(self.norm2(x))


class TextEncoder(nn.Module):
    """(input_ids, attention_mask) -> (N, D): a small pre-norm transformer, mean-pooled over real tokens (as
    CMR-CLIP pools Bio_ClinicalBERT), so word order and negations ("no ... hypertrophy") can matter."""

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tokens = nn.Embedding(cfg.vocab_size, cfg.width, padding_idx=0)
        self.positions = nn.Parameter(torch.zeros(1, cfg.max_length, cfg.width))
        nn.init.normal_(self.positions, std=0.02)
        self.layers = nn.ModuleList(_Layer(cfg.width, cfg.heads) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.width)
        self.proj = nn.Linear(cfg.width, cfg.embed_dim)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.to(torch.float32)
        x = self.tokens(input_ids) + self.positions[:, : input_ids.shape[1]]
        bias = ((1.0 - mask) * -1e4)[:, None, None, :]  # padding is never attended to
        for layer in self.layers:
            x = layer(x, bias)
        x = self.norm(x)
        pooled = (x * mask[:, :, None]).sum(dim=1) / mask.sum(dim=1, keepdim=True).clamp(min=1.0)
        return self.proj(pooled)


def clip_loss(image: torch.Tensor, text: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE on cosine similarity: each study should pick its own report and each report its study."""
    image, text = F.normalize(image, dim=1), F.normalize(text, dim=1)
    logits = image @ text.t() / temperature
    target = torch.arange(len(image), device=image.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
