"""Kernel Inception Distance (Bińkowski et al., 2018): the unbiased squared MMD between real and
generated features under the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3, averaged over random
subsets, with its standard deviation over those subsets.

Unlike FID it is unbiased, so its value does not depend on the sample size and two samples of one
distribution give ~0 (it can be slightly negative). Written here rather than taken from
torchmetrics because the evaluator computes features once and shares them (and cached reference
features) between FID, KID and precision/recall; torchmetrics' KID owns its feature extractor.
"""

from __future__ import annotations

import torch


def _polynomial(a: torch.Tensor, b: torch.Tensor, degree: int, gamma: float, coef: float) -> torch.Tensor:
    return (a @ b.T * gamma + coef) ** degree


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor, *, degree: int = 3, gamma: float | None = None,
                  coef: float = 1.0) -> float:
    """Unbiased MMD^2 between (m, D) and (n, D) samples (float64 inside)."""
    x, y = x.double(), y.double()
    m, n = x.shape[0], y.shape[0]
    if m < 2 or n < 2:
        raise ValueError("the unbiased MMD needs at least two samples on each side")
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    kxx = _polynomial(x, x, degree, gamma, coef)
    kyy = _polynomial(y, y, degree, gamma, coef)
    kxy = _polynomial(x, y, degree, gamma, coef)
    sum_xx = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    sum_yy = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return float(sum_xx + sum_yy - 2 * kxy.mean())


def kernel_inception_distance(real: torch.Tensor, fake: torch.Tensor, *, subsets: int = 100,
                              subset_size: int = 1000, seed: int = 0, degree: int = 3) -> tuple[float, float]:
    """(mean, std) of the unbiased MMD^2 over ``subsets`` random subsets of ``subset_size`` per side
    (drawn without replacement within a subset; capped at the smaller sample size)."""
    size = min(subset_size, real.shape[0], fake.shape[0])
    g = torch.Generator().manual_seed(seed)
    values = torch.empty(subsets, dtype=torch.float64)
    for i in range(subsets):
        r = real[torch.randperm(real.shape[0], generator=g)[:size]]
        f = fake[torch.randperm(fake.shape[0], generator=g)[:size]]
        values[i] = mmd2_unbiased(r, f, degree=degree)
    std = float(values.std()) if subsets > 1 else 0.0
    return float(values.mean()), std
