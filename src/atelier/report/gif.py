"""Animated GIFs of image sequences (interpolations, traversals), written atomically."""

from __future__ import annotations

import io
from pathlib import Path

import torch
from PIL import Image

from atelier.data.images import as_uint8, to_pil


def boomerang_frames(frames: torch.Tensor) -> torch.Tensor:
    """0, 1, ..., T-1, T-2, ..., 1: forward then back, without repeating the end frames, so the loop
    is smooth; T + max(T - 2, 0) frames."""
    if frames.shape[0] < 3:
        return frames
    return torch.cat([frames, frames[1:-1].flip(0)])


def save_gif(frames: torch.Tensor, path: str | Path, *, duration_ms: int = 80, loop: int = 0,
             scale: int | None = None, boomerang: bool = True) -> Path:
    """Write frames (T, C, H, W), uint8 or float in [-1, 1], as an animated GIF (see :func:`gif_bytes`)."""
    from atelier.io import atomic_write_bytes

    atomic_write_bytes(Path(path), gif_bytes(frames, duration_ms=duration_ms, loop=loop, scale=scale,
                                             boomerang=boomerang))
    return Path(path)


def gif_bytes(frames: torch.Tensor, *, duration_ms: int = 80, loop: int = 0, scale: int | None = None,
              boomerang: bool = True) -> bytes:
    """Frames (T, C, H, W), uint8 or float in [-1, 1], as the bytes of an animated GIF.

    Args:
        duration_ms: display time of each frame.
        loop: 0 loops forever, n > 0 plays n + 1 times.
        scale: nearest-neighbour enlargement; default as ``save_grid``: small images reach ~64 px.
        boomerang: play forward then backward (see :func:`boomerang_frames`).

    Colour frames are quantised to 256 colours (a GIF limit). The GIF encoder merges consecutive
    identical frames into one longer frame, so a sequence with repeats reports fewer frames. The GIF
    holds the frames and the loop count alone: no comment, no XMP, no other extension.
    """
    frames = torch.as_tensor(frames)
    if frames.dim() != 4 or frames.shape[0] < 1 or frames.shape[1] not in (1, 3):
        raise ValueError(f"frames must be a (T, C, H, W) tensor with T >= 1 and C in (1, 3), got {tuple(frames.shape)}")
    if duration_ms < 1 or loop < 0:
        raise ValueError(f"duration_ms must be positive and loop >= 0, got {duration_ms} and {loop}")
    frames = as_uint8(frames.cpu())
    if boomerang:
        frames = boomerang_frames(frames)
    scale = scale if scale is not None else max(1, 64 // frames.shape[-1])
    if scale < 1:
        raise ValueError(f"scale must be at least 1, got {scale}")
    pictures = []
    for frame in frames:
        pil = to_pil(frame)
        if scale > 1:
            pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
        pictures.append(pil)
    buf = io.BytesIO()
    pictures[0].save(buf, format="GIF", save_all=True, append_images=pictures[1:], duration=int(duration_ms),
                     loop=int(loop), disposal=1)
    return buf.getvalue()
