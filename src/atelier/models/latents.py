"""Latent-space helpers shared by the generative families: prior draws and class-label vectors."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from atelier.config import Positive, check_value


def check_truncation(truncation, name: str = "truncation") -> float | None:
    """``truncation`` as a float, or None for none; anything but a finite number above 0 raises
    ConfigError (a ValueError) naming ``name`` (a bool, NaN, +-inf, 0, a negative number or a non-number)."""
    if truncation is None:
        return None
    if isinstance(truncation, torch.Tensor) and truncation.numel() == 1:
        truncation = truncation.item()
    return check_value(truncation, Positive, name)  # latents are drawn within +-truncation


def _float32_within(bound: float) -> float:
    """The largest float32 value that is not above ``bound`` (>= 0), so a clamp to it stays within it."""
    b = torch.tensor(bound, dtype=torch.float32)
    if float(b) > bound:
        b = torch.nextafter(b, torch.tensor(0.0, dtype=torch.float32))
    return float(b)


def normal_latents(n: int, dim: int, *, generator: torch.Generator | None = None,
                   truncation: float | None = None) -> torch.Tensor:
    """Standard normal latents (n, dim) float32 on CPU, reproducible from ``generator``.

    With ``truncation`` T (a finite number above 0) every coordinate is drawn from the standard
    normal truncated to [-T, T] (the truncation trick: fidelity for diversity), by inverting its CDF:
    u uniform in [-1, 1), z = sqrt(2) erfinv(u erf(T / sqrt(2))). That is exact (the CDF of z is
    the truncated normal's), takes one uniform draw per coordinate whatever T is (rejection
    sampling needs ~1 / P(|z| <= T) rounds: without end for a tiny T), and, computed in float64 in
    this form, keeps its resolution for tiny T (erf(x) ~ 2x / sqrt(pi): nothing cancels). Results
    are clamped into [-T, T] in float32, so a T below float32's smallest value gives zeros.
    """
    truncation = check_truncation(truncation)
    if truncation is None:
        return torch.randn(n, dim, generator=generator)
    u = torch.rand(n, dim, generator=generator, dtype=torch.float64).mul_(2.0).sub_(1.0)
    edge = math.erf(truncation / math.sqrt(2.0))  # mass of [-T, T] is erf(T / sqrt 2)
    z = torch.special.erfinv(u.mul_(edge)).mul_(math.sqrt(2.0)).float()
    bound = _float32_within(truncation)
    return z.clamp_(-bound, bound)


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
