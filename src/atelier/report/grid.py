"""Image grids and PNG writing (torchvision's make_grid does not import with this torch, so: ours)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from atelier.data.base import to_uint8


def as_uint8(images: torch.Tensor) -> torch.Tensor:
    """Accept uint8 images or float images in [-1, 1]."""
    return images if images.dtype == torch.uint8 else to_uint8(images)


def make_grid(images: torch.Tensor, nrow: int = 8, padding: int = 2, pad_value: int = 255) -> torch.Tensor:
    """(N, C, H, W) images -> one (C, rows*(H+p)+p, nrow*(W+p)+p) uint8 grid, filled row by row."""
    images = as_uint8(images).cpu()
    n, c, h, w = images.shape
    nrow = max(1, min(nrow, n))
    rows = math.ceil(n / nrow)
    grid = torch.full((c, rows * (h + padding) + padding, nrow * (w + padding) + padding), pad_value, dtype=torch.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        y, x = padding + r * (h + padding), padding + col * (w + padding)
        grid[:, y : y + h, x : x + w] = images[i]
    return grid


def to_pil(image: torch.Tensor) -> Image.Image:
    """(C, H, W) uint8 or [-1, 1] float -> a PIL image (L or RGB)."""
    array = as_uint8(image[None])[0].permute(1, 2, 0).numpy()
    return Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else np.ascontiguousarray(array))


def png_bytes(image: torch.Tensor, *, scale: int = 1) -> bytes:
    """One (C, H, W) uint8 or [-1, 1] image -> PNG bytes (grey or RGB); ``scale`` enlarges it."""
    pil = to_pil(image)
    if scale > 1:
        pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return buf.getvalue()


def save_image(image: torch.Tensor, path: str | Path, *, scale: int = 1) -> Path:
    """Write one (C, H, W) image as PNG atomically; ``scale`` enlarges it with nearest-neighbour."""
    from atelier.train.checkpoint import atomic_write_bytes

    atomic_write_bytes(Path(path), png_bytes(image, scale=scale))
    return Path(path)


def save_grid(images: torch.Tensor, path: str | Path, *, nrow: int = 8, scale: int | None = None) -> Path:
    """A grid of images as one PNG. Small images are enlarged so the grid is comfortable to look at."""
    h = images.shape[-1]
    scale = scale if scale is not None else max(1, 64 // h)
    return save_image(make_grid(images, nrow=nrow), path, scale=scale)
