"""MixUp (Zhang et al. 2018) and CutMix (Yun et al. 2019) for labelled batches, with soft labels.

    >>> out = mixup(images, labels, num_classes=10, alpha=0.2, seed=0)
    >>> out.images, out.labels          # (B, C, H, W) like the input, (B, K) float rows summing to 1

Each image is mixed with a partner from the same batch (a random permutation); ``weight`` is the
share of its own image and label. MixUp blends whole images; CutMix pastes a rectangle of the
partner, and ``weight`` is the exact share of pixels left of its own, so the soft label always
matches what the image shows. Both draw one weight per image from Beta(alpha, alpha).

Written here rather than on ``kornia.augmentation.RandomMixUpV2`` / ``RandomCutMixV2``: those
return (label, partner label, lambda) triples whose conventions differ between the two (CutMix adds
a leading num_mix axis and, by default, still uses a lambda that is not the pasted area and warns
about it), and MixUp draws lambda uniformly rather than from Beta(alpha, alpha) as in the paper. The
two functions below are a few tensor operations each, and give (B, K) soft labels directly.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, NamedTuple

import torch
import torch.nn.functional as F


class MixResult(NamedTuple):
    images: torch.Tensor  # (B, C, H, W), the input's dtype
    labels: torch.Tensor  # (B, K) float32 soft labels, rows sum to 1
    weight: torch.Tensor  # (B,) float32 share of each image's own content (and label)
    partner: torch.Tensor  # (B,) int64 index of the image mixed in


@contextlib.contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    """Draw from the CPU generator seeded with ``seed`` without touching the global state (None: global)."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(int(seed))
        yield


def _soft(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B,) class indices or (B, K) soft labels -> (B, K) float32."""
    if labels.dim() == 2:
        if labels.shape[1] != num_classes:
            raise ValueError(f"soft labels have {labels.shape[1]} classes, expected num_classes={num_classes}")
        return labels.float()
    if labels.dim() != 1 or labels.is_floating_point():
        raise ValueError(f"labels must be (B,) class indices or (B, K) soft labels, got {labels.dtype} "
                         f"{tuple(labels.shape)}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}, got {int(labels.min())}..{int(labels.max())}")
    return F.one_hot(labels.long(), num_classes).float()


def _check(images: torch.Tensor, labels: torch.Tensor, alpha: float) -> None:
    if images.dim() != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    if labels.shape[0] != images.shape[0]:
        raise ValueError(f"{labels.shape[0]} labels for {images.shape[0]} images")
    if not alpha > 0:
        raise ValueError(f"alpha must be positive, got {alpha}")


def _draw(b: int, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    weight = torch.distributions.Beta(torch.tensor(float(alpha)), torch.tensor(float(alpha))).sample((b,))
    return weight, torch.randperm(b)


def mixup(images: torch.Tensor, labels: torch.Tensor, num_classes: int, *, alpha: float = 0.2,
          seed: int | None = None) -> MixResult:
    """``weight * image + (1 - weight) * partner``, labels likewise. uint8 images are blended in float and
    rounded back (the labels then match to within half a grey level)."""
    _check(images, labels, alpha)
    soft = _soft(labels, num_classes).cpu()  # the weights are drawn on the CPU
    with _seeded(seed):
        weight, partner = _draw(images.shape[0], alpha)
    w = weight.to(images.device)
    x = images.float() if images.dtype == torch.uint8 else images
    mixed = x * w.view(-1, 1, 1, 1).to(x.dtype) + x[partner.to(images.device)] * (1 - w).view(-1, 1, 1, 1).to(x.dtype)
    if images.dtype == torch.uint8:
        mixed = mixed.round_().clamp_(0, 255).to(torch.uint8)
    out_labels = weight[:, None] * soft + (1 - weight[:, None]) * soft[partner]
    return MixResult(mixed, out_labels.to(labels.device), weight, partner)


def cutmix(images: torch.Tensor, labels: torch.Tensor, num_classes: int, *, alpha: float = 1.0,
           seed: int | None = None) -> MixResult:
    """Paste a rectangle of the partner image covering about ``1 - weight`` of the area (clipped at the
    borders; ``weight`` is then recomputed from the pixels actually pasted)."""
    _check(images, labels, alpha)
    soft = _soft(labels, num_classes).cpu()  # the weights are drawn on the CPU
    b, _, h, w = images.shape
    with _seeded(seed):
        lam, partner = _draw(b, alpha)
        cy, cx = torch.rand(b) * h, torch.rand(b) * w
    side = torch.sqrt(1.0 - lam)  # (B,) the box covers side^2 of the image before clipping
    top = (cy - side * h / 2).round().clamp(0, h).long()
    bottom = (cy + side * h / 2).round().clamp(0, h).long()
    left = (cx - side * w / 2).round().clamp(0, w).long()
    right = (cx + side * w / 2).round().clamp(0, w).long()
    rows, cols = torch.arange(h), torch.arange(w)
    inside = (((rows >= top[:, None]) & (rows < bottom[:, None]))[:, :, None]
              & ((cols >= left[:, None]) & (cols < right[:, None]))[:, None, :])  # (B, H, W)
    weight = 1.0 - inside.flatten(1).float().mean(1)  # own share of the pixels
    box = inside[:, None].to(images.device)
    mixed = torch.where(box, images[partner.to(images.device)], images)
    out_labels = weight[:, None] * soft + (1 - weight[:, None]) * soft[partner]
    return MixResult(mixed, out_labels.to(labels.device), weight, partner)
