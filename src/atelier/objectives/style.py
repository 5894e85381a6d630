"""Perceptual losses for style transfer (Gatys et al. 2016; Johnson et al. 2016).

All losses are means, not sums, so their size does not depend on the image size: a weight tuned at
256 px works at 1024 px, and coarse-to-fine optimisation keeps one set of weights across scales.

- Gram matrix of a (B, C, H, W) feature map: G = F F^T / N with F the (C, N) matrix of the N = H W
  positions (or of the mask-weighted positions). Dividing by N (not C H W) keeps a Gram's entries on
  the scale of the features' second moments.
- Style loss of a layer: the mean squared difference of Gram entries.
- Content loss of a layer: the mean squared difference of activations.
- Total variation: mean absolute (or squared) difference of neighbouring pixels.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F


def gram_matrix(features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, C) second-moment matrix over positions, in float32.

    ``mask`` (B or 1, 1, h, w) with values in [0, 1] weights the positions (it is resized to H x W);
    the Gram is then normalised by the mask's total weight, so it describes the masked region alone.
    """
    b, c, h, w = features.shape
    f = features.float().reshape(b, c, h * w)
    if mask is None:
        return f @ f.transpose(1, 2) / (h * w)
    m = resize_mask(mask, (h, w)).reshape(mask.shape[0], 1, h * w)
    weight = m.sum(dim=2, keepdim=True).clamp_min(1e-8)  # (B, 1, 1)
    return (f * m) @ f.transpose(1, 2) / weight


def resize_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, 1, h, w) mask in [0, 1] -> (B, 1, *size) by area averaging (keeps soft edges, no aliasing)."""
    if mask.dim() != 4 or mask.shape[1] != 1:
        raise ValueError(f"a mask must have shape (B, 1, H, W), got {tuple(mask.shape)}")
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask.float()
    return F.adaptive_avg_pool2d(mask.float(), size) if all(s <= m for s, m in zip(size, mask.shape[-2:])) else F.interpolate(
        mask.float(), size=size, mode="bilinear", align_corners=False
    )


def content_loss(features: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor],
                 weights: Mapping[str, float]) -> torch.Tensor:
    """Sum over layers of weight x mean squared difference of activations (targets broadcast over B)."""
    total = features[next(iter(weights))].new_zeros((), dtype=torch.float32)
    for name, w in weights.items():
        total = total + w * F.mse_loss(features[name].float(), targets[name].float().expand_as(features[name]))
    return total


def style_loss(features: Mapping[str, torch.Tensor], target_grams: Mapping[str, torch.Tensor],
               weights: Mapping[str, float], mask: torch.Tensor | None = None) -> torch.Tensor:
    """Sum over layers of weight x mean squared difference between Gram matrices.

    ``target_grams[name]`` is (1 or B, C, C); ``mask`` restricts the generated image's Gram to a region.
    """
    total = features[next(iter(weights))].new_zeros((), dtype=torch.float32)
    for name, w in weights.items():
        g = gram_matrix(features[name], mask)
        total = total + w * F.mse_loss(g, target_grams[name].float().expand_as(g))
    return total


def total_variation(x: torch.Tensor, power: float = 1.0) -> torch.Tensor:
    """Mean over pixels of |dx|^p + |dy|^p between neighbours. (B, C, H, W) -> scalar.

    p = 1 (the default) is the anisotropic TV of Rudin et al.; p = 2 the smoother squared form used by
    Johnson et al.
    """
    dx = (x[..., :, 1:] - x[..., :, :-1]).abs().pow(power)
    dy = (x[..., 1:, :] - x[..., :-1, :]).abs().pow(power)
    return dx.mean() + dy.mean()


def blend_grams(grams: list[Mapping[str, torch.Tensor]], weights: list[float] | None = None) -> dict[str, torch.Tensor]:
    """Weighted average of several styles' Gram matrices, layer by layer (weights normalised to sum 1).

    Matching the averaged Gram is how Gatys-style transfer blends several styles into one.
    """
    if not grams:
        raise ValueError("blend_grams needs at least one style")
    weights = [1.0] * len(grams) if weights is None else list(weights)
    if len(weights) != len(grams):
        raise ValueError(f"{len(grams)} styles but {len(weights)} style weights")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"style weights must be non-negative and not all zero, got {weights}")
    total = sum(weights)
    return {name: sum((w / total) * g[name] for w, g in zip(weights, grams)) for name in grams[0]}
