"""Rectified flow / conditional flow matching (Liu et al. 2023; Lipman et al. 2023): straight paths
between data and noise, the times trained on, and the ODE solvers that sample.

Convention (as in Stable Diffusion 3's rectified flow): time t runs from 0 (data) to 1 (noise),

    x_t = (1 - t) x_0 + t eps,        eps ~ N(0, I),

and the network predicts the velocity dx_t/dt = eps - x_0. Sampling integrates dx/dt = v(x, t) from
pure noise at t = 1 down to t = 0; editing starts from a real image noised to some t < 1.

Solvers (``SAMPLERS``), each counting its network evaluations (NFE):

- ``euler``: first order, one evaluation per step (for straight paths it is exact; it equals DDIM).
- ``heun``: Heun's second-order method (EDM's sampler), two evaluations per step.
- ``dpm++2m``: DPM-Solver++(2M) (Lu et al. 2022), a second-order multistep method on the data
  prediction x_0 = x_t - t v in log-SNR time, one evaluation per step. A step is first order where
  log-SNR is infinite at either end of it or of the step before: after pure noise (t = 1) and into
  t = 0 (there, "lower order final" as usual).

- ``ab2``: the two-step Adams-Bashforth method on the velocity in t (variable steps), one evaluation
  per step, first order only on its first step: second order over the whole path, ends included,
  since a flow's velocity is smooth in t where log-SNR is not.

Written here rather than taken from diffusers: its schedulers are classes bound to its pipelines and
its own time conventions, and a handful of lines of tensor algebra keeps the maths testable (the tests
integrate a Gaussian's exact flow and check each solver's order).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from atelier.signals import Stopped

SAMPLERS = ("euler", "heun", "dpm++2m", "ab2")
TIME_SAMPLINGS = ("uniform", "logit_normal")

Velocity = Callable[[torch.Tensor, float], torch.Tensor]  # (x (B, ...), t) -> dx/dt (B, ...)
AfterStep = Callable[[torch.Tensor, float], torch.Tensor]  # (x at the new time, that time) -> x


@dataclass
class Solution:
    """The solver's end point and the network evaluations it took."""

    x: torch.Tensor
    nfe: int


def flow_interpolant(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = (1 - t) x0 + t noise, with ``t`` (B,) broadcast over the other dimensions."""
    t = t.reshape(-1, *([1] * (x0.dim() - 1))).to(x0.dtype)
    return x0 + t * (noise - x0)


def flow_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The velocity the network learns: d x_t / dt = noise - x0."""
    return noise - x0


def sample_times(n: int, kind: str = "logit_normal", *, generator: torch.Generator | None = None,
                 mean: float = 0.0, std: float = 1.0, device: torch.device | str = "cpu") -> torch.Tensor:
    """Training times (n,) in (0, 1): ``uniform``, or ``logit_normal`` (sigmoid of N(mean, std^2);
    Esser et al. 2024: more weight on the middle times, where predicting the velocity is hardest)."""
    if kind == "uniform":
        t = torch.rand(n, generator=generator)
    elif kind == "logit_normal":
        t = torch.sigmoid(mean + std * torch.randn(n, generator=generator))
    else:
        raise ValueError(f"unknown time sampling {kind!r}: use one of {', '.join(TIME_SAMPLINGS)}")
    return t.to(device)


def time_grid(steps: int, *, start: float = 1.0, shift: float = 1.0) -> list[float]:
    """``steps + 1`` decreasing times from ``start`` to 0, uniform in t, then warped by ``shift``
    (t -> shift t / (1 + (shift - 1) t): above 1 spends more steps near the noise; SD3's shift)."""
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if not 0.0 < start <= 1.0:
        raise ValueError(f"the start time must lie in (0, 1], got {start!r}")
    if not (math.isfinite(shift) and shift > 0):
        raise ValueError(f"shift must be a finite number above 0, got {shift!r}")
    grid = [start * (1.0 - i / steps) for i in range(steps + 1)]
    return [shift * t / (1.0 + (shift - 1.0) * t) for t in grid]


def _log_snr(t: float) -> float:
    """lambda(t) = log(alpha_t / sigma_t) with alpha_t = 1 - t, sigma_t = t: -inf at pure noise (t = 1)."""
    return -math.inf if t >= 1.0 else math.log((1.0 - t) / t)


def solve(velocity: Velocity, x: torch.Tensor, grid: list[float], method: str = "euler", *,
          after_step: AfterStep | None = None, should_stop: Callable[[], bool] | None = None) -> Solution:
    """Integrate dx/dt = velocity(x, t) from ``grid[0]`` to ``grid[-1]`` (decreasing times).

    ``after_step(x, t)`` may replace the state after each step (inpainting puts the known pixels back
    there); ``should_stop`` is looked at between steps (raises :class:`atelier.signals.Stopped`)."""
    if method not in SAMPLERS:
        raise ValueError(f"unknown sampler {method!r}: use one of {', '.join(SAMPLERS)}")
    if len(grid) < 2:
        raise ValueError("the time grid needs at least two times")
    nfe = 0
    prev_x0: torch.Tensor | None = None  # dpm++2m: the previous step's data prediction
    prev_h: float | None = None  # dpm++2m: the previous step in log-SNR; ab2: in t
    prev_v: torch.Tensor | None = None  # ab2: the previous velocity
    for i, (t, s) in enumerate(zip(grid[:-1], grid[1:])):
        if should_stop is not None and should_stop():
            raise Stopped(f"sampling, step {i} of {len(grid) - 1}")
        v = velocity(x, t)
        nfe += 1
        if method == "euler":
            x = x + (s - t) * v
        elif method == "ab2":
            h = s - t
            if prev_v is None:
                x = x + h * v
            else:  # the line through the last two velocities, integrated over [t, s]
                x = x + h * ((1.0 + 0.5 * h / prev_h) * v - (0.5 * h / prev_h) * prev_v)
            prev_v, prev_h = v, h
        elif method == "heun":
            guess = x + (s - t) * v
            v2 = velocity(guess, s)
            nfe += 1
            x = x + (s - t) * 0.5 * (v + v2)
        else:
            x0 = x - t * v  # the data prediction
            last = s <= 0.0
            h = None if last else _log_snr(s) - _log_snr(t)
            if prev_x0 is not None and h is not None and prev_h is not None and math.isfinite(prev_h):
                r = prev_h / h
                d = (1.0 + 0.5 / r) * x0 - (0.5 / r) * prev_x0
            else:
                d = x0
            # x_s = (sigma_s / sigma_t) x_t + (alpha_s - sigma_s alpha_t / sigma_t) D, finite at t = 1
            x = d if last else (s / t) * x + ((1.0 - s) - s * (1.0 - t) / t) * d
            prev_x0, prev_h = x0, h
        if after_step is not None:
            x = after_step(x, s)
    return Solution(x, nfe)
