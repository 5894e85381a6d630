"""The perceptual loss that trains fast-style networks, beside the Gram and content losses it is made of
(:mod:`atelier.objectives.style`).

Losses are relative errors, as in :mod:`atelier.style.gatys`: each content layer's squared error is
divided by the mean square of the target activations and each style layer's by the mean square of
the target Gram entries, so the weights mean the same for any layer, image size and feature network.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from atelier.objectives.style import blend_grams, content_loss, gram_matrix, style_loss, total_variation


class PerceptualLoss(nn.Module):
    """Perceptual loss (Johnson et al. 2016) of a batch of outputs against their content images and the
    fixed style Grams: ``loss`` = content + style + tv, each a relative error as in Gatys transfer.

    ``cfg`` is anything with the loss settings as attributes (``content_layers``, ``style_layers``,
    ``content_weight``, ``style_weight``, ``tv_weight``, ``style_blend``), e.g. a fast-style training
    config. The content targets come from ``features.truncated(content layers)`` when the feature
    network offers such a cut (VGG does): the same weights, fewer layers.
    """

    def __init__(self, features: nn.Module, styles: Sequence[torch.Tensor], cfg: Any, *,
                 autocast: Callable[[], Any] = contextlib.nullcontext) -> None:
        super().__init__()
        self.features, self.cfg, self._autocast = features, cfg, autocast
        cut = getattr(features, "truncated", None)
        self.content_features = cut(list(cfg.content_layers)) if cut and cfg.content_layers else features
        with torch.no_grad():
            grams = []
            for s in styles:  # (3, h, w) each
                f = self._features(s[None])
                grams.append({n: gram_matrix(f[n]) for n in cfg.style_layers})
            self.style_targets = blend_grams(grams, cfg.style_blend)
        total = sum(cfg.style_layers.values()) or 1.0
        self.style_weights = {
            n: cfg.style_weight * (w / total) / (self.style_targets[n].pow(2).mean().item() + 1e-12)
            for n, w in cfg.style_layers.items()
        }

    def _features(self, x: torch.Tensor, net: nn.Module | None = None) -> dict[str, torch.Tensor]:
        with self._autocast():
            return (self.features if net is None else net)(x)

    def forward(self, output: torch.Tensor, content: torch.Tensor) -> dict[str, torch.Tensor]:
        """Terms for (B, 3, H, W) outputs and contents in [0, 1]: loss = content + style + tv."""
        cfg = self.cfg
        zero = output.new_zeros((), dtype=torch.float32)
        f = self._features(output)
        terms = {"content": zero, "style": style_loss(f, self.style_targets, self.style_weights)}
        if cfg.content_layers and cfg.content_weight:
            with torch.no_grad():
                f_c = self._features(content, self.content_features)
                target = {n: f_c[n].float() for n in cfg.content_layers}
            weights = {n: cfg.content_weight * w / (target[n].pow(2).mean().item() + 1e-12)
                       for n, w in cfg.content_layers.items()}
            terms["content"] = content_loss(f, target, weights)
        terms["tv"] = cfg.tv_weight * total_variation(output.float()) if cfg.tv_weight else zero
        terms["loss"] = terms["content"] + terms["style"] + terms["tv"]
        return terms
