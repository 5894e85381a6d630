"""Reconstruction quality of autoencoders and VAEs: MSE, PSNR and SSIM, per image and averaged.

Both images are first mapped the same way onto [0, 1] (``data_range`` says from where: uint8
images are 0..255, float images are taken to be in [-1, 1], the range generators produce), clamped
to [0, 1] as converting them to pictures would, and compared in float64 so that near-identical
images give exact numbers. All three metrics are therefore on one fixed scale whatever the input:

* ``mse``: mean squared error on the [0, 1] scale (multiply by 255**2 for the uint8 scale).
* ``psnr``: 10 log10(1 / MSE) in dB per image, then averaged over images. The mean of per-image
  PSNR is what papers usually report; it is not the PSNR of the mean MSE, which weights the worst
  images more and is given as ``psnr_of_mean_mse``. Identical images have infinite PSNR: the
  per-image tensor keeps ``inf``, and the means cap each image at ``max_psnr`` (100 dB by default,
  above anything two different 8-bit images can reach) so that they stay finite.
* ``ssim``: structural similarity (Wang et al. 2004) with an 11x11 Gaussian window, sigma 1.5,
  K1 = 0.01, K2 = 0.03, averaged over pixels and channels of an image, then over images. It is
  computed by torchmetrics, which pads the borders by reflection and averages the SSIM map over the
  whole image (implementations that crop to the valid region, like scikit-image, differ slightly
  near the borders, most visibly for small images).

torchmetrics is imported when first needed: it takes a second to import.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

SSIM_SIGMA = 1.5  # torchmetrics derives the Gaussian window from sigma: 2 * int(3.5 * 1.5 + 0.5) + 1 = 11
SSIM_K1, SSIM_K2 = 0.01, 0.03
_MIN_SIZE = 6  # the 11x11 window pads 5 pixels by reflection, which needs at least 6 pixels


@dataclass
class ReconstructionMetrics:
    """Mean reconstruction metrics over ``n`` images, and the per-image values they came from.

    Attributes:
        mse: mean squared error on the [0, 1] scale, averaged over pixels, channels and images.
        psnr: mean over images of per-image PSNR in dB, each capped at ``max_psnr``
            (not the PSNR of the mean MSE: see ``psnr_of_mean_mse``).
        psnr_of_mean_mse: 10 log10(1 / mse) in dB, capped at ``max_psnr`` too.
        ssim: mean over images of per-image SSIM (11x11 Gaussian window, sigma 1.5).
        n: number of image pairs.
        per_image: float64 CPU tensors of shape (n,): ``"mse"``, ``"psnr"`` (``inf`` where the
            images are identical, never capped) and ``"ssim"``.
        max_psnr: the cap applied to per-image PSNR in the means (None: no cap).
    """

    mse: float
    psnr: float
    psnr_of_mean_mse: float
    ssim: float
    n: int
    per_image: dict[str, torch.Tensor] = field(repr=False)
    max_psnr: float | None = 100.0

    def to_dict(self) -> dict[str, float | int]:
        """The summary as plain Python numbers (for JSON reports); per-image values are left out."""
        return {"mse": self.mse, "psnr": self.psnr, "psnr_of_mean_mse": self.psnr_of_mean_mse,
                "ssim": self.ssim, "n": self.n}


def _torchmetrics():
    try:
        from torchmetrics.functional.image import (
            peak_signal_noise_ratio,
            structural_similarity_index_measure,
        )
    except ImportError as exc:  # not a core dependency of atelier
        raise ImportError("reconstruction metrics need torchmetrics: pip install torchmetrics") from exc
    return peak_signal_noise_ratio, structural_similarity_index_measure


def _interval(data_range: float | tuple[float, float] | None, dtype: torch.dtype) -> tuple[float, float]:
    """The (low, high) interval the input values live in."""
    if data_range is None:
        if dtype == torch.uint8:
            return 0.0, 255.0
        if dtype.is_floating_point:
            return -1.0, 1.0
        raise ValueError(f"no default data_range for {dtype} images: pass data_range")
    if isinstance(data_range, tuple):
        low, high = (float(v) for v in data_range)
    else:
        width = float(data_range)
        # The conventions in use: 255 -> [0, 255], 1 -> [0, 1], 2 -> [-1, 1] (generator outputs).
        low, high = (-1.0, 1.0) if width == 2.0 else (0.0, width)
    if not (math.isfinite(low) and math.isfinite(high) and high > low):
        raise ValueError(f"data_range must be a positive width or a (low, high) pair, got {data_range!r}")
    return low, high


def _check(name: str, images: torch.Tensor) -> None:
    if images.dim() != 4:
        raise ValueError(f"{name} must be a 4-D (N, C, H, W) tensor, got shape {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(images.shape)})")
    if min(images.shape[2:]) < _MIN_SIZE or images.shape[1] == 0:
        raise ValueError(f"{name}: SSIM needs images of at least {_MIN_SIZE}x{_MIN_SIZE} pixels "
                         f"with at least one channel, got shape {tuple(images.shape)}")
    if images.is_floating_point() and not bool(torch.isfinite(images).all()):
        raise ValueError(f"{name} contains NaN or infinite values")


def _to_unit(images: torch.Tensor, low: float, high: float, name: str) -> torch.Tensor:
    """Map [low, high] onto [0, 1] in float64 and clamp; refuse values that are clearly on another scale."""
    x = (images.to(torch.float64) - low) / (high - low)
    lo, hi = float(x.min()), float(x.max())
    if lo < -0.5 or hi > 1.5:  # far outside: the wrong data_range, not a slight overshoot
        raise ValueError(
            f"{name} values span [{lo * (high - low) + low:g}, {hi * (high - low) + low:g}], far outside "
            f"the declared range [{low:g}, {high:g}]: pass the right data_range (255 for [0, 255], "
            f"1.0 for [0, 1], 2.0 for [-1, 1], or a (low, high) pair)"
        )
    return x.clamp_(0.0, 1.0)


def reconstruction_metrics(
    original: torch.Tensor,
    reconstruction: torch.Tensor,
    *,
    data_range: float | tuple[float, float] | None = None,
    batch_size: int = 512,
    max_psnr: float | None = 100.0,
) -> ReconstructionMetrics:
    """MSE, PSNR and SSIM between ``original`` and ``reconstruction`` images of shape (N, C, H, W).

    Args:
        original, reconstruction: uint8 (0..255) or float images of the same shape.
        data_range: where the values live, used for both inputs: a width (255 -> [0, 255],
            1.0 -> [0, 1], 2.0 -> [-1, 1], any other w -> [0, w]) or an explicit (low, high) pair.
            Default: [0, 255] for uint8 input, [-1, 1] for float input. Inputs of different dtype
            kinds (uint8 and float) need it spelled out, or convert one of them first
            (``atelier.data.to_float`` / ``to_uint8``).
        batch_size: images per step, which bounds memory (the SSIM step holds ~10 float64 copies).
        max_psnr: cap in dB on per-image PSNR inside the means, so identical images keep them
            finite; None for no cap (then a single identical pair makes the mean ``inf``).

    Raises:
        ValueError: shapes differ, inputs are not 4-D, are empty, too small for the SSIM window,
            contain NaN/inf, or lie far outside ``data_range``.
    """
    original, reconstruction = torch.as_tensor(original), torch.as_tensor(reconstruction)
    if original.shape != reconstruction.shape:
        raise ValueError(f"original and reconstruction shapes differ: {tuple(original.shape)} "
                         f"vs {tuple(reconstruction.shape)}")
    _check("original", original)
    _check("reconstruction", reconstruction)
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if data_range is None and original.is_floating_point() != reconstruction.is_floating_point():
        raise ValueError(f"original is {original.dtype} but reconstruction is {reconstruction.dtype}: pass "
                         "data_range, or convert one first (atelier.data.to_float / to_uint8)")
    low, high = _interval(data_range, original.dtype)
    psnr_fn, ssim_fn = _torchmetrics()

    mse, psnr, ssim = [], [], []
    for i in range(0, original.shape[0], batch_size):
        x = _to_unit(original[i : i + batch_size], low, high, "original")
        y = _to_unit(reconstruction[i : i + batch_size], low, high, "reconstruction")
        mse.append((x - y).pow_(2).mean(dim=(1, 2, 3)).cpu())
        psnr.append(psnr_fn(y, x, data_range=1.0, reduction="none", dim=(1, 2, 3)).cpu())
        ssim.append(ssim_fn(y, x, gaussian_kernel=True, sigma=SSIM_SIGMA, data_range=1.0,
                            k1=SSIM_K1, k2=SSIM_K2, reduction="none").cpu())
    per_image = {"mse": torch.cat(mse), "psnr": torch.cat(psnr).double(), "ssim": torch.cat(ssim).double()}

    capped = per_image["psnr"] if max_psnr is None else per_image["psnr"].clamp(max=max_psnr)
    mean_mse = float(per_image["mse"].mean())
    psnr_of_mean = math.inf if mean_mse == 0.0 else -10.0 * math.log10(mean_mse)
    if max_psnr is not None:
        psnr_of_mean = min(psnr_of_mean, float(max_psnr))
    return ReconstructionMetrics(
        mse=mean_mse,
        psnr=float(capped.mean()),
        psnr_of_mean_mse=psnr_of_mean,
        ssim=float(per_image["ssim"].mean()),
        n=original.shape[0],
        per_image=per_image,
        max_psnr=max_psnr,
    )
