"""Masks for inpainting: a box given as fractions of the side, and the input shown with its hole."""

from __future__ import annotations

import torch


def parse_box(text: str, what: str = "box") -> list[float]:
    """``"x0,y0,x1,y1"`` -> four floats; ValueError naming ``what`` for anything else."""
    try:
        box = [float(v) for v in str(text).split(",")]
    except ValueError:
        raise ValueError(f"{what}: expected four comma-separated numbers x0,y0,x1,y1, got {text!r}") from None
    return box


def box_mask(box: list[float], resolution: int, what: str = "--box") -> torch.Tensor:
    """``x0,y0,x1,y1`` as fractions of the side in [0, 1] -> mask (1, 1, R, R), 1 inside the box (at
    least one pixel each way)."""
    if len(box) != 4 or not all(0.0 <= v <= 1.0 for v in box) or box[0] >= box[2] or box[1] >= box[3]:
        raise ValueError(f"{what}: expected x0,y0,x1,y1 with 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1 (fractions "
                         f"of the side), got {','.join(map(str, box))}")
    x0, y0, x1, y1 = (round(v * resolution) for v in box)
    mask = torch.zeros(1, 1, resolution, resolution)
    mask[..., y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)] = 1.0
    return mask


def upload_mask(image: torch.Tensor) -> torch.Tensor:
    """A mask image (uint8 (1 or C, R, R) or (N, ...): white marks the hole) -> (N, 1, R, R) of 0/1;
    ValueError when it marks nothing."""
    image = image if image.dim() == 4 else image[None]
    mask = (image.float().mean(dim=1, keepdim=True) / 255.0 > 0.5).float()
    if not mask.any():
        raise ValueError("the mask is empty: nothing to fill (its white pixels, or a box, mark the hole)")
    return mask


def show_hole(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """uint8 ``images`` (N, C, R, R) with the masked pixels grey, to show what is filled in."""
    return torch.where(mask.bool().expand_as(images), torch.full_like(images, 128), images)
