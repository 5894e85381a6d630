"""The Fréchet distance between Gaussian fits of two feature sets (the "F" of FID).

    d^2 = |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2)

computed in float64. The trace of the matrix square root is taken from the eigenvalues of the
symmetric matrix S1^1/2 S2 S1^1/2, which is exact for covariance matrices and avoids the complex
round-off that a general ``sqrtm`` of S1 S2 produces.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class FeatureStats:
    mean: torch.Tensor  # (D,) float64
    cov: torch.Tensor  # (D, D) float64
    n: int


def feature_stats(features: torch.Tensor) -> FeatureStats:
    """Mean and unbiased covariance of (N, D) features, in float64."""
    x = features.double()
    if x.dim() != 2 or x.shape[0] < 2:
        raise ValueError(f"need (N >= 2, D) features, got shape {tuple(x.shape)}")
    mean = x.mean(0)
    xc = x - mean
    return FeatureStats(mean, xc.T @ xc / (x.shape[0] - 1), x.shape[0])


def _psd_sqrt(m: torch.Tensor) -> torch.Tensor:
    w, v = torch.linalg.eigh((m + m.T) / 2)
    return (v * w.clamp_min(0).sqrt()) @ v.T


def frechet_distance(a: FeatureStats, b: FeatureStats) -> float:
    s1_half = _psd_sqrt(a.cov)
    inner = s1_half @ b.cov @ s1_half
    trace_sqrt = torch.linalg.eigvalsh((inner + inner.T) / 2).clamp_min(0).sqrt().sum()
    diff = a.mean - b.mean
    return float(diff @ diff + a.cov.trace() + b.cov.trace() - 2 * trace_sqrt)
