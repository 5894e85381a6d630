"""Colour preservation for style transfer (Gatys, Bethge, Hertzmann & Shechtman 2016).

Two ways to keep the content photo's colours while taking the style's texture:

- **luminance-only transfer**: stylise the luma (Y of YIQ) alone, then put the content's chrominance
  (I and Q) back. The output's chrominance is the content's, exactly (up to clipping to [0, 1]).
- **colour histogram matching**: before the transfer, move the style image's colours to the content's
  colour statistics with an affine map x -> A (x - mu_s) + mu_c, where A = Sigma_c^(1/2) Sigma_s^(-1/2)
  (symmetric square roots) makes the style's RGB mean and covariance equal the content's.

All functions take (B, 3, H, W) or (3, H, W) RGB tensors in [0, 1] and are differentiable and batched.
"""

from __future__ import annotations

import torch

COLOR_MODES = ("none", "luminance", "histogram")

# NTSC YIQ (FCC 1953 coefficients); the inverse is computed, not typed, so the pair is exact.
_RGB_TO_YIQ = torch.tensor(
    [[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]],
    dtype=torch.float64,
)
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


def _apply_matrix(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Per-pixel 3x3 colour transform. (..., 3, H, W) -> (..., 3, H, W)."""
    if x.shape[-3] != 3:
        raise ValueError(f"expected RGB images with 3 channels, got shape {tuple(x.shape)}")
    return torch.einsum("ij,...jhw->...ihw", m.to(x.device, x.dtype), x)


def rgb_to_yiq(x: torch.Tensor) -> torch.Tensor:
    """RGB -> YIQ (Y in [0, 1]; I, Q chrominance around 0)."""
    return _apply_matrix(x, _RGB_TO_YIQ)


def yiq_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """YIQ -> RGB (not clipped)."""
    return _apply_matrix(x, _YIQ_TO_RGB)


def luminance(x: torch.Tensor) -> torch.Tensor:
    """Luma of RGB images repeated to three channels, the input of a luminance-only transfer."""
    y = rgb_to_yiq(x)[..., :1, :, :]
    return y.expand(*y.shape[:-3], 3, *y.shape[-2:]).contiguous()


def match_luminance(style_y: torch.Tensor, content_y: torch.Tensor) -> torch.Tensor:
    """Shift and scale the style's luma to the content's mean and standard deviation (Gatys et al. eq. 2),
    so the stylised luma stays in the content's tonal range."""
    mu_s, sd_s = style_y.mean(), style_y.std().clamp_min(1e-6)
    mu_c, sd_c = content_y.mean(), content_y.std()
    return ((style_y - mu_s) * (sd_c / sd_s) + mu_c).clamp(0, 1)


def combine_luminance(stylised: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """Luma of ``stylised`` with the chrominance of ``content`` (same size), back in RGB, clipped."""
    yiq = rgb_to_yiq(content).clone()
    yiq[..., :1, :, :] = rgb_to_yiq(stylised)[..., :1, :, :]
    return yiq_to_rgb(yiq).clamp(0, 1)


def _mean_cov(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Colour mean (3,) and covariance (3, 3) of an image's pixels, in float64."""
    pixels = x.reshape(3, -1).double()
    mu = pixels.mean(dim=1)
    centred = pixels - mu[:, None]
    return mu, centred @ centred.T / max(1, pixels.shape[1] - 1)


def _sym_power(m: torch.Tensor, p: float, eps: float = 1e-8) -> torch.Tensor:
    """M^p for a symmetric positive semi-definite matrix via its eigen-decomposition."""
    vals, vecs = torch.linalg.eigh(m)
    return vecs @ torch.diag(vals.clamp_min(eps).pow(p)) @ vecs.T


def match_color_histogram(style: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """Recolour ``style`` (3, H, W) so its RGB mean and covariance equal those of ``content`` (3, h, w).

    The sizes may differ. The result is clipped to [0, 1] (so the match is exact only up to clipping).
    """
    if style.dim() != 3 or content.dim() != 3:
        raise ValueError("match_color_histogram takes single (3, H, W) images")
    mu_s, cov_s = _mean_cov(style)
    mu_c, cov_c = _mean_cov(content)
    a = _sym_power(cov_c, 0.5) @ _sym_power(cov_s, -0.5)  # (3, 3)
    flat = style.reshape(3, -1).double()
    out = a @ (flat - mu_s[:, None]) + mu_c[:, None]
    return out.reshape(style.shape).to(style.dtype).clamp(0, 1)
