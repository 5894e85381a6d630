"""A small residual CNN for 32x32 colour images: the domain feature extractor for CIFAR-10 and for
labelled image folders.

The network is a narrow ResNet-9 (the DAWNBench CIFAR-10 design: conv-BN-ReLU stages with max pooling
and two residual blocks) that trains to useful accuracy in minutes on a CPU. Its features are the
global-average-pooled last stage (``8 * width`` dims: 128 at the default width 16), its logits a
linear layer on them. Training augments with random crops from the image padded by 4 pixels and
horizontal flips, the standard CIFAR augmentation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: The architecture name saved with the weights (see :func:`atelier.metrics.classifier.build_classifier`).
ARCH = "resnet9"


def _conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class _Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.a, self.b = _conv(channels, channels), _conv(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C, H, W)
        return x + self.b(self.a(x))


class ResNetClassifier(nn.Module):
    """(B, C, R, R) in [-1, 1] -> K logits; ``features`` gives the (B, 8 * width) pooled last stage.

    Inputs of another size are resized to ``resolution`` (bilinear, antialiased) first, so the
    features of any image mean the same thing."""

    arch = ARCH

    def __init__(self, num_classes: int = 10, channels: int = 3, *, width: int = 16, resolution: int = 32) -> None:
        super().__init__()
        self.num_classes, self.channels, self.width, self.resolution = num_classes, channels, width, resolution
        w = width
        self.body = nn.Sequential(
            _conv(channels, w),  # (B, w, R, R)
            _conv(w, 2 * w), nn.MaxPool2d(2), _Residual(2 * w),  # (B, 2w, R/2, R/2)
            _conv(2 * w, 4 * w), nn.MaxPool2d(2),  # (B, 4w, R/4, R/4)
            _conv(4 * w, 8 * w), nn.MaxPool2d(2), _Residual(8 * w),  # (B, 8w, R/8, R/8)
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),  # (B, 8w)
        )
        self.head = nn.Linear(8 * w, num_classes)

    @property
    def feature_dim(self) -> int:
        return self.head.in_features

    def config(self) -> dict:
        """What :func:`atelier.metrics.classifier.build_classifier` needs to rebuild this network."""
        return {"arch": ARCH, "num_classes": self.num_classes, "channels": self.channels, "width": self.width,
                "resolution": self.resolution}

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.resolution, self.resolution):
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear", antialias=True,
                              align_corners=False)
        return self.body(x.contiguous(memory_format=torch.channels_last))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def crop_flip(x: torch.Tensor, g: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Per image: a random ``H x W`` crop of the image zero-padded by ``pad`` (zero is mid-grey in
    [-1, 1]) and a horizontal flip with probability 1/2. (B, C, H, W) -> (B, C, H, W)."""
    b, _, h, w = x.shape
    padded = F.pad(x, [pad] * 4)  # (B, C, H + 2p, W + 2p)
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=g)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=g)
    flip = torch.rand(b, generator=g) < 0.5
    cols = torch.arange(w)
    cols = torch.where(flip[:, None], cols.flip(0), cols) + dx[:, None]  # (B, W)
    rows = torch.arange(h) + dy[:, None]  # (B, H)
    batch = torch.arange(b)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
