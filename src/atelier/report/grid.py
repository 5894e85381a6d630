"""Image grids and PNG writing (torchvision's make_grid does not import with this torch, so: ours)."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from atelier.data.images import as_uint8, png_bytes, save_image
from atelier.data.provenance import Provenance

#: The most images the commands put in one PNG grid (a 32 x 32 grid); more is no picture anyone can
#: look at, and many more would not fit in memory. Many samples go to a folder or an ``.npz`` instead.
MAX_GRID_IMAGES = 1024


def check_grid_size(n: int, what: str = "a PNG grid", *, instead: str = "") -> int:
    """``n`` if a grid of ``n`` images is within :data:`MAX_GRID_IMAGES`, else ValueError saying so
    (and ``instead``: what to do)."""
    if n > MAX_GRID_IMAGES:
        raise ValueError(f"{what} holds at most {MAX_GRID_IMAGES} images, {n:,} asked for{instead}")
    return n


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


def save_grid(images: torch.Tensor, path: str | Path, *, nrow: int = 8, scale: int | None = None,
              provenance: Provenance | None = None) -> Path:
    """A grid of images as one PNG. Small images are enlarged so the grid is comfortable to look at.
    ``provenance``: the record the PNG carries (generated images); None: no text chunk at all."""
    h = images.shape[-1]
    scale = scale if scale is not None else max(1, 64 // h)
    return save_image(make_grid(images, nrow=nrow), path, scale=scale, provenance=provenance)


def grid_png(images: torch.Tensor, *, nrow: int = 8, scale: int | None = None, compress_level: int = 6,
             provenance: Provenance | None = None) -> bytes:
    """The PNG bytes :func:`save_grid` would write (``compress_level``: zlib's effort, 0-9)."""
    scale = scale if scale is not None else max(1, 64 // images.shape[-1])
    return png_bytes(make_grid(images, nrow=nrow), scale=scale, compress_level=compress_level,
                     provenance=provenance)
