"""Adversarial losses on raw discriminator logits.

- ``nonsaturating``: the BCE loss of the original GAN and DCGAN. The discriminator minimises
  softplus(-D(x)) + softplus(D(G(z))); the generator minimises softplus(-D(G(z))) (the
  non-saturating form, which keeps gradients alive early in training).
- ``hinge``: D minimises relu(1 - D(x)) + relu(1 + D(G(z))); G minimises -D(G(z))
  (Lim & Ye 2017; Miyato et al. 2018).
- ``lsgan``: least squares (Mao et al. 2017), as in CycleGAN: D minimises (D(x) - 1)^2 + D(G(z))^2;
  G minimises (D(G(z)) - 1)^2. Logits may be per-patch maps; every loss is a mean over all entries.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, kind: str) -> torch.Tensor:
    real_logits, fake_logits = real_logits.float(), fake_logits.float()
    if kind == "nonsaturating":
        return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
    if kind == "hinge":
        return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()
    if kind == "lsgan":
        return (real_logits - 1.0).square().mean() + fake_logits.square().mean()
    raise ValueError(f"unknown GAN loss {kind!r}")


def generator_loss(fake_logits: torch.Tensor, kind: str) -> torch.Tensor:
    fake_logits = fake_logits.float()
    if kind == "nonsaturating":
        return F.softplus(-fake_logits).mean()
    if kind == "hinge":
        return -fake_logits.mean()
    if kind == "lsgan":
        return (fake_logits - 1.0).square().mean()
    raise ValueError(f"unknown GAN loss {kind!r}")
