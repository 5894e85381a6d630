"""Losses of the flow family: flow matching (velocity regression) and DDPM's noise regression.

Both are plain mean squared errors per sample (mean over pixels), so a loss read in a log means the
same at every resolution; the step averages over the batch.
"""

from __future__ import annotations

import torch


def flow_matching_loss(velocity: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Conditional flow matching on straight paths: || v_theta(x_t, t) - (noise - x0) ||^2 per sample, (B,)."""
    return (velocity.float() - (noise.float() - x0.float())).square().flatten(1).mean(dim=1)


def noise_prediction_loss(eps_pred: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """DDPM's simple loss: || eps_theta(x_k, k) - eps ||^2 per sample, (B,)."""
    return (eps_pred.float() - noise.float()).square().flatten(1).mean(dim=1)
