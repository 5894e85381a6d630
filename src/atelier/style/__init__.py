"""Style transfer: Gatys optimisation, fast feed-forward styles, CycleGAN translation.

The one-call entry point is :func:`stylize`::

    from atelier.style import stylize
    image = stylize("photo.jpg", "painting.jpg", size=512)          # Gatys optimisation
    image = stylize("photo.jpg", model="runs/starry-night")         # a trained fast-style network

Both return a (3, H, W) float tensor in [0, 1] with the content's aspect ratio.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

import torch

from atelier.models.vgg_weights import feature_network
from atelier.signals import ShouldStop
from atelier.style.gatys import GatysConfig, GatysResult, gatys_transfer

ImageLike = str | os.PathLike | torch.Tensor


def _image(x: ImageLike, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    from atelier.data.images import read_image

    return read_image(x)


def load_mask(mask: ImageLike) -> torch.Tensor:
    """A mask from a file (grey levels: white = style, black = keep the content) or a tensor, in [0, 1]."""
    if isinstance(mask, torch.Tensor):
        return mask.float()
    return _image(mask, "mask").mean(dim=0)  # (H, W)


def stylize_gatys(content: ImageLike, style: ImageLike | Sequence[ImageLike], cfg: GatysConfig | None = None, *,
                  mask: ImageLike | None = None, weights: str | os.PathLike | None = None, download: bool = True,
                  verify: bool = True, sha256: str | None = None, fallback: bool = True,
                  device: str | torch.device = "cpu", progress: bool = True,
                  features: torch.nn.Module | None = None, should_stop: ShouldStop | None = None,
                  on_frame=None) -> GatysResult:
    """Gatys transfer from files or tensors; returns the full :class:`GatysResult` (image, history, frames).

    The VGG weights come from ``weights``, ``download``, ``verify``, ``sha256``, ``fallback`` (see
    :func:`feature_network`) unless a ready ``features`` network is given. ``should_stop`` is asked
    before every iteration; True ends the optimisation with the best image so far (``stopped=True``).
    """
    cfg = cfg or GatysConfig()
    styles = [style] if isinstance(style, (str, os.PathLike, torch.Tensor)) else list(style)
    net = features if features is not None else feature_network(
        cfg, weights=weights, download=download, verify=verify, sha256=sha256, fallback=fallback, device=device)
    return gatys_transfer(
        _image(content, "content"),
        [_image(s, "style") for s in styles],
        net,
        cfg,
        mask=None if mask is None else load_mask(mask),
        device=device,
        progress=progress,
        should_stop=should_stop,
        on_frame=on_frame,
    )


def stylize(content: ImageLike, style: ImageLike | Sequence[ImageLike] | None = None, *,
            model: str | os.PathLike | Any | None = None, strength: float = 1.0, **options: Any) -> torch.Tensor:
    """Stylise one image; returns (3, H, W) in [0, 1].

    With ``model`` (a fast-style model directory or a loaded network) the image goes through the
    feed-forward network once (``strength`` blends with the content; ``size=`` resizes first).
    Otherwise ``style`` (one image or several) is transferred by Gatys optimisation; ``options`` are
    :class:`GatysConfig` fields (``size``, ``steps``, ``style_weight``, ``preserve_colors``, ...) plus
    ``mask``, ``weights``, ``download``, ``verify``, ``sha256``, ``fallback``, ``device`` and ``progress``.
    """
    if model is not None:
        if style is not None:
            raise ValueError("give either a style image (Gatys) or a fast-style model, not both")
        from atelier.style.fast import stylize_with_model

        image = _image(content, "content")
        size = options.pop("size", None)
        if options:
            raise TypeError(f"unexpected options for a fast-style model: {sorted(options)}")
        if size is not None:
            from atelier.style.gatys import resize_longer

            image = resize_longer(image, size)
        return stylize_with_model(model, image, strength=strength)
    if style is None:
        raise ValueError("give a style image (or model= for a trained fast-style network)")
    if strength != 1.0:
        raise ValueError("strength applies to fast-style models; for Gatys use style_weight")
    names = {f.name for f in fields(GatysConfig)}
    cfg = GatysConfig(**{k: options.pop(k) for k in list(options) if k in names})
    return stylize_gatys(content, style, cfg, **options).image


__all__ = ["GatysConfig", "GatysResult", "feature_network", "gatys_transfer", "load_mask", "stylize", "stylize_gatys"]
