"""Exponential moving average of a network's weights."""

from __future__ import annotations

import torch
from torch import nn


def ema_decay_at(step: int, decay: float) -> float:
    """Warm-up: early on the average follows the weights closely, so short runs are not dominated by
    the random initialisation (the num_updates rule of TensorFlow's ExponentialMovingAverage)."""
    return min(decay, (1.0 + step) / (10.0 + step))


@torch.no_grad()
def ema_update(average: nn.Module, source: nn.Module, decay: float) -> None:
    """average <- decay * average + (1 - decay) * source for parameters; buffers (batch-norm
    statistics) are copied, since averaging running statistics has no clear meaning."""
    avg_params = [p for p in average.parameters()]
    src_params = [p.detach() for p in source.parameters()]
    if decay == 0.0:
        torch._foreach_copy_(avg_params, src_params)
    else:
        torch._foreach_lerp_(avg_params, src_params, 1.0 - decay)
    for b_avg, b_src in zip(average.buffers(), source.buffers()):
        b_avg.copy_(b_src)
