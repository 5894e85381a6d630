"""Tensor-level helpers shared by the loaders: square resizing and channel conversion of uint8 batches."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from atelier.data.base import DataError
from atelier.device import ensure_fits

#: Images resized per interpolate call, bounding the float32 working memory (2048 x 3 x 256 x 256 x 4 B = 1.6 GB).
RESIZE_CHUNK = 2048

# ITU-R BT.601 luma weights, the ones PIL's convert("L") uses.
_LUMA = (0.299, 0.587, 0.114)


def check_resolution(resolution: int) -> int:
    """Validate an output side length (a positive int) and return it."""
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise DataError(f"resolution must be a positive integer, got {resolution!r}")
    return resolution


def resize_square(images: torch.Tensor, resolution: int, *, scale: float = 1.0) -> torch.Tensor:
    """Resize a uint8 batch to ``resolution`` x ``resolution`` with antialiased bilinear interpolation.

    Args:
        images: uint8 (N, C, H, W). The aspect ratio is not preserved; the loaders pass square images.
        resolution: output side length.
        scale: multiply values by this before interpolating (e.g. 255/16 for the digits), so the only
            rounding happens once, at the end.

    Returns:
        uint8 (N, C, resolution, resolution), rounded and clamped to 0..255.
    """
    n, c, h, w = images.shape
    if (h, w) == (resolution, resolution) and scale == 1.0:
        return images.contiguous()
    work = min(n, RESIZE_CHUNK) * c * (h * w + resolution * resolution) * 4  # one chunk in float32
    ensure_fits(n * c * resolution * resolution + work, f"{n:,} images of {resolution}x{resolution}",
                advice="Choose a smaller resolution")
    out = torch.empty((n, c, resolution, resolution), dtype=torch.uint8)
    for start in range(0, n, RESIZE_CHUNK):
        chunk = images[start : start + RESIZE_CHUNK].float()  # (n', C, H, W) float32
        if scale != 1.0:
            chunk.mul_(scale)
        if (h, w) != (resolution, resolution):
            chunk = F.interpolate(chunk, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=True)
        out[start : start + RESIZE_CHUNK] = chunk.round_().clamp_(0, 255).to(torch.uint8)
    return out


def convert_channels(images: torch.Tensor, channels: int | None) -> torch.Tensor:
    """Convert a uint8 (N, C, H, W) batch to ``channels`` (1 or 3); None keeps it as it is.

    Grey -> colour repeats the channel; colour -> grey takes BT.601 luma, rounded.
    """
    if channels is None or images.shape[1] == channels:
        return images
    if channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()  # (N, 1, H, W) -> (N, 3, H, W)
    if channels == 1:
        weights = torch.tensor(_LUMA).view(1, 3, 1, 1)
        grey = torch.empty((images.shape[0], 1, *images.shape[2:]), dtype=torch.uint8)
        for start in range(0, images.shape[0], RESIZE_CHUNK):
            chunk = images[start : start + RESIZE_CHUNK].float()
            grey[start : start + RESIZE_CHUNK] = (chunk * weights).sum(1, keepdim=True).round_().clamp_(0, 255).to(torch.uint8)
        return grey
    raise DataError(f"channels must be 1, 3 or None (keep the natural count), got {channels!r}")
