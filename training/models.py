"""The networks: a video encoder (teacher and student share the design, not the width). The text side is a frozen,
pretrained sentence encoder (training/text_tower.py), not trained here.

It is built from operators that export cleanly to ONNX opset 17 and that TensorRT takes: Conv, BatchNorm (folded
at export), ReLU, pooling and reductions, and MatMul.
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


def clip_loss(image: torch.Tensor, text: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE on cosine similarity: each study should pick its own report and each report its study."""
    image, text = F.normalize(image, dim=1), F.normalize(text, dim=1)
    logits = image @ text.t() / temperature
    target = torch.arange(len(image), device=image.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
