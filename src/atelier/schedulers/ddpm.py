"""The DDPM peer (Ho et al. 2020): a 1,000-step linear beta schedule, epsilon prediction, and the
deterministic DDIM sampler (Song et al. 2021) over a subset of the steps.

    x_k = sqrt(abar_k) x_0 + sqrt(1 - abar_k) eps,     k = 0 .. T - 1,

the network sees the continuous time (k + 1) / T in (0, 1] (the same time embedding as a flow model).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from atelier.schedulers.flow import Solution
from atelier.signals import Stopped

Epsilon = Callable[[torch.Tensor, float], torch.Tensor]  # (x_k, (k + 1) / T) -> predicted eps


class DDPMSchedule:
    """The linear schedule beta_k from ``beta_start`` to ``beta_end`` over ``steps`` steps, in float64."""

    def __init__(self, steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> None:
        self.steps = steps
        betas = torch.linspace(beta_start, beta_end, steps, dtype=torch.float64)
        self.alpha_bar = torch.cumprod(1.0 - betas, dim=0)  # (T,)

    def time_of(self, k: torch.Tensor | int) -> torch.Tensor | float:
        """The network's time input for step index ``k``: (k + 1) / T."""
        return (k + 1) / self.steps

    def sample_steps(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Training step indices (n,) uniform in 0 .. T - 1."""
        return torch.randint(0, self.steps, (n,), generator=generator)

    def noise(self, x0: torch.Tensor, eps: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """x_k for step indices ``k`` (B,)."""
        abar = self.alpha_bar.to(x0.device)[k.to(x0.device)].to(x0.dtype).reshape(-1, *([1] * (x0.dim() - 1)))
        return abar.sqrt() * x0 + (1.0 - abar).sqrt() * eps

    def ddim_steps(self, n: int) -> list[int]:
        """``n`` step indices from T - 1 downwards, evenly spaced ("trailing" spacing: the first is pure noise)."""
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= self.steps:
            raise ValueError(f"DDIM steps must be an integer in 1..{self.steps}, got {n!r}")
        return [round(self.steps - i * self.steps / n) - 1 for i in range(n)]


def ddim_sample(eps_fn: Epsilon, x: torch.Tensor, schedule: DDPMSchedule, steps: int = 50, *,
                should_stop: Callable[[], bool] | None = None) -> Solution:
    """Deterministic DDIM (eta = 0) from pure noise ``x`` in ``steps`` network evaluations."""
    ks = schedule.ddim_steps(steps)
    abar = schedule.alpha_bar
    for i, k in enumerate(ks):
        if should_stop is not None and should_stop():
            raise Stopped(f"sampling, step {i} of {len(ks)}")
        eps = eps_fn(x, float(schedule.time_of(k)))
        a_t = float(abar[k])
        a_prev = float(abar[ks[i + 1]]) if i + 1 < len(ks) else 1.0
        x0 = (x - (1.0 - a_t) ** 0.5 * eps) / a_t**0.5
        x = a_prev**0.5 * x0 + (1.0 - a_prev) ** 0.5 * eps
    return Solution(x, len(ks))
