"""Latent-space helpers shared by the generative families: prior draws and class-label vectors."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def normal_latents(n: int, dim: int, *, generator: torch.Generator | None = None,
                   truncation: float | None = None) -> torch.Tensor:
    """Standard normal latents (n, dim) on CPU; with ``truncation`` T, every coordinate with |z| > T
    is redrawn until it falls inside (the truncation trick: fidelity for diversity)."""
    z = torch.randn(n, dim, generator=generator)
    if truncation is not None:
        if truncation <= 0:
            raise ValueError(f"truncation must be positive, got {truncation}")
        outside = z.abs() > truncation
        while outside.any():
            z[outside] = torch.randn(int(outside.sum()), generator=generator)
            outside = z.abs() > truncation
    return z


def label_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class indices (N,) -> one-hot (N, K) float; soft class weights (N, K) pass through.

    Soft weights (rows mixing two classes) are what class-to-class interpolation feeds a
    conditional model."""
    if labels.dim() == 2:
        if labels.shape[1] != num_classes:
            raise ValueError(f"class weights must have {num_classes} columns, got {labels.shape[1]}")
        return labels.float()
    labels = labels.long()
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}, got {int(labels.min())}..{int(labels.max())}")
    return F.one_hot(labels, num_classes).float()
